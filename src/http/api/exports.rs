//! CSV exports under `/api/exports`: the templates report and each part of one template's
//! (daily, links, clients), every people list, the geography (countries, cities), and the
//! events of a template, a message or a recipient with their class and reason. The same
//! filters as the JSON routes;
//! the lists and events stream from PostgreSQL to the body (see [`crate::http::csv`]). A bearer
//! token or the Insights page's cookie, so that the page's buttons download them.

use actix_web::{web, HttpResponse};

use super::people::{message_audience, template_audience, ClassQuery, PeopleQuery};
use super::reports::ReportQuery;
use crate::accounts::visibility::Viewer;
use crate::base::Base;
use crate::http::auth::TokenOrCookie;
use crate::http::csv;
use crate::http::errors::ApiError;
use crate::insights::geo::{self, Locator};
use crate::insights::people::{self, Audience, Export};
use crate::insights::report::{self, Figures};

/// The figure columns of a report row, in [`figure_fields`]' order.
const FIGURE_COLUMNS: [&str; 22] = [
    "sent",
    "delivered",
    "bounced",
    "opens",
    "unique_opens",
    "human_opens",
    "human_unique_opens",
    "clicks",
    "unique_clicks",
    "human_clicks",
    "human_unique_clicks",
    "replies",
    "unique_replies",
    "open_rate",
    "click_rate",
    "click_to_open",
    "bounce_rate",
    "reply_rate",
    "hard_bounced",
    "soft_bounced",
    "complaints",
    "unsubscribes",
];

fn rate(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.6}")).unwrap_or_default()
}

/// A row's figures as CSV fields, in [`FIGURE_COLUMNS`]' order.
fn figure_fields(f: &Figures) -> impl Iterator<Item = String> {
    let counts = [
        f.sent,
        f.delivered,
        f.bounced,
        f.opens,
        f.unique_opens,
        f.human_opens,
        f.human_unique_opens,
        f.clicks,
        f.unique_clicks,
        f.human_clicks,
        f.human_unique_clicks,
        f.replies,
        f.unique_replies,
    ];
    let rates = [
        f.open_rate,
        f.click_rate,
        f.click_to_open,
        f.bounce_rate,
        f.reply_rate,
    ];
    let deliverability = [f.hard_bounced, f.soft_bounced, f.complaints, f.unsubscribes];
    counts
        .into_iter()
        .map(|n| n.to_string())
        .chain(rates.into_iter().map(rate))
        .chain(deliverability.into_iter().map(|n| n.to_string()))
}

/// `first` columns followed by the figure columns.
fn with_figures(first: &[&'static str]) -> Vec<&'static str> {
    first.iter().copied().chain(FIGURE_COLUMNS).collect()
}

/// The template report (one row per template the caller may see), as CSV.
#[utoipa::path(get, path = "/api/exports/templates", tag = "exports",
    operation_id = "export_templates",
    security(("bearer" = []), ("cookie" = [])),
    params(ReportQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "a bad date, id, class or scope"),
    ))]
pub async fn templates(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter()?;
    let client = ctx.pool.get().await?;
    let rows = report::templates(&**client, caller.viewer(), &filter).await?;
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            [r.template.clone(), r.scope.to_string(), r.name.clone()]
                .into_iter()
                .chain(figure_fields(&r.figures))
                .collect()
        })
        .collect();
    let header = with_figures(&["template", "scope", "name"]);
    Ok(csv::small("templates.csv", &header, &rows))
}

/// One part of a template's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportPart {
    Daily,
    Links,
    Clients,
}

impl ReportPart {
    fn name(self) -> &'static str {
        match self {
            ReportPart::Daily => "daily",
            ReportPart::Links => "links",
            ReportPart::Clients => "clients",
        }
    }
}

