//! CSV exports under `/api/exports`: the template report, every people list, and the events of
//! a template or a message with their class and reason. The same filters as the JSON routes;
//! the lists and events stream from PostgreSQL to the body (see [`crate::http::csv`]). A bearer
//! token or the Insights page's cookie, so that the page's buttons download them.

use actix_web::{web, HttpResponse};

use super::people::{message_audience, template_audience, ClassQuery, PeopleQuery};
use super::reports::ReportQuery;
use crate::base::Base;
use crate::http::auth::TokenOrCookie;
use crate::http::csv;
use crate::http::errors::ApiError;
use crate::insights::people::{self, Export};
use crate::insights::report;

/// The columns of the template report export.
const TEMPLATE_COLUMNS: &[&str] = &[
    "template",
    "scope",
    "name",
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
            let f = &r.figures;
            let mut out = vec![r.template.clone(), r.scope.to_string(), r.name.clone()];
            out.extend(
                [
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
                ]
                .map(|n| n.to_string()),
            );
            out.extend(
                [
                    f.open_rate,
                    f.click_rate,
                    f.click_to_open,
                    f.bounce_rate,
                    f.reply_rate,
                ]
                .map(rate),
            );
            out.extend(
                [f.hard_bounced, f.soft_bounced, f.complaints, f.unsubscribes]
                    .map(|n| n.to_string()),
            );
            out
        })
        .collect();
    Ok(csv::small("templates.csv", TEMPLATE_COLUMNS, &rows))
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
