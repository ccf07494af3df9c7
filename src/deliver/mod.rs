//! Delivery: workers claim due copies from the queue, send them upstream with lettre's pooled
//! SMTP transport (or to the capture sink when UPSTREAM_URL is unset), and record the outcome.
//!
//! Owns how a copy leaves mailtally. It must never send a copy it has not claimed, never alter
//! a copy's bytes, and never retry a copy the upstream refused permanently.

pub mod upstream;
mod worker;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use thiserror::Error;
use tokio::task::JoinSet;

use crate::base::Base;
use crate::metrics;
use crate::queue;

pub use upstream::Transport;

#[derive(Debug, Error)]
pub enum DeliverError {
    #[error("bad UPSTREAM_URL: {0}")]
    Upstream(String),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

pub struct DeliverMetrics {
    pub attempts_total: IntCounterVec,
    pub latency_seconds: HistogramVec,
    pub queue_depth: IntGaugeVec,
}

/// From a fraction of a second (capture sink) to days (retries).
const DELIVERY_LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0, 86400.0, 432000.0,
];

pub static METRICS: LazyLock<DeliverMetrics> = LazyLock::new(|| {
    let m = deliver_metrics();
    // Listed at zero from the start, so that dashboards and alerts see every series.
    for result in ["delivered", "deferred", "bounced"] {
        m.attempts_total.with_label_values(&[result]);
    }
    for status in ["queued", "deferred", "sending"] {
        m.queue_depth.with_label_values(&[status]);
    }
    m
});

fn deliver_metrics() -> DeliverMetrics {
    DeliverMetrics {
        attempts_total: metrics::counter_vec(
            "delivery_attempts_total",
            "delivery attempts by result (delivered, deferred, bounced)",
            &["result"],
        ),
        latency_seconds: metrics::histogram_vec(
            "delivery_latency_seconds",
            "time from acceptance to delivery of a copy, by transport",
            &["via"],
            DELIVERY_LATENCY_BUCKETS,
        ),
        queue_depth: metrics::gauge_vec(
            "queue_depth_copies",
            "copies still to deliver, by status (queued, deferred, sending)",
            &["status"],
        ),
    }
}

/// How long a claim is held. Longer than a batch can take (each send times out), so that a
/// live worker never loses its copies; a dead node's copies are retried after it.
pub const LEASE: Duration = Duration::from_secs(15 * 60);
/// Copies claimed at once by a worker.
pub const BATCH: i64 = 8;
/// How often workers look for due copies without being woken (retries, other nodes' mail).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The running delivery workers.
pub struct Deliver {
    tasks: JoinSet<()>,
}

impl Deliver {
    /// Waits for the workers, which stop after their current attempt once shutdown begins.
    pub async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The name this node's leases carry: stable across restarts of the same node, distinct
/// between nodes (two nodes cannot listen on one address of one host).
pub fn node_name(ctx: &Base) -> String {
    format!("{}/{}", crate::base::host_name(), ctx.settings.relay.listen)
}

/// Starts DELIVERY_WORKERS workers and the queue-depth gauge.
pub async fn start(ctx: Base) -> Result<Deliver, DeliverError> {
    let transport = Arc::new(Transport::from_settings(&ctx.settings)?);
    let owner: Arc<str> = node_name(&ctx).into();
    let released = queue::release_own_leases(&ctx.pool, &owner).await?;
    if released > 0 {
        tracing::info!(released, "freed the delivery leases held before a restart");
    }
    let mut tasks = JoinSet::new();
    for _ in 0..ctx.settings.deliver.workers.max(1) {
        tasks.spawn(worker::run(ctx.clone(), transport.clone(), owner.clone()));
    }
    tasks.spawn(depth_gauge(ctx.clone()));
    tracing::info!(
        workers = ctx.settings.deliver.workers,
        upstream = transport.describe(),
        "delivery workers running"
    );
    Ok(Deliver { tasks })
}

async fn depth_gauge(ctx: Base) {
    loop {
        match queue::claim::depth(&ctx.pool).await {
            Ok(rows) => {
                for status in ["queued", "deferred", "sending"] {
                    let n = rows
                        .iter()
                        .find(|(s, _)| s == status)
                        .map(|(_, n)| *n)
                        .unwrap_or(0);
                    METRICS.queue_depth.with_label_values(&[status]).set(n);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the queue depth"),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Registers delivery's metrics, every way out at zero.
pub fn register_metrics() {
    for via in upstream::Via::ALL {
        METRICS.latency_seconds.with_label_values(&[via.label()]);
    }
}
