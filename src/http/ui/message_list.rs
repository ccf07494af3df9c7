//! `/insights/messages`: every message the viewer may see, newest first, searchable by subject,
//! recipient or template key, fifty a page. Plain links and a GET form: no script needed.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    class_name, html as respond, layout, of_mode, overview, signed_in, switch, url_part, PageError,
};
use crate::accounts::visibility::Viewer;
use crate::base::Base;
use crate::http::api::messages::{self, ListQuery, MessageSummary};
use crate::insights::report::ClassFilter;

/// Messages a page.
const PAGE: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    /// From 1.
    pub page: Option<i64>,
    pub class: Option<String>,
}

/// A table of messages with the opens and clicks of the page's mode.
pub fn table(rows: &[MessageSummary], class: ClassFilter) -> Markup {
    overview::boxed(html! {
        table id="messages" {
            thead {
                tr {
                    th { "Subject" } th class="l" { "Template" } th class="l" { "Sender" }
                    th class="l" { "Sent at" } th { "Copies" } th { "Opens" } th { "Clicks" }
                }
            }
            tbody {
                @for m in rows {
                    tr data-message=(m.id) {
                        td class="key" {
                            a class="message" href={ "/insights/messages/" (m.id) } {
                                (m.subject.as_deref().unwrap_or("(no subject)"))
                            }
                        }
                        td class="l key" { (m.template) }
                        td class="l" { (m.sender) }
                        td class="l" { (m.created_at.format("%Y-%m-%d %H:%M")) }
                        td class="copies" { (m.copies) }
                        td class="opens" { (of_mode(class, m.human_opens, m.opens)) }
                        td class="clicks" { (of_mode(class, m.human_clicks, m.clicks)) }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="7" { "No message matches." } }
                }
            }
        }
    })
}

pub async fn page(
    ctx: web::Data<Base>,
    req: HttpRequest,
    q: web::Query<SearchQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match signed_in(&ctx, &req).await? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let class = match q.class.as_deref() {
        Some("all") => ClassFilter::All,
        _ => ClassFilter::Human,
    };
    let page = q.page.unwrap_or(1).max(1);
    let text = q.q.as_deref().unwrap_or("").trim().to_string();
    let client = ctx.pool.get().await?;
    let mut rows = messages::list(
        &**client,
        Viewer::from(&user),
        &ListQuery {
            q: Some(text.clone()),
            limit: Some(PAGE + 1),
            offset: Some((page - 1) * PAGE),
            ..ListQuery::default()
        },
    )
    .await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let here = |p: i64| {
        format!(
            "/insights/messages?q={}&page={p}&class={}",
            url_part(&text),
            class_name(class)
        )
    };
    let body = html! {
        h1 { "Messages" }
        form class="search" method="get" action="/insights/messages" role="search" {
            input type="search" name="q" id="search" value=(text)
                placeholder="subject, recipient or template";
            input type="hidden" name="class" value=(class_name(class));
            " "
            button type="submit" id="search-go" { "Search" }
        }
        (switch(&format!("/insights/messages?q={}", url_part(&text)), class))
        (table(&rows, class))
        p class="pages" {
            @if page > 1 {
                a id="page-prev" href=(here(page - 1)) { "\u{2190} newer" } " "
            }
            "Page " (page)
            @if more {
                " " a id="page-next" href=(here(page + 1)) { "older \u{2192}" }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout("Messages", Some(&user), body),
    ))
}