/// A template's figures by day of sending, as its report has them, as CSV.
#[utoipa::path(get, path = "/api/exports/templates/{key}/daily", tag = "exports",
    operation_id = "export_template_daily",
    security(("bearer" = []), ("cookie" = [])),
    params(("key" = String, Path, description = "the template key"), ReportQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "a bad date, id, class or scope"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template_daily(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    template_report(&ctx, &caller, &key, &q, ReportPart::Daily).await
}

/// A template's top links, as its report has them, as CSV.
#[utoipa::path(get, path = "/api/exports/templates/{key}/links", tag = "exports",
    operation_id = "export_template_links",
    security(("bearer" = []), ("cookie" = [])),
    params(("key" = String, Path, description = "the template key"), ReportQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "a bad date, id, class or scope"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template_links(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    template_report(&ctx, &caller, &key, &q, ReportPart::Links).await
}

/// A template's mail clients and devices, as its report has them, as CSV.
#[utoipa::path(get, path = "/api/exports/templates/{key}/clients", tag = "exports",
    operation_id = "export_template_clients",
    security(("bearer" = []), ("cookie" = [])),
    params(("key" = String, Path, description = "the template key"), ReportQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "a bad date, id, class or scope"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template_clients(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    template_report(&ctx, &caller, &key, &q, ReportPart::Clients).await
}

/// The rows of one part of a template's report, with the report's filters.
async fn template_report(
    ctx: &Base,
    caller: &TokenOrCookie,
    key: &str,
    q: &ReportQuery,
    part: ReportPart,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter()?;
    let client = ctx.pool.get().await?;
    let detail = report::template(&**client, caller.viewer(), key, &filter)
        .await?
        .ok_or(ApiError::NotFound("template"))?;
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match part {
        ReportPart::Daily => (
            with_figures(&["day"]),
            detail
                .daily
                .iter()
                .map(|d| {
                    std::iter::once(d.day.to_string())
                        .chain(figure_fields(&d.figures))
                        .collect()
                })
                .collect(),
        ),
        ReportPart::Links => (
            vec![
                "url",
                "clicks",
                "human_clicks",
                "unique_clicks",
                "human_unique_clicks",
            ],
            detail
                .top_links
                .iter()
                .map(|l| {
                    let counts = [
                        l.clicks,
                        l.human_clicks,
                        l.unique_clicks,
                        l.human_unique_clicks,
                    ];
                    std::iter::once(l.url.clone())
                        .chain(counts.map(|n| n.to_string()))
                        .collect()
                })
                .collect(),
        ),
        ReportPart::Clients => (
            vec![
                "client",
                "device",
                "opens",
                "human_opens",
                "unique_opens",
                "human_unique_opens",
            ],
            detail
                .clients
                .iter()
                .map(|c| {
                    let counts = [c.opens, c.human_opens, c.unique_opens, c.human_unique_opens];
                    [c.client.clone(), c.device.clone()]
                        .into_iter()
                        .chain(counts.map(|n| n.to_string()))
                        .collect()
                })
                .collect(),
        ),
    };
    let filename = format!("{key}-{}.csv", part.name());
    Ok(csv::small(&filename, &header, &rows))
}

async fn stream(ctx: &Base, filename: &str, export: Export) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let header = export.header;
    let rows = people::stream(client, export).await?;
    Ok(csv::streamed(filename, header, rows))
}

/// A template's people list (all of it), as CSV.
#[utoipa::path(get, path = "/api/exports/templates/{key}/people", tag = "exports",
    operation_id = "export_template_people",
    security(("bearer" = []), ("cookie" = [])),
    params(("key" = String, Path, description = "the template key"), ReportQuery, PeopleQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "a bad date, id, class, scope or kind"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template_people(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
    pq: web::Query<PeopleQuery>,
) -> Result<HttpResponse, ApiError> {
    let (audience, _, class) = {
        let client = ctx.pool.get().await?;
        template_audience(&**client, caller.viewer(), &key, &q).await?
    };
    let filter = pq.filter(class)?;
    let export = people::export_people(&audience, caller.viewer(), &filter);
    stream(&ctx, &format!("{key}-people.csv"), export).await
}

/// Every event of a template's copies, with class and reason, as CSV.
#[utoipa::path(get, path = "/api/exports/templates/{key}/events", tag = "exports",
    operation_id = "export_template_events",
    security(("bearer" = []), ("cookie" = [])),
    params(("key" = String, Path, description = "the template key"), ReportQuery),
    responses(
        (status = 200, description = "CSV with a header row; with `class=human` machines' opens and clicks are left out", content_type = "text/csv", body = String),
        (status = 400, description = "a bad date, id, class or scope"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template_events(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let (audience, _, class) = {
        let client = ctx.pool.get().await?;
        template_audience(&**client, caller.viewer(), &key, &q).await?
    };
    let export = people::export_events(&audience, caller.viewer(), class);
    stream(&ctx, &format!("{key}-events.csv"), export).await
}

/// A message's people list, as CSV.
#[utoipa::path(get, path = "/api/exports/messages/{id}/people", tag = "exports",
    operation_id = "export_message_people",
    security(("bearer" = []), ("cookie" = [])),
    params(("id" = Uuid, Path, description = "the message id"), ClassQuery, PeopleQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "a bad class or kind"),
        (status = 404, description = "no such message the caller may see"),
    ))]
pub async fn message_people(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    id: web::Path<String>,
    cq: web::Query<ClassQuery>,
    pq: web::Query<PeopleQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = pq.filter(cq.class()?)?;
    let audience = {
        let client = ctx.pool.get().await?;
        message_audience(&**client, caller.viewer(), &id).await?
    };
    let export = people::export_people(&audience, caller.viewer(), &filter);
    stream(&ctx, "message-people.csv", export).await
}

/// Every event of a message's copies, with class and reason, as CSV.
#[utoipa::path(get, path = "/api/exports/messages/{id}/events", tag = "exports",
    operation_id = "export_message_events",
    security(("bearer" = []), ("cookie" = [])),
    params(("id" = Uuid, Path, description = "the message id"), ClassQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "a bad class"),
        (status = 404, description = "no such message the caller may see"),
    ))]
