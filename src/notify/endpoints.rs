//! `POST/GET/DELETE /api/webhooks`: endpoints per user (their own messages) or per team (what
//! the owner may see of the team's messages), and `GET /api/webhooks/{id}/deliveries` to see
//! what was sent and how it went.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use super::signing;
use crate::api::accounts::User;
use crate::api::auth::Caller;
use crate::api::errors::ApiError;
use crate::context::Context;

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "open.first",
    "open",
    "click",
    "delivered",
    "deferred",
    "bounced",
    "reply",
];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// An http:// or https:// URL of at most 2000 characters.
    pub url: String,
    /// Some of `open.first`, `open`, `click`, `delivered`, `deferred`, `bounced`, `reply`.
    pub event_types: Vec<String>,
    /// Also opens and clicks of machines (scanners, prefetches, Apple MPP).
    #[serde(default)]
    pub include_machine: bool,
    /// `user` (default: the caller's own messages) or `team` (what the caller may see of the
    /// team's).
    #[serde(default)]
    pub scope: Option<String>,
}

/// A new endpoint, with its signing secret shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    pub id: i64,
    pub url: String,
    pub scope: String,
    pub event_types: Vec<String>,
    pub include_machine: bool,
    /// `whsec_...`: the receiver verifies signatures with it.
    pub secret: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An endpoint with how its notifications went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: i64,
    pub url: String,
    pub scope: String,
    pub event_types: Vec<String>,
    pub include_machine: bool,
    pub failures_in_row: i32,
    pub disabled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Notifications waiting to be sent, sent, and given up on.
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// One notification to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: uuid::Uuid,
    pub event_type: String,
    pub event_id: uuid::Uuid,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    /// The receiver's last HTTP status.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    /// The signed JSON body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

fn validate(new: &NewEndpoint, user: &User) -> Result<String, String> {
    let url = new.url.trim();
    if url.len() > 2000 || !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("url must be an http:// or https:// URL of at most 2000 characters".into());
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("url must not contain spaces or control characters".into());
    }
    if new.event_types.is_empty() {
        return Err(format!(
            "event_types must name at least one of {EVENT_TYPES:?}"
        ));
    }
    if let Some(bad) = new
        .event_types
        .iter()
        .find(|t| !EVENT_TYPES.contains(&t.as_str()))
    {
        return Err(format!(
            "unknown event type `{bad}`; known: {EVENT_TYPES:?}"
        ));
    }
    let scope = new.scope.clone().unwrap_or_else(|| "user".into());
    match scope.as_str() {
        "user" => Ok(scope),
        "team" if user.team_id.is_some() => Ok(scope),
        "team" => Err("scope `team` needs the caller to belong to a team".into()),
        _ => Err("scope must be `user` or `team`".into()),
    }
}

/// Refuses a URL that names an internal target (loopback, private, link-local, reserved, or a
/// name that resolves to one). Deliveries check the address they connect to again, so this is
/// for a clear answer now, not the defence.
async fn check_target(ctx: &Context, url: &str) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::Unprocessable(format!("url is not a valid URL: {e}")))?;
    let Some(host) = parsed.host_str() else {
        return Err(ApiError::Unprocessable("url names no host".into()));
    };
    let policy = crate::netguard::AddressPolicy::from_settings(&ctx.settings);
    let port = parsed.port_or_known_default().unwrap_or(443);
    let checked = match policy.check_url_literal(&parsed) {
        Ok(()) => policy.check_host(host, port).await,
        refused => refused,
    };
    checked.map_err(|e| {
        ApiError::Unprocessable(format!(
            "url is refused: {e}; webhooks may not reach loopback, private, link-local, \
             unique-local, multicast or reserved networks unless OUTBOUND_ALLOWED_NETWORKS lists them"
        ))
    })
}

/// An endpoint id from the path; anything else names no endpoint.
fn endpoint_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("webhook endpoint"))
}

/// Create a webhook endpoint; the answer holds its signing secret (whsec_...), shown once.
///
/// 422 for a URL whose host is or resolves to a loopback, private, link-local, unique-local,
/// multicast or reserved address, unless OUTBOUND_ALLOWED_NETWORKS lists it.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", operation_id = "create_webhook",
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "created", body = CreatedEndpoint),
        (status = 422, description = "a bad or refused URL, an unknown event type or scope"),
    ))]
