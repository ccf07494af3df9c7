//! Delivery times of recently delivered copies, for the timing rules of classification.
//!
//! A background task polls `copies.delivered_at` (so deliveries made by any node are seen) and
//! keeps the copies delivered within [`WINDOW`]. Handlers read it without waiting: a copy that
//! is not there was not delivered within the window, unless the cache is stale (the database is
//! away), in which case the answer is "unknown".

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::classify::Delivery;

/// Deliveries older than this cannot make an event "within seconds of delivery".
pub const WINDOW: TimeDelta = TimeDelta::minutes(10);
/// How often the cache asks PostgreSQL.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Past this without a successful poll the cache no longer vouches for absent copies.
const STALE_AFTER: Duration = Duration::from_secs(5);
/// Commits land out of timestamp order; look back this far past the newest time seen.
const OVERLAP: TimeDelta = TimeDelta::seconds(30);

#[derive(Default)]
pub struct DeliveryCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    delivered: HashMap<Uuid, DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
    polled_at: Option<Instant>,
}

impl DeliveryCache {
    pub fn new() -> Arc<DeliveryCache> {
        Arc::new(DeliveryCache::default())
    }

    /// What is known of `copy`'s delivery, without waiting on anything but a read lock.
    pub fn lookup(&self, copy: Uuid) -> Delivery {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = inner.delivered.get(&copy) {
            return Delivery::At(*at);
        }
        match inner.polled_at {
            // A copy made within the window may have been delivered since the last poll: only
            // older copies are known not to have been delivered "seconds ago".
            Some(t) if t.elapsed() < STALE_AFTER && !created_within_window(copy) => {
                Delivery::NotRecent
            }
            _ => Delivery::Unknown,
        }
    }

    /// Records deliveries (the poller, and tests).
    pub fn insert(&self, rows: impl IntoIterator<Item = (Uuid, DateTime<Utc>)>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for (id, at) in rows {
            inner.newest = Some(inner.newest.map_or(at, |n| n.max(at)));
            inner.delivered.insert(id, at);
        }
        let horizon = Utc::now() - WINDOW;
        inner.delivered.retain(|_, at| *at >= horizon);
        inner.polled_at = Some(Instant::now());
    }

    async fn poll(&self, pool: &Pool) -> Result<(), crate::store::StoreError> {
        let since = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            inner.newest.map_or(Utc::now() - WINDOW, |n| n - OVERLAP)
        };
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT id, delivered_at FROM copies WHERE delivered_at >= $1",
                &[&since],
            )
            .await?;
        self.insert(rows.iter().map(|r| (r.get(0), r.get(1))));
        Ok(())
    }

    /// Polls every [`POLL_INTERVAL`] until `stop`.
    pub fn spawn_poller(self: &Arc<Self>, pool: Pool, stop: CancellationToken) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match tokio::time::timeout(STALE_AFTER, cache.poll(&pool)).await {
                    Ok(Ok(())) => failing = false,
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "delivery times unavailable; timing rules wait for the aggregation job");
                    }
                    _ => {}
                }
            }
        });
    }
}

/// Whether `copy` is a UUIDv7 minted within [`WINDOW`] (ids without a time are taken as old).
fn created_within_window(copy: Uuid) -> bool {
    let Some(ts) = copy.get_timestamp() else {
        return false;
    };
    let (secs, _) = ts.to_unix();
    let horizon = (Utc::now() - WINDOW).timestamp();
    i64::try_from(secs).is_ok_and(|s| s >= horizon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_copy() -> Uuid {
        let secs = (Utc::now() - WINDOW * 2).timestamp() as u64;
        Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, 0))
    }

    #[test]
    fn lookup_states() {
        let cache = DeliveryCache::new();
        let copy = old_copy();
        assert_eq!(cache.lookup(copy), Delivery::Unknown, "never polled");
        let at = Utc::now();
        cache.insert([(copy, at)]);
        assert_eq!(cache.lookup(copy), Delivery::At(at));
        assert_eq!(cache.lookup(old_copy()), Delivery::NotRecent);
        assert_eq!(cache.lookup(Uuid::new_v4()), Delivery::NotRecent);
        // A fresh copy not seen delivered may have been delivered since the last poll.
        assert_eq!(cache.lookup(Uuid::now_v7()), Delivery::Unknown);
        // Old deliveries are evicted.
        let old = old_copy();
        cache.insert([(old, Utc::now() - WINDOW - TimeDelta::seconds(1))]);
        assert_eq!(cache.lookup(old), Delivery::NotRecent);
    }
}
