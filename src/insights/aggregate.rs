//! The aggregation job: folds events past the watermark into per-copy state and rollups.
//!
//! Each batch is one transaction that (1) locks the watermark row (SKIP LOCKED: a second node
//! finds it taken and waits for the next tick, so no event is folded twice), (2) takes the next
//! events in (txid, seq) order among settled transactions (see `sql/0004_insights.sql`),
//! (3) recomputes the whole state of every copy those events touch from all of the copy's events,
//! (4) adds (new state - old state) to the rollups, replaces the state, and (5) advances the
//! watermark. Killing it anywhere rolls the batch back; since state is a pure function of the
//! events, any sequence of batches ends with the same rollups as one clean run.

use std::time::Instant;

use tokio_postgres::Client;

use super::metrics::{CLASSES, METRICS};
use super::InsightsError;
use crate::classify::hindsight::classified_events_sql;

/// Events per batch when nothing else is asked for.
pub const DEFAULT_BATCH: i64 = 50_000;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    pub events: u64,
    pub copies: u64,
}

/// Work tables of one batch; emptied at commit, kept by the connection for the next batch.
const TEMP_TABLES: &str = "
SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS fold_events (txid bigint, seq bigint, copy_id uuid)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_copies (copy_id uuid PRIMARY KEY) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_classified (
    copy_id uuid, message_id uuid, kind text, occurred_at timestamptz, link_idx integer,
    client text, device text, final_class text, seq bigint, final_reason text)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_state (LIKE insights_copy_state) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_links (LIKE insights_copy_links) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_clients (LIKE insights_copy_clients) ON COMMIT DELETE ROWS;
";

/// The dimension columns shared by every rollup.
const DIMS: &str = "template_key, day, sender_id, team_id, visibility";