pub async fn create(
    ctx: web::Data<Context>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let user = caller.0;
    let new: NewEndpoint = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let scope = validate(&new, &user).map_err(ApiError::Unprocessable)?;
    check_target(&ctx, new.url.trim()).await?;
    let secret = signing::new_secret();
    let client = ctx.pool.get().await?;
    let row = client
        .query_one(
            "INSERT INTO webhook_endpoints (owner_id, scope, url, secret, event_types, include_machine)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at",
            &[&user.id, &scope, &new.url.trim(), &secret, &new.event_types, &new.include_machine],
        )
        .await?;
    Ok(HttpResponse::Created().json(CreatedEndpoint {
        id: row.get(0),
        url: new.url.trim().to_string(),
        scope,
        event_types: new.event_types,
        include_machine: new.include_machine,
        // Shown once: the receiver verifies signatures with it.
        secret,
        created_at: row.get(1),
    }))
}

/// The caller's webhook endpoints with delivery counts.
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    responses((status = 200, description = "OK", body = Vec<Endpoint>)))]
pub async fn list(ctx: web::Data<Context>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            "SELECT w.id, w.url, w.scope, w.event_types, w.include_machine, w.failures_in_row,
                    w.disabled_at, w.disabled_reason, w.created_at,
                    count(o.*) FILTER (WHERE o.status = 'pending'),
                    count(o.*) FILTER (WHERE o.status = 'delivered'),
                    count(o.*) FILTER (WHERE o.status = 'failed')
               FROM webhook_endpoints w LEFT JOIN webhook_outbox o ON o.endpoint_id = w.id
              WHERE w.owner_id = $1
              GROUP BY w.id ORDER BY w.id",
            &[&caller.0.id],
        )
        .await?;
    Ok(HttpResponse::Ok().json(
        rows.iter()
            .map(|r| Endpoint {
                id: r.get(0),
                url: r.get(1),
                scope: r.get(2),
                event_types: r.get(3),
                include_machine: r.get(4),
                failures_in_row: r.get(5),
                disabled_at: r.get(6),
                disabled_reason: r.get(7),
                created_at: r.get(8),
                pending: r.get(9),
                delivered: r.get(10),
                failed: r.get(11),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Notifications sent to one endpoint (latest 500): status, attempts, last error, payload.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    params(("id" = i64, Path, description = "the endpoint's id")),
    responses(
        (status = 200, description = "OK (none for an endpoint that is not the caller's)", body = Vec<Delivery>),
        (status = 404, description = "not an endpoint id"),
    ))]
pub async fn deliveries(
    ctx: web::Data<Context>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            "SELECT o.id, o.event_type, o.event_id, o.status, o.attempts, o.last_status, o.last_error,
                    o.created_at, o.delivered_at, o.next_attempt_at, o.payload
               FROM webhook_outbox o JOIN webhook_endpoints w ON w.id = o.endpoint_id
              WHERE w.id = $1 AND w.owner_id = $2
              ORDER BY o.created_at DESC LIMIT 500",
            &[&id, &caller.0.id],
        )
        .await?;
    Ok(HttpResponse::Ok().json(
        rows.iter()
            .map(|r| Delivery {
                id: r.get(0),
                event_type: r.get(1),
                event_id: r.get(2),
                status: r.get(3),
                attempts: r.get(4),
                last_status: r.get(5),
                last_error: r.get(6),
                created_at: r.get(7),
                delivered_at: r.get(8),
                next_attempt_at: r.get(9),
                payload: r.get(10),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Delete one of the caller's endpoints.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook",
    params(("id" = i64, Path, description = "the endpoint's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such endpoint of the caller's"),
    ))]
pub async fn delete(
    ctx: web::Data<Context>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    let client = ctx.pool.get().await?;
    let deleted = client
        .execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND owner_id = $2",
            &[&id, &caller.0.id],
        )
        .await?;
    if deleted == 1 {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("webhook endpoint"))
    }
}
