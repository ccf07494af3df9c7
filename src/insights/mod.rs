//! Insights: what the tracked events mean. Classification at ingest (human, proxy, Apple MPP,
//! scanner, prefetch), the aggregation job that turns events into per-copy state and rollups
//! (with hindsight classification: sweeps, prefetch), the report queries over those rollups, and
//! the server-rendered Insights page.
//!
//! Owns the watermark and every `insights_*` table. It must never do I/O on a tracking request's
//! path (what the handlers call, `classify`, is pure and quick), never let a report read the raw
//! events table, and never apply visibility itself: callers pass a
//! [`crate::api::visibility::Viewer`] and the rule comes from `api::visibility`.

pub mod aggregate;
pub mod chart;
pub mod classify;
pub mod hindsight;
pub mod metrics;
pub mod page;
pub mod report;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum InsightsError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}
