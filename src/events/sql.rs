//! The text of every statement that writes `events`, in one place. The writer runs its own;
//! the queue (accepted, delivered, deferred, bounced) and the reply watcher splice these into
//! their statements, so that a copy's outcome and its event commit together, in one round trip.

/// `accepted` events, one per copy: `message` is the message id, `event_ids` and `copy_ids`
/// two arrays of the same length (SQL expressions, usually placeholders).
pub fn insert_accepted(message: &str, event_ids: &str, copy_ids: &str) -> String {
    format!(
        "INSERT INTO events (id, occurred_at, message_id, copy_id, kind)
         SELECT e.id, now(), {message}, e.copy_id, 'accepted'
         FROM unnest({event_ids}::uuid[], {copy_ids}::uuid[]) AS e (id, copy_id)"
    )
}

/// Delivery outcomes from the rows of `source`, which has the columns `event_id`,
/// `message_id`, `id` (the copy), `status` (the event's kind) and `error` (its detail);
/// returns each event's copy id.
pub fn insert_outcomes(source: &str) -> String {
    format!(
        "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, detail)
         SELECT event_id, now(), message_id, id, status, error FROM {source}
         RETURNING copy_id"
    )
}

/// One `reply` event: `$1` id, `$2` when, `$3` message, `$4` copy, `$5` who replied. The id is
/// derived from the reply itself, so reading the same reply twice records one event.
pub const INSERT_REPLY: &str =
    "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, detail)
     VALUES ($1, $2, $3, $4, 'reply', $5) ON CONFLICT DO NOTHING";

/// Deletes every event of the copies in the array `$1` (erasure).
pub const DELETE_FOR_COPIES: &str = "DELETE FROM events WHERE copy_id = ANY($1)";

/// The `unsubscribe` event of copy `$1` at `$2`, once per copy (`$3` the event id); the message
/// id is the copy's.
pub const INSERT_UNSUBSCRIBE: &str =
    "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, detail)
     SELECT $3, $2, c.message_id, c.id, 'unsubscribe', $4 FROM copies c
     WHERE c.id = $1 AND NOT EXISTS (
         SELECT 1 FROM events e WHERE e.copy_id = $1 AND e.kind = 'unsubscribe')";

/// A bounce, deferral or complaint read from the sender's mailbox: `$1` id (derived from the
/// report, so that reading it twice, even as another mailbox message, records one event), `$2`
/// when, `$3` message, `$4` copy, `$5` kind, `$6` reason (`hard`, `soft`, or the feedback
/// type), `$7` detail.
pub const INSERT_REPORTED: &str =
    "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, reason, detail)
     SELECT $1, $2, $3, $4, $5, $6, $7
     WHERE NOT EXISTS (SELECT 1 FROM events WHERE copy_id = $4 AND id = $1)";
