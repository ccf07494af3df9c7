//! The aggregation job's metrics: lag (events and seconds), durations, rows folded.

use std::sync::LazyLock;

use prometheus::{Gauge, Histogram, IntCounter, IntGauge, Opts};

use crate::metrics::{counter, gauge, histogram, registry, LATENCY_BUCKETS};

pub struct InsightsMetrics {
    pub lag_events: IntGauge,
    pub lag_seconds: Gauge,
    pub batch_duration: Histogram,
    pub run_duration: Histogram,
    pub folded_events: IntCounter,
    pub folded_copies: IntCounter,
    pub errors: IntCounter,
}

pub static METRICS: LazyLock<InsightsMetrics> = LazyLock::new(|| {
    // The shared helpers only build integer gauges; a lag in seconds wants fractions.
    let lag_seconds = Gauge::with_opts(Opts::new(
        "aggregation_lag_seconds",
        "age of the oldest event not yet folded into the rollups (0 when caught up)",
    ))
    .expect("valid gauge");
    registry()
        .register(Box::new(lag_seconds.clone()))
        .expect("gauge registers once");
    InsightsMetrics {
        lag_events: gauge(
            "aggregation_lag_events",
            "events not yet folded into the rollups",
        ),
        lag_seconds,
        batch_duration: histogram(
            "aggregation_batch_duration_seconds",
            "time to fold one batch of events",
            LATENCY_BUCKETS,
        ),
        run_duration: histogram(
            "aggregation_run_duration_seconds",
            "time of one aggregation run, until caught up",
            LATENCY_BUCKETS,
        ),
        folded_events: counter(
            "aggregation_events_folded_total",
            "events folded into per-copy state and rollups",
        ),
        folded_copies: counter(
            "aggregation_copies_folded_total",
            "per-copy state rows recomputed",
        ),
        errors: counter("aggregation_errors_total", "aggregation runs that failed"),
    }
});

pub fn init() {
    LazyLock::force(&METRICS);
}
