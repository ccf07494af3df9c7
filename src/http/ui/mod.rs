//! The Insights page at `/insights`: server-rendered HTML, no external asset. Every table, chart
//! and form works without script; the one script (`/insights/live.js`) only adds the live
//! notices. Views: templates, a template, every message, a message, the click map, comparisons.
//! Signing in posts an API token that is kept in an HttpOnly, SameSite=Strict cookie (Secure
//! when `PUBLIC_URL` is https). Sign-in and sign-out refuse posts from another site (Origin /
//! Sec-Fetch-Site), and a cookie that holds no valid token is answered 401, so that guessing
//! through the cookie counts against the same failure limit as bad API tokens.
//! The markup comes from maud templates, which escape every value spliced into them; only the
//! fixed stylesheet is spliced raw.

pub mod chart;
pub mod clickmap;
pub mod compare;
pub mod message_list;
pub mod overview;
pub mod people;

use std::fmt::Write;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use thiserror::Error;

use self::chart::Point;
use crate::accounts::visibility::Viewer;
use crate::accounts::User;
use crate::base::Base;
use crate::classify::hindsight::{PREFETCH_SECONDS, SWEEP_CLICKS, SWEEP_SECONDS};
use crate::classify::Rule;
use crate::http::api::messages::{self, ListQuery};
use crate::http::auth::{cookie, user_for_token, COOKIE};
use crate::http::errors::ApiError;
use crate::insights::report::{self, ClassFilter, ReportFilter};

#[derive(Debug, Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    #[error("the service is unavailable")]
    Api(#[from] ApiError),
}

impl From<deadpool_postgres::PoolError> for PageError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PageError::Api(e.into())
    }
}

impl From<crate::insights::InsightsError> for PageError {
    fn from(e: crate::insights::InsightsError) -> Self {
        PageError::Api(e.into())
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Api(e) => e.status_code(),
        }
    }
    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(error = ?self, "Insights page failed");
        }
        html(
            self.status_code(),
            layout(
                "Insights",
                None,
                html! {
                    h1 { (self) }
                    p { a href="/insights" { "Back to templates" } }
                },
            ),
        )
    }
}

/// Percent-encodes a path segment or query value.
pub fn url_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The timeline's icon for an event: an eye for an open, a cursor for a click, an arrow for a
/// reply; nothing for delivery events.
fn icon(kind: Option<&str>) -> Markup {
    let (class, label) = match kind {
        Some("eye") => ("icon eye", "open"),
        Some("cursor") => ("icon cursor", "click"),
        Some("reply") => ("icon reply", "reply"),
        _ => return html! {},
    };
    html! {
        svg class=(class) width="18" height="18" viewBox="0 0 24 24" aria-label=(label) role="img" {
            title { (label) }
            @match kind {
                Some("eye") => {
                    path d="M1 12s4-7 11-7 11 7 11 7-4 7-11 7S1 12 1 12z" fill="none"
                        stroke="currentColor" stroke-width="2" {}
                    circle cx="12" cy="12" r="3" fill="currentColor" {}
                }
                Some("cursor") => { path d="M4 2l7 19 2.5-7.5L21 11z" fill="currentColor" {} }
                _ => {
                    path d="M10 9V5l-7 7 7 7v-4.1c5 0 8.5 1.6 11 5.1-1-5-4-10-11-11z"
                        fill="currentColor" {}
                }
            }
        }
    }
}

fn layout(title: &str, user: Option<&User>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - mailtally Insights" }
                link rel="icon" type="image/svg+xml" href="/favicon.svg";
                // A fixed stylesheet: escaping would only garble it.
                style { (PreEscaped(overview::STYLE)) }
            }
            body {
                @if let Some(u) = user {
                    header class="top" {
                        nav {
                            a href="/insights" { "Templates" }
                            a href="/insights/messages" id="nav-messages" { "Messages" }
                            a href="/insights/compare" id="nav-compare" { "Compare" }
                        }
                        span class="who" { (u.email) }
                        form method="post" action="/insights/logout" style="display:inline" {
                            button type="submit" { "Sign out" }
                        }
                    }
                    // The live feed: a small script (served by this server) adds an entry and a
                    // browser notification when a person opens or clicks a visible message.
                    ul id="mt-feed" role="status" aria-live="polite" {}
                    script src="/insights/live.js" defer {}
                }
                main { (body) }
            }
        }
    }
}

