//! API errors: a stable `error` code and a human message, as JSON, with the matching status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("a valid API token is required (Authorization: Bearer ...)")]
    Unauthorized,
    #[error("only administrators may do this")]
    Forbidden,
    /// Also what a caller gets for something they may not see: its existence is not revealed.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but not acceptable (an unknown webhook event type, ...).
    #[error("{0}")]
    Unprocessable(String),
    /// A body over HTTP_MAX_BODY or over what the route reads.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A request target over HTTP_MAX_URL.
    #[error("the request URL is longer than {0} bytes")]
    UriTooLong(usize),
    /// Request headers over [`crate::http::limits::MAX_HEADER_BYTES`] in all.
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// Too many bad API tokens from one address (AUTH_MAX_FAILURES_PER_IP); wait the seconds.
    #[error("too many failed authentications from this address; retry in {0} seconds")]
    TooManyRequests(u64),
    /// What a request would queue is over SUBMISSION_MAX_BYTES (or the whole hourly budget).
    #[error("{0}")]
    SubmissionTooLarge(String),
    /// The sender's SENDER_MAX_BYTES_PER_HOUR is used up for now; wait the seconds.
    #[error("{message}")]
    BudgetUsedUp { retry_after: u64, message: String },
    #[error("the database is unavailable")]
    Unavailable(#[from] deadpool_postgres::PoolError),
    #[error("internal error")]
    Db(#[from] tokio_postgres::Error),
    #[error("internal error")]
    Insights(#[from] crate::insights::InsightsError),
    #[error("internal error")]
    Account(crate::accounts::AccountError),
    #[error("internal error")]
    Erase(#[from] crate::erasure::EraseError),
}

impl From<crate::accounts::AccountError> for ApiError {
    fn from(e: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError as A;
        match e {
            A::BadEmail(_) | A::WeakPassword => ApiError::BadRequest(e.to_string()),
            A::Exists(_) => ApiError::Conflict(e.to_string()),
            other => ApiError::Account(other),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UriTooLong(_) => "uri_too_long",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::SubmissionTooLarge(_) => "submission_too_large",
            ApiError::BudgetUsedUp { .. } => "sending_budget_used_up",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Db(_) | ApiError::Insights(_) | ApiError::Account(_) | ApiError::Erase(_) => {
                "internal"
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::SubmissionTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BudgetUsedUp { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(error = ?self, "API request failed");
        }
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::TooManyRequests(secs)
        | ApiError::BudgetUsedUp {
            retry_after: secs, ..
        } = self
        {
            resp.insert_header(("Retry-After", secs.to_string()));
        }
        resp.json(ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
        })
    }
}

/// The body of every API error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// A stable code: `unauthorized`, `forbidden`, `not_found`, `bad_request`, `conflict`,
    /// `unprocessable`, `payload_too_large`, `too_many_requests`, `unavailable`, `internal`, ...
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// Refuses a value that must fit on one header line: a control character (CR, LF, NUL, ...)
/// or more than `max` bytes. Whether it may be empty is the caller's rule.
pub fn single_line(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "`{what}` must be one line without control characters"
        )));
    }
    if value.len() > max {
        return Err(ApiError::Unprocessable(format!(
            "`{what}` is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// The ceiling of a JSON body. `HTTP_MAX_BODY` (1 MiB by default), checked in front of every
/// route, is the limit in practice; templates with large HTML and group emails with many
/// recipients need more than a small fixed limit.
pub const JSON_LIMIT: usize = 16 * 1024 * 1024;

/// Turns actix's own extractor failures (bad JSON, bad query string) into our error shape.
pub fn json_config() -> actix_web::web::JsonConfig {
    use actix_web::error::{JsonPayloadError, PayloadError};
    const LIMIT: usize = JSON_LIMIT;
    actix_web::web::JsonConfig::default()
        .limit(LIMIT)
        .error_handler(|e, _| match e {
            JsonPayloadError::Overflow { .. }
            | JsonPayloadError::OverflowKnownLength { .. }
            | JsonPayloadError::Payload(PayloadError::Overflow) => {
                ApiError::PayloadTooLarge(LIMIT).into()
            }
            e => ApiError::BadRequest(e.to_string()).into(),
        })
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default()
        .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into())
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default()
        .error_handler(|_, _| ApiError::NotFound("resource").into())
}