/// Folds at most `limit` events. `None` when another node holds the watermark.
pub async fn fold_batch(client: &mut Client, limit: i64) -> Result<Option<Batch>, InsightsError> {
    let started = Instant::now();
    let tx = client.transaction().await?;
    tx.batch_execute(TEMP_TABLES).await?;
    let Some(mark) = tx
        .query_opt(
            "SELECT txid, seq FROM insights_watermark WHERE id = 1 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await?
    else {
        return Ok(None);
    };
    let (mark_txid, mark_seq): (i64, i64) = (mark.get(0), mark.get(1));
    // Oldest transaction still running: every event written by an older one is visible now and
    // none can appear later, so folding below it never skips a late commit.
    let settled: i64 = tx
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?
        .get(0);
    let events = tx
        .execute(
            "INSERT INTO fold_events (txid, seq, copy_id)
             SELECT txid, seq, copy_id FROM events
             WHERE (txid, seq) > ($1, $2) AND txid < $3
             ORDER BY txid, seq LIMIT $4",
            &[&mark_txid, &mark_seq, &settled, &limit.max(1)],
        )
        .await?;
    if events == 0 {
        tx.commit().await?;
        return Ok(Some(Batch::default()));
    }
    let copies = tx
        .execute(
            "INSERT INTO fold_copies SELECT DISTINCT copy_id FROM fold_events",
            &[],
        )
        .await?;
    tx.batch_execute("ANALYZE fold_copies").await?;
    fold_copies(&tx).await?;
    // The batch's own opens and clicks, with the class the rollups now count them with.
    let by_class = tx
        .query(
            "SELECT c.kind, c.final_class, count(*)
             FROM fold_classified c JOIN fold_events f ON f.seq = c.seq
             WHERE c.kind IN ('open', 'click')
             GROUP BY 1, 2",
            &[],
        )
        .await?;
    tx.execute(
        "UPDATE insights_watermark w SET txid = last.txid, seq = last.seq,
                folded_events = w.folded_events + $1, updated_at = now()
         FROM (SELECT txid, seq FROM fold_events ORDER BY txid DESC, seq DESC LIMIT 1) last
         WHERE w.id = 1",
        &[&(events as i64)],
    )
    .await?;
    tx.commit().await?;
    METRICS.folded_events.inc_by(events);
    METRICS.folded_copies.inc_by(copies);
    for row in &by_class {
        let (kind, class, n): (String, Option<String>, i64) = (row.get(0), row.get(1), row.get(2));
        // Labels stay a bounded set: a class this version does not know is left out.
        if let Some(class) = CLASSES
            .iter()
            .find(|c| class.as_deref() == Some(c.as_str()))
        {
            METRICS
                .events_by_final_class
                .with_label_values(&[&kind, class.as_str()])
                .inc_by(n.max(0) as u64);
        }
    }
    METRICS
        .batch_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(Some(Batch { events, copies }))
}

/// Recomputes the state of the copies in `fold_copies` and moves the rollups by the difference.
/// Also used by message deletion with an empty event set (the copies then have no new state).
pub(crate) async fn fold_copies(tx: &tokio_postgres::Transaction<'_>) -> Result<(), InsightsError> {
    let classified = classified_events_sql("SELECT copy_id FROM fold_copies");
    tx.execute(
        &format!(
            "INSERT INTO fold_classified
             SELECT c.copy_id, c.message_id, c.kind, c.occurred_at, c.link_idx,
                    c.client, c.device, c.final_class, c.seq, c.final_reason
             FROM ({classified}) c"
        ),
        &[],
    )
    .await?;
    // Temp tables have no statistics: without them the planner guesses a few rows and joins
    // them with nested loops.
    tx.batch_execute("ANALYZE fold_classified").await?;
    tx.batch_execute(
        "
        INSERT INTO fold_state
        SELECT c.copy_id, m.id, m.template_key, m.sender_id, coalesce(m.team_id, 0), m.visibility,
               (m.created_at AT TIME ZONE 'UTC')::date,
               bool_or(c.kind = 'bounced'),
               min(c.occurred_at) FILTER (WHERE c.kind = 'delivered'),
               count(*) FILTER (WHERE c.kind = 'open'),
               count(*) FILTER (WHERE c.kind = 'open' AND c.final_class IN ('human', 'proxy')),
               count(*) FILTER (WHERE c.kind = 'click'),
               count(*) FILTER (WHERE c.kind = 'click' AND c.final_class IN ('human', 'proxy')),
               min(c.occurred_at) FILTER (WHERE c.kind = 'open'),
               min(c.occurred_at) FILTER (WHERE c.kind = 'open' AND c.final_class IN ('human', 'proxy')),
               min(c.occurred_at) FILTER (WHERE c.kind = 'click'),
               min(c.occurred_at) FILTER (WHERE c.kind = 'click' AND c.final_class IN ('human', 'proxy')),
               max(c.occurred_at),
               count(*) FILTER (WHERE c.kind = 'reply'),
               -- Soft: every bounce of the copy was on a transient status.
               bool_or(c.kind = 'bounced')
                   AND NOT bool_or(c.kind = 'bounced' AND c.final_reason IS DISTINCT FROM 'soft'),
               bool_or(c.kind = 'complaint'),
               bool_or(c.kind = 'unsubscribe')
        FROM fold_classified c JOIN messages m ON m.id = c.message_id
        GROUP BY c.copy_id, m.id;
        ANALYZE fold_state;

        INSERT INTO fold_links
        SELECT c.copy_id, coalesce(l.url, '#' || c.link_idx::text, '#'),
               count(*), count(*) FILTER (WHERE c.final_class IN ('human', 'proxy'))
        FROM fold_classified c
        JOIN fold_state s ON s.copy_id = c.copy_id
        LEFT JOIN links l ON l.message_id = c.message_id AND l.idx = c.link_idx
        WHERE c.kind = 'click'
        GROUP BY 1, 2;

        INSERT INTO fold_clients
        SELECT c.copy_id, coalesce(c.client, ''), coalesce(c.device, ''),
               count(*), count(*) FILTER (WHERE c.final_class IN ('human', 'proxy'))
        FROM fold_classified c
        JOIN fold_state s ON s.copy_id = c.copy_id
        WHERE c.kind = 'open'
        GROUP BY 1, 2, 3;
        ANALYZE fold_links;
        ANALYZE fold_clients;
        ",
    )
    .await?;

    // Rollup deltas: new contributions count +1, old ones -1. Dimensions come from the copy
    // state (new, or old for copies whose message is gone).
    tx.batch_execute(&format!(
        "
        INSERT INTO insights_daily AS r ({DIMS}, sent, bounced, opens, human_opens, unique_opens,
            human_unique_opens, clicks, human_clicks, unique_clicks, human_unique_clicks,
            replies, unique_replies, soft_bounced, complaints, unsubscribes)
        SELECT {DIMS}, sum(sg), sum(sg * bounced::int), sum(sg * opens), sum(sg * human_opens),
               sum(sg * (opens > 0)::int), sum(sg * (human_opens > 0)::int),
               sum(sg * clicks), sum(sg * human_clicks),
               sum(sg * (clicks > 0)::int), sum(sg * (human_clicks > 0)::int),
               sum(sg * replies), sum(sg * (replies > 0)::int),
               sum(sg * soft_bounced::int), sum(sg * complained::int),
               sum(sg * unsubscribed::int)
        FROM (SELECT 1 AS sg, * FROM fold_state
              UNION ALL
              SELECT -1, s.* FROM insights_copy_state s JOIN fold_copies f USING (copy_id)) d
        GROUP BY {DIMS}
        ON CONFLICT ({DIMS}) DO UPDATE SET
            sent = r.sent + EXCLUDED.sent, bounced = r.bounced + EXCLUDED.bounced,
            opens = r.opens + EXCLUDED.opens, human_opens = r.human_opens + EXCLUDED.human_opens,
            unique_opens = r.unique_opens + EXCLUDED.unique_opens,
            human_unique_opens = r.human_unique_opens + EXCLUDED.human_unique_opens,
            clicks = r.clicks + EXCLUDED.clicks, human_clicks = r.human_clicks + EXCLUDED.human_clicks,
            unique_clicks = r.unique_clicks + EXCLUDED.unique_clicks,
            human_unique_clicks = r.human_unique_clicks + EXCLUDED.human_unique_clicks,
            replies = r.replies + EXCLUDED.replies,
            unique_replies = r.unique_replies + EXCLUDED.unique_replies,
            soft_bounced = r.soft_bounced + EXCLUDED.soft_bounced,
            complaints = r.complaints + EXCLUDED.complaints,
            unsubscribes = r.unsubscribes + EXCLUDED.unsubscribes;

        INSERT INTO insights_links AS r ({DIMS}, url, clicks, human_clicks, unique_clicks,
            human_unique_clicks)
        SELECT {DIMS}, url, sum(sg * clicks), sum(sg * human_clicks),
               sum(sg * (clicks > 0)::int), sum(sg * (human_clicks > 0)::int)
        FROM (SELECT 1 AS sg, s.template_key, s.day, s.sender_id, s.team_id, s.visibility,
                     l.url, l.clicks, l.human_clicks
              FROM fold_links l JOIN fold_state s USING (copy_id)
              UNION ALL
              SELECT -1, s.template_key, s.day, s.sender_id, s.team_id, s.visibility,
                     l.url, l.clicks, l.human_clicks
              FROM insights_copy_links l JOIN fold_copies f USING (copy_id)
              JOIN insights_copy_state s USING (copy_id)) d
        GROUP BY {DIMS}, url
        ON CONFLICT ({DIMS}, url) DO UPDATE SET
            clicks = r.clicks + EXCLUDED.clicks, human_clicks = r.human_clicks + EXCLUDED.human_clicks,
            unique_clicks = r.unique_clicks + EXCLUDED.unique_clicks,
            human_unique_clicks = r.human_unique_clicks + EXCLUDED.human_unique_clicks;

        INSERT INTO insights_clients AS r ({DIMS}, client, device, opens, human_opens,
            unique_opens, human_unique_opens)
        SELECT {DIMS}, client, device, sum(sg * opens), sum(sg * human_opens),
               sum(sg * (opens > 0)::int), sum(sg * (human_opens > 0)::int)
        FROM (SELECT 1 AS sg, s.template_key, s.day, s.sender_id, s.team_id, s.visibility,
                     c.client, c.device, c.opens, c.human_opens
              FROM fold_clients c JOIN fold_state s USING (copy_id)
              UNION ALL
              SELECT -1, s.template_key, s.day, s.sender_id, s.team_id, s.visibility,
                     c.client, c.device, c.opens, c.human_opens
              FROM insights_copy_clients c JOIN fold_copies f USING (copy_id)
              JOIN insights_copy_state s USING (copy_id)) d
        GROUP BY {DIMS}, client, device
        ON CONFLICT ({DIMS}, client, device) DO UPDATE SET
            opens = r.opens + EXCLUDED.opens, human_opens = r.human_opens + EXCLUDED.human_opens,
            unique_opens = r.unique_opens + EXCLUDED.unique_opens,
            human_unique_opens = r.human_unique_opens + EXCLUDED.human_unique_opens;

        DELETE FROM insights_copy_links l USING fold_copies f WHERE l.copy_id = f.copy_id;
        DELETE FROM insights_copy_clients c USING fold_copies f WHERE c.copy_id = f.copy_id;
        DELETE FROM insights_copy_state s USING fold_copies f WHERE s.copy_id = f.copy_id;
        INSERT INTO insights_copy_state SELECT * FROM fold_state;
        INSERT INTO insights_copy_links SELECT * FROM fold_links;
        INSERT INTO insights_copy_clients SELECT * FROM fold_clients;
        "
    ))
    .await?;
    Ok(())
}

/// Events not folded yet (settled or not) and the age in seconds of the oldest of them.
pub async fn lag(client: &Client) -> Result<(i64, f64), InsightsError> {
    let mark = client
        .query_one("SELECT txid, seq FROM insights_watermark WHERE id = 1", &[])
        .await?;
    let (txid, seq): (i64, i64) = (mark.get(0), mark.get(1));
    // Parameters, not a join with the watermark row, so that the planner uses the fold index.
    let row = client
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(occurred_at)), 0)::float8
             FROM events WHERE (txid, seq) > ($1, $2)",
            &[&txid, &seq],
        )
        .await?;
    Ok((row.get(0), row.get::<_, f64>(1).max(0.0)))
}

