//! The HTTP side of tracking: `GET|HEAD /o/{token}` (the eye: a 1x1 transparent GIF) and
//! `GET|HEAD /c/{token}` (the cursor: a 302 to the URL the token was signed for). What a request
//! means is the [`Tracker`]'s; this file only reads the request and writes the answer.

use std::sync::Arc;

use actix_web::guard;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use crate::events::Kind;
use crate::track::{Hit, Tracker, METRICS};

const CACHE_CONTROL: &str = "no-store, no-cache, must-revalidate, private";

const NOT_FOUND_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Link not found</title></head><body><h1>Link not found</h1>\
<p>This link is not valid. Please check that you copied the whole link from the message.</p>\
</body></html>\n";

/// The token: the path after `/o/` or `/c/` (both three bytes). Tokens are base64url, so the
/// raw path needs no decoding; anything else fails verification.
fn token(req: &HttpRequest) -> &str {
    req.path().get(3..).unwrap_or("")
}

fn hit(req: &HttpRequest) -> Hit<'_> {
    Hit {
        peer: req.peer_addr().map(|a| a.ip()),
        forwarded_for: req
            .headers()
            .get_all("x-forwarded-for")
            .map(HeaderValue::as_bytes)
            .collect(),
        user_agent: req.headers().get(header::USER_AGENT).map(|v| v.as_bytes()),
        head: req.method() == Method::HEAD,
        method: req.method().as_str(),
    }
}

async fn open(req: HttpRequest, tracker: web::Data<Arc<Tracker>>) -> HttpResponse {
    if let Some(copy) = tracker.open_copy(token(&req)) {
        tracker.record(&hit(&req), Kind::Open, copy, None);
    }
    // Whatever the token, the client gets its image: a broken image icon helps nobody.
    HttpResponse::Ok()
        .content_type("image/gif")
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::EXPIRES, "0"))
        .body(tracker.pixel())
}

async fn click(req: HttpRequest, tracker: web::Data<Arc<Tracker>>) -> HttpResponse {
    if let Some((copy, link, url)) = tracker.click_target(token(&req)) {
        // A signed URL that cannot be a header value (control characters) is not followed.
        if let Ok(location) = HeaderValue::from_str(&url) {
            tracker.record(&hit(&req), Kind::Click, copy, i32::try_from(link).ok());
            return HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
                .insert_header((header::REFERRER_POLICY, "no-referrer"))
                .finish();
        }
    }
    METRICS.invalid(Kind::Click);
    HttpResponse::NotFound()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .body(NOT_FOUND_PAGE)
}

/// The tracking routes.
///
/// Prefix scopes rather than `/o/{token}` patterns: a pattern with a parameter is matched with
/// a regex, which profiling showed as the largest cost of a tracking request.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let get_or_head = || guard::Any(guard::Get()).or(guard::Head());
    cfg.service(
        web::scope("/o")
            .guard(get_or_head())
            .default_service(web::to(open)),
    )
    .service(
        web::scope("/c")
            .guard(get_or_head())
            .default_service(web::to(click)),
    );
}
