//! `GET /api/messages`, `GET /api/messages/{id}`, `POST /api/messages/{id}/archive`,
//! `DELETE /api/messages/{id}`. The data functions are shared with the Insights page.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::accounts::visibility::{visible, Params, Viewer};
use crate::accounts::Role;
use crate::base::Base;
use crate::classify::hindsight::classified_events_sql;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// CRM deal.
    pub deal: Option<String>,
    /// CRM lead.
    pub lead: Option<String>,
    /// CRM project.
    pub project: Option<String>,
    /// A recipient address (case-insensitive).
    pub recipient: Option<String>,
    /// Template key.
    pub template: Option<String>,
    /// Text found in the subject, a recipient's address or the template key (case-insensitive).
    pub q: Option<String>,
    /// `true`: archived messages too; `only`: archived ones only. Default: not archived.
    pub archived: Option<String>,
    /// At most this many (1-1000, default 100).
    pub limit: Option<i64>,
    /// Skip this many.
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageSummary {
    pub id: Uuid,
    pub template: String,
    pub subject: Option<String>,
    pub sender_id: i64,
    pub sender: String,
    /// The team the message was sent under; with the sender, whose template key it is.
    pub team_id: Option<i64>,
    pub visibility: String,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    pub created_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
    pub copies: i64,
    pub opens: i64,
    pub human_opens: i64,
    pub clicks: i64,
    pub human_clicks: i64,
}

const SUMMARY_COLUMNS: &str = "m.id, m.template_key, m.subject, m.sender_id, u.email,
    m.visibility, m.deal, m.lead, m.project, m.created_at, m.archived_at,
    (SELECT count(*) FROM copies c WHERE c.message_id = m.id),
    coalesce(st.opens, 0), coalesce(st.human_opens, 0), coalesce(st.clicks, 0),
    coalesce(st.human_clicks, 0), m.team_id";

const SUMMARY_FROM: &str = "messages m JOIN users u ON u.id = m.sender_id
    LEFT JOIN LATERAL (
        SELECT sum(opens)::bigint AS opens, sum(human_opens)::bigint AS human_opens,
               sum(clicks)::bigint AS clicks, sum(human_clicks)::bigint AS human_clicks
        FROM insights_copy_state s WHERE s.message_id = m.id) st ON true";

fn summary(r: &tokio_postgres::Row) -> MessageSummary {
    MessageSummary {
        id: r.get(0),
        template: r.get(1),
        subject: r.get(2),
        sender_id: r.get(3),
        sender: r.get(4),
        visibility: r.get(5),
        deal: r.get(6),
        lead: r.get(7),
        project: r.get(8),
        created_at: r.get(9),
        archived_at: r.get(10),
        copies: r.get(11),
        opens: r.get(12),
        human_opens: r.get(13),
        clicks: r.get(14),
        human_clicks: r.get(15),
        team_id: r.get(16),
    }
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `text` with LIKE's wildcards and escape character taken literally.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The messages `viewer` may see, newest first.
pub async fn list(
    client: &impl GenericClient,
    viewer: Viewer,
    q: &ListQuery,
) -> Result<Vec<MessageSummary>, ApiError> {
    let mut p = Params::default();
    let mut w = vec![visible("m", viewer, &mut p)];
    for (col, v) in [
        ("m.deal", &q.deal),
        ("m.lead", &q.lead),
        ("m.project", &q.project),
        ("m.template_key", &q.template),
    ] {
        if let Some(v) = given(v) {
            w.push(format!("{col} = {}", p.push(v.to_string())));
        }
    }
    if let Some(r) = given(&q.recipient) {
        w.push(format!(
            "EXISTS (SELECT 1 FROM copies c WHERE c.message_id = m.id
                     AND lower(c.recipient) = lower({}))",
            p.push(r.to_string())
        ));
    }
    if let Some(text) = given(&q.q) {
        let like = p.push(format!("%{}%", like_escaped(text)));
        w.push(format!(
            "(m.subject ILIKE {like} OR m.template_key ILIKE {like}
              OR EXISTS (SELECT 1 FROM copies c WHERE c.message_id = m.id
                         AND c.recipient ILIKE {like}))"
        ));
    }
    match given(&q.archived) {
        None | Some("false") => w.push("m.archived_at IS NULL".into()),
        Some("true") => {}
        Some("only") => w.push("m.archived_at IS NOT NULL".into()),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`archived` must be `false`, `true` or `only`".into(),
            ))
        }
    }
    let limit = p.push(q.limit.unwrap_or(100).clamp(1, 1000));
    let offset = p.push(q.offset.unwrap_or(0).max(0));
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM {SUMMARY_FROM} WHERE {}
         ORDER BY m.created_at DESC, m.id LIMIT {limit} OFFSET {offset}",
        w.join(" AND ")
    );
    let rows = client.query(&sql, &p.refs()).await?;
    Ok(rows.iter().map(summary).collect())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// `eye` for opens, `cursor` for clicks, null for delivery events
    pub icon: Option<&'static str>,
    pub class: Option<String>,
    /// true for people (`human`, `proxy`), false for machines, null for delivery events
    pub human: Option<bool>,
    pub reason: Option<String>,
    pub url: Option<String>,
    pub client: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CopyDetail {
    pub id: Uuid,
    pub recipient: String,
    pub status: String,
    pub attempts: i32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub opens: i64,
    pub human_opens: i64,
    pub clicks: i64,
    pub human_clicks: i64,
    pub first_open_at: Option<DateTime<Utc>>,
    pub first_human_open_at: Option<DateTime<Utc>>,
    pub first_click_at: Option<DateTime<Utc>>,
    pub first_human_click_at: Option<DateTime<Utc>>,
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub summary: MessageSummary,
    pub copies: Vec<CopyDetail>,
}