pub async fn message_events(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    id: web::Path<String>,
    cq: web::Query<ClassQuery>,
) -> Result<HttpResponse, ApiError> {
    let class = cq.class()?;
    let audience = {
        let client = ctx.pool.get().await?;
        message_audience(&**client, caller.viewer(), &id).await?
    };
    let export = people::export_events(&audience, caller.viewer(), class);
    stream(&ctx, "message-events.csv", export).await
}

/// A recipient's whole timeline (every copy the caller may see), as CSV.
#[utoipa::path(get, path = "/api/exports/people/{recipient}/events", tag = "exports",
    operation_id = "export_person_events",
    security(("bearer" = []), ("cookie" = [])),
    params(("recipient" = String, Path, description = "the address (case-insensitive)"), ClassQuery),
    responses(
        (status = 200, description = "CSV with a header row; with `class=human` machines' opens and clicks are left out", content_type = "text/csv", body = String),
        (status = 400, description = "a bad class"),
        (status = 404, description = "no copy to this address that the caller may see"),
    ))]
pub async fn person_events(
    ctx: web::Data<Base>,
    caller: TokenOrCookie,
    recipient: web::Path<String>,
    cq: web::Query<ClassQuery>,
) -> Result<HttpResponse, ApiError> {
    let class = cq.class()?;
    let audience = Audience::Recipient(recipient.trim().to_string());
    {
        let client = ctx.pool.get().await?;
        if !people::sees(&**client, caller.viewer(), &audience).await? {
            return Err(ApiError::NotFound("recipient"));
        }
    }
    let export = people::export_events(&audience, caller.viewer(), class);
    stream(&ctx, "person-events.csv", export).await
}

/// The columns of a geography export: one row per country, then one per city the database
/// names, told apart by `level`.
const PLACE_COLUMNS: &[&str] = &[
    "level",
    "country_code",
    "country",
    "city",
    "opens",
    "clicks",
    "people",
];

/// The places of an audience's people's opens and clicks as CSV; 409 without a database.
async fn places(
    ctx: &Base,
    locator: &Locator,
    viewer: Viewer,
    audience: &Audience,
    filename: &str,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let g = geo::geography(&**client, locator, viewer, audience)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict("no GeoIP database is configured (GEOIP_DATABASE)".into())
        })?;
    let row = |level: &str, code: &str, country: &str, city: &str, counts: [i64; 3]| {
        [level, code, country, city]
            .map(str::to_string)
            .into_iter()
            .chain(counts.map(|n| n.to_string()))
            .collect::<Vec<String>>()
    };
    let rows: Vec<Vec<String>> = g
        .countries
        .iter()
        .map(|c| {
            let counts = [c.opens, c.clicks, c.people];
            row("country", &c.country_code, &c.country, "", counts)
        })
        .chain(g.cities.iter().map(|c| {
            let counts = [c.opens, c.clicks, c.people];
            row("city", &c.country_code, &c.country, &c.city, counts)
        }))
        .collect();
    Ok(csv::small(filename, PLACE_COLUMNS, &rows))
}

/// Where a template's people read (countries, then cities), as CSV.
#[utoipa::path(get, path = "/api/exports/templates/{key}/geography", tag = "exports",
    operation_id = "export_template_geography",
    security(("bearer" = []), ("cookie" = [])),
    params(("key" = String, Path, description = "the template key"), ReportQuery),
    responses(
        (status = 200, description = "CSV with a header row; `level` is `country` or `city`", content_type = "text/csv", body = String),
        (status = 400, description = "a bad date, id, class or scope"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
        (status = 409, description = "no GeoIP database is configured"),
    ))]
pub async fn template_geography(
    ctx: web::Data<Base>,
    locator: web::Data<Locator>,
    caller: TokenOrCookie,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let (audience, _, _) = {
        let client = ctx.pool.get().await?;
        template_audience(&**client, caller.viewer(), &key, &q).await?
    };
    let filename = format!("{key}-geography.csv");
    places(&ctx, &locator, caller.viewer(), &audience, &filename).await
}

/// Where a message's people read (countries, then cities), as CSV.
#[utoipa::path(get, path = "/api/exports/messages/{id}/geography", tag = "exports",
    operation_id = "export_message_geography",
    security(("bearer" = []), ("cookie" = [])),
    params(("id" = Uuid, Path, description = "the message id")),
    responses(
        (status = 200, description = "CSV with a header row; `level` is `country` or `city`", content_type = "text/csv", body = String),
        (status = 404, description = "no such message the caller may see"),
        (status = 409, description = "no GeoIP database is configured"),
    ))]
pub async fn message_geography(
    ctx: web::Data<Base>,
    locator: web::Data<Locator>,
    caller: TokenOrCookie,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let audience = {
        let client = ctx.pool.get().await?;
        message_audience(&**client, caller.viewer(), &id).await?
    };
    let viewer = caller.viewer();
    places(&ctx, &locator, viewer, &audience, "message-geography.csv").await
}
