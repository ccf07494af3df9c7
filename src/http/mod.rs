//! The HTTP front door: the listener, the one route table (tracking, API, Insights pages,
//! `/healthz`, `/metrics`), the auth extractors, the error type and the request limits.
//!
//! Owns the protocol: status codes, headers, JSON and HTML. It must never hold a rule of the
//! stages (what a class is, who may see what): it calls the layers below for those.

pub mod api;
pub mod auth;
pub mod csv;
pub mod errors;
pub mod limits;
pub mod track;
pub mod ui;
pub mod unsubscribe;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::FutureExt;

use crate::base::Base;
use crate::insights::geo::Locator;
use crate::metrics;
use crate::notify::stream::Hub;
use crate::rewrite::Rewriter;
use crate::track::Tracker;

/// Answers 200 when PostgreSQL answers, 503 otherwise, with a JSON body either way.
async fn healthz(ctx: web::Data<Base>) -> HttpResponse {
    let check = async {
        let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(())) => {
            HttpResponse::Ok().json(serde_json::json!({"status": "ok", "database": "ok"}))
        }
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "degraded", "database": e})),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "degraded", "database": "timeout"})),
    }
}

/// With METRICS_TOKEN set, `/metrics` answers only a scrape that presents it as a bearer
/// token; a wrong one is a 401 that the failure limiter counts like a bad API token.
async fn metrics_page(ctx: web::Data<Base>, req: HttpRequest) -> HttpResponse {
    if let Some(expected) = &ctx.settings.http.metrics_token {
        let given = crate::http::auth::bearer(&req).unwrap_or_default();
        // Compared in constant time: the token is a secret and the endpoint is unauthenticated.
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes()).into();
        if !same {
            return actix_web::ResponseError::error_response(
                &crate::http::errors::ApiError::Unauthorized,
            );
        }
    }
    metrics::observe_pool(&ctx.pool);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics::render())
}

/// The first path segment names the route group; anything else is "other" (bounded labels).
/// The label set of `http_request_duration_seconds{route}`: what `route_group` returns.
pub const ROUTE_GROUPS: [&str; 7] = [
    "open", "click", "api", "insights", "metrics", "healthz", "other",
];
/// The label set of `http_request_duration_seconds{status}`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn route_group(path: &str) -> &'static str {
    match path.split('/').nth(1).unwrap_or("") {
        "o" => "open",
        "c" => "click",
        "api" => "api",
        "insights" => "insights",
        "metrics" => "metrics",
        "healthz" => "healthz",
        _ => "other",
    }
}

/// Adds the routes of every stage to `cfg`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics_page))
        .configure(crate::http::api::stream::routes)
        .configure(crate::http::track::routes)
        .configure(crate::http::unsubscribe::routes)
        .configure(crate::http::api::routes)
        .configure(crate::http::ui::routes);
}

/// The stages' handles the routes use.
pub struct Handles {
    pub tracker: Arc<Tracker>,
    pub hub: Hub,
    pub rewriter: Rewriter,
    /// Where people read (GEOIP_DATABASE), for the geography reports.
    pub locator: Arc<Locator>,
}

/// Binds `HTTP_LISTEN` and returns the running server (already listening).
pub fn start(ctx: Base, handles: Handles) -> std::io::Result<actix_web::dev::Server> {
    let addr = ctx.settings.http.listen;
    let limits = web::Data::new(limits::HttpLimits::from_settings(&ctx.settings));
    let data = web::Data::new(ctx);
    let tracker = web::Data::new(handles.tracker);
    let hub = web::Data::new(handles.hub);
    let rewriter = web::Data::new(handles.rewriter);
    let locator = web::Data::from(handles.locator);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(tracker.clone())
            .app_data(hub.clone())
            .app_data(rewriter.clone())
            .app_data(locator.clone())
            .app_data(limits.clone())
            // Extractor failures on every route (not only under /api): the API's JSON errors.
            .app_data(crate::http::errors::json_config())
            .app_data(crate::http::errors::query_config())
            .wrap(actix_web::middleware::from_fn(crate::http::limits::enforce))
            .wrap_fn(|req, srv| {
                let group = route_group(req.path());
                let started = Instant::now();
                srv.call(req).map(move |res| {
                    let status = match &res {
                        Ok(r) => r.status().as_u16(),
                        Err(e) => e.as_response_error().status_code().as_u16(),
                    };
                    let class = STATUS_CLASSES
                        .get(usize::from(status / 100).saturating_sub(1))
                        .copied()
                        .unwrap_or("5xx");
                    metrics::CORE
                        .http_request_duration
                        .with_label_values(&[group, class])
                        .observe(started.elapsed().as_secs_f64());
                    res
                })
            })
            .configure(routes)
    })
    .disable_signals()
    .shutdown_timeout(10)
    .bind(addr)?
    .run();
    Ok(server)
}

/// Registers the HTTP latency series: route groups by status class, bounded (7 x 5), since a
/// 5xx alert needs its zero.
pub fn register_metrics() {
    for route in ROUTE_GROUPS {
        for status in STATUS_CLASSES {
            metrics::CORE
                .http_request_duration
                .with_label_values(&[route, status]);
        }
    }
}
