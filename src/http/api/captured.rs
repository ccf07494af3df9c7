//! The capture sink's HTTP side: a user lists the copies of their own messages that went to
//! the sink, and reads one's raw source.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many, newest first (1-1000, default 100).
    limit: Option<i64>,
}

/// A copy the capture sink received.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapturedCopy {
    pub copy_id: Uuid,
    pub message_id: Uuid,
    pub recipient: String,
    pub envelope_from: String,
    pub subject: Option<String>,
    pub header_message_id: Option<String>,
    pub template_key: String,
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    pub size_bytes: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CapturedList {
    pub captured: Vec<CapturedCopy>,
}

/// Copies the capture sink received for the caller's messages (when UPSTREAM_URL is unset).
#[utoipa::path(get, path = "/api/captured", tag = "captured", operation_id = "list_captured",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = CapturedList),
        (status = 400, description = "a bad query string"),
    ))]
pub async fn list(
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
    let captured = rows
        .iter()
        .map(|r| CapturedCopy {
            copy_id: r.get(0),
            message_id: r.get(1),
            recipient: r.get(2),
            envelope_from: r.get(3),
            subject: r.get(4),
            header_message_id: r.get(5),
            template_key: r.get(6),
            delivered_at: r.get(7),
            size_bytes: r.get(8),
        })
        .collect();
    Ok(HttpResponse::Ok().json(CapturedList { captured }))
}

/// The raw source of one captured copy.
#[utoipa::path(get, path = "/api/captured/{copy_id}/raw", tag = "captured",
    operation_id = "get_captured_raw",
    params(("copy_id" = Uuid, Path, description = "the copy's id")),
    responses(
        (status = 200, description = "the copy as delivered", content_type = "message/rfc822", body = String),
        (status = 404, description = "no such captured copy of the caller's messages"),
    ))]
pub async fn raw(
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
