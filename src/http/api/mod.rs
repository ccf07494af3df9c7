//! The JSON API handlers under `/api`: users and tokens, templates, automations, group emails,
//! mailboxes, webhooks, captured copies, reports and messages, who engaged and where, and the
//! CSV exports.
//!
//! Owns turning requests into calls of the stages and the accounts, and their answers into JSON.
//! It must never hand out tracking data without the visibility rule of
//! [`crate::accounts::visibility`], and never tell a caller that something they may not see
//! exists (404, not 403).

pub mod automations;
pub mod captured;
pub mod erase;
pub mod exports;
pub mod group_emails;
pub mod mailbox;
pub mod messages;
pub mod openapi;
pub mod people;
pub mod reports;
pub mod stream;
pub mod suppressions;
pub mod templates;
pub mod users;
pub mod webhooks;

use actix_web::{web, HttpResponse};

use crate::http::errors;

async fn not_found() -> Result<HttpResponse, errors::ApiError> {
    Err(errors::ApiError::NotFound("resource"))
}

/// Adds the `/api` routes: the table of [`openapi::routes`], and a JSON 404 for anything else.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        openapi::register(
            web::scope(openapi::PREFIX)
                .app_data(errors::json_config())
                .app_data(errors::query_config())
                .app_data(errors::path_config()),
        )
        .default_service(web::to(not_found)),
    );
}
