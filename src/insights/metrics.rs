//! The aggregation job's metrics: lag (events and seconds), durations, rows folded, and opens and
//! clicks by the final class the reports count them with.

use std::sync::LazyLock;

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::classify::Class;
use crate::metrics::{counter, counter_vec, gauge, histogram, registry, LATENCY_BUCKETS};

pub struct InsightsMetrics {
    pub lag_events: IntGauge,
    pub lag_seconds: Gauge,
    pub batch_duration: Histogram,
    pub run_duration: Histogram,
    pub folded_events: IntCounter,
    pub folded_copies: IntCounter,
    /// Of `folded_copies`, those recomputed from all their events instead of moved forward.
    pub recomputed_copies: IntCounter,
    pub errors: IntCounter,
    /// Labels `kind` (open, click) and `final_class` (a [`Class`]).
    pub events_by_final_class: IntCounterVec,
}

/// The kinds that carry a class, as labelled.
pub const CLASSED_KINDS: [&str; 2] = ["open", "click"];
/// Every class, as labelled.
pub const CLASSES: [Class; 5] = [
    Class::Human,
    Class::AppleMpp,
    Class::Proxy,
    Class::Scanner,
    Class::Prefetch,
];

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
            "per-copy state rows moved forward by a batch (recomputed or folded incrementally)",
        ),
        recomputed_copies: counter(
            "aggregation_copies_recomputed_total",
            "per-copy state rows recomputed from all of the copy's events: no state yet, or an \
             event earlier than one already folded",
        ),
        errors: counter("aggregation_errors_total", "aggregation runs that failed"),
        events_by_final_class: counter_vec(
            "aggregation_events_by_final_class_total",
            "opens and clicks folded into the reports, by kind and the class the reports count \
             them with (after hindsight), counted once, when folded",
            &["kind", "final_class"],
        ),
    }
});

pub fn init() {
    // Every series at zero from the start (2 kinds x 5 classes), so that rates exist at once.
    for kind in CLASSED_KINDS {
        for class in CLASSES {
            METRICS
                .events_by_final_class
                .with_label_values(&[kind, class.as_str()]);
        }
    }
}
