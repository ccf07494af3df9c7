//! Deliverability: what happens to mail after it left, and what keeps a sender from mailing an
//! address again. [`report`] reads bounces and complaints from a mailbox message (pure),
//! [`record`] turns a report into events of the copy and entries of the suppression list,
//! [`unsubscribe`] does the same for a List-Unsubscribe, and [`suppression`] is the list that
//! every way of sending asks first.
//!
//! It must never let a suppressed address be mailed by any way of sending, nor take a message
//! that is not a bounce or a complaint for one, nor act on a report that names no copy of the
//! mailbox owner's own.

pub mod record;
pub mod report;
pub mod suppression;
pub mod unsubscribe;

pub use report::{read, Format, Kind, Recipient, Report};

use std::sync::LazyLock;

use prometheus::IntCounterVec;

/// Reports read from mailboxes by what they were (`hard_bounce`, `soft_bounce`, `complaint`,
/// `unmatched`: naming no copy of the owner's), addresses suppressed by reason, and
/// unsubscribes by the way they came.
pub struct Metrics {
    pub reports: IntCounterVec,
    pub suppressed: IntCounterVec,
    pub unsubscribes: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    reports: crate::metrics::counter_vec(
        "deliverability_reports_total",
        "bounces and complaints read from senders' mailboxes, by kind (unmatched: no copy of the owner's)",
        &["kind"],
    ),
    suppressed: crate::metrics::counter_vec(
        "suppressions_added_total",
        "addresses put on a suppression list, by reason",
        &["reason"],
    ),
    unsubscribes: crate::metrics::counter_vec(
        "unsubscribes_total",
        "unsubscribes through List-Unsubscribe, by how (one-click, page)",
        &["how"],
    ),
}
});

/// The label values of [`Metrics::reports`].
pub const REPORT_KINDS: [&str; 4] = ["hard_bounce", "soft_bounce", "complaint", "unmatched"];

/// Registers the metrics, every label value at zero.
pub fn register_metrics() {
    for kind in REPORT_KINDS {
        METRICS.reports.with_label_values(&[kind]);
    }
    for reason in suppression::Reason::ALL {
        METRICS.suppressed.with_label_values(&[reason.as_str()]);
    }
    for way in unsubscribe::Way::ALL {
        METRICS.unsubscribes.with_label_values(&[way.as_str()]);
    }
}

/// Counts what one report came to.
pub fn count(report: &Report, done: &record::Recorded) {
    let kind = if done.events == 0 && done.unmatched > 0 {
        "unmatched"
    } else {
        report.kind.label()
    };
    METRICS.reports.with_label_values(&[kind]).inc();
    let reason = match report.kind {
        Kind::HardBounce => suppression::Reason::HardBounce,
        Kind::SoftBounce => suppression::Reason::SoftBounce,
        Kind::Complaint => suppression::Reason::Complaint,
    };
    METRICS
        .suppressed
        .with_label_values(&[reason.as_str()])
        .inc_by(done.suppressed.len() as u64);
}
