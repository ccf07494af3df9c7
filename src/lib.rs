//! mailtally is an SMTP relay that tracks the mail sent through it.
//!
//! Mail clients and applications submit to the relay; each HTML part is rewritten with an open
//! pixel and signed redirect links, one copy per recipient, queued in PostgreSQL and delivered
//! upstream. Opens ("eye") and clicks ("cursor") come back over HTTP, are classified as people or
//! machines, and are folded into per-template reports.
//!
//! The modules follow the flow of a message and of an event:
//!
//! - [`store`]: PostgreSQL, its migrations and the embedded default cluster;
//! - [`api`]: accounts (users, teams, tokens), visibility and the JSON API;
//! - [`insights`]: the aggregation job, report queries and the Insights page;
//! - [`http`]: the HTTP listener assembling the routes of the stages;
//! - [`config`], [`metrics`], [`context`], [`serve`]: settings, the Prometheus registry, shared
//!   state and the `serve` command.

pub mod api;
pub mod config;
pub mod context;
pub mod http;
pub mod insights;
pub mod metrics;
pub mod serve;
pub mod store;
