//! The Prometheus registry all stages register into, and helpers to build metrics.
//!
//! Names carry the `mailtally_` prefix and their unit. Labels are bounded sets (a result, a
//! kind, a class), never a token, an address or a URL.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new_custom(Some("mailtally".into()), None)
        .expect("the mailtally prefix is a valid metric prefix");
    #[cfg(target_os = "linux")]
    {
        let process = prometheus::process_collector::ProcessCollector::for_self();
        registry
            .register(Box::new(process))
            .expect("process metrics register once");
    }
    registry
});

/// The registry behind `/metrics`.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Buckets for latencies from a fraction of a millisecond to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

// Each constructor registers what it builds; a name registered twice is a programming error
// caught by the first test that touches the stage.

pub fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid counter");
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("counter registers once");
    c
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("counter registers once");
    c
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("gauge registers once");
    g
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("gauge registers once");
    g
}

pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid histogram");
    REGISTRY
        .register(Box::new(h.clone()))
        .expect("histogram registers once");
    h
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid histogram");
    REGISTRY
        .register(Box::new(h.clone()))
        .expect("histogram registers once");
    h
}

/// Metrics of the process as a whole: build, database pool, HTTP.
pub struct CoreMetrics {
    pub build_info: IntGaugeVec,
    pub db_pool_size: IntGauge,
    pub db_pool_available: IntGauge,
    pub db_pool_waiting: IntGauge,
    pub http_request_duration: HistogramVec,
}

pub static CORE: LazyLock<CoreMetrics> = LazyLock::new(|| {
    let build_info = gauge_vec("build_info", "mailtally version running", &["version"]);
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    CoreMetrics {
        build_info,
        db_pool_size: gauge(
            "db_pool_connections",
            "connections open in the PostgreSQL pool",
        ),
        db_pool_available: gauge(
            "db_pool_idle_connections",
            "idle connections in the PostgreSQL pool",
        ),
        db_pool_waiting: gauge(
            "db_pool_waiting_tasks",
            "tasks waiting for a PostgreSQL connection",
        ),
        http_request_duration: histogram_vec(
            "http_request_duration_seconds",
            "HTTP request latency by route group and status class",
            &["route", "status"],
            LATENCY_BUCKETS,
        ),
    }
});

/// Registers the process metrics (build, pool, HTTP latency); each stage registers its own
/// with its `register_metrics`, so that `/metrics` lists them before their first use.
pub fn init() {
    LazyLock::force(&CORE);
}

/// Refreshes the pool gauges from `pool`.
pub fn observe_pool(pool: &deadpool_postgres::Pool) {
    let status = pool.status();
    CORE.db_pool_size.set(status.size as i64);
    CORE.db_pool_available.set(status.available as i64);
    CORE.db_pool_waiting.set(status.waiting as i64);
}

/// The Prometheus text exposition of everything registered.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buf)
        .expect("text encoding into a Vec does not fail");
    String::from_utf8(buf).unwrap_or_default()
}