/// The message with its copies and their timelines, if `viewer` may see it.
pub async fn detail(
    client: &impl GenericClient,
    viewer: Viewer,
    id: Uuid,
) -> Result<Option<MessageDetail>, ApiError> {
    let mut p = Params::default();
    let vis = visible("m", viewer, &mut p);
    let idp = p.push(id);
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM {SUMMARY_FROM} WHERE m.id = {idp} AND {vis}");
    let Some(row) = client.query_opt(&sql, &p.refs()).await? else {
        return Ok(None);
    };
    let summary = summary(&row);
    let copies = client
        .query(
            "SELECT c.id, c.recipient, c.status, c.attempts, c.delivered_at, c.last_error,
                    coalesce(s.opens, 0)::bigint, coalesce(s.human_opens, 0)::bigint,
                    coalesce(s.clicks, 0)::bigint, coalesce(s.human_clicks, 0)::bigint,
                    s.first_open_at, s.first_human_open_at, s.first_click_at,
                    s.first_human_click_at
             FROM copies c LEFT JOIN insights_copy_state s ON s.copy_id = c.id
             WHERE c.message_id = $1 ORDER BY lower(c.recipient), c.id",
            &[&id],
        )
        .await?;
    // The same hindsight classification the reports counted with.
    let classified = classified_events_sql("SELECT id FROM copies WHERE message_id = $1");
    let url = crate::queue::links::url_sql("x.message_id", "x.link_idx");
    let events = client
        .query(
            &format!(
                "SELECT x.id, x.copy_id, x.occurred_at, x.kind, x.final_class, x.final_reason,
                        CASE WHEN x.link_idx IS NOT NULL THEN {url} END,
                        x.client, x.device, x.os
                 FROM ({classified}) x
                 ORDER BY x.occurred_at, x.seq"
            ),
            &[&id],
        )
        .await?;
    let mut out: Vec<CopyDetail> = copies
        .iter()
        .map(|r| CopyDetail {
            id: r.get(0),
            recipient: r.get(1),
            status: r.get(2),
            attempts: r.get(3),
            delivered_at: r.get(4),
            last_error: r.get(5),
            opens: r.get(6),
            human_opens: r.get(7),
            clicks: r.get(8),
            human_clicks: r.get(9),
            first_open_at: r.get(10),
            first_human_open_at: r.get(11),
            first_click_at: r.get(12),
            first_human_click_at: r.get(13),
            timeline: Vec::new(),
        })
        .collect();
    for e in &events {
        let copy_id: Uuid = e.get(1);
        let kind: String = e.get(3);
        let class: Option<String> = e.get(4);
        let event = TimelineEvent {
            id: e.get(0),
            at: e.get(2),
            icon: match kind.as_str() {
                "open" => Some("eye"),
                "click" => Some("cursor"),
                "reply" => Some("reply"),
                _ => None,
            },
            human: class.as_deref().map(|c| c == "human" || c == "proxy"),
            kind,
            class,
            reason: e.get(5),
            url: e.get(6),
            client: e.get(7),
            device: e.get(8),
            os: e.get(9),
        };
        if let Some(c) = out.iter_mut().find(|c| c.id == copy_id) {
            c.timeline.push(event);
        }
    }
    Ok(Some(MessageDetail {
        summary,
        copies: out,
    }))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| ApiError::NotFound("message"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageSummary>,
}

/// Messages the caller may see, newest first.
#[utoipa::path(get, path = "/api/messages", tag = "messages", operation_id = "list_messages",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = MessageList),
        (status = 400, description = "a bad query string"),
    ))]