fn html(status: StatusCode, page: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; \
             script-src 'self'; connect-src 'self'; frame-src 'self'",
        ))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", REFERRER_POLICY))
        .body(page.into_string())
}

/// The page URLs carry template keys and message ids: no other site learns them. Not
/// `no-referrer`: under it browsers send `Origin: null` even on this site's own sign-in post.
const REFERRER_POLICY: &str = "same-origin";

/// A redirect of the sign-in flow, with the headers every page carries.
fn see_other(location: &str) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::SeeOther();
    r.insert_header(("Location", location))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", REFERRER_POLICY));
    r
}

/// The session cookie's attributes; `Secure` when the public URL is https, so that the token
/// never travels over plain HTTP once a deployment is served over TLS.
fn cookie_attributes(ctx: &Base) -> &'static str {
    if ctx.settings.rewrite.public_url.starts_with("https://") {
        "Path=/; HttpOnly; Secure; SameSite=Strict"
    } else {
        "Path=/; HttpOnly; SameSite=Strict"
    }
}

fn clear_cookie(ctx: &Base) -> String {
    format!("{COOKIE}=; {}; Max-Age=0", cookie_attributes(ctx))
}

/// Whether a state-changing post comes from this site. A browser names the page's origin in
/// `Origin` (and says `Sec-Fetch-Site`) on every cross-site POST; a post without either comes
/// from no browser and so carries no victim's cookie or intent.
fn same_site_post(ctx: &Base, req: &HttpRequest) -> bool {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{0}").trim().to_ascii_lowercase())
    };
    if let Some(site) = header("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    let Some(origin) = header("origin") else {
        return true;
    };
    let public = ctx.settings.rewrite.public_url.to_ascii_lowercase();
    let public_origin = match public.find("://") {
        Some(i) => match public[i + 3..].find('/') {
            Some(j) => public[..i + 3 + j].to_string(),
            None => public.clone(),
        },
        None => public.clone(),
    };
    if origin == public_origin {
        return true;
    }
    // Served under another name than PUBLIC_URL (a proxy, a local port): the browser set Host
    // to this server, so an Origin naming that same host is this site.
    let host = header("host").unwrap_or_default();
    !host.is_empty() && (origin == format!("http://{host}") || origin == format!("https://{host}"))
}

fn cross_site_refused() -> HttpResponse {
    html(
        StatusCode::FORBIDDEN,
        layout(
            "Sign in",
            None,
            html! {
                h1 { "mailtally Insights" }
                p class="err" { "Sign-in and sign-out are accepted from this site's own pages only." }
                p { a href="/insights" { "Sign in" } }
            },
        ),
    )
}

fn sign_in_form(error: Option<&str>) -> Markup {
    html! {
        h1 { "mailtally Insights" }
        @if let Some(e) = error {
            p class="err" { (e) }
        }
        form method="post" action="/insights/login" {
            label {
                "API token "
                input type="password" name="token" id="token" autocomplete="off" required;
            }
            " "
            button type="submit" id="sign-in" { "Sign in" }
        }
    }
}

/// Who the cookie signs in, if anyone.
enum Session {
    /// No cookie: show the sign-in form.
    None,
    /// A cookie holding no valid token (guessed, revoked, disabled user).
    Invalid,
    User(User),
}

async fn session(ctx: &Base, req: &HttpRequest) -> Result<Session, PageError> {
    let Some(token) = cookie(req, COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(Session::None);
    };
    Ok(match user_for_token(ctx, &token).await? {
        Some(user) => Session::User(user),
        None => Session::Invalid,
    })
}