/// Folds until nothing settled is left; `progress` is told the events folded after each batch.
/// Returns the events folded. `wait` is for a run that must leave every event committed before
/// it started folded (the `aggregate` command, tests): it waits for a watermark held by another
/// node, and for events that are not settled yet because some older transaction, in any
/// database of the cluster, is still running (for at most [`SETTLE_WAIT`]). Without `wait` (the job in `serve`) the run stops
/// there and the next tick goes on.
pub async fn run_until_caught_up(
    client: &mut Client,
    limit: i64,
    wait: bool,
    mut progress: impl FnMut(u64),
) -> Result<u64, InsightsError> {
    let started = Instant::now();
    let mut total = 0;
    let target: Option<(i64, i64)> = if wait {
        client
            .query_opt(
                "SELECT txid, seq FROM events ORDER BY txid DESC, seq DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|r| (r.get(0), r.get(1)))
    } else {
        None
    };
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(100));
    loop {
        match fold_batch(client, limit).await? {
            Some(b) if b.events > 0 => {
                total += b.events;
                progress(b.events);
            }
            Some(_) => match target {
                Some((txid, seq))
                    if started.elapsed() < SETTLE_WAIT
                        && !folded_past(client, txid, seq).await? =>
                {
                    pause().await
                }
                _ => break,
            },
            None if wait => pause().await,
            None => break,
        }
    }
    METRICS
        .run_duration
        .observe(started.elapsed().as_secs_f64());
    let (events, seconds) = lag(client).await?;
    METRICS.lag_events.set(events);
    METRICS.lag_seconds.set(seconds);
    Ok(total)
}

