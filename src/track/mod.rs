//! Tracking endpoints: `GET|HEAD /o/{token}` (the eye: a 1x1 transparent GIF) and
//! `GET|HEAD /c/{token}` (the cursor: a 302 to the URL the token was signed for).
//!
//! Owns the handlers, the pixel bytes and the facts taken from a request (address, agent,
//! method). It must never wait on PostgreSQL: the token carries all the answer needs, and the
//! event goes to the events channel, which never blocks. An invalid token never redirects.

pub mod delivered;
pub mod request;

use std::sync::{Arc, LazyLock};

use actix_web::guard;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use prometheus::{IntCounter, IntCounterVec};
use thiserror::Error;
use uuid::Uuid;

use crate::config::{Cidr, Settings};
use crate::context::{Context, TrackingSecrets};
use crate::events::{Event, EventSink, Kind};
use crate::insights::classify::{self, Class, Classifier, ClassifyError};
use crate::metrics;
use crate::rewrite::token::{self, TokenKeys, Verified};

use delivered::DeliveryCache;

#[derive(Debug, Error)]
pub enum TrackError {
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error("cannot make the tracking pixel: {0}")]
    Pixel(#[from] image::ImageError),
}

pub struct TrackMetrics {
    pub requests: IntCounterVec,
    pub invalid_tokens: IntCounterVec,
    /// The series of `requests`, resolved once: label lookup costs more than the increment.
    by_kind_class: [[IntCounter; 6]; 2],
    invalid: [IntCounter; 2],
}

const CLASS_LABELS: [&str; 6] = [
    "human",
    "apple_mpp",
    "proxy",
    "scanner",
    "prefetch",
    "unknown",
];

impl TrackMetrics {
    fn request(&self, kind: Kind, class: Option<Class>) {
        let k = usize::from(kind == Kind::Click);
        let c = match class {
            Some(Class::Human) => 0,
            Some(Class::AppleMpp) => 1,
            Some(Class::Proxy) => 2,
            Some(Class::Scanner) => 3,
            Some(Class::Prefetch) => 4,
            None => 5,
        };
        self.by_kind_class[k][c].inc();
    }

    fn invalid(&self, kind: Kind) {
        self.invalid[usize::from(kind == Kind::Click)].inc();
    }
}

// Every series exists at zero from the start (bounded: 2 kinds x 6 classes).
pub static METRICS: LazyLock<TrackMetrics> = LazyLock::new(|| {
    // The class at first sight: hindsight (sweeps) can change it later, and the reports count
    // the final class, which mailtally_aggregation_events_by_final_class_total has.
    let requests = metrics::counter_vec(
        "track_requests_total",
        "tracking requests with a valid token, by kind (open, click) and the class given at first sight, before hindsight",
        &["kind", "first_sight_class"],
    );
    let invalid_tokens = metrics::counter_vec(
        "track_invalid_tokens_total",
        "tracking requests whose token did not verify, by kind",
        &["kind"],
    );
    let kinds = ["open", "click"];
    TrackMetrics {
        by_kind_class: kinds.map(|k| CLASS_LABELS.map(|c| requests.with_label_values(&[k, c]))),
        invalid: kinds.map(|k| invalid_tokens.with_label_values(&[k])),
        requests,
        invalid_tokens,
    }
});

const CACHE_CONTROL: &str = "no-store, no-cache, must-revalidate, private";

const NOT_FOUND_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Link not found</title></head><body><h1>Link not found</h1>\
<p>This link is not valid. Please check that you copied the whole link from the message.</p>\
</body></html>\n";

/// Makes the 1x1 fully transparent GIF the eye answers with.
pub fn make_pixel() -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
    enc.encode(&[0, 0, 0, 0], 1, 1, image::ExtendedColorType::Rgba8)?;
    drop(enc);
    Ok(out)
}

/// What the tracking handlers share: token keys, classification, the event sink.
pub struct Tracker {
    keys: TokenKeys,
    classifier: Classifier,
    deliveries: Arc<DeliveryCache>,
    trusted_proxies: Vec<Cidr>,
    anonymize_ip: bool,
    events: EventSink,
    pixel: Bytes,
}

