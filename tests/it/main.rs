//! Every integration test of mailtally, in one binary so that the crate is linked once. Each
//! module is one area (the relay, the rewrite, tracking, insights, notifications, faults,
//! security, the layers of the code); the `*_support` modules and `common` are shared helpers
//! (throwaway PostgreSQL clusters, a running server, SMTP peers, generated data).

mod common;
mod insights_support;
mod rewrite_support;
mod track_support;

mod api_visibility;
mod cli;
mod compose;
mod dashboards;
mod deliver_lease;
mod deliver_nodes;
mod deliver_upstream;
mod deliverability;
mod e2e;
mod erase;
mod faults;
mod followup;
mod insights_browser;
mod insights_fold;
mod insights_pages;
mod insights_people;
mod insights_report;
mod insights_restart;
mod insights_views;
mod layers;
mod notify;
mod openapi;
mod postfix_dsn;
mod relay_submit;
mod replies;
mod rewrite_cases;
mod rewrite_corpus;
mod rewrite_delivered;
mod rewrite_random;
mod security;
mod store;
mod track_classes;
mod track_endpoints;
mod track_writer;
