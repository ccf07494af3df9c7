//! The JSON API and the accounts behind it: users, teams, API tokens, password checks,
//! visibility, reports and messages.
//!
//! Owns who a caller is and what they may see. It must never hand out tracking data without the
//! visibility rule of [`visibility`], never tell a caller that something they may not see exists
//! (404, not 403), and never store a password or token in a form that can be read back.

pub mod accounts;
pub mod auth;
pub mod automations;
pub mod erase;
pub mod errors;
pub mod group_emails;
pub mod mailbox;
pub mod messages;
pub mod openapi;
pub mod reports;
pub mod templates;
pub mod users;
pub mod visibility;

use actix_web::{web, HttpResponse};

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
