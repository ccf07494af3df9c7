//! The rewrite stage: turns one accepted message into per-recipient copies.
//!
//! Owns the MIME walk and splice, the streaming HTML rewriter (html5ever tokenizer, no DOM),
//! the link policy, the control headers and the tracking tokens.
//! Never re-serialises HTML or MIME, never drops a message: anything it cannot change safely
//! goes out untouched.

pub mod copy;
pub mod html;
pub mod policy;
pub mod token;

/// A link that is tracked: its index in the message and its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedLink {
    pub index: u32,
    pub url: String,
}
