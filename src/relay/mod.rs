//! The SMTP submission server: listener, STARTTLS, the session state machine (one file per
//! phase) and the limits that guard it.
//!
//! Owns what a client may say and what it is answered. It must never answer 250 to DATA before
//! the message is committed in PostgreSQL, never relay for an unauthenticated client outside
//! SUBMIT_TRUSTED_NETWORKS, and never let an `X-Mailtally-*` header leave through a copy.

mod auth;
pub mod data;
mod ehlo;
mod listener;
mod mail;
mod rcpt;
mod reply;
mod session;
pub mod tls;

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use thiserror::Error;

pub use crate::queue::MessageFacts;
pub use data::{copies_for, Handoff};
pub use listener::{start, Relay};

use crate::metrics;

#[derive(Debug, Error)]
pub enum RelayError {
    #[error("cannot listen for SMTP on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The relay's metrics; labels are bounded sets.
pub struct RelayMetrics {
    pub sessions_total: IntCounter,
    pub sessions_active: IntGauge,
    pub auth_failures_total: IntCounter,
    pub messages_accepted_total: IntCounter,
    pub messages_rejected_total: IntCounterVec,
    pub received_bytes_total: IntCounter,
    pub messages_untouched_total: IntCounterVec,
}

pub static METRICS: LazyLock<RelayMetrics> = LazyLock::new(|| {
    RelayMetrics {
    sessions_total: metrics::counter("smtp_sessions_total", "SMTP sessions opened"),
    sessions_active: metrics::gauge("smtp_sessions_active", "SMTP sessions open now"),
    auth_failures_total: metrics::counter("smtp_auth_failures_total", "failed SMTP AUTH attempts"),
    messages_accepted_total: metrics::counter(
        "smtp_messages_accepted_total",
        "messages committed to the queue and answered 250",
    ),
    messages_rejected_total: metrics::counter_vec(
        "smtp_messages_rejected_total",
        "messages refused, by reason",
        &["reason"],
    ),
    received_bytes_total: metrics::counter(
        "smtp_received_bytes_total",
        "message bytes received by DATA and BDAT",
    ),
    messages_untouched_total: with_every_untouched(metrics::counter_vec(
        "rewrite_untouched_messages_total",
        "messages sent on unchanged, by reason (signed, encrypted, unparseable, tracking off, DKIM without key) and cause of unparseable",
        &["reason", "cause"],
    )),
}
});

/// Every reason and cause at zero from the start, so that a rate over them is never "no data".
fn with_every_untouched(c: IntCounterVec) -> IntCounterVec {
    for why in crate::rewrite::Untouched::all() {
        c.with_label_values(&[why.as_str(), why.cause()]);
    }
    c
}

/// Why a message was refused: the bounded label set of `smtp_messages_rejected_total`.
#[derive(Debug, Clone, Copy)]
pub enum RejectReason {
    Size,
    Recipients,
    Auth,
    Sender,
    Database,
    Shutdown,
    /// An unknown value in a control header.
    Header,
    /// SENDER_MAX_BYTES_PER_HOUR.
    Budget,
    /// A recipient on the sender's suppression list.
    Suppressed,
}

impl RejectReason {
    /// Every reason, so that each series is exported at zero from the start.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::Size,
        RejectReason::Recipients,
        RejectReason::Auth,
        RejectReason::Sender,
        RejectReason::Database,
        RejectReason::Shutdown,
        RejectReason::Header,
        RejectReason::Budget,
        RejectReason::Suppressed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Size => "size",
            RejectReason::Recipients => "recipients",
            RejectReason::Auth => "auth",
            RejectReason::Sender => "sender",
            RejectReason::Database => "database",
            RejectReason::Shutdown => "shutdown",
            RejectReason::Header => "header",
            RejectReason::Budget => "budget",
            RejectReason::Suppressed => "suppressed",
        }
    }

    pub fn count(self) {
        METRICS
            .messages_rejected_total
            .with_label_values(&[self.label()])
            .inc();
    }
}

/// Registers the relay's metrics, every rejection reason at zero.
pub fn register_metrics() {
    for reason in RejectReason::ALL {
        METRICS
            .messages_rejected_total
            .with_label_values(&[reason.label()]);
    }
}
