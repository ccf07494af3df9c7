//! The `/api` route table and the OpenAPI document made from it.
//!
//! Each handler's `#[utoipa::path]` says its method and path, once. [`routes`] lists the
//! handlers; the actix scope ([`register`]) and the document ([`document`]) are both read from
//! that list, so no `/api` route is served undocumented or documented unserved. All of them live
//! in the one `/api` scope: a route added outside it, after it, would be shadowed by the scope's
//! JSON 404.

use std::sync::LazyLock;

use actix_web::dev::Handler;
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpResponse, Responder, Route, Scope};
use serde_json::{json, Value};
use utoipa::openapi::path::PathItemType;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::PathItem;
use utoipa::OpenApi;

use super::{
    automations, captured, erase, exports, group_emails, mailbox, messages, people, reports,
    stream, suppressions, templates, users, webhooks,
};
use crate::http::auth::COOKIE;
use crate::http::errors;

/// Where the routes of the table are mounted.
pub const PREFIX: &str = "/api";

/// One `/api` route: its method and full path as its `#[utoipa::path]` gives them, its
/// description, and the actix route that serves it.
pub struct ApiRoute {
    pub method: Method,
    pub path: String,
    item: PathItem,
    route: Route,
    body_limit: Option<usize>,
}

impl ApiRoute {
    /// Reads the body with `limit` instead of actix's default payload limit.
    fn body_limit(mut self, limit: usize) -> ApiRoute {
        self.body_limit = Some(limit);
        self
    }
}

/// The route of `handler`, described by `doc`: the unit type `#[utoipa::path]` makes beside it.
fn route<P, F, Args>(_doc: P, handler: F) -> ApiRoute
where
    P: utoipa::Path,
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let item = P::path_item(None);
    let mut methods = item.operations.keys();
    let (Some(kind), None) = (methods.next(), methods.next()) else {
        panic!("{} must describe exactly one method", P::path());
    };
    let method = match kind {
        PathItemType::Get => Method::GET,
        PathItemType::Post => Method::POST,
        PathItemType::Put => Method::PUT,
        PathItemType::Delete => Method::DELETE,
        PathItemType::Options => Method::OPTIONS,
        PathItemType::Head => Method::HEAD,
        PathItemType::Patch => Method::PATCH,
        PathItemType::Trace => Method::TRACE,
        PathItemType::Connect => Method::CONNECT,
    };
    ApiRoute {
        route: web::method(method.clone()).to(handler),
        method,
        path: P::path(),
        item,
        body_limit: None,
    }
}

/// Every `/api` route, in the order the scope tries them.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        route(__path_openapi_json, openapi_json),
        route(users::__path_me, users::me),
        route(users::__path_create_user, users::create_user),
        route(users::__path_create_token, users::create_token),
        route(erase::__path_erase_handler, erase::erase_handler),
        route(automations::__path_list, automations::list),
        route(automations::__path_create, automations::create),
        route(automations::__path_delete, automations::delete),
        route(automations::__path_unsubscribe, automations::unsubscribe),
        route(mailbox::__path_put, mailbox::put),
        route(mailbox::__path_get, mailbox::get),
        route(mailbox::__path_delete, mailbox::delete),
        route(templates::__path_put_signature, templates::put_signature),
        route(templates::__path_list, templates::list),
        route(templates::__path_create, templates::create),
        route(templates::__path_get, templates::get),
        route(templates::__path_update, templates::update),
        route(templates::__path_delete, templates::delete),
        // Group emails read their body themselves, up to the JSON ceiling.
        route(group_emails::__path_create, group_emails::create).body_limit(errors::JSON_LIMIT),
        route(reports::__path_templates, reports::templates),
        route(reports::__path_template, reports::template),
        route(people::__path_template_people, people::template_people),
        route(
            people::__path_template_geography,
            people::template_geography,
        ),
        route(people::__path_message_people, people::message_people),
        route(people::__path_message_geography, people::message_geography),
        route(people::__path_person, people::person),
        route(exports::__path_templates, exports::templates),
        route(exports::__path_template_people, exports::template_people),
        route(exports::__path_template_events, exports::template_events),
        route(exports::__path_message_people, exports::message_people),
        route(exports::__path_message_events, exports::message_events),
        route(exports::__path_template_daily, exports::template_daily),
        route(exports::__path_template_links, exports::template_links),
        route(exports::__path_template_clients, exports::template_clients),
        route(
            exports::__path_template_geography,
            exports::template_geography,
        ),
        route(
            exports::__path_message_geography,
            exports::message_geography,
        ),
        route(exports::__path_person_events, exports::person_events),
        route(messages::__path_list_handler, messages::list_handler),
        route(messages::__path_get_handler, messages::get_handler),
        route(messages::__path_delete_handler, messages::delete_handler),
        route(messages::__path_archive_handler, messages::archive_handler),
        route(webhooks::__path_create, webhooks::create),
        route(webhooks::__path_list, webhooks::list),
        route(webhooks::__path_delete, webhooks::delete),
        route(webhooks::__path_deliveries, webhooks::deliveries),
        route(stream::__path_stream, stream::stream),
        route(captured::__path_list, captured::list),
        route(captured::__path_raw, captured::raw),
        route(suppressions::__path_export, suppressions::export),
        route(suppressions::__path_list, suppressions::list),
        route(suppressions::__path_add, suppressions::add),
        route(suppressions::__path_remove, suppressions::remove),
    ]
}

