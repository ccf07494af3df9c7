//! The JSON API and the accounts behind it: users, teams, API tokens, password checks.
//!
//! Owns who a caller is. It must never hand out tracking data without the visibility rules,
//! and never store a password or token in a form that can be read back.

pub mod accounts;
