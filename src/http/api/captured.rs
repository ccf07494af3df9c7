//! The capture sink's HTTP side: a user lists the copies of their own messages that went to
//! the sink, and reads one's raw source.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/captured", web::get().to(list))
        .route("/api/captured/{copy_id}/raw", web::get().to(raw));
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

async fn list(
    ctx: web::Data<Base>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            "SELECT c.id, c.message_id, c.recipient, m.envelope_from, m.subject,
                    m.header_message_id, m.template_key, c.delivered_at, octet_length(c.body)
             FROM copies c JOIN messages m ON m.id = c.message_id
             WHERE m.sender_id = $1 AND c.delivered_via = 'capture'
             ORDER BY c.delivered_at DESC, c.id LIMIT $2",
            &[&caller.0.id, &limit],
        )
        .await?;
    let items: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "copy_id": r.get::<_, Uuid>(0),
                "message_id": r.get::<_, Uuid>(1),
                "recipient": r.get::<_, String>(2),
                "envelope_from": r.get::<_, String>(3),
                "subject": r.get::<_, Option<String>>(4),
                "header_message_id": r.get::<_, Option<String>>(5),
                "template_key": r.get::<_, String>(6),
                "delivered_at": r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(7),
                "size_bytes": r.get::<_, Option<i32>>(8),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "captured": items })))
}

async fn raw(
    ctx: web::Data<Base>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound("captured copy");
    let copy_id = path.parse::<Uuid>().map_err(|_| not_found())?;
    let client = ctx.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT c.body FROM copies c JOIN messages m ON m.id = c.message_id
             WHERE c.id = $1 AND m.sender_id = $2 AND c.delivered_via = 'capture'",
            &[&copy_id, &caller.0.id],
        )
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("message/rfc822")
        .body(row.get::<_, Option<Vec<u8>>>(0).unwrap_or_default()))
}
