//! Insights: what the tracked events mean.
//!
//! Owns classification of opens and clicks (human, proxy, Apple MPP, scanner, prefetch) and,
//! later, the aggregation job and reports. It must never do I/O on a tracking request's path:
//! what the handlers call here is pure and quick.

pub mod classify;
