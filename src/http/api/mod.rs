//! The JSON API handlers under `/api`: users and tokens, templates, automations, group emails,
//! mailboxes, webhooks, captured copies, reports and messages.
//!
//! Owns turning requests into calls of the stages and the accounts, and their answers into JSON.
//! It must never hand out tracking data without the visibility rule of
//! [`crate::accounts::visibility`], and never tell a caller that something they may not see
//! exists (404, not 403).

pub mod automations;
pub mod captured;
pub mod erase;
pub mod group_emails;
pub mod mailbox;
pub mod messages;
pub mod reports;
pub mod stream;
pub mod templates;
pub mod users;
pub mod webhooks;

use actix_web::{web, HttpResponse};

use crate::http::errors;

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn not_found() -> Result<HttpResponse, errors::ApiError> {
    Err(errors::ApiError::NotFound("resource"))
}

/// Adds the `/api` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .app_data(errors::json_config())
            .app_data(errors::query_config())
            .app_data(errors::path_config())
            .route("/openapi.json", web::get().to(openapi))
            .route("/me", web::get().to(users::me))
            .route("/users", web::post().to(users::create_user))
            .route("/tokens", web::post().to(users::create_token))
            .route("/erase", web::post().to(erase::erase_handler))
            .route("/automations", web::get().to(automations::list))
            .route("/automations", web::post().to(automations::create))
            .route("/automations/{id}", web::delete().to(automations::delete))
            .route("/unsubscribes", web::post().to(automations::unsubscribe))
            .route("/me/mailbox", web::put().to(mailbox::put))
            .route("/me/mailbox", web::get().to(mailbox::get))
            .route("/me/mailbox", web::delete().to(mailbox::delete))
            .route("/me/signature", web::put().to(templates::put_signature))
            .route("/templates", web::get().to(templates::list))
            .route("/templates", web::post().to(templates::create))
            .route("/templates/{key}", web::get().to(templates::get))
            .route("/templates/{key}", web::put().to(templates::update))
            .route("/templates/{key}", web::delete().to(templates::delete))
            .service(
                web::resource("/group-emails")
                    .app_data(web::PayloadConfig::new(errors::JSON_LIMIT))
                    .route(web::post().to(group_emails::create)),
            )
            .route("/reports/templates", web::get().to(reports::templates))
            .route("/reports/templates/{key}", web::get().to(reports::template))
            .route("/messages", web::get().to(messages::list_handler))
            .route("/messages/{id}", web::get().to(messages::get_handler))
            .route("/messages/{id}", web::delete().to(messages::delete_handler))
            .route(
                "/messages/{id}/archive",
                web::post().to(messages::archive_handler),
            )
            .default_service(web::to(not_found)),
    );
}

#[cfg(test)]
mod tests {
    /// Every route this module adds under `/api` is described in the OpenAPI document.
    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let source = include_str!("mod.rs");
        let routes: Vec<&str> = source
            .split(".route(\"")
            .skip(1)
            .chain(source.split("web::resource(\"").skip(1))
            .filter_map(|s| s.split('"').next())
            .filter(|p| *p != "/openapi.json")
            .collect();
        assert!(routes.len() > 20, "{routes:?}");
        for r in routes {
            assert!(
                doc["paths"][format!("/api{r}")].is_object(),
                "/api{r} is missing from openapi.json"
            );
        }
    }
}