/// The answer to a bad cookie on every page: 401 (which the failure limiter counts, like a bad
/// API token), the cookie cleared, the sign-in form.
fn bad_cookie(ctx: &Base) -> HttpResponse {
    let mut r = html(
        StatusCode::UNAUTHORIZED,
        layout(
            "Sign in",
            None,
            sign_in_form(Some("Your session is no longer valid; sign in again.")),
        ),
    );
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&clear_cookie(ctx)) {
        r.headers_mut()
            .insert(actix_web::http::header::SET_COOKIE, v);
    }
    r
}

fn to_sign_in() -> HttpResponse {
    see_other("/insights").finish()
}

#[derive(Debug, Deserialize)]
pub struct ClassQuery {
    pub class: Option<String>,
    /// Whose template (`team:ID`, `sender:ID`), on a template's page.
    pub scope: Option<String>,
}

fn class_of(q: &ClassQuery) -> ClassFilter {
    match q.class.as_deref() {
        Some("all") => ClassFilter::All,
        _ => ClassFilter::Human,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn switch(base: &str, class: ClassFilter) -> Markup {
    let (h, a) = match class {
        ClassFilter::Human => ("on", ""),
        ClassFilter::All => ("", "on"),
    };
    let sep = if base.contains('?') { "&" } else { "?" };
    html! {
        p class="switch" {
            "Count: "
            a class=(h) id="class-human" href={ (base) (sep) "class=human" } { "people only" }
            " "
            a class=(a) id="class-all" href={ (base) (sep) "class=all" } { "all events" }
        }
    }
}

/// A table of the page: its header cells, then its rows.
fn table(id: &str, headers: Markup, rows: Markup) -> Markup {
    html! {
        table id=(id) {
            thead { tr { (headers) } }
            tbody { (rows) }
        }
    }
}

/// The figures' column headers, in the order of [`figure_cells`]. The counts are of the page's
/// one mode (people only, or all events); each appears once.
const FIGURE_HEADERS: [&str; 12] = [
    "Sent",
    "Delivered",
    "Opens",
    "Unique opens",
    "Clicks",
    "Unique clicks",
    "Open rate",
    "Click rate",
    "Click-to-open",
    "Bounce rate",
    "Replies",
    "Reply rate",
];

/// A templates table's header cells: the template, then its figures.
fn figure_headers() -> Markup {
    html! {
        th { "Template" }
        @for h in FIGURE_HEADERS {
            th { (h) }
        }
    }
}

fn figure_cells(f: &report::Figures, class: ClassFilter) -> Markup {
    // With "people only" the opens and clicks columns show people's figures.
    let (opens, uopens, clicks, uclicks) = match class {
        ClassFilter::Human => (
            f.human_opens,
            f.human_unique_opens,
            f.human_clicks,
            f.human_unique_clicks,
        ),
        ClassFilter::All => (f.opens, f.unique_opens, f.clicks, f.unique_clicks),
    };
    let cells = [
        ("sent", f.sent.to_string()),
        ("delivered", f.delivered.to_string()),
        ("opens", opens.to_string()),
        ("unique-opens", uopens.to_string()),
        ("clicks", clicks.to_string()),
        ("unique-clicks", uclicks.to_string()),
        ("open-rate", pct(f.open_rate)),
        ("click-rate", pct(f.click_rate)),
        ("click-to-open", pct(f.click_to_open)),
        ("bounce-rate", pct(f.bounce_rate)),
        ("replies", f.replies.to_string()),
        ("reply-rate", pct(f.reply_rate)),
    ];
    html! {
        @for (name, value) in &cells {
            @if name == &"bounce-rate" {
                td class=(name) title={ (f.bounced) " bounced" } { (value) }
            } @else {
                td class=(name) { (value) }
            }
        }
    }
}

/// A count of the page's mode: people's or all events'.
fn of_mode(class: ClassFilter, human: i64, all: i64) -> i64 {
    match class {
        ClassFilter::Human => human,
        ClassFilter::All => all,
    }
}

pub async fn index(
    ctx: web::Data<Base>,
    req: HttpRequest,
    q: web::Query<ClassQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match session(&ctx, &req).await? {
        Session::User(u) => u,
        Session::Invalid => return Ok(bad_cookie(&ctx)),
        Session::None => {
            return Ok(html(
                StatusCode::OK,
                layout("Sign in", None, sign_in_form(None)),
            ))
        }
    };
    let class = class_of(&q);
    let filter = ReportFilter {
        class,
        ..ReportFilter::default()
    };
    let client = ctx.pool.get().await?;
    let rows = report::templates(&**client, Viewer::from(&user), &filter).await?;
    let total = overview::total(&rows.iter().map(|r| &r.figures).collect::<Vec<_>>());
    let body = html! {
        h1 { "Templates" }
        (switch("/insights", class))
        @if !rows.is_empty() {
            (overview::tiles(&total))
        }
        (overview::boxed(table("templates", figure_headers(), html! {
            @for r in &rows {
                @let scope = r.scope.to_string();
                tr data-template=(r.template) data-scope=(scope) {
                    td class="key" {
                        a href={
                            "/insights/templates/" (url_part(&r.template))
                            "?scope=" (url_part(&scope)) "&class=" (class_name(class))
                        } { (r.template) }
                    }
                    (figure_cells(&r.figures, class))
                }
            }
            @if rows.is_empty() {
                tr { td colspan="13" { "Nothing sent yet." } }
            }
        })))
    };
    Ok(html(StatusCode::OK, layout("Templates", Some(&user), body)))
}

fn class_name(c: ClassFilter) -> &'static str {
    match c {
        ClassFilter::Human => "human",
        ClassFilter::All => "all",
    }
}

/// The signed-in user, or the answer for who is not.
pub(super) async fn signed_in(
    ctx: &Base,
    req: &HttpRequest,
) -> Result<Result<User, HttpResponse>, PageError> {
    Ok(match session(ctx, req).await? {
        Session::User(u) => Ok(u),
        Session::Invalid => Err(bad_cookie(ctx)),
        Session::None => Err(to_sign_in()),
    })
}

pub async fn template(
    ctx: web::Data<Base>,
    req: HttpRequest,
    key: web::Path<String>,
    q: web::Query<ClassQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let class = class_of(&q);
    let viewer = Viewer::from(&user);
    let scope = match q.scope.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<report::TemplateScope>()
                .map_err(|_| PageError::NotFound)?,
        ),
        None => None,
    };
    let filter = ReportFilter {
        class,
        scope,
        ..ReportFilter::default()
    };
    let client = ctx.pool.get().await?;
    let detail = report::template(&**client, viewer, &key, &filter)
        .await?
        .ok_or(PageError::NotFound)?;
    let points: Vec<Point> = detail
        .daily
        .iter()
        .map(|d| Point {
            day: d.day.to_string(),
            opens: of_mode(class, d.figures.human_opens, d.figures.opens),
            clicks: of_mode(class, d.figures.human_clicks, d.figures.clicks),
        })
        .collect();
    let recent = messages::list(
        &**client,
        viewer,
        &ListQuery {
            template: Some(key.to_string()),
            limit: Some(50),
            ..ListQuery::default()
        },
    )
    .await?;
    let scope_text = detail.row.scope.to_string();
    let base = format!(
        "/insights/templates/{}?scope={}",
        url_part(&key),
        url_part(&scope_text)
    );
    let clickmap = format!(
        "/insights/templates/{}/clickmap?scope={}&class={}",
        url_part(&key),
        url_part(&scope_text),
        class_name(class)
    );
    // People only: a client seen only by machines is no row of it.
    let clients: Vec<_> = detail
        .clients
        .iter()
        .filter(|c| class == ClassFilter::All || c.human_opens > 0)
        .collect();
    let links: Vec<_> = detail
        .top_links
        .iter()
        .filter(|l| class == ClassFilter::All || l.human_clicks > 0)
        .collect();
    let body = html! {
        h1 { "Template " span id="template-key" { (detail.row.template) } }
        p class="views" {
            a id="view-clickmap" href=(clickmap) { "Click map" }
            a id="view-compare" href={
                "/insights/compare?t=" (url_part(&format!("{scope_text}:{}", detail.row.template)))
                "&class=" (class_name(class))
            } { "Compare" }
            a id="view-messages" href={ "/insights/messages?q=" (url_part(&detail.row.template)) } { "All its messages" }
        }
        (switch(&base, class))
        (template_views(&key, &scope_text, class))
        (overview::tiles(&detail.row.figures))
        (overview::boxed(table("figures", figure_headers(), html! {
            tr { td class="key" { (detail.row.template) } (figure_cells(&detail.row.figures, class)) }
        })))
        h2 { "Opens and clicks per day of sending" }
        (chart::daily_svg(&points))
        h2 { "Top links" }
        (overview::boxed(table("links", html! {
            th { "Link" } th { "Clicks" } th { "Unique clicks" }
        }, html! {
            @for l in &links {
                tr {
                    td class="l url" {
                        (l.url) " "
                        a class="link-people" href={
                            "/insights/templates/" (url_part(&key)) "/people?scope="
                            (url_part(&scope_text)) "&class=" (class_name(class))
                            "&kind=click&url=" (url_part(&l.url))
                        } { "who clicked" }
                    }
                    td class="clicks" { (of_mode(class, l.human_clicks, l.clicks)) }
                    td class="unique-clicks" { (of_mode(class, l.human_unique_clicks, l.unique_clicks)) }
                }
            }
        })))
        h2 { "Mail clients and devices" }
        (overview::boxed(table("clients", html! {
            th { "Client" } th class="l" { "Device" } th { "Opens" } th { "Unique opens" }
        }, html! {
            @for c in &clients {
                tr {
                    td { (if c.client.is_empty() { "unknown" } else { &c.client }) }
                    td class="l" { (c.device) }
                    td class="opens" { (of_mode(class, c.human_opens, c.opens)) }
                    td class="unique-opens" { (of_mode(class, c.human_unique_opens, c.unique_opens)) }
                }
            }
        })))
        h2 { "Messages" }
        (message_list::table(&recent, class))
    };
    Ok(html(
        StatusCode::OK,
        layout(&detail.row.template, Some(&user), body),
    ))
}

