//! The hourly sending budget: the bytes each sender may queue in any hour
//! (SENDER_MAX_BYTES_PER_HOUR), one budget shared by SMTP, group emails and follow-ups.
//!
//! A charge is a short transaction of its own under a per-sender advisory lock, before the
//! copies are written, so that concurrent submissions of one sender cannot all pass on the same
//! reading and nothing is locked while the copies are written; a charge whose copies then fail
//! to queue is given back.

use super::QueueError;

/// Arbitrary constant naming the budget's advisory locks ("mtbu").
const LOCK_CLASS: i32 = 0x6d74_6275;

/// Why bytes do not fit in a sender's hourly budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// More than the whole budget: it will never fit.
    Never { bytes: u64, budget: u64 },
    /// It fits once earlier sends are an hour old: in `retry_after` seconds.
    Later { retry_after: u64, budget: u64 },
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverBudget::Never { bytes, budget } => write!(
                f,
                "{bytes} bytes of copies are more than the sender's hourly budget of {budget} bytes"
            ),
            OverBudget::Later {
                retry_after,
                budget,
            } => write!(
                f,
                "the sender's hourly budget of {budget} bytes is used up; retry in {retry_after} seconds"
            ),
        }
    }
}

/// Counts `bytes` against `sender_id`'s budget of `per_hour` bytes (0: no budget, nothing is
/// counted), or refuses them with [`QueueError::OverBudget`] and counts nothing.
///
/// The sender's advisory lock is taken first and the hour is read by a statement after it, so
/// that a charge always sees every charge committed before it (READ COMMITTED takes a snapshot
/// per statement): submissions of one sender in flight at the same moment are counted one after
/// the other, never against the same reading. The commit does not wait for the disk: a charge
/// lost to a PostgreSQL crash only makes the hour more lenient, never loses mail.
pub async fn charge(
    pool: &deadpool_postgres::Pool,
    sender_id: i64,
    bytes: u64,
    per_hour: u64,
) -> Result<(), QueueError> {
    if per_hour == 0 {
        return Ok(());
    }
    if bytes > per_hour {
        return Err(QueueError::OverBudget(OverBudget::Never {
            bytes,
            budget: per_hour,
        }));
    }
    let mut client = pool.get().await?;
    let (signed_bytes, signed_budget) = (bytes as i64, per_hour.min(i64::MAX as u64) as i64);
    let tx = client.transaction().await?;
    // Ids past i32 share locks with others: a wait, never a wrong count.
    let key = (sender_id & 0x7fff_ffff) as i32;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &key])
        .await?;
    let charged = tx
        .query_opt(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
                  gone AS (DELETE FROM sender_usage
                           WHERE sender_id = $1 AND minute <= now() - interval '1 hour'),
                  used AS (SELECT coalesce(sum(bytes), 0)::int8 AS bytes FROM sender_usage
                           WHERE sender_id = $1 AND minute > now() - interval '1 hour')
             INSERT INTO sender_usage AS u (sender_id, minute, bytes)
             SELECT $1, date_trunc('minute', now()), $2 FROM used, relaxed
             WHERE used.bytes + $2 <= $3
             ON CONFLICT (sender_id, minute) DO UPDATE SET bytes = u.bytes + excluded.bytes
             RETURNING 1",
            &[&sender_id, &signed_bytes, &signed_budget],
        )
        .await?;
    tx.commit().await?;
    if charged.is_some() {
        return Ok(());
    }
    // Refused: the rare path reads each minute to say when the bytes would fit.
    let rows = client
        .query(
            "SELECT bytes, ceil(extract(epoch FROM minute + interval '1 hour' - now()))::int8
             FROM sender_usage WHERE sender_id = $1 AND minute > now() - interval '1 hour'
             ORDER BY minute",
            &[&sender_id],
        )
        .await?;
    let minutes: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            let b: i64 = r.get(0);
            let s: i64 = r.get(1);
            (b.max(0) as u64, s.max(1) as u64)
        })
        .collect();
    Err(QueueError::OverBudget(OverBudget::Later {
        retry_after: refusal(&minutes, bytes, per_hour).unwrap_or(1),
        budget: per_hour,
    }))
}

/// Counts `bytes` without refusing them: follow-ups, which a scheduler has decided to send,
/// still use the budget that their sender's other mail is held to.
pub async fn record(
    client: &impl deadpool_postgres::GenericClient,
    sender_id: i64,
    bytes: u64,
    per_hour: u64,
) -> Result<(), QueueError> {
    if per_hour == 0 {
        return Ok(());
    }
    add(client, sender_id, i64::try_from(bytes).unwrap_or(i64::MAX)).await
}

/// Gives back a charge whose copies could not be queued.
pub async fn refund(
    pool: &deadpool_postgres::Pool,
    sender_id: i64,
    bytes: u64,
    per_hour: u64,
) -> Result<(), QueueError> {
    if per_hour == 0 {
        return Ok(());
    }
    let client = pool.get().await?;
    add(&client, sender_id, -(bytes as i64)).await
}

async fn add(
    client: &impl deadpool_postgres::GenericClient,
    sender_id: i64,
    bytes: i64,
) -> Result<(), QueueError> {
    client
        .execute(
            "INSERT INTO sender_usage AS u (sender_id, minute, bytes)
             VALUES ($1, date_trunc('minute', now()), $2)
             ON CONFLICT (sender_id, minute) DO UPDATE SET bytes = u.bytes + excluded.bytes",
            &[&sender_id, &bytes],
        )
        .await?;
    Ok(())
}

/// `None` when `bytes` fit beside the last hour's `minutes` (bytes, seconds until it leaves
/// the window; oldest first); else the seconds until enough of them have left.
fn refusal(minutes: &[(u64, u64)], bytes: u64, per_hour: u64) -> Option<u64> {
    let mut used: u64 = minutes.iter().map(|m| m.0).sum();
    if used.saturating_add(bytes) <= per_hour {
        return None;
    }
    for &(b, leaves_in) in minutes {
        used = used.saturating_sub(b);
        if used.saturating_add(bytes) <= per_hour {
            return Some(leaves_in);
        }
    }
    // Unreachable while bytes <= per_hour; an hour is the most a sender waits.
    Some(3600)
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn retry_after_is_when_enough_of_the_last_hour_has_left() {
        assert_eq!(refusal(&[], 100, 100), None);
        assert_eq!(refusal(&[(60, 10), (30, 500)], 10, 100), None);
        assert_eq!(refusal(&[(60, 10), (30, 500)], 11, 100), Some(10));
        assert_eq!(refusal(&[(60, 10), (30, 500)], 80, 100), Some(500));
    }
}
