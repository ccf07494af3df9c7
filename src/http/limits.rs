//! Limits every HTTP request is held to, whatever its route: the size of the request target
//! (414) and of the headers (431), NUL bytes in the target (400), the body (413, also for chunked bodies with no length), and brute force on API
//! tokens (429 with `Retry-After` once a client address has presented too many bad tokens).
//! Every refusal has the API's JSON error body.
//!
//! Wrapped around the whole app by [`crate::http`], so that routes added later are covered too.

use std::net::IpAddr;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use futures_util::StreamExt;

use crate::accounts::limiter::{retry_after_secs, FailureLimiter};
use crate::config::{Cidr, Settings};
use crate::http::auth::COOKIE;
use crate::http::errors::ApiError;

/// Most bytes of request headers (names and values) in all.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The limits of one HTTP listener, shared by its workers (`app_data`).
pub struct HttpLimits {
    pub max_body: usize,
    pub max_url: usize,
    tokens: FailureLimiter,
    trusted_proxies: Vec<Cidr>,
}

impl HttpLimits {
    pub fn from_settings(settings: &Settings) -> HttpLimits {
        HttpLimits {
            max_body: settings.http.max_body,
            max_url: settings.http.max_url,
            tokens: FailureLimiter::new(
                settings.accounts.max_failures_per_ip,
                settings.accounts.failure_window,
            ),
            trusted_proxies: settings.http.trusted_proxies.clone(),
        }
    }

    fn client_ip(&self, req: &ServiceRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| v.as_bytes());
        Some(crate::track::request::client_ip(
            peer,
            forwarded,
            &self.trusted_proxies,
        ))
    }
}

/// Whether the request carries an API token: a bearer header, the Insights cookie, or a
/// `token` query parameter (the event stream's).
fn presents_token(req: &ServiceRequest) -> bool {
    if req.path() == "/insights/login" {
        return true;
    }
    let cookie = format!("{COOKIE}=");
    req.headers().contains_key("authorization")
        || req.headers().get_all("cookie").any(|v| {
            v.as_bytes()
                .windows(cookie.len())
                .any(|w| w == cookie.as_bytes())
        })
        || req
            .query_string()
            .split('&')
            .any(|pair| pair.starts_with("token="))
}

fn refuse(req: ServiceRequest, error: ApiError) -> ServiceResponse<BoxBody> {
    let response = error.error_response();
    req.into_response(response)
}

/// The middleware (`actix_web::middleware::from_fn`).
pub async fn enforce(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(limits) = req.app_data::<web::Data<HttpLimits>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if target > limits.max_url {
        return Ok(refuse(req, ApiError::UriTooLong(limits.max_url)));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Ok(refuse(req, ApiError::HeadersTooLarge(MAX_HEADER_BYTES)));
    }
    // A NUL byte is no part of any path, token or parameter, and PostgreSQL refuses it in text.
    if req.uri().to_string().contains("%00") {
        return Ok(refuse(
            req,
            ApiError::BadRequest("the request URL holds a NUL byte (%00)".into()),
        ));
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limits.max_body as u64 => {
            return Ok(refuse(req, ApiError::PayloadTooLarge(limits.max_body)));
        }
        Some(_) => {}
        // A body of unknown length (chunked) is read here, up to the limit, so that no route
        // can take a cut-off body for a whole one.
        None => {
            let mut payload = req.take_payload();
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk?;
                if body.len() + chunk.len() > limits.max_body {
                    return Ok(refuse(req, ApiError::PayloadTooLarge(limits.max_body)));
                }
                body.extend_from_slice(&chunk);
            }
            req.set_payload(Payload::from(body.freeze()));
        }
    }
    let ip = presents_token(&req)
        .then(|| limits.client_ip(&req))
        .flatten();
    if let Some(ip) = ip {
        if let Some(wait) = limits.tokens.blocked(ip) {
            return Ok(refuse(
                req,
                ApiError::TooManyRequests(retry_after_secs(wait)),
            ));
        }
    }
    let res = next.call(req).await?;
    let status = res.status();
    if let (Some(ip), StatusCode::UNAUTHORIZED) = (ip, status) {
        if let Some(wait) = limits.tokens.fail(ip) {
            tracing::warn!(%ip, retry_after = retry_after_secs(wait), "too many bad API tokens from one address");
        }
    }
    // A size refusal from an extractor of a route that is not the API's: the same JSON body.
    if status == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&res) {
        let (req, _) = res.into_parts();
        return Ok(refuse(
            ServiceRequest::from_request(req),
            ApiError::PayloadTooLarge(limits.max_body),
        ));
    }
    Ok(res.map_into_boxed_body())
}

fn is_json<B>(res: &ServiceResponse<B>) -> bool {
    res.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}
