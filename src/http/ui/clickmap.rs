//! `/insights/templates/{key}/clickmap`: the template's newest visible message as its recipients
//! saw it, in a sandboxed frame (no scripts, no remote loads), each tracked link marked with its
//! share of clicks and its count; the same figures as a table below, for readers without frames.
//! The counts are by link index over the message's copies, with the classes the reports use.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{
    class_name, class_of, html as respond, layout, overview, signed_in, switch, url_part,
    ClassQuery, PageError,
};
use crate::accounts::visibility::{visible, Params, Viewer};
use crate::base::Base;
use crate::classify::hindsight::{classified_events_sql, is_human_sql};
use crate::insights::clickmap::{self, LinkCount};
use crate::insights::report::{ClassFilter, TemplateScope};
use crate::rewrite::Rewriter;

/// The frame's policy: nothing loads but inline style and data: images; no script runs.
const FRAME_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
    form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox";

/// The newest message of the template in `scope` that `viewer` may see and that still has a
/// stored copy: its id, subject and one copy's bytes.
async fn newest_copy(
    client: &impl GenericClient,
    viewer: Viewer,
    key: &str,
    scope: TemplateScope,
) -> Result<Option<(Uuid, Option<String>, Vec<u8>)>, PageError> {
    let mut p = Params::default();
    let vis = visible("m", viewer, &mut p);
    let k = p.push(key.to_string());
    let scope_cond = match scope {
        TemplateScope::Team(t) => format!("m.team_id = {}", p.push(t)),
        TemplateScope::Sender(s) => format!("(m.team_id IS NULL AND m.sender_id = {})", p.push(s)),
    };
    let sql = format!(
        "SELECT m.id, m.subject, c.body FROM messages m
         JOIN LATERAL (SELECT body FROM copies c WHERE c.message_id = m.id AND c.body IS NOT NULL
                       ORDER BY c.id LIMIT 1) c ON true
         WHERE {vis} AND m.template_key = {k} AND {scope_cond}
         ORDER BY m.created_at DESC, m.id LIMIT 1"
    );
    let row = client
        .query_opt(&sql, &p.refs())
        .await
        .map_err(crate::http::errors::ApiError::from)?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// Clicks per link index of one message's copies (people's or all), with the hindsight classes
/// the timeline and the reports use. Only for a message the viewer may see.
async fn link_counts(
    client: &impl GenericClient,
    viewer: Viewer,
    message: Uuid,
    class: ClassFilter,
) -> Result<Vec<LinkCount>, PageError> {
    let mut p = Params::default();
    let id = p.push(message);
    let vis = visible("m", viewer, &mut p);
    let classified = classified_events_sql(&format!(
        "SELECT c.id FROM copies c JOIN messages m ON m.id = c.message_id
         WHERE c.message_id = {id} AND {vis}"
    ));
    let counted = match class {
        ClassFilter::Human => is_human_sql("x.final_class"),
        ClassFilter::All => "true".into(),
    };
    let sql = format!(
        "SELECT l.idx, l.url, count(x.id) FILTER (WHERE x.kind = 'click' AND {counted})
         FROM links l LEFT JOIN ({classified}) x ON x.link_idx = l.idx
         WHERE l.message_id = {id}
         GROUP BY l.idx, l.url ORDER BY l.idx"
    );
    let rows = client
        .query(&sql, &p.refs())
        .await
        .map_err(crate::http::errors::ApiError::from)?;
    Ok(rows
        .iter()
        .map(|r| LinkCount {
            index: r.get::<_, i32>(0) as u32,
            url: r.get(1),
            clicks: r.get(2),
        })
        .collect())
}

fn scope_of(q: &ClassQuery) -> Result<TemplateScope, PageError> {
    q.scope
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(PageError::NotFound)?
        .parse()
        .map_err(|_| PageError::NotFound)
}

pub async fn page(
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
    let scope = scope_of(&q)?;
    let viewer = Viewer::from(&user);
    let client = ctx.pool.get().await?;
    let found = newest_copy(&**client, viewer, &key, scope).await?;
    let base = format!(
        "/insights/templates/{}/clickmap?scope={}",
        url_part(&key),
        url_part(&scope.to_string())
    );
    let back = format!(
        "/insights/templates/{}?scope={}&class={}",
        url_part(&key),
        url_part(&scope.to_string()),
        class_name(class)
    );
    let Some((message, subject, _)) = found else {
        return Err(PageError::NotFound);
    };
    let counts = link_counts(&**client, viewer, message, class).await?;
    let total: i64 = counts.iter().map(|c| c.clicks).sum();
    let body = html! {
        h1 { "Click map of " span id="template-key" { (key.as_str()) } }
        p {
            a href=(back) { "Back to the template" } " \u{b7} message "
            a href={ "/insights/messages/" (message) } { (subject.as_deref().unwrap_or("(no subject)")) }
        }
        (switch(&base, class))
        p { "Each tracked link is marked with its share of "
            (match class { ClassFilter::Human => "people's clicks", ClassFilter::All => "all clicks" })
            " and its count, by its place in the message." }
        iframe id="clickmap" title="the message with its links' clicks"
            sandbox="" referrerpolicy="no-referrer"
            style="width:100%;height:32rem;border:1px solid #e2e8f0;background:#fff"
            src={ (base.replace("/clickmap?", "/clickmap/frame?")) "&class=" (class_name(class)) } {}
        h2 { "Links by place in the message" }
        (overview::boxed(html! {
            table id="clickmap-links" {
                thead { tr { th { "#" } th class="l" { "Link" } th { "Clicks" } th { "Share" } } }
                tbody {
                    @for c in &counts {
                        tr data-link=(c.index) {
                            td { (c.index + 1) }
                            td class="l url" { (c.url) }
                            td class="clicks" { (c.clicks) }
                            td class="share" { (clickmap::share(c.clicks, total)) }
                        }
                    }
                }
            }
        }))
    };
    Ok(respond(
        StatusCode::OK,
        layout(&format!("Click map of {key}"), Some(&user), body),
    ))
}

/// The framed document. Its own policy forbids every load but inline style and data: images,
/// and runs it sandboxed even when opened alone.
pub async fn frame(
    ctx: web::Data<Base>,
    rewriter: web::Data<Rewriter>,
    req: HttpRequest,
    key: web::Path<String>,
    q: web::Query<ClassQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let class = class_of(&q);
    let scope = scope_of(&q)?;
    let viewer = Viewer::from(&user);
    let client = ctx.pool.get().await?;
    let (message, _, raw) = newest_copy(&**client, viewer, &key, scope)
        .await?
        .ok_or(PageError::NotFound)?;
    let counts = link_counts(&**client, viewer, message, class).await?;
    let document = match clickmap::html_of(&raw) {
        Some(h) => clickmap::frame_document(
            &h,
            &ctx.settings.rewrite.public_url,
            &rewriter.keys,
            &counts,
        ),
        None => "<p>This message has no HTML part.</p>".into(),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Content-Security-Policy", FRAME_CSP))
        .insert_header(("X-Frame-Options", "SAMEORIGIN"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(document))
}
