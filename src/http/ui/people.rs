//! The Insights pages of who engaged and where: a template's or a message's people (per link
//! too), one recipient's copies and timeline, a template's geography. Tables without script,
//! each with its CSV export.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    class_name, html as respond, layout, signed_in, switch, table, timeline_row, url_part,
    PageError,
};
use crate::accounts::visibility::Viewer;
use crate::base::Base;
use crate::http::api::messages::TimelineEvent;
use crate::http::api::people::{message_audience, template_audience, ClassQuery, PeopleQuery};
use crate::http::api::reports::ReportQuery;
use crate::insights::geo::{self, Locator};
use crate::insights::people::{self, Engagement, Page, PersonEvent, PersonRow};
use crate::insights::report::ClassFilter;

/// The query string of a template's people page.
#[derive(Debug, Default, Deserialize)]
pub struct PeoplePageQuery {
    pub class: Option<String>,
    pub scope: Option<String>,
    pub kind: Option<String>,
    pub url: Option<String>,
}

impl PeoplePageQuery {
    fn class(&self) -> ClassFilter {
        match self.class.as_deref() {
            Some("all") => ClassFilter::All,
            _ => ClassFilter::Human,
        }
    }

    fn report(&self) -> ReportQuery {
        ReportQuery {
            class: Some(class_name(self.class()).to_string()),
            scope: self.scope.clone(),
            ..ReportQuery::default()
        }
    }

    fn people(&self) -> PeopleQuery {
        PeopleQuery {
            kind: self.kind.clone(),
            url: self.url.clone(),
            limit: Some(1000),
            offset: None,
        }
    }

    /// The query string for the same list (without the class, which [`switch`] adds).
    fn same_list(&self) -> String {
        let mut q = Vec::new();
        for (k, v) in [
            ("scope", &self.scope),
            ("kind", &self.kind),
            ("url", &self.url),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.push(format!("{k}={}", url_part(v)));
            }
        }
        q.join("&")
    }
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The links choosing which engagement a list is of.
fn kinds(base: &str, chosen: Engagement) -> Markup {
    let sep = if base.contains('?') { "&" } else { "?" };
    html! {
        p class="switch" {
            "Who: "
            @for k in Engagement::ALL {
                a class=(if k == chosen { "on" } else { "" }) id={ "kind-" (k.as_str()) }
                    href={ (base) (sep) "kind=" (k.as_str()) } {
                    (match k {
                        Engagement::Any => "engaged",
                        Engagement::Open => "opened",
                        Engagement::Click => "clicked",
                        Engagement::Reply => "replied",
                    })
                }
                " "
            }
        }
    }
}

/// A people table: people's figures always, machines' only in the all-events mode.
fn people_table(rows: &[PersonRow], class: ClassFilter) -> Markup {
    let all = class == ClassFilter::All;
    table(
        "people",
        html! {
            th { "Recipient" } th { "Copies" } th { "Opens" } th { "Clicks" } th { "Replies" }
            @if all { th { "Machine opens" } th { "Machine clicks" } th class="l" { "Machines (class, reason)" } }
            th class="l" { "First" } th class="l" { "Last" } th { "Score" }
        },
        html! {
            @for r in rows {
                tr class="person" data-recipient=(r.recipient) {
                    td { a href={ "/insights/people/" (url_part(&r.recipient)) "?class=" (class_name(class)) } { (r.recipient) } }
                    td class="copies" { (r.copies) }
                    td class="opens" { (r.opens) }
                    td class="clicks" { (r.clicks) }
                    td class="replies" { (r.replies) }
                    @if all {
                        td class="machine-opens" { (r.machine_opens.unwrap_or(0)) }
                        td class="machine-clicks" { (r.machine_clicks.unwrap_or(0)) }
                        td class="l machines" {
                            @for (i, m) in r.machines.iter().flatten().enumerate() {
                                @if i > 0 { "; " }
                                (m.kind) " " (m.class.as_deref().unwrap_or(""))
                                @if let Some(reason) = &m.reason { " (" (reason) ")" }
                                ": " (m.events)
                            }
                        }
                    }
                    td class="l" { (when(r.first_at)) }
                    td class="l" { (when(r.last_at)) }
                    td class="score" { (format!("{:.2}", r.score)) }
                }
            }
            @if rows.is_empty() {
                tr { td colspan="11" { "Nobody yet." } }
            }
        },
    )
}

const SCORE_NOTE: &str = "Score: each open counts 1, each click 3, each reply 5, halved for \
    every 14 days since it happened; people's events only.";