/// Adds every route of the table to `scope`, which is mounted at [`PREFIX`].
pub fn register(scope: Scope) -> Scope {
    routes().into_iter().fold(scope, |scope, r| {
        let path = r
            .path
            .strip_prefix(PREFIX)
            .unwrap_or_else(|| panic!("{} is not under {PREFIX}", r.path));
        match r.body_limit {
            None => scope.route(path, r.route),
            Some(limit) => scope.service(
                web::resource(path)
                    .app_data(web::PayloadConfig::new(limit))
                    .route(r.route),
            ),
        }
    })
}

/// What the table's paths share: info, schemas, security. A `body = Name` of a path attribute
/// refers to a schema by name, unchecked by the compiler: each is listed here, and a test checks
/// that every reference of the document resolves.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailtally API",
        description = "Reports, messages, templates, group emails, webhooks and the live event \
            stream of mailtally. Every endpoint but this document needs `Authorization: Bearer \
            <API token>`. A message you may not see answers 404. Errors are JSON: \
            {\"error\": code, \"message\": text}."
    ),
    security(("bearer" = [])),
    components(schemas(
        errors::ErrorBody,
        users::UserView,
        users::NewUserBody,
        users::CreatedUser,
        users::NewTokenBody,
        users::CreatedToken,
        erase::EraseBody,
        erase::Erased,
        automations::AutomationBody,
        automations::AutomationList,
        automations::UnsubscribeBody,
        automations::Unsubscribed,
        crate::followup::rules::Automation,
        mailbox::MailboxBody,
        crate::replies::mailbox::MailboxStatus,
        crate::replies::mailbox::MailboxState,
        templates::TemplateBody,
        templates::TemplateList,
        templates::SignatureBody,
        crate::queue::templates::Template,
        group_emails::GroupEmailBody,
        group_emails::RecipientBody,
        crate::compose::QueuedAnswer,
        crate::compose::QueuedCopy,
        reports::TemplateReport,
        crate::insights::report::TemplateRow,
        crate::insights::report::TemplateDetail,
        crate::insights::report::Figures,
        crate::insights::report::ClassFilter,
        crate::insights::report::DayRow,
        crate::insights::report::LinkRow,
        crate::insights::report::ClientRow,
        people::PeopleList,
        people::GeographyReport,
        crate::insights::people::Engagement,
        crate::insights::people::PersonRow,
        crate::insights::people::MachineEvents,
        crate::insights::people::PersonDetail,
        crate::insights::people::PersonCopy,
        crate::insights::people::PersonEvent,
        crate::insights::geo::Geography,
        crate::insights::geo::CountryRow,
        crate::insights::geo::CityRow,
        messages::MessageList,
        messages::MessageSummary,
        messages::MessageDetail,
        messages::CopyDetail,
        messages::TimelineEvent,
        messages::Archived,
        webhooks::NewEndpoint,
        webhooks::CreatedEndpoint,
        crate::notify::endpoints::Endpoint,
        crate::notify::endpoints::Delivery,
        captured::CapturedList,
        captured::CapturedCopy,
        crate::compose::SuppressedRecipient,
        suppressions::SuppressionList,
        suppressions::NewSuppression,
        suppressions::Added,
        crate::deliverability::suppression::Entry,
        crate::deliverability::suppression::Reason,
    )),
    modifiers(&SecuritySchemes)
)]
struct Shared;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                COOKIE,
                "the Insights page's sign-in cookie (HttpOnly, SameSite=Strict)",
            ))),
        );
    }
}

