//! Metrics of the notification stage.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGauge};

use crate::metrics::{counter_vec, gauge, histogram_vec, LATENCY_BUCKETS};

pub struct NotifyMetrics {
    pub outbox_queued: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub delivery_duration: HistogramVec,
    pub outbox_pending: IntGauge,
    pub endpoints_disabled: IntCounterVec,
    pub stream_clients: IntGauge,
}

pub static NOTIFY: LazyLock<NotifyMetrics> = LazyLock::new(|| {
    NotifyMetrics {
    outbox_queued: counter_vec(
        "webhook_notifications_queued_total",
        "webhook notifications put in the outbox, by event type",
        &["type"],
    ),
    deliveries: counter_vec(
        "webhook_delivery_attempts_total",
        "webhook delivery attempts by result (delivered, failed_http, failed_network, failed_not_allowed, gave_up, dropped)",
        &["result"],
    ),
    delivery_duration: histogram_vec(
        "webhook_delivery_duration_seconds",
        "time of one webhook POST, by result",
        &["result"],
        LATENCY_BUCKETS,
    ),
    outbox_pending: gauge("webhook_outbox_pending", "webhook notifications waiting to be delivered"),
    endpoints_disabled: counter_vec(
        "webhook_endpoints_disabled_total",
        "webhook endpoints disabled after repeated failures",
        &["reason"],
    ),
    stream_clients: gauge("event_stream_clients", "clients connected to the live event stream"),
}
});
