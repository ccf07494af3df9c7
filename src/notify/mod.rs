//! Notifications: webhooks, the live event stream and the Insights page's notices.
//!
//! Owns telling people about events: webhook endpoints, an outbox in PostgreSQL filled from the
//! events table, signed deliveries (Standard Webhooks) with retries, and the live stream's
//! fan-out (the HTTP side is `http::api::stream`). It must never tell anyone about an event of a
//! message they may not see, and never change an event.

pub mod dispatch;
pub mod endpoints;
pub mod metrics;
pub mod outbox;
pub mod page;
pub mod signing;
pub mod stream;

use crate::base::Base;

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "open.first",
    "open",
    "click",
    "delivered",
    "deferred",
    "bounced",
    "reply",
    "complaint",
    "unsubscribe",
];

/// Starts the outbox producer, the dispatcher and the stream listener; they stop with
/// `ctx.shutdown`.
pub fn start(ctx: &Base, hub: &stream::Hub) -> Vec<tokio::task::JoinHandle<()>> {
    metrics::register();
    vec![
        tokio::spawn(outbox::run(ctx.clone())),
        tokio::spawn(dispatch::run(ctx.clone())),
        tokio::spawn(stream::listen(ctx.clone(), hub.clone())),
        tokio::spawn(page::run(ctx.clone(), hub.clone())),
    ]
}
