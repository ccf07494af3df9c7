//! The rewrite stage: turns one accepted message into per-recipient copies.
//!
//! Owns the MIME walk and splice, the streaming HTML rewriter (html5ever tokenizer, no DOM),
//! the link policy, the control headers and the tracking tokens.
//! Never re-serialises HTML or MIME, never drops a message: anything it cannot change safely
//! goes out untouched.

pub mod token;