/// `/insights/templates/{key}/people`
pub async fn template_people(
    ctx: web::Data<Base>,
    req: HttpRequest,
    key: web::Path<String>,
    q: web::Query<PeoplePageQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let viewer = Viewer::from(&user);
    let client = ctx.pool.get().await?;
    let (audience, scope, class) = template_audience(&**client, viewer, &key, &q.report()).await?;
    let pq = q.people();
    let filter = pq.filter(class)?;
    let rows = people::people(
        &**client,
        viewer,
        &audience,
        &filter,
        Page {
            limit: 1000,
            offset: 0,
        },
    )
    .await?;
    let scope = scope.to_string();
    let page = format!("/insights/templates/{}/people", url_part(&key));
    let mut same = PeoplePageQuery {
        scope: Some(scope.clone()),
        ..PeoplePageQuery::default()
    };
    same.url = q.url.clone();
    let with_kind = format!("{page}?{}&class={}", same.same_list(), class_name(class));
    same.kind = Some(filter.engagement.as_str().to_string());
    let base = format!("{page}?{}", same.same_list());
    let export = format!(
        "/api/exports/templates/{}/people?{}&class={}",
        url_part(&key),
        same.same_list(),
        class_name(class)
    );
    let body = html! {
        h1 { "People of template " span id="template-key" { (key) } }
        p {
            a href={ "/insights/templates/" (url_part(&key)) "?scope=" (url_part(&scope)) "&class=" (class_name(class)) } { "Back to the template" }
        }
        @if let Some(u) = &q.url { p id="link-filter" { "Clicks on " code { (u) } } }
        (switch(&base, class))
        (kinds(&with_kind, filter.engagement))
        p { a class="button" id="export-people" href=(export) download { "Export CSV" } }
        (people_table(&rows, class))
        p class="note" { (SCORE_NOTE) }
    };
    Ok(respond(StatusCode::OK, layout(&key, Some(&user), body)))
}

/// `/insights/messages/{id}/people`
pub async fn message_people(
    ctx: web::Data<Base>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<PeoplePageQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let viewer = Viewer::from(&user);
    let client = ctx.pool.get().await?;
    let audience = message_audience(&**client, viewer, &id)
        .await
        .map_err(|_| PageError::NotFound)?;
    let class = q.class();
    let filter = q.people().filter(class)?;
    let rows = people::people(
        &**client,
        viewer,
        &audience,
        &filter,
        Page {
            limit: 1000,
            offset: 0,
        },
    )
    .await?;
    let id = id.trim().to_string();
    let page = format!("/insights/messages/{}/people", url_part(&id));
    let body = html! {
        h1 { "People of the message" }
        p { a href={ "/insights/messages/" (url_part(&id)) } { "Back to the message" } }
        (switch(&format!("{page}?kind={}", filter.engagement.as_str()), class))
        (kinds(&format!("{page}?class={}", class_name(class)), filter.engagement))
        p {
            a class="button" id="export-people" download
                href={ "/api/exports/messages/" (url_part(&id)) "/people?class=" (class_name(class)) "&kind=" (filter.engagement.as_str()) } { "Export CSV" }
            " "
            a class="button" id="export-events" download
                href={ "/api/exports/messages/" (url_part(&id)) "/events?class=" (class_name(class)) } { "Export events (CSV)" }
        }
        (people_table(&rows, class))
        p class="note" { (SCORE_NOTE) }
    };
    Ok(respond(StatusCode::OK, layout("People", Some(&user), body)))
}

