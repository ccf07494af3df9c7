//! mailtally is an SMTP relay that tracks the mail sent through it.
//!
//! Mail clients and applications submit to the relay; each HTML part is rewritten with an open
//! pixel and signed redirect links, one copy per recipient, queued in PostgreSQL and delivered
//! upstream. Opens ("eye") and clicks ("cursor") come back over HTTP, are classified as people or
//! machines, and are folded into per-template reports.
//!
//! The modules follow the flow of a message and of an event, in layers; a module imports only
//! from its own layer or the layers below (`tests/it/layers.rs` keeps it so):
//!
//! 1. base: [`settings`] (typed settings, also reachable as `config`), [`metrics`] (the
//!    Prometheus registry), [`store`] (PostgreSQL, migrations, the embedded cluster, the
//!    installation's own values), [`base`] (what every stage shares:
//!    settings, pool, shutdown), [`netguard`] (which addresses user-named hosts may reach),
//!    [`escape`];
//! 2. domain: [`accounts`] (users, teams, tokens, the one visibility rule, the failure limiter)
//!    and [`classify`] (human or machine, and why);
//! 3. data: [`rewrite`] (tracked copies, pure), [`events`] (the writer, the spool, and the text of
//!    every statement that writes `events`),
//!    [`queue`] (messages, copies, links, claims, retries);
//! 4. stages: [`deliver`], [`track`], [`notify`], [`compose`], [`followup`], [`replies`],
//!    [`deliverability`] (bounces, complaints, unsubscribes, the suppression list), [`insights`],
//!    [`erasure`]; no HTTP inside;
//! 5. front doors: [`relay`] (SMTP) and [`http`] (route table, auth, errors, limits, API, pages);
//! 6. top: [`serve`] and `main`.

pub mod accounts;
pub mod base;
pub mod classify;
pub mod compose;
pub mod deliver;
pub mod deliverability;
pub mod erasure;
pub mod escape;
pub mod events;
pub mod followup;
pub mod http;
pub mod insights;
pub mod metrics;
pub mod netguard;
pub mod notify;
pub mod queue;
pub mod relay;
pub mod replies;
pub mod rewrite;
pub mod serve;
pub mod settings;
pub mod store;
pub mod track;

// The path the stages and the tests were written against.
pub use settings as config;
