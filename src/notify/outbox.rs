//! The outbox producer: follows the events table and writes one outbox row per (endpoint, event,
//! type) that an endpoint subscribed to and its owner may see, and tells the live stream.
//!
//! It reads events in (txid, seq) order, only from transactions older than the oldest one still
//! running: those rows are final, so the cursor never passes a row that commits later. The
//! cursor and the rows it produced move in one transaction under a row lock, so two nodes never
//! produce the same notification twice (and the outbox's unique key would refuse it anyway).

use std::time::Duration;

use thiserror::Error;

use super::metrics::NOTIFY;
use super::stream::CHANNEL;
use crate::base::Base;

/// Events read per transaction.
const BATCH: i64 = 1000;

#[derive(Debug, Error)]
pub enum OutboxError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// Runs until shutdown, producing every 250 ms, at once again after a full batch.
pub async fn run(ctx: Base) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let pause = match produce(&ctx).await {
            Ok(n) if n >= BATCH as usize => Duration::ZERO,
            Ok(_) => {
                backoff = Duration::from_millis(250);
                backoff
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox producer failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                backoff
            }
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Which messages `m` an endpoint `w` of owner `o` (the user row) hears of: a `user` endpoint
/// its owner's own mail, a `team` endpoint everything its owner may see, by the one rule.
fn endpoint_sees_message() -> String {
    format!(
        "(m.sender_id = o.id OR (w.scope = 'team' AND {}))",
        crate::accounts::visibility::visible_to("m", "o.id", "o.team_id")
    )
}

/// Who may see a message, for the live stream's fan-out (sender, team, visibility travel with
/// each event; the stream applies [`super::stream::may_see`]).
const PRODUCE_SQL: &str = "
INSERT INTO webhook_outbox (id, endpoint_id, event_id, event_type, copy_id, payload, not_before, next_attempt_at)
SELECT gen_random_uuid(), w.id, e.id, t.event_type, e.copy_id,
       jsonb_build_object(
         'type', t.event_type,
         'timestamp', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
         'data', jsonb_build_object(
           'event_id', e.id, 'message_id', e.message_id, 'copy_id', e.copy_id,
           'recipient', c.recipient, 'template', m.template_key, 'subject', m.subject,
           'deal', m.deal, 'lead', m.lead, 'project', m.project,
           'class', e.class, 'reason', e.reason, 'client', e.client, 'device', e.device, 'os', e.os,
           'link', CASE WHEN e.link_idx IS NULL THEN NULL
                        ELSE jsonb_build_object('index', e.link_idx, 'url', LINK_URL) END,
           'detail', e.detail,
           'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))),
       CASE WHEN e.kind = 'click' THEN e.occurred_at + make_interval(secs => $5) ELSE now() END,
       now()
FROM events e
JOIN messages m ON m.id = e.message_id
JOIN copies c ON c.id = e.copy_id
CROSS JOIN LATERAL (VALUES (e.kind), (CASE WHEN e.kind = 'open' THEN 'open.first' END)) AS t(event_type)
JOIN webhook_endpoints w ON w.disabled_at IS NULL AND t.event_type = ANY (w.event_types)
JOIN users o ON o.id = w.owner_id AND o.disabled_at IS NULL
WHERE (e.txid, e.seq) > ($1, $2) AND (e.txid, e.seq) <= ($3, $4)
  AND e.kind IN ('delivered', 'deferred', 'bounced', 'open', 'click', 'reply', 'complaint', 'unsubscribe')
  AND t.event_type IS NOT NULL
  AND ENDPOINT_SEES_MESSAGE
  AND (w.include_machine OR e.class IS NULL OR e.class IN ('human', 'proxy'))
  AND (t.event_type <> 'open.first' OR NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.copy_id = e.copy_id AND p.kind = 'open'
          AND (p.occurred_at, p.id) < (e.occurred_at, e.id)
          AND (w.include_machine OR p.class IN ('human', 'proxy'))))
ON CONFLICT (endpoint_id, event_id, event_type) DO NOTHING
RETURNING event_type";

/// One event per notification on the stream channel; a few hundred bytes, well under
/// PostgreSQL's 8000-byte payload limit.
const STREAM_SQL: &str = "
SELECT pg_notify($5, json_build_object(
         'id', e.id, 'kind', e.kind, 'class', e.class, 'reason', e.reason,
         'message_id', e.message_id, 'copy_id', e.copy_id, 'link_idx', e.link_idx,
         'recipient', left(c.recipient, 320), 'template', left(m.template_key, 200),
         'subject', left(m.subject, 300), 'client', e.client, 'occurred_at', e.occurred_at,
         'sender_id', m.sender_id, 'team_id', m.team_id, 'visibility', m.visibility)::text)
FROM events e
JOIN messages m ON m.id = e.message_id
JOIN copies c ON c.id = e.copy_id
WHERE (e.txid, e.seq) > ($1, $2) AND (e.txid, e.seq) <= ($3, $4)
  AND e.kind IN ('delivered', 'deferred', 'bounced', 'open', 'click', 'reply', 'complaint', 'unsubscribe')";

/// One producer step; returns how many events it read.
pub async fn produce(ctx: &Base) -> Result<usize, OutboxError> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let mark = tx
        .query_one(
            "SELECT last_tx, last_seq FROM notify_watermark WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let (last_tx, last_seq): (i64, i64) = (mark.get(0), mark.get(1));
    let rows = tx
        .query(
            "SELECT txid, seq FROM events
             WHERE (txid, seq) > ($1, $2)
               AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             ORDER BY txid, seq LIMIT $3",
            &[&last_tx, &last_seq, &BATCH],
        )
        .await?;
    let Some(end) = rows.last() else {
        tx.commit().await?;
        refresh_pending(ctx).await;
        return Ok(0);
    };
    let (end_tx, end_seq): (i64, i64) = (end.get(0), end.get(1));
    let hold = ctx.settings.notify.click_hold.as_secs_f64();
    let sql = PRODUCE_SQL
        .replace("ENDPOINT_SEES_MESSAGE", &endpoint_sees_message())
        .replace(
            "LINK_URL",
            &crate::queue::links::url_sql("e.message_id", "e.link_idx"),
        );
    let queued = tx
        .query(&sql, &[&last_tx, &last_seq, &end_tx, &end_seq, &hold])
        .await?;
    tx.execute(
        STREAM_SQL,
        &[&last_tx, &last_seq, &end_tx, &end_seq, &CHANNEL],
    )
    .await?;
    tx.execute(
        "UPDATE notify_watermark SET last_tx = $1, last_seq = $2 WHERE id = 1",
        &[&end_tx, &end_seq],
    )
    .await?;
    tx.commit().await?;
    for row in &queued {
        NOTIFY
            .outbox_queued
            .with_label_values(&[row.get::<_, &str>(0)])
            .inc();
    }
    refresh_pending(ctx).await;
    Ok(rows.len())
}

async fn refresh_pending(ctx: &Base) {
    if let Ok(client) = ctx.pool.get().await {
        if let Ok(row) = client
            .query_one(
                "SELECT count(*) FROM webhook_outbox WHERE status = 'pending'",
                &[],
            )
            .await
        {
            NOTIFY.outbox_pending.set(row.get(0));
        }
    }
}

/// Deletes the pending and past notifications of `copies` (erasure).
pub async fn delete_for_copies(
    client: &impl tokio_postgres::GenericClient,
    copies: &[uuid::Uuid],
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM webhook_outbox WHERE copy_id = ANY($1)",
            &[&copies],
        )
        .await?;
    Ok(())
}
