//! Follow-up automations: when a copy of one template was delivered and, within a window, its
//! recipient did not open (as a person), click or reply, another template goes to them as a
//! reply in the same thread, optionally at a given hour of the recipient's day.
//!
//! Owns the `automations` and `followups` tables and the scheduler inside `serve`. It must
//! never send a follow-up twice (the follow-up is queued in the transaction that marks it
//! sent, under a row lock that other nodes skip), never send one to a recipient who replied or
//! unsubscribed, and never count a machine's open as a person's.

pub mod rules;
pub mod schedule;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FollowupError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Insights(#[from] crate::insights::InsightsError),
    #[error(transparent)]
    Account(#[from] crate::accounts::AccountError),
}

pub use schedule::{cancel_for_recipient, serve_loop};

/// Registers the follow-up metrics, every outcome at zero.
pub fn register_metrics() {
    for outcome in ["sent", "skipped", "cancelled", "failed"] {
        schedule::FOLLOWUPS.with_label_values(&[outcome]);
    }
}