/// How long a waiting run waits for events held back by an older open transaction before it
/// leaves them to the next run.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the watermark has reached the event (`txid`, `seq`), or that event is gone (erased).
async fn folded_past(client: &Client, txid: i64, seq: i64) -> Result<bool, InsightsError> {
    let row = client
        .query_one(
            "SELECT (w.txid, w.seq) >= ($1, $2)
                    OR NOT EXISTS (SELECT 1 FROM events WHERE (txid, seq) = ($1, $2))
             FROM insights_watermark w WHERE w.id = 1",
            &[&txid, &seq],
        )
        .await?;
    Ok(row.get(0))
}

/// The job inside `serve`: a run every `every`, until shutdown. Errors are logged and retried at
/// the next tick (PostgreSQL may be away for a while).
pub async fn serve_loop(
    pool: deadpool_postgres::Pool,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let run = async {
            let mut client = pool.get().await?;
            run_until_caught_up(&mut client, DEFAULT_BATCH, false, |_| {}).await
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = run => match result {
                Ok(n) if n > 0 => tracing::debug!(events = n, "aggregation folded events"),
                Ok(_) => {}
                Err(e) => {
                    METRICS.errors.inc();
                    tracing::warn!(error = %e, "aggregation run failed");
                }
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The first half of taking copies out of the rollups, inside the caller's transaction (an
/// erasure): waits for a running batch (the watermark lock), so that the job never folds events
/// of a copy being erased, and marks `copies` and, with `message`, every copy of that message
/// the rollups hold. The caller then deletes their rows and calls [`forget_marked`].
pub async fn mark_for_forgetting(
    tx: &tokio_postgres::Transaction<'_>,
    copies: &[uuid::Uuid],
    message: Option<uuid::Uuid>,
) -> Result<(), InsightsError> {
    tx.batch_execute(TEMP_TABLES).await?;
    tx.execute(
        "SELECT 1 FROM insights_watermark WHERE id = 1 FOR UPDATE",
        &[],
    )
    .await?;
    tx.execute(
        "INSERT INTO fold_copies
         SELECT unnest($1::uuid[])
         UNION SELECT copy_id FROM insights_copy_state WHERE message_id = $2",
        &[&copies, &message],
    )
    .await?;
    Ok(())
}

/// The second half: with the marked copies' events gone, their new state is empty, and the
/// fold subtracts the old one from every rollup.
pub async fn forget_marked(tx: &tokio_postgres::Transaction<'_>) -> Result<(), InsightsError> {
    fold_copies(tx).await
}
