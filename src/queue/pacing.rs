//! Per-sender pacing: composed mail (group emails, follow-ups, `X-Mailtally-Group: separate`)
//! leaves at no more than the sender's rate. Each copy gets the next free slot of its sender
//! as its first delivery time; the slot lives in PostgreSQL, so the rate holds across requests,
//! nodes and restarts.

use chrono::{DateTime, Duration, Utc};

use super::{NewMessage, QueueError};

/// Gives the copies of `m` consecutive slots `60 s / per_minute` apart, starting at the
/// sender's next free slot (or now). A scheduled message (every copy has a `not_before` in the
/// future) is spread from its own time and leaves the sender's slot alone, so that it does not
/// hold back what is sent now. `per_minute == 0`: no pacing.
pub async fn assign(
    tx: &impl deadpool_postgres::GenericClient,
    m: &mut NewMessage,
    per_minute: u32,
) -> Result<(), QueueError> {
    if per_minute == 0 || m.copies.is_empty() {
        return Ok(());
    }
    let step = Duration::microseconds(60_000_000 / i64::from(per_minute));
    let now = Utc::now();
    let scheduled = m
        .copies
        .iter()
        .map(|c| c.not_before)
        .min()
        .flatten()
        .filter(|at| *at > now);
    let start = match scheduled {
        Some(at) => at,
        None => {
            // The upsert locks the sender's row until commit: concurrent sends of one sender
            // take their slots one after the other.
            let row = tx
                .query_one(
                    "INSERT INTO sender_pacing AS p (sender_id, next_slot) VALUES ($1, now())
                     ON CONFLICT (sender_id) DO UPDATE SET next_slot = p.next_slot
                     RETURNING greatest(p.next_slot, now())",
                    &[&m.sender_id],
                )
                .await?;
            let start: DateTime<Utc> = row.get(0);
            let end = start + step * m.copies.len() as i32;
            tx.execute(
                "UPDATE sender_pacing SET next_slot = $2 WHERE sender_id = $1",
                &[&m.sender_id, &end],
            )
            .await?;
            start
        }
    };
    for (i, c) in m.copies.iter_mut().enumerate() {
        c.not_before = Some(start + step * i as i32);
    }
    Ok(())
}