/// The content of every error answer: the body of [`errors::ErrorBody`].
fn error_content() -> Value {
    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
}

/// The answers every route may give whatever it does: the HTTP limits in front of every route
/// (`crate::http::limits`), the failure limiter and the sending budget.
fn shared_responses() -> Value {
    let error = error_content();
    json!({
        "PayloadTooLarge": {
            "description": "the request body is larger than HTTP_MAX_BODY (error payload_too_large)",
            "content": error,
        },
        "UriTooLong": {
            "description": "the request target is longer than HTTP_MAX_URL (error uri_too_long)",
            "content": error,
        },
        "TooManyRequests": {
            "description": "too many bad API tokens from this address within AUTH_FAILURE_WINDOW \
                (error too_many_requests); or the sender's SENDER_MAX_BYTES_PER_HOUR used up \
                (error sending_budget_used_up); Retry-After says when to try again",
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
            "content": error,
        },
        "HeadersTooLarge": {
            "description": "the request headers are larger than 16 KiB in all (error headers_too_large)",
            "content": error,
        },
    })
}

/// The document as a JSON value: the table's paths on the shared parts, every error answer
/// with the error body, and the answers that hold for every route added to each.
pub fn document_value() -> Value {
    let mut doc = Shared::openapi();
    for r in routes() {
        match doc.paths.paths.get_mut(&r.path) {
            Some(item) => item.operations.extend(r.item.operations),
            None => {
                doc.paths.paths.insert(r.path, r.item);
            }
        }
    }
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document is JSON");
    doc["components"]["responses"] = shared_responses();
    let error = error_content();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut)
    {
        // No `security` means the document's: a bearer token. `[{}]` means none is needed.
        let open = op
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|r| r.is_empty()))
            });
        let has_body = op.contains_key("requestBody");
        let responses = op
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("responses is an object");
        let mut add = |status: &str, answer: Value| {
            responses.entry(status).or_insert(answer);
        };
        if !open {
            add(
                "401",
                json!({"description": "no valid API token", "content": error}),
            );
            add(
                "429",
                json!({"$ref": "#/components/responses/TooManyRequests"}),
            );
        }
        add(
            "400",
            json!({
                "description": "a malformed request: a body or query string that is not what \
                    the route takes, or a NUL byte in the URL",
                "content": error,
            }),
        );
        if has_body {
            add(
                "413",
                json!({"$ref": "#/components/responses/PayloadTooLarge"}),
            );
        }
        add("414", json!({"$ref": "#/components/responses/UriTooLong"}));
        add(
            "431",
            json!({"$ref": "#/components/responses/HeadersTooLarge"}),
        );
        // Every error answer of the API is the error body (`errors::ApiError`).
        for (status, answer) in responses.iter_mut() {
            if status.starts_with(['4', '5'])
                && answer.get("$ref").is_none()
                && answer.get("content").is_none()
            {
                answer["content"] = error.clone();
            }
        }
    }
    doc
}

/// The document as served.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| document_value().to_string());
    &DOCUMENT
}

/// This document: the OpenAPI 3.0.3 description of every `/api` route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "openapi", operation_id = "openapi",
    security(()),
    responses((status = 200, description = "this document", content_type = "application/json")))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` of the document names something the document has: the schema list of
    /// [`Shared`] is kept by hand.
    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document_value();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "{found:?}");
        let missing: Vec<&str> = found
            .into_iter()
            .filter(|r| r.strip_prefix('#').and_then(|p| doc.pointer(p)).is_none())
            .collect();
        assert!(missing.is_empty(), "unresolved: {missing:?}");
    }

    /// Operation ids are unique (OpenAPI requires it; generators name functions by them).
    #[test]
    fn operation_ids_are_unique() {
        let doc = document_value();
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().expect("an operationId"))
            .collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all);
    }
}
