//! Claiming due copies under a lease, and recording the outcome of an attempt.
//!
//! A claim increments `attempts` and moves `next_attempt_at` to the lease's end, so that a
//! copy whose worker died is simply due again when the lease runs out. `attempts` doubles as
//! the fencing token: an outcome is recorded only while it still equals the value of the claim,
//! so a slow worker whose copy was reclaimed cannot record a second outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::QueueError;

/// A copy claimed for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub copy_id: Uuid,
    pub message_id: Uuid,
    pub recipient: String,
    pub body: Vec<u8>,
    /// Attempts including this one; the fencing token of the claim.
    pub attempts: i32,
    pub envelope_from: String,
    pub queued_at: DateTime<Utc>,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered { via: &'static str },
    Deferred { error: String, retry_in: Duration },
    Bounced { error: String },
}

impl Outcome {
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Bounced { .. } => "bounced",
        }
    }
}

/// Claims up to `limit` due copies for `owner` for `lease`.
pub async fn claim(
    pool: &deadpool_postgres::Pool,
    owner: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, QueueError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "WITH due AS (
                 SELECT id FROM copies
                 WHERE status IN ('queued', 'deferred') AND next_attempt_at <= now()
                 ORDER BY next_attempt_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE copies c
             SET attempts = c.attempts + 1,
                 lease_until = now() + make_interval(secs => $2),
                 next_attempt_at = now() + make_interval(secs => $2),
                 lease_owner = $3
             FROM due, messages m, {RELAXED_COMMIT}
             WHERE c.id = due.id AND m.id = c.message_id
             RETURNING c.id, c.message_id, c.recipient, c.body, c.attempts, m.envelope_from,
                       c.created_at"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&limit, &lease.as_secs_f64(), &owner])
        .await?;
    Ok(rows
        .iter()
        .map(|row| Claimed {
            copy_id: row.get(0),
            message_id: row.get(1),
            recipient: row.get(2),
            body: row.get::<_, Option<Vec<u8>>>(3).unwrap_or_default(),
            attempts: row.get(4),
            envelope_from: row.get(5),
            queued_at: row.get(6),
        })
        .collect())
}

/// Records outcomes (with their events) of copies still leased by these claims, in one
/// statement; returns the ids recorded. A missing id lost its lease to another claim.
pub async fn record(
    pool: &deadpool_postgres::Pool,
    outcomes: &[(&Claimed, Outcome)],
) -> Result<Vec<Uuid>, QueueError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let mut copy_ids = Vec::with_capacity(outcomes.len());
    let mut attempts = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut retry_secs = Vec::with_capacity(outcomes.len());
    let mut via: Vec<Option<&str>> = Vec::with_capacity(outcomes.len());
    let mut event_ids = Vec::with_capacity(outcomes.len());
    for (claimed, outcome) in outcomes {
        copy_ids.push(claimed.copy_id);
        attempts.push(claimed.attempts);
        statuses.push(outcome.status());
        event_ids.push(Uuid::now_v7());
        match outcome {
            Outcome::Delivered { via: v } => {
                errors.push(None);
                retry_secs.push(0.0f64);
                via.push(Some(v));
            }
            Outcome::Deferred { error, retry_in } => {
                errors.push(Some(error.clone()));
                retry_secs.push(retry_in.as_secs_f64());
                via.push(None);
            }
            Outcome::Bounced { error } => {
                errors.push(Some(error.clone()));
                retry_secs.push(0.0);
                via.push(None);
            }
        }
    }
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "WITH o AS (
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[],
                                      $5::float8[], $6::text[], $7::uuid[])
                     AS o (copy_id, attempts, status, error, retry_secs, via, event_id)
             ), done AS (
                 UPDATE copies c
                 SET status = o.status,
                     lease_until = NULL,
                     lease_owner = NULL,
                     last_error = o.error,
                     delivered_at = CASE WHEN o.status = 'delivered' THEN now() END,
                     delivered_via = o.via,
                     next_attempt_at = CASE WHEN o.status = 'deferred'
                         THEN now() + make_interval(secs => o.retry_secs)
                         ELSE c.next_attempt_at END
                 FROM o, {RELAXED_COMMIT}
                 -- `c.id = ANY`: found by key, not by a join with every due copy (the
                 -- planner's guess for a backlog it has no statistics of yet).
                 WHERE c.id = ANY($1::uuid[]) AND c.id = o.copy_id AND c.attempts = o.attempts
                   AND c.status IN ('queued', 'deferred')
                 RETURNING c.id, c.message_id, o.status, o.error, o.event_id
             )
             {}",
            crate::events::sql::insert_outcomes("done")
        ))
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &copy_ids,
                &attempts,
                &statuses,
                &errors,
                &retry_secs,
                &via,
                &event_ids,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Joined into the claim and the outcome statements: their commit does not wait for the disk.
/// Right for them: if PostgreSQL itself crashes and loses the last of them, a copy is only sent
/// again (at least once); a message's acceptance (enqueue) always waits for the disk. One
/// statement instead of a transaction with SET LOCAL saves three round trips per delivery.
const RELAXED_COMMIT: &str = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed";

/// Frees the leases `owner` held before it restarted: nothing of them is in flight any more.
pub async fn release_own_leases(
    pool: &deadpool_postgres::Pool,
    owner: &str,
) -> Result<u64, QueueError> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "UPDATE copies SET lease_until = NULL, lease_owner = NULL, next_attempt_at = now()
             WHERE lease_owner = $1 AND status IN ('queued', 'deferred')",
            &[&owner],
        )
        .await?)
}

/// Copies still to deliver, by status, with those leased right now counted as `sending`.
pub async fn depth(pool: &deadpool_postgres::Pool) -> Result<Vec<(String, i64)>, QueueError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT CASE WHEN lease_until > now() THEN 'sending' ELSE status END, count(*)
             FROM copies WHERE status IN ('queued', 'deferred') GROUP BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
