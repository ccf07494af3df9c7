//! Deliverability: what happens to mail after it left (bounces, complaints, unsubscribes) and
//! the suppression list that keeps a sender from mailing those addresses again.
//!
//! It must never let a suppressed address be mailed by any way of sending, nor take a
//! message that is not a bounce or a complaint for one.

pub mod suppression;
pub mod unsubscribe;
