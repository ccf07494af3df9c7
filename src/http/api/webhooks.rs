//! `POST/GET/DELETE /api/webhooks`: endpoints per user (their own messages) or per team (what
//! the owner may see of the team's messages), and `GET /api/webhooks/{id}/deliveries` to see
//! what was sent and how it went.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::User;
use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;
use crate::notify::endpoints;
use crate::notify::signing;

use crate::notify::EVENT_TYPES;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// An http:// or https:// URL of at most 2000 characters.
    pub url: String,
    /// Some of `open.first`, `open`, `click`, `delivered`, `deferred`, `bounced`, `reply`,
    /// `complaint`, `unsubscribe`.
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
async fn check_target(ctx: &Base, url: &str) -> Result<(), ApiError> {
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
    ctx: web::Data<Base>,
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
    let (id, created_at) = endpoints::create(
        &**client,
        &endpoints::NewEndpoint {
            owner_id: user.id,
            scope: &scope,
            url: new.url.trim(),
            secret: &secret,
            event_types: &new.event_types,
            include_machine: new.include_machine,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedEndpoint {
        id,
        url: new.url.trim().to_string(),
        scope,
        event_types: new.event_types,
        include_machine: new.include_machine,
        // Shown once: the receiver verifies signatures with it.
        secret,
        created_at,
    }))
}

/// The caller's webhook endpoints with delivery counts.
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    responses((status = 200, description = "OK", body = Vec<Endpoint>)))]
pub async fn list(ctx: web::Data<Base>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    Ok(HttpResponse::Ok().json(endpoints::list(&**client, caller.0.id).await?))
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
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    let client = ctx.pool.get().await?;
    Ok(HttpResponse::Ok().json(endpoints::deliveries(&**client, caller.0.id, id).await?))
}

/// Delete one of the caller's endpoints.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook",
    params(("id" = i64, Path, description = "the endpoint's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such endpoint of the caller's"),
    ))]
pub async fn delete(
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    let client = ctx.pool.get().await?;
    if endpoints::delete(&**client, caller.0.id, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("webhook endpoint"))
    }
}