fn as_timeline(e: &PersonEvent) -> TimelineEvent {
    TimelineEvent {
        id: e.id,
        at: e.at,
        kind: e.kind.clone(),
        icon: e.icon,
        class: e.class.clone(),
        human: e.human,
        reason: e.reason.clone(),
        url: e.url.clone(),
        client: e.client.clone(),
        device: e.device.clone(),
        os: e.os.clone(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PersonPageQuery {
    pub class: Option<String>,
}

/// `/insights/people/{recipient}`: every copy the viewer may see sent to one address, each
/// with its timeline, and the recipient's engagement.
pub async fn person(
    ctx: web::Data<Base>,
    req: HttpRequest,
    recipient: web::Path<String>,
    q: web::Query<PersonPageQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let class = ClassQuery {
        class: q.class.clone(),
    }
    .class()
    .unwrap_or_default();
    let client = ctx.pool.get().await?;
    let p = people::person(&**client, Viewer::from(&user), &recipient, class)
        .await?
        .ok_or(PageError::NotFound)?;
    let e = &p.engagement;
    let all = class == ClassFilter::All;
    let body = html! {
        h1 id="recipient" { (p.recipient) }
        (switch(&format!("/insights/people/{}", url_part(&p.recipient)), class))
        table id="engagement" {
            thead { tr {
                th { "Copies" } th { "Opens" } th { "Clicks" } th { "Replies" }
                @if all { th { "Machine opens" } th { "Machine clicks" } }
                th class="l" { "First" } th class="l" { "Last" } th { "Score" }
            } }
            tbody { tr {
                td class="copies" { (p.copies.len()) }
                td class="opens" { (e.opens) } td class="clicks" { (e.clicks) }
                td class="replies" { (e.replies) }
                @if all {
                    td class="machine-opens" { (e.machine_opens.unwrap_or(0)) }
                    td class="machine-clicks" { (e.machine_clicks.unwrap_or(0)) }
                }
                td class="l" { (when(e.first_at)) } td class="l" { (when(e.last_at)) }
                td class="score" { (format!("{:.2}", e.score)) }
            } }
        }
        p class="note" { (SCORE_NOTE) }
        p {
            a id="export-timeline" download
                href={ "/api/exports/people/" (url_part(&p.recipient)) "/events?class=all" } { "Export timeline (CSV)" }
        }
        @for c in &p.copies {
            section class="copy" data-copy=(c.copy_id) {
                h2 {
                    a href={ "/insights/messages/" (c.message_id) } {
                        (c.subject.as_deref().unwrap_or("(no subject)"))
                    }
                }
                p {
                    "Template " (c.template) " \u{b7} from " (c.sender) " \u{b7} sent "
                    (c.sent_at.format("%Y-%m-%d %H:%M UTC")) " \u{b7} "
                    span class="status" { (c.status) }
                }
                table class="timeline" {
                    thead { tr {
                        th class="l" {} th class="l" { "When" } th class="l" { "Event" }
                        th class="l" { "Class" } th class="l" { "Rule" }
                        th class="l" { "Reason / detail" }
                    } }
                    tbody {
                        @for ev in p.timeline.iter().filter(|ev| ev.copy_id == c.copy_id) {
                            (timeline_row(&as_timeline(ev)))
                        }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(&p.recipient, Some(&user), body),
    ))
}

/// `/insights/templates/{key}/geography`
pub async fn template_geography(
    ctx: web::Data<Base>,
    locator: web::Data<Locator>,
    req: HttpRequest,
    key: web::Path<String>,
    q: web::Query<PeoplePageQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let viewer = Viewer::from(&user);
    let client = ctx.pool.get().await?;
    let (audience, scope, _) = template_audience(&**client, viewer, &key, &q.report()).await?;
    let g = geo::geography(&**client, &locator, viewer, &audience).await?;
    let body = html! {
        h1 { "Where people read " span id="template-key" { (key) } }
        p {
            a href={ "/insights/templates/" (url_part(&key)) "?scope=" (url_part(&scope.to_string())) } { "Back to the template" }
        }
        p class="note" { "People's opens and clicks only: Apple Mail Privacy Protection, image proxies and scanners fetch from addresses that are not the reader's." }
        @match &g {
            None => p id="no-geography" { "No GeoIP database is configured (setting GEOIP_DATABASE)." },
            Some(g) => {
                p {
                    a id="export-geography" download href={ "/api/exports/templates/" (url_part(&key)) "/geography?scope=" (url_part(&scope.to_string())) } { "Export CSV" }
                }
                h2 { "Countries" }
                (table("countries", html! {
                    th { "Country" } th { "Opens" } th { "Clicks" } th { "People" }
                }, html! {
                    @for c in &g.countries {
                        tr data-country=(c.country_code) {
                            td { (c.country) " (" (c.country_code) ")" }
                            td class="opens" { (c.opens) } td class="clicks" { (c.clicks) }
                            td class="people" { (c.people) }
                        }
                    }
                }))
                h2 { "Cities" }
                (table("cities", html! {
                    th { "City" } th class="l" { "Country" } th { "Opens" } th { "Clicks" } th { "People" }
                }, html! {
                    @for c in &g.cities {
                        tr {
                            td { (c.city) } td class="l" { (c.country_code) }
                            td { (c.opens) } td { (c.clicks) } td { (c.people) }
                        }
                    }
                }))
                p { (g.unplaced_events) " of people's events have an address the database does not place." }
            }
        }
    };
    Ok(respond(StatusCode::OK, layout(&key, Some(&user), body)))
}

/// Adds the pages of this module.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/insights/templates/{key}/people",
        web::get().to(template_people),
    )
    .route(
        "/insights/templates/{key}/geography",
        web::get().to(template_geography),
    )
    .route(
        "/insights/messages/{id}/people",
        web::get().to(message_people),
    )
    .route("/insights/people/{recipient}", web::get().to(person));
}
