//! The hourly sending budget (SENDER_MAX_BYTES_PER_HOUR), one a sender, shared by SMTP, group
//! emails and follow-ups.
//!
//! The budget is a bucket that holds a whole hour's bytes and drains at that rate: a sender may
//! queue the budget at once, then at the budget's pace (so at most twice the budget in any one
//! hour, and the budget an hour over time). A sliding window of the last hour would be exact to
//! the hour but needs a lock and several statements per message; the bucket is one row a sender
//! and one conditional upsert, which PostgreSQL applies to the row's latest version whatever
//! else is in flight, so submissions that meet are counted one after the other. The charge is
//! its own statement, before the copies are written, and its commit does not wait for the
//! disk: a charge lost to a PostgreSQL crash only makes the bucket more lenient, never loses
//! mail. A charge whose copies then fail to queue is given back.

use std::sync::LazyLock;

use super::QueueError;

/// Why bytes do not fit in a sender's hourly budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// More than the whole budget: it will never fit.
    Never { bytes: u64, budget: u64 },
    /// It fits once the bucket has drained enough: in `retry_after` seconds.
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

/// What the bucket `b` holds now, in SQL: `used_bytes` drained since `at` at `per_hour` (a
/// placeholder) bytes an hour.
fn level(per_hour: &str) -> String {
    format!(
        "greatest(0, b.used_bytes - greatest(0, extract(epoch FROM now() - b.at)) * {per_hour}::float8 / 3600)"
    )
}

/// A charge: the bucket takes `$2` bytes if it then holds at most `$3`, the budget; one row
/// back when it did. Its commit does not wait for the disk.
static CHARGE: LazyLock<String> = LazyLock::new(|| {
    let level = level("$3");
    format!(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         INSERT INTO sender_budget AS b (sender_id, used_bytes, at)
         SELECT $1, $2, now() FROM relaxed
         ON CONFLICT (sender_id) DO UPDATE
             SET used_bytes = {level} + excluded.used_bytes, at = greatest(b.at, now())
             WHERE {level} + excluded.used_bytes <= $3::float8
         RETURNING 1"
    )
});

/// A record: the bucket takes `$2` bytes whatever it holds. No relaxed commit: it runs in the
/// caller's transaction, whose commit must wait for the disk.
static RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO sender_budget AS b (sender_id, used_bytes, at) VALUES ($1, $2, now())
         ON CONFLICT (sender_id) DO UPDATE
             SET used_bytes = {} + excluded.used_bytes, at = greatest(b.at, now())",
        level("$3")
    )
});

/// Counts `bytes` against `sender_id`'s budget of `per_hour` bytes (0: no budget, nothing is
/// counted), or refuses them with [`QueueError::OverBudget`] and counts nothing.
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
    let client = pool.get().await?;
    let (amount, budget) = (bytes as f64, per_hour as f64);
    // Prepared once per connection: the relay pays one round trip per message here.
    let statement = client.prepare_cached(&CHARGE).await?;
    let charged = client
        .query_opt(&statement, &[&sender_id, &amount, &budget])
        .await?;
    if charged.is_some() {
        return Ok(());
    }
    let now_held: f64 = client
        .query_opt(
            &format!(
                "SELECT {} FROM sender_budget b WHERE b.sender_id = $1",
                level("$2")
            ),
            &[&sender_id, &budget],
        )
        .await?
        .map_or(0.0, |r| r.get(0));
    Err(QueueError::OverBudget(OverBudget::Later {
        retry_after: retry_after(now_held, bytes, per_hour),
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
    client
        .execute(&*RECORD, &[&sender_id, &(bytes as f64), &(per_hour as f64)])
        .await?;
    Ok(())
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
    client
        .execute(
            "UPDATE sender_budget SET used_bytes = greatest(0, used_bytes - $2)
             WHERE sender_id = $1",
            &[&sender_id, &(bytes as f64)],
        )
        .await?;
    Ok(())
}

/// Seconds until a bucket holding `level` bytes has drained enough for `bytes` more, at
/// `per_hour` bytes an hour (at least 1, at most an hour).
fn retry_after(level: f64, bytes: u64, per_hour: u64) -> u64 {
    let over = level + bytes as f64 - per_hour as f64;
    let rate = per_hour as f64 / 3600.0;
    if over <= 0.0 || rate <= 0.0 {
        return 1;
    }
    ((over / rate).ceil() as u64).clamp(1, 3600)
}

#[cfg(test)]
mod tests {
    use super::retry_after;

    #[test]
    fn retry_after_is_when_the_bucket_has_drained_enough() {
        // 3600 bytes an hour drain one a second.
        assert_eq!(retry_after(3600.0, 10, 3600), 10);
        assert_eq!(retry_after(3000.0, 601, 3600), 1);
        assert_eq!(retry_after(3000.0, 700, 3600), 100);
        assert_eq!(retry_after(0.0, 10, 3600), 1);
        assert_eq!(retry_after(1e12, 10, 3600), 3600);
    }
}
