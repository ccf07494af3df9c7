//! Deliverability: what happens to mail after it left, and what keeps a sender from mailing an
//! address again. [`report`] reads bounces and complaints from a mailbox message (pure),
//! [`record`] turns a report into events of the copy and entries of the suppression list,
//! [`unsubscribe`] does the same for a List-Unsubscribe, and [`suppression`] is the list that
//! every way of sending asks first.
//!
//! It must never let a suppressed address be mailed by any way of sending, nor take a message
//! that is not a bounce or a complaint for one, nor act on a report that names no copy of the
//! mailbox owner's own.

pub mod report;
pub mod suppression;
pub mod unsubscribe;

pub use report::{read, Format, Kind, Recipient, Report};
