//! mailtally is an SMTP relay that tracks the mail sent through it.
//!
//! Mail clients and applications submit to the relay; each HTML part is rewritten with an open
//! pixel and signed redirect links, one copy per recipient, queued in PostgreSQL and delivered
//! upstream. Opens ("eye") and clicks ("cursor") come back over HTTP, are classified as people or
//! machines, and are folded into per-template reports.
//!
//! The modules follow the flow of a message and of an event:
//!
//! - [`relay`]: the SMTP submission server, one file per SMTP phase;
//! - [`rewrite`]: per-recipient tracked copies (pixel, signed links, MIME splice);
//! - [`queue`]: the durable queue in PostgreSQL (enqueue, claim with a lease, retry schedule);
//! - [`deliver`]: delivery workers, the upstream SMTP transport and the capture sink;
//! - [`track`]: the `/o/` (eye) and `/c/` (cursor) endpoints;
//! - [`events`]: the event type, the batch writer and the disk spool;
//! - [`insights`]: classification, aggregation, reports and the Insights page;
//! - [`notify`]: webhooks and the live event stream;
//! - [`api`]: accounts (users, teams, tokens), visibility and the JSON API;
//! - [`store`]: PostgreSQL, its migrations and the embedded default cluster;
//! - [`http`]: the HTTP listener assembling the routes of the stages, with [`http_limits`];
//! - [`ratelimit`]: failed authentications counted per client IP (SMTP AUTH, API tokens);
//! - [`escape`]: HTML escaping for every stage that writes markup;
//! - [`netguard`]: which addresses connections to user-named hosts (webhooks, IMAP) may reach;
//! - [`settings`], [`metrics`], [`context`], [`serve`]: typed settings, the Prometheus registry,
//!   shared state and the `serve` command.

pub mod api;
pub mod compose;
pub mod context;
pub mod deliver;
pub mod escape;
pub mod events;
pub mod followup;
pub mod http;
pub mod http_limits;
pub mod insights;
pub mod metrics;
pub mod netguard;
pub mod notify;
pub mod queue;
pub mod ratelimit;
pub mod relay;
pub mod replies;
pub mod rewrite;
pub mod serve;
pub mod settings;
pub mod store;
pub mod track;

// The path the stages and the tests were written against.
pub use settings as config;