pub async fn message(
    ctx: web::Data<Base>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let id = uuid::Uuid::parse_str(id.trim()).map_err(|_| PageError::NotFound)?;
    let client = ctx.pool.get().await?;
    let m = messages::detail(&**client, Viewer::from(&user), id)
        .await?
        .ok_or(PageError::NotFound)?;
    let s = &m.summary;
    let scope = match s.team_id {
        Some(t) => report::TemplateScope::Team(t),
        None => report::TemplateScope::Sender(s.sender_id),
    };
    let rules: Vec<Rule> = m
        .copies
        .iter()
        .flat_map(|c| &c.timeline)
        .filter_map(|e| e.reason.as_deref().and_then(Rule::of_reason))
        .collect();
    let body = html! {
        h1 id="subject" { (s.subject.as_deref().unwrap_or("(no subject)")) }
        p {
            "Template "
            a href={
                "/insights/templates/" (url_part(&s.template))
                "?scope=" (url_part(&scope.to_string()))
            } { (s.template) }
            " \u{b7} from " (s.sender) " \u{b7} " (s.visibility) " \u{b7} "
            (s.created_at.format("%Y-%m-%d %H:%M:%S UTC"))
        }
        p class="views" {
            a id="view-people" href={ "/insights/messages/" (s.id) "/people" } { "People who engaged" }
            " \u{b7} "
            a id="export-events" download href={ "/api/exports/messages/" (s.id) "/events?class=all" } { "Export events (CSV)" }
        }
        (window_notice(&rules, &ctx.settings))
        @for c in &m.copies {
            section class="copy" {
                h2 { (c.recipient) }
                p { "Status: " span class="status" { (c.status) } }
                table class="timeline" {
                    thead {
                        tr {
                            th class="l" {} th class="l" { "When" } th class="l" { "Event" }
                            th class="l" { "Class" } th class="l" { "Rule" }
                            th class="l" { "Reason / detail" }
                        }
                    }
                    tbody {
                        @for e in &c.timeline {
                            (timeline_row(e))
                        }
                    }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout(s.subject.as_deref().unwrap_or("Message"), Some(&user), body),
    ))
}

/// The views of one template beside its report: who engaged, where, and the CSV exports of
/// the report (and each of its parts), the people and the events, in the page's mode.
fn template_views(key: &str, scope: &str, class: ClassFilter) -> Markup {
    let q = format!("scope={}&class={}", url_part(scope), class_name(class));
    let key = url_part(key);
    html! {
        p class="views" {
            a id="view-people" href={ "/insights/templates/" (key) "/people?" (q) } { "People who engaged" }
            " \u{b7} "
            a id="view-geography" href={ "/insights/templates/" (key) "/geography?" (q) } { "Geography" }
            " \u{b7} Export CSV: "
            a id="export-report" download href={ "/api/exports/templates?" (q) } { "report" }
            " "
            a id="export-people" download href={ "/api/exports/templates/" (key) "/people?" (q) } { "people" }
            " "
            a id="export-events" download href={ "/api/exports/templates/" (key) "/events?" (q) } { "events" }
            " "
            a id="export-daily" download href={ "/api/exports/templates/" (key) "/daily?" (q) } { "daily" }
            " "
            a id="export-links" download href={ "/api/exports/templates/" (key) "/links?" (q) } { "links" }
            " "
            a id="export-clients" download href={ "/api/exports/templates/" (key) "/clients?" (q) } { "clients" }
        }
    }
}

/// One event of a copy's timeline: people's events in colour, machines' greyed, with the rule
/// that decided and the reason, link and client behind it.
fn timeline_row(e: &messages::TimelineEvent) -> Markup {
    let row_class = match e.human {
        Some(true) => "human",
        Some(false) => "machine",
        None => "delivery",
    };
    let detail: Vec<&str> = [&e.reason, &e.url, &e.client, &e.device, &e.os]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    // The rule's name, as the README lists it, for every event a rule decided.
    let rule = e
        .reason
        .as_deref()
        .and_then(Rule::of_reason)
        .map(Rule::name)
        .unwrap_or("");
    html! {
        tr class={ "event " (row_class) " kind-" (e.kind) } {
            td class="l" { (icon(e.icon)) }
            td class="l" { (e.at.format("%Y-%m-%d %H:%M:%S")) }
            td class="l" { (e.kind) }
            td class="l cls" { (e.class.as_deref().unwrap_or("")) }
            td class="l rule" { (rule) }
            td class="l reason" { (detail.join(" \u{b7} ")) }
        }
    }
}

/// "1 open" / "2 opens".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The verb agreeing with `n`: "counts" / "count".
fn agree(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// "within 5 s of delivery", or "right after delivery" when the window is now off.
fn within(window: std::time::Duration) -> String {
    if window.is_zero() {
        "right after delivery".into()
    } else {
        format!("within {} s of delivery", window.as_secs_f64())
    }
}

/// The notice above a message's timelines when some of its events fell inside a timing window:
/// a sender testing their own mail at once sees why their open or click counts as a machine.
fn window_notice(rules: &[Rule], settings: &crate::config::Settings) -> Markup {
    let n = |rule: Rule| rules.iter().filter(|r| **r == rule).count();
    let mut parts = Vec::new();
    let opens = n(Rule::PrefetchWindow);
    if opens > 0 {
        parts.push(format!(
            "{} came {} and {} as prefetch (the prefetch window, setting PREFETCH_WINDOW)",
            count(opens, "open", "opens"),
            within(settings.track.prefetch_window),
            agree(opens, "counts", "count"),
        ));
    }
    let clicks = n(Rule::ClickAfterDelivery);
    if clicks > 0 {
        parts.push(format!(
            "{} came {} and {} as scanner (the click-after-delivery window, setting \
             CLICK_SCANNER_WINDOW)",
            count(clicks, "click", "clicks"),
            within(settings.track.click_scanner_window),
            agree(clicks, "counts", "count"),
        ));
    }
    let unknown = n(Rule::UnknownDeliveryWindow);
    if unknown > 0 {
        parts.push(format!(
            "{} came within {PREFETCH_SECONDS} s of a delivery the tracker had not seen yet and \
             {} as prefetch (the unknown-delivery window)",
            count(unknown, "event", "events"),
            agree(unknown, "counts", "count"),
        ));
    }
    let swept = n(Rule::Sweep);
    if swept > 0 {
        parts.push(format!(
            "{} {} to a run of {SWEEP_CLICKS} or more clicks within {SWEEP_SECONDS} s and {} \
             as scanner (the sweep rule)",
            count(swept, "click", "clicks"),
            agree(swept, "belongs", "belong"),
            agree(swept, "counts", "count"),
        ));
    }
    if parts.is_empty() {
        return html! {};
    }
    html! {
        p class="notice" id="window-notice" {
            (parts.join("; "))
            ". These are the timings of mail servers and link scanners, not of people: open the \
             message or click a link later to see a human event. The README, section \
             \u{201c}Who opened and clicked\u{201d}, lists every rule."
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub token: String,
}

pub async fn login(
    ctx: web::Data<Base>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    // Login CSRF: another site must not sign a victim's browser in as the attacker.
    if !same_site_post(&ctx, &req) {
        return cross_site_refused();
    }
    let token = form.token.trim();
    match user_for_token(&ctx, token).await {
        Ok(Some(_)) => see_other("/insights")
            .insert_header((
                "Set-Cookie",
                // Only a token that authenticated reaches here: base64url, safe as a value.
                format!(
                    "{COOKIE}={token}; {}; Max-Age=2592000",
                    cookie_attributes(&ctx)
                ),
            ))
            .finish(),
        Ok(None) => html(
            StatusCode::UNAUTHORIZED,
            layout(
                "Sign in",
                None,
                sign_in_form(Some("That token is not valid.")),
            ),
        ),
        Err(e) => PageError::from(e).error_response(),
    }
}

pub async fn logout(ctx: web::Data<Base>, req: HttpRequest) -> HttpResponse {
    if !same_site_post(&ctx, &req) {
        return cross_site_refused();
    }
    see_other("/insights")
        .insert_header(("Set-Cookie", clear_cookie(&ctx)))
        .finish()
}

/// Adds the `/insights` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/insights", web::get().to(index))
        .route("/insights/", web::get().to(index))
        .route("/insights/login", web::post().to(login))
        .route("/insights/logout", web::post().to(logout))
        .route("/insights/templates/{key}", web::get().to(template))
        .route(
            "/insights/templates/{key}/clickmap",
            web::get().to(clickmap::page),
        )
        .route(
            "/insights/templates/{key}/clickmap/frame",
            web::get().to(clickmap::frame),
        )
        .route("/insights/compare", web::get().to(compare::page))
        .route("/insights/messages", web::get().to(message_list::page))
        .route("/insights/messages/{id}", web::get().to(message))
        .route("/favicon.svg", web::get().to(overview::favicon))
        .route("/favicon.ico", web::get().to(overview::favicon))
        .configure(people::routes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_notice_names_the_windows_met() {
        use crate::config::{Settings, Sources};
        let defaults = Settings::from_sources(&Sources::default()).unwrap();
        assert_eq!(
            window_notice(&[Rule::ImageProxy, Rule::AppleRange], &defaults).into_string(),
            ""
        );
        let notice = window_notice(
            &[
                Rule::PrefetchWindow,
                Rule::ClickAfterDelivery,
                Rule::ClickAfterDelivery,
                Rule::Sweep,
            ],
            &defaults,
        )
        .into_string();
        assert!(
            notice.contains("1 open came within 5 s of delivery and counts as prefetch"),
            "{notice}"
        );
        assert!(
            notice.contains("2 clicks came within 10 s of delivery and count as scanner"),
            "{notice}"
        );
        assert!(notice.contains("1 click belongs to a run of 3 or more clicks within 5 s"));
        assert!(notice.contains("PREFETCH_WINDOW") && notice.contains("CLICK_SCANNER_WINDOW"));
        let short =
            Settings::from_sources(&Sources::from_pairs([("CLICK_SCANNER_WINDOW", "0")])).unwrap();
        let notice = window_notice(&[Rule::ClickAfterDelivery], &short).into_string();
        assert!(
            notice.contains("1 click came right after delivery"),
            "{notice}"
        );
    }

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(url_part("a b/é"), "a%20b%2F%C3%A9");
    }
}
