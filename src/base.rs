//! What every running stage shares: the settings, the database pool and the shutdown signal.
//! Cheap to clone.
//!
//! Owns nothing else on purpose: each stage's own state (the tracker, the event hub, the
//! rewriter) is a handle of its own, passed only to the stages that use it.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

#[derive(Clone)]
pub struct Base {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    /// The URL behind the pool, for dedicated connections (LISTEN).
    pub database_url: String,
    /// Cancelled when the process begins a graceful shutdown.
    pub shutdown: CancellationToken,
}

/// This machine's host name (EHLO, the self-signed certificate, lease owner names).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
