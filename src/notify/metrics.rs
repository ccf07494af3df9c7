//! Metrics of the notification stage.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGauge};

use crate::metrics::{counter_vec, gauge, histogram_vec, LATENCY_BUCKETS};

/// How one webhook delivery attempt ended: the label set of the delivery metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    Delivered,
    FailedHttp,
    FailedNetwork,
    /// The address policy refused the receiver's address (OUTBOUND_ALLOWED_NETWORKS).
    FailedNotAllowed,
    GaveUp,
    Dropped,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 6] = [
        WebhookResult::Delivered,
        WebhookResult::FailedHttp,
        WebhookResult::FailedNetwork,
        WebhookResult::FailedNotAllowed,
        WebhookResult::GaveUp,
        WebhookResult::Dropped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WebhookResult::Delivered => "delivered",
            WebhookResult::FailedHttp => "failed_http",
            WebhookResult::FailedNetwork => "failed_network",
            WebhookResult::FailedNotAllowed => "failed_not_allowed",
            WebhookResult::GaveUp => "gave_up",
            WebhookResult::Dropped => "dropped",
        }
    }
}

/// Why an endpoint was disabled: the label set of `webhook_endpoints_disabled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableReason {
    Failures,
}

impl DisableReason {
    pub const ALL: [DisableReason; 1] = [DisableReason::Failures];

    pub fn label(self) -> &'static str {
        match self {
            DisableReason::Failures => "failures",
        }
    }
}

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

/// Registers the notification metrics, every result, reason and event type at zero.
pub fn register() {
    let notify = &NOTIFY;
    for result in WebhookResult::ALL {
        notify.deliveries.with_label_values(&[result.label()]);
        notify
            .delivery_duration
            .with_label_values(&[result.label()]);
    }
    for reason in DisableReason::ALL {
        notify
            .endpoints_disabled
            .with_label_values(&[reason.label()]);
    }
    for event_type in super::EVENT_TYPES {
        notify.outbox_queued.with_label_values(&[event_type]);
    }
}