pub async fn list_handler(
    ctx: web::Data<Base>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let messages = list(&**client, caller.viewer(), &q).await?;
    Ok(HttpResponse::Ok().json(MessageList { messages }))
}

/// A message, its copies with status, and each copy's timeline of events.
#[utoipa::path(get, path = "/api/messages/{id}", tag = "messages", operation_id = "get_message",
    params(("id" = Uuid, Path, description = "the message id")),
    responses(
        (status = 200, description = "OK", body = MessageDetail),
        (status = 404, description = "no such message the caller may see"),
    ))]
pub async fn get_handler(
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let client = ctx.pool.get().await?;
    match detail(&**client, caller.viewer(), id).await? {
        Some(m) => Ok(HttpResponse::Ok().json(m)),
        None => Err(ApiError::NotFound("message")),
    }
}

/// Locks the message if the caller may see it; errs 404 when not visible, 403 when visible but
/// neither sent by the caller nor sent under the team the caller is an admin of. An admin
/// changes their own team's mail only: visibility decides what they see, as for everyone.
async fn lock_for_change(
    tx: &tokio_postgres::Transaction<'_>,
    caller: &Caller,
    id: Uuid,
) -> Result<(), ApiError> {
    let mut p = Params::default();
    let vis = visible("m", caller.viewer(), &mut p);
    let idp = p.push(id);
    let row = tx
        .query_opt(
            &format!(
                "SELECT m.sender_id, m.team_id FROM messages m
                 WHERE m.id = {idp} AND {vis} FOR UPDATE"
            ),
            &p.refs(),
        )
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    let (sender, team): (i64, Option<i64>) = (row.get(0), row.get(1));
    let team_admin = caller.0.role == Role::Admin && team.is_some() && team == caller.0.team_id;
    if sender != caller.0.id && !team_admin {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Archived {
    pub id: Uuid,
    pub archived_at: DateTime<Utc>,
}

/// Hide the message from default listings (sender or admin); reports still count it.
#[utoipa::path(post, path = "/api/messages/{id}/archive", tag = "messages",
    operation_id = "archive_message",
    params(("id" = Uuid, Path, description = "the message id")),
    responses(
        (status = 200, description = "archived (again: the first time is kept)", body = Archived),
        (status = 403, description = "neither the sender nor an admin of its team"),
        (status = 404, description = "no such message the caller may see"),
    ))]
pub async fn archive_handler(
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    lock_for_change(&tx, &caller, id).await?;
    let at = crate::queue::archive(&*tx, id).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(Archived {
        id,
        archived_at: at,
    }))
}

/// Delete the message, its copies and events; the rollups are corrected (sender or admin).
#[utoipa::path(delete, path = "/api/messages/{id}", tag = "messages",
    operation_id = "delete_message",
    params(("id" = Uuid, Path, description = "the message id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "neither the sender nor an admin of its team"),
        (status = 404, description = "no such message the caller may see"),
    ))]
pub async fn delete_handler(
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    lock_for_change(&tx, &caller, id).await?;
    crate::erasure::erase_message(&tx, id).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
