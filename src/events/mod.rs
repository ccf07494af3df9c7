//! Events: the event type, the bounded channel the edges push into, the batch writer that COPYs
//! batches into PostgreSQL, and the disk spool that keeps events while PostgreSQL is away.
//!
//! Owns the path from "an event happened" to "a row in `events`". It must never make a producer
//! wait: a full channel or a database outage sends events to the spool, never back to the caller,
//! and never drops them.

pub mod lane;
pub mod spool;
pub mod sql;
pub mod writer;

use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::classify::Class;
use crate::metrics;

/// What happened to a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Accepted,
    Delivered,
    Deferred,
    Bounced,
    Open,
    Click,
    Reply,
    /// A feedback report (ARF) of the copy's recipient: they marked it as spam.
    Complaint,
    /// The recipient unsubscribed (List-Unsubscribe one-click, or the page).
    Unsubscribe,
}

impl Kind {
    /// The spelling of the `events.kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Accepted => "accepted",
            Kind::Delivered => "delivered",
            Kind::Deferred => "deferred",
            Kind::Bounced => "bounced",
            Kind::Open => "open",
            Kind::Click => "click",
            Kind::Reply => "reply",
            Kind::Complaint => "complaint",
            Kind::Unsubscribe => "unsubscribe",
        }
    }
}

/// One event as the edge saw it. The id (UUIDv7) and time are chosen where the event happens,
/// so that a batch written twice (spool replay, a timeout after commit) lands once.
/// `message_id` is not here: the writer resolves it from the copy (see [`lane`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub copy_id: Uuid,
    pub kind: Kind,
    pub link_idx: Option<i32>,
    pub class: Option<Class>,
    pub reason: Option<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub method: Option<String>,
    pub client: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
}

impl Event {
    /// An event of `kind` for `copy`, now, with a fresh id and no request facts.
    pub fn new(kind: Kind, copy_id: Uuid) -> Event {
        Event {
            id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            copy_id,
            kind,
            link_idx: None,
            class: None,
            reason: None,
            ip: None,
            user_agent: None,
            method: None,
            client: None,
            device: None,
            os: None,
        }
    }
}

/// Metrics of the event pipeline.
pub struct EventMetrics {
    pub channel_depth: IntGauge,
    pub batch_size: Histogram,
    pub flush_duration: Histogram,
    pub written: IntCounter,
    pub spooled: IntCounterVec,
    pub replayed: IntCounter,
    pub spool_bytes: IntGauge,
    pub spool_corrupt: IntCounter,
    pub flush_failures: IntCounter,
    pub rejected: IntCounter,
}

pub static METRICS: LazyLock<EventMetrics> = LazyLock::new(|| {
    let m = event_metrics();
    // Listed at zero from the start, so that dashboards and alerts see them before any outage.
    for cause in ["channel_full", "database_down", "database_error"] {
        m.spooled.with_label_values(&[cause]);
    }
    m
});

fn event_metrics() -> EventMetrics {
    EventMetrics {
        channel_depth: metrics::gauge(
            "event_channel_depth",
            "events waiting in the channel to the batch writer",
        ),
        batch_size: metrics::histogram(
            "event_batch_size",
            "events per batch written to PostgreSQL",
            &[
                1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            ],
        ),
        flush_duration: metrics::histogram(
            "event_flush_duration_seconds",
            "time to COPY one batch of events into PostgreSQL and commit",
            metrics::LATENCY_BUCKETS,
        ),
        written: metrics::counter(
            "events_written_total",
            "events committed to PostgreSQL by the batch writer",
        ),
        spooled: metrics::counter_vec(
            "events_spooled_total",
            "events written to the disk spool, by cause",
            &["cause"],
        ),
        replayed: metrics::counter(
            "events_replayed_total",
            "spooled events replayed into PostgreSQL",
        ),
        spool_bytes: metrics::gauge("event_spool_bytes", "bytes in the event spool on disk"),
        spool_corrupt: metrics::counter(
            "event_spool_corrupt_records_total",
            "spool records skipped because they were torn or failed their checksum",
        ),
        flush_failures: metrics::counter(
            "event_flush_failures_total",
            "batches PostgreSQL did not take (outage, timeout)",
        ),
        rejected: metrics::counter(
            "events_rejected_total",
            "events PostgreSQL refused for their contents, dropped (a bug: see the log)",
        ),
    }
}

/// The producers' side of the pipeline: cheap to clone, never waits.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Event>,
    /// Where events go when the channel is full or closed; the writer moves them to the spool.
    overflow: Arc<Overflow>,
}

/// Events that did not fit in the channel, waiting for the writer to spool them.
#[derive(Default)]
pub struct Overflow {
    events: Mutex<Vec<Event>>,
    pub(crate) notify: Notify,
}

impl Overflow {
    pub(crate) fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        self.notify.notify_one();
    }
}

impl EventSink {
    /// Hands `event` to the writer. Returns at once: when the channel is full, the event goes to
    /// the overflow list that the writer spools to disk.
    pub fn send(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event))
            | Err(mpsc::error::TrySendError::Closed(event)) => self.overflow.push(event),
        }
    }

    /// Events queued in the channel now.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// A channel of `capacity` events: the sink for producers, the receiving end for the writer.
pub fn channel(capacity: usize) -> (EventSink, mpsc::Receiver<Event>, Arc<Overflow>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Overflow::default());
    (
        EventSink {
            tx,
            overflow: overflow.clone(),
        },
        rx,
        overflow,
    )
}

/// Registers the writer's metrics.
pub fn register_metrics() {
    LazyLock::force(&METRICS);
}
