//! Tracking: what an eye (`/o/`, the pixel) or a cursor (`/c/`, the redirect) request means.
//! The [`Tracker`] verifies the token, classifies the request and hands the event on; the
//! HTTP side of the endpoints is [`crate::http::track`].
//!
//! Owns the pixel bytes and the facts taken from a request (address, agent, method). It must
//! never wait on PostgreSQL: the token carries all the answer needs, and the event goes to the
//! events channel, which never blocks. An invalid token is never followed.

pub mod delivered;
pub mod request;

use std::sync::{Arc, LazyLock};

use std::net::IpAddr;

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec};
use thiserror::Error;
use uuid::Uuid;

use crate::classify::{self, Class, Classifier, ClassifyError};
use crate::config::{Cidr, Settings};
use crate::events::{Event, EventSink, Kind};
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

    pub fn invalid(&self, kind: Kind) {
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

/// Makes the 1x1 fully transparent GIF the eye answers with.
pub fn make_pixel() -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
    enc.encode(&[0, 0, 0, 0], 1, 1, image::ExtendedColorType::Rgba8)?;
    drop(enc);
    Ok(out)
}

/// The facts of one tracking request that classification reads.
pub struct Hit<'a> {
    /// The TCP peer's address.
    pub peer: Option<IpAddr>,
    /// Every `X-Forwarded-For` header, in order (read only from trusted proxies).
    pub forwarded_for: Vec<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub head: bool,
    pub method: &'a str,
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
        keys: TokenKeys,
        deliveries: Arc<DeliveryCache>,
        events: EventSink,
    ) -> Result<Tracker, TrackError> {
        Ok(Tracker {
            keys,
            classifier: Classifier::load(settings.track.apple_mpp_cidrs.as_deref())?
                .with_windows(classify::Windows::from_settings(settings)),
            deliveries,
            trusted_proxies: settings.http.trusted_proxies.clone(),
            anonymize_ip: settings.track.anonymize_ip,
            events,
            pixel: Bytes::from(make_pixel()?),
        })
    }

    /// The copy an open token names, or `None` (counted) when it does not verify.
    pub fn open_copy(&self, token: &str) -> Option<Uuid> {
        match token::verify(&self.keys, token) {
            Ok(Verified::Open { copy }) => Some(copy),
            _ => {
                METRICS.invalid(Kind::Open);
                None
            }
        }
    }

    /// The copy, link index and signed URL a click token names, or `None` when it does not
    /// verify (the caller counts it, since it may refuse a verified URL too).
    pub fn click_target(&self, token: &str) -> Option<(Uuid, u32, String)> {
        match token::verify(&self.keys, token) {
            Ok(Verified::Click { copy, link, url }) => Some((copy, link, url)),
            _ => None,
        }
    }

    /// Classifies the request and hands the event to the writer (never waits).
    pub fn record(&self, hit: &Hit<'_>, kind: Kind, copy: Uuid, link: Option<i32>) {
        let mut e = Event::new(kind, copy);
        let ip = hit.peer.map(|peer| {
            request::client_ip(
                peer,
                hit.forwarded_for.iter().copied(),
                &self.trusted_proxies,
            )
        });
        let agent = request::user_agent(hit.user_agent);
        let ua = classify::user_agent(&agent);
        let verdict = self.classifier.classify(
            &classify::Request {
                click: kind == Kind::Click,
                head: hit.head,
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
        e.method = Some(hit.method.to_string());
        e.client = ua.client.clone();
        e.device = ua.device.clone();
        e.os = ua.os.clone();
        self.events.send(e);
    }

    /// The 1x1 transparent GIF every eye request is answered with.
    pub fn pixel(&self) -> Bytes {
        self.pixel.clone()
    }
}

/// Registers the tracking metrics (every kind and class at zero).
pub fn register_metrics() {
    LazyLock::force(&METRICS);
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