impl Tracker {
    pub fn new(
        settings: &Settings,
        secrets: &TrackingSecrets,
        deliveries: Arc<DeliveryCache>,
        events: EventSink,
    ) -> Result<Tracker, TrackError> {
        Ok(Tracker {
            keys: TokenKeys::new(&secrets.current, &secrets.previous),
            classifier: Classifier::load(settings.track.apple_mpp_cidrs.as_deref())?
                .with_windows(classify::Windows::from_settings(settings)),
            deliveries,
            trusted_proxies: settings.http.trusted_proxies.clone(),
            anonymize_ip: settings.track.anonymize_ip,
            events,
            pixel: Bytes::from(make_pixel()?),
        })
    }

    /// Classifies the request and hands the event to the writer (never waits).
    fn record(&self, req: &HttpRequest, kind: Kind, copy: Uuid, link: Option<i32>) {
        let mut e = Event::new(kind, copy);
        let ip = req.peer_addr().map(|peer| {
            request::client_ip(
                peer.ip(),
                req.headers()
                    .get_all("x-forwarded-for")
                    .map(HeaderValue::as_bytes),
                &self.trusted_proxies,
            )
        });
        let agent =
            request::user_agent(req.headers().get(header::USER_AGENT).map(|v| v.as_bytes()));
        let ua = classify::user_agent(&agent);
        let verdict = self.classifier.classify(
            &classify::Request {
                click: kind == Kind::Click,
                head: req.method() == Method::HEAD,
                ip,
                user_agent: &agent,
                at: e.occurred_at,
                delivery: self.deliveries.lookup(copy),
            },
            &ua,
        );
        METRICS.request(kind, verdict.class);
        e.link_idx = link;
        e.class = verdict.class;
        e.reason = Some(verdict.reason.to_string());
        e.ip = ip.map(|ip| {
            if self.anonymize_ip {
                request::anonymize(ip)
            } else {
                ip
            }
        });
        e.user_agent = (!agent.is_empty()).then_some(agent);
        e.method = Some(req.method().as_str().to_string());
        e.client = ua.client.clone();
        e.device = ua.device.clone();
        e.os = ua.os.clone();
        self.events.send(e);
    }

    fn pixel(&self) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("image/gif")
            .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
            .insert_header((header::PRAGMA, "no-cache"))
            .insert_header((header::EXPIRES, "0"))
            .body(self.pixel.clone())
    }
}

/// The token: the path after `/o/` or `/c/` (both three bytes). Tokens are base64url, so the
/// raw path needs no decoding; anything else fails verification.
fn token(req: &HttpRequest) -> &str {
    req.path().get(3..).unwrap_or("")
}

async fn open(req: HttpRequest, ctx: web::Data<Context>) -> HttpResponse {
    let t = &ctx.tracker;
    match token::verify(&t.keys, token(&req)) {
        Ok(Verified::Open { copy }) => t.record(&req, Kind::Open, copy, None),
        _ => METRICS.invalid(Kind::Open),
    }
    // Whatever the token, the client gets its image: a broken image icon helps nobody.
    t.pixel()
}

async fn click(req: HttpRequest, ctx: web::Data<Context>) -> HttpResponse {
    let t = &ctx.tracker;
    if let Ok(Verified::Click { copy, link, url }) = token::verify(&t.keys, token(&req)) {
        // A signed URL that cannot be a header value (control characters) is not followed.
        if let Ok(location) = HeaderValue::from_str(&url) {
            t.record(&req, Kind::Click, copy, i32::try_from(link).ok());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_is_a_transparent_1x1_gif() {
        let bytes = make_pixel().unwrap();
        assert!(bytes.starts_with(b"GIF8"));
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Gif)
            .unwrap()
            .to_rgba8();
        assert_eq!(img.dimensions(), (1, 1));
        assert_eq!(img.get_pixel(0, 0)[3], 0);
    }
}
