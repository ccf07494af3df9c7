//! Insights: what the tracked events mean. The aggregation job turns classified events into
//! per-copy state and rollups (applying the hindsight rules of [`crate::classify::hindsight`]),
//! moving each copy's state forward by its new events ([`fold`]) and recomputing it from all of
//! its events only when the state cannot judge them, and the report queries read those rollups
//! (all-time rollups when a report covers every day, one per deal, lead and project for a
//! report filtered by one of them). Who engaged ([`people`]), the exports of lists and events,
//! and where people read ([`geo`]) are counted from one audience's classified events (as a
//! message's timeline is), so that they match the events exactly. The pages that
//! show them live in [`crate::http::ui`]; [`clickmap`] makes the click map's document from a
//! stored copy (pure).
//!
//! Owns the watermark and every `insights_*` table. It must never do I/O on a tracking request's
//! path (what the handlers call, `classify`, is pure and quick), never let a report of figures (templates, days,
//! links, clients) read the raw events table, and never apply visibility itself: callers pass a
//! [`crate::accounts::visibility::Viewer`] and the rule comes from [`crate::accounts::visibility`]. No HTTP inside.

pub mod aggregate;
pub mod clickmap;
pub mod fold;
pub mod geo;
pub mod metrics;
pub mod people;
pub mod report;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum InsightsError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}
