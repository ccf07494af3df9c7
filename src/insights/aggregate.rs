//! The aggregation job: folds events past the watermark into per-copy state and rollups.
//!
//! Copies are split into [`PARTS`] parts by their id (`mailtally_fold_part`), each with its own
//! watermark row, so that one worker per part folds at once, on one node or several. Each batch
//! is one transaction that (1) locks its part's watermark row (SKIP LOCKED: a worker that finds
//! it taken goes on to the next part, so no event is folded twice), (2) reads the part's next
//! events in (txid, seq) order among settled transactions (see `sql/0004_insights.sql`) with
//! one binary COPY, (3) moves the state of every copy they touch forward in Rust
//! ([`super::fold`]), starting from an empty state for a copy seen for the first time, or
//! recomputes it from the copy's folded events when the state cannot judge them (an event
//! earlier than one already folded, a state written by older code), (4) adds (new state - old
//! state) to the rollups, stores what changed of the state, and (5) advances the part's
//! watermark. Killing it anywhere rolls the batch back; since state is a pure function of the
//! events up to the watermarks, any sequence of batches ends with the same rollups as one clean
//! run. Two parts never touch the same copy; the rollup rows they both move are upserted in key
//! order, so one waits for the other's commit and they never deadlock.

use std::collections::HashMap;
use std::time::Instant;

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use super::fold::{self, CopyFold, CopyState, NewEvent, STATE_COLUMNS};
use super::metrics::{CLASSES, METRICS};
use super::InsightsError;
use crate::classify::hindsight::classified_events_until_sql;

/// Events per batch when nothing else is asked for.
pub const DEFAULT_BATCH: i64 = 50_000;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    pub events: u64,
    pub copies: u64,
}

/// Work tables of one batch; emptied at commit, kept by the connection for the next batch.
/// `fold_copies` are the copies whose state the batch replaces, `fold_recompute` those of them
/// recomputed from their events; `fold_state`, `fold_links`, `fold_clients` and `fold_recent`
/// hold the new state of every one of `fold_copies`.
const TEMP_TABLES: &str = "
SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS fold_copies (copy_id uuid PRIMARY KEY) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_recompute (copy_id uuid PRIMARY KEY) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_classified (
    copy_id uuid, message_id uuid, kind text, occurred_at timestamptz, link_idx integer,
    client text, device text, final_class text, seq bigint, final_reason text, url text)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_state (LIKE insights_copy_state) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_links (LIKE insights_copy_links) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_clients (LIKE insights_copy_clients) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_recent (LIKE insights_copy_fold) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_delta_daily (LIKE insights_daily) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_delta_links (LIKE insights_links) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_delta_clients (LIKE insights_clients) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_delta_crm (LIKE insights_crm_totals) ON COMMIT DELETE ROWS;
";

/// Creates the [`TEMP_TABLES`] unless this connection has them: a pooled connection keeps them
/// from its first batch on, and twelve `CREATE ... IF NOT EXISTS` cost a batch of a few events
/// more than folding them.
async fn work_tables(tx: &Transaction<'_>) -> Result<(), InsightsError> {
    // They are created together in one transaction, so the last stands for all.
    let there: bool = tx
        .query_one(
            "SELECT to_regclass('pg_temp.fold_delta_crm') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !there {
        tx.batch_execute(TEMP_TABLES).await?;
    }
    Ok(())
}

/// The dimension columns shared by every rollup.
const DIMS: &str = "template_key, day, sender_id, team_id, visibility";
/// The same without the day: the dimensions of the all-time rollups.
const TOTAL_DIMS: &str = "template_key, sender_id, team_id, visibility";
/// The keys of `insights_crm_totals`.
const CRM_KEYS: &str = "facet, value, template_key, sender_id, team_id, visibility";

/// The counts of `insights_daily` (and `insights_totals`).
const DAILY_COUNTS: &[&str] = &[
    "sent",
    "bounced",
    "opens",
    "human_opens",
    "unique_opens",
    "human_unique_opens",
    "clicks",
    "human_clicks",
    "unique_clicks",
    "human_unique_clicks",
    "replies",
    "unique_replies",
    "soft_bounced",
    "complaints",
    "unsubscribes",
];
const LINK_COUNTS: &[&str] = &[
    "clicks",
    "human_clicks",
    "unique_clicks",
    "human_unique_clicks",
];
const CLIENT_COUNTS: &[&str] = &["opens", "human_opens", "unique_opens", "human_unique_opens"];

/// Adds the rows of `source` (grouped by `keys`) to `table`, one multi-row upsert.
fn add_to_rollup(table: &str, keys: &str, counts: &[&str], source: &str) -> String {
    let cols = counts.join(", ");
    let sums: Vec<String> = counts.iter().map(|c| format!("sum({c})")).collect();
    let sets: Vec<String> = counts
        .iter()
        .map(|c| format!("{c} = r.{c} + EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} AS r ({keys}, {cols})
         SELECT {keys}, {} FROM {source} GROUP BY {keys} ORDER BY {keys}
         ON CONFLICT ({keys}) DO UPDATE SET {};\n",
        sums.join(", "),
        sets.join(", ")
    )
}

/// Statement timeout of the job's statements: a batch never waits forever on a database that
/// went away or on a lock.
const STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '600s'";

/// Parts of the copies, each folded under its own watermark row (`sql/0025`): as many workers
/// can fold at once, on one node or several.
pub const PARTS: i16 = 2;
/// The id of the first part's watermark row (and the first value of `mailtally_fold_part`); the
/// parts are `FIRST_PART .. FIRST_PART + PARTS`.
pub const FIRST_PART: i16 = 4;

/// Folds at most `limit` events of the copies of `part` (one of the ids after [`FIRST_PART`]).
/// `None` when another worker holds that part's watermark.
pub async fn fold_batch(
    client: &mut Client,
    limit: i64,
    part: i16,
) -> Result<Option<Batch>, InsightsError> {
    let started = Instant::now();
    let tx = client.transaction().await?;
    // A batch lost to a crash of PostgreSQL is folded again (its rollups, states and watermark
    // commit together), and any later commit that waited for the disk brought it along.
    tx.batch_execute(&format!(
        "{STATEMENT_TIMEOUT}; SET LOCAL synchronous_commit = off"
    ))
    .await?;
    let Some(mark) = tx
        .query_opt(
            "SELECT txid, seq FROM insights_watermark WHERE id = $1 FOR UPDATE SKIP LOCKED",
            &[&part],
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
    let events = read_events(&tx, part, (mark_txid, mark_seq), settled, limit.max(1)).await?;
    let Some(last) = events.last() else {
        tx.commit().await?;
        return Ok(Some(Batch::default()));
    };
    let end = (last.txid, last.seq);
    let n_events = events.len() as u64;
    work_tables(&tx).await?;
    let read_at = started.elapsed();

    // Each copy's events in time order, as slices of one vector: in time order nearly every
    // event of a batch is of another copy, and a vector per copy cost a few hundred bytes each.
    let mut events = events;
    events.sort_unstable_by_key(|e| (e.copy_id, e.occurred_at, e.seq));
    let by_copy: HashMap<Uuid, &[NewEvent]> = events
        .chunk_by(|a, b| a.copy_id == b.copy_id)
        .map(|evs| (evs[0].copy_id, evs))
        .collect();
    let copies: Vec<Uuid> = by_copy.keys().copied().collect();
    let Loaded {
        folds: mut old,
        stale,
    } = load_folds(&tx, &copies).await?;
    // Copies that have no state yet start from an empty one (nothing of theirs was folded).
    let fresh: Vec<(Uuid, Uuid)> = by_copy
        .iter()
        .filter(|(c, _)| !old.contains_key(c) && !stale.contains(c))
        .map(|(c, evs)| (*c, evs[0].message_id))
        .collect();
    let mut empty: HashMap<Uuid, CopyFold> = empty_folds(&tx, &fresh).await?;
    let urls = load_urls(&tx, &old, &empty, &by_copy).await?;
    let loaded_at = started.elapsed();

    let mut classes: Vec<(String, String)> = Vec::new();
    let mut recompute: Vec<Uuid> = Vec::new();
    let mut recompute_seqs: Vec<i64> = Vec::new();
    let mut folded: Vec<CopyFold> = Vec::new();
    let mut deltas = fold::Deltas::default();
    let mut changed = Changed::default();
    for (copy, evs) in &by_copy {
        // Each copy's loaded fold is dropped once its new one is made: the batch holds one
        // fold of each copy, not two.
        let before = old.remove(copy);
        let start = match &before {
            Some(b) => Some(b.clone()),
            None => empty.remove(copy),
        };
        let done = start.and_then(|mut f| {
            let message = f.state.message_id;
            let url_of = |idx: Option<i32>| match idx {
                Some(i) => urls
                    .get(&(message, i))
                    .cloned()
                    .unwrap_or_else(|| format!("#{i}")),
                None => "#".to_string(),
            };
            let mut own = Vec::new();
            f.fold(evs, &url_of, &mut own).ok()?;
            classes.append(&mut own);
            Some(f)
        });
        match done {
            Some(f) => {
                deltas.add(before.as_ref(), &f);
                changed.note(before.as_ref(), &f);
                folded.push(f);
            }
            None => {
                recompute.push(*copy);
                recompute_seqs.extend(evs.iter().map(|e| e.seq));
            }
        }
    }
    let folded_at = started.elapsed();

    if !recompute.is_empty() {
        tx.execute(
            "INSERT INTO fold_copies SELECT unnest($1::uuid[])",
            &[&recompute],
        )
        .await?;
        // Without statistics the planner would guess many rows and scan the state tables.
        tx.batch_execute("ANALYZE fold_copies").await?;
        tx.execute(
            "INSERT INTO fold_recompute SELECT unnest($1::uuid[])",
            &[&recompute],
        )
        .await?;
        recompute_into_new_state(&tx, Some(end)).await?;
        for row in tx
            .query(
                "SELECT kind, final_class FROM fold_classified
                 WHERE kind IN ('open', 'click') AND seq = ANY($1)",
                &[&recompute_seqs],
            )
            .await?
        {
            let class: Option<String> = row.get(1);
            classes.push((row.get(0), class.unwrap_or_default()));
        }
        replace_states(&tx).await?;
    }
    let recomputed_at = started.elapsed();
    write_folded(&tx, &folded, changed).await?;
    let stored_at = started.elapsed();
    write_deltas(&tx, deltas.without_zeros()).await?;
    apply_deltas(&tx).await?;
    let rolled_up_at = started.elapsed();
    tx.execute(
        "UPDATE insights_watermark SET txid = $1, seq = $2,
                folded_events = folded_events + $3, updated_at = now()
         WHERE id = $4",
        &[&end.0, &end.1, &(n_events as i64), &part],
    )
    .await?;
    tx.commit().await?;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    tracing::debug!(
        part,
        events = n_events,
        copies = copies.len(),
        recomputed = recompute.len(),
        read_ms = ms(read_at),
        load_ms = ms(loaded_at - read_at),
        fold_ms = ms(folded_at - loaded_at),
        recompute_ms = ms(recomputed_at - folded_at),
        state_ms = ms(stored_at - recomputed_at),
        rollup_ms = ms(rolled_up_at - stored_at),
        commit_ms = ms(started.elapsed() - rolled_up_at),
        "folded a batch"
    );
    METRICS.folded_events.inc_by(n_events);
    METRICS.folded_copies.inc_by(copies.len() as u64);
    METRICS.recomputed_copies.inc_by(recompute.len() as u64);
    let mut by_class: HashMap<(String, String), u64> = HashMap::new();
    for c in classes {
        *by_class.entry(c).or_default() += 1;
    }
    for ((kind, class), n) in by_class {
        // Labels stay a bounded set: a class this version does not know is left out.
        if let Some(class) = CLASSES.iter().find(|c| class == c.as_str()) {
            METRICS
                .events_by_final_class
                .with_label_values(&[&kind, class.as_str()])
                .inc_by(n);
        }
    }
    METRICS
        .batch_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(Some(Batch {
        events: n_events,
        copies: copies.len() as u64,
    }))
}

/// The next at most `limit` settled events after `mark`, in (txid, seq) order, in one binary COPY.
async fn read_events(
    tx: &Transaction<'_>,
    part: i16,
    mark: (i64, i64),
    settled: i64,
    limit: i64,
) -> Result<Vec<NewEvent>, InsightsError> {
    // COPY takes no parameters; these are numbers.
    let sql = format!(
        "COPY (SELECT copy_id, message_id, kind, occurred_at, link_idx, class, reason, client,
                      device, txid, seq
               FROM events
               WHERE (txid, seq) > ({}::bigint, {}::bigint) AND txid < {}::bigint
                 AND mailtally_fold_part(copy_id) = {part}
               ORDER BY txid, seq LIMIT {}) TO STDOUT (FORMAT binary)",
        mark.0, mark.1, settled, limit
    );
    let stream = tx.copy_out(&sql).await?;
    let rows = BinaryCopyOutStream::new(
        stream,
        &[
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
        ],
    );
    pin_mut!(rows);
    let mut out = Vec::new();
    while let Some(r) = rows.try_next().await? {
        out.push(NewEvent {
            copy_id: r.try_get(0)?,
            message_id: r.try_get(1)?,
            kind: r.try_get(2)?,
            occurred_at: r.try_get(3)?,
            link_idx: r.try_get(4)?,
            class: r.try_get(5)?,
            reason: r.try_get(6)?,
            client: r.try_get(7)?,
            device: r.try_get(8)?,
            txid: r.try_get(9)?,
            seq: r.try_get(10)?,
        });
    }
    Ok(out)
}

/// What the batch found stored of its copies.
struct Loaded {
    /// The fold of each copy that has a state and recent clicks this version reads.
    folds: HashMap<Uuid, CopyFold>,
    /// Copies with a state but without such recent clicks (written by older code): they are
    /// recomputed from their events.
    stale: std::collections::HashSet<Uuid>,
}

/// The stored fold of each of `copies` that has one.
async fn load_folds(tx: &Transaction<'_>, copies: &[Uuid]) -> Result<Loaded, InsightsError> {
    let cols: Vec<String> = STATE_COLUMNS
        .split(',')
        .map(|c| format!("s.{}", c.trim()))
        .collect();
    let mut out = HashMap::new();
    let mut stale = std::collections::HashSet::new();
    // Rows are taken one at a time: a batch's tens of thousands of rows, each with its
    // column offsets, would otherwise be held all at once beside the folds made of them.
    let rows = tx
        .query_raw(
            &format!(
                "SELECT {}, f.recent_clicks FROM insights_copy_state s
                 LEFT JOIN insights_copy_fold f USING (copy_id) WHERE s.copy_id = ANY($1)",
                cols.join(", ")
            ),
            [&copies as &(dyn ToSql + Sync)],
        )
        .await?;
    pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        let state = CopyState::from_row(&r);
        let recent: Option<serde_json::Value> = r.get(25);
        match recent.as_ref().and_then(fold::recent_clicks_from_json) {
            Some(recent_clicks) => {
                out.insert(
                    state.copy_id,
                    CopyFold {
                        state,
                        links: Default::default(),
                        clients: Default::default(),
                        recent_clicks,
                    },
                );
            }
            None => {
                stale.insert(state.copy_id);
            }
        }
    }
    let loaded: Vec<Uuid> = out.keys().copied().collect();
    let rows = tx
        .query_raw(
            "SELECT copy_id, url, clicks, human_clicks FROM insights_copy_links
             WHERE copy_id = ANY($1)",
            [&loaded as &(dyn ToSql + Sync)],
        )
        .await?;
    pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        if let Some(f) = out.get_mut(&r.get::<_, Uuid>(0)) {
            f.links.insert(r.get(1), (r.get(2), r.get(3)));
        }
    }
    let rows = tx
        .query_raw(
            "SELECT copy_id, client, device, opens, human_opens FROM insights_copy_clients
             WHERE copy_id = ANY($1)",
            [&loaded as &(dyn ToSql + Sync)],
        )
        .await?;
    pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        if let Some(f) = out.get_mut(&r.get::<_, Uuid>(0)) {
            f.clients.insert((r.get(1), r.get(2)), (r.get(3), r.get(4)));
        }
    }
    Ok(Loaded { folds: out, stale })
}

/// An empty fold for each (copy, message) whose message is still there: the state of a copy no
/// event of which was folded yet. A copy whose message is gone gets none (it is recomputed, and
/// so counted nowhere, as before).
async fn empty_folds(
    tx: &Transaction<'_>,
    copies: &[(Uuid, Uuid)],
) -> Result<HashMap<Uuid, CopyFold>, InsightsError> {
    if copies.is_empty() {
        return Ok(HashMap::new());
    }
    let messages: Vec<Uuid> = copies.iter().map(|(_, m)| *m).collect();
    let mut dims: HashMap<Uuid, (fold::Dims, fold::Crm)> = HashMap::new();
    for r in tx
        .query(
            "SELECT id, template_key, sender_id, coalesce(team_id, 0), visibility,
                    (created_at AT TIME ZONE 'UTC')::date, deal, lead, project
             FROM messages WHERE id = ANY($1)",
            &[&messages],
        )
        .await?
    {
        let crm = fold::Crm {
            deal: r.get(6),
            lead: r.get(7),
            project: r.get(8),
        };
        let d = fold::Dims {
            template_key: r.get(1),
            sender_id: r.get(2),
            team_id: r.get(3),
            visibility: r.get(4),
            day: r.get(5),
        };
        dims.insert(r.get(0), (d, crm));
    }
    Ok(copies
        .iter()
        .filter_map(|(copy, message)| {
            let (dims, crm) = dims.get(message)?.clone();
            Some((*copy, CopyFold::empty(*copy, *message, dims, crm)))
        })
        .collect())
}

/// The URL of every link of the messages of `folds` that the batch clicks, by (message, index):
/// a batch of deliveries and opens reads no link list.
async fn load_urls(
    tx: &Transaction<'_>,
    old: &HashMap<Uuid, CopyFold>,
    empty: &HashMap<Uuid, CopyFold>,
    by_copy: &HashMap<Uuid, &[NewEvent]>,
) -> Result<HashMap<(Uuid, i32), String>, InsightsError> {
    let clicked = |copy: &Uuid| {
        by_copy
            .get(copy)
            .is_some_and(|evs| evs.iter().any(|e| e.kind == "click"))
    };
    let mut messages: Vec<Uuid> = old
        .iter()
        .chain(empty)
        .filter(|(copy, _)| clicked(copy))
        .map(|(_, f)| f.state.message_id)
        .collect();
    messages.sort();
    messages.dedup();
    Ok(tx
        .query(
            "SELECT message_id, idx, url FROM links WHERE message_id = ANY($1)",
            &[&messages],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// The rows of links, clients and recent clicks that a batch changed, as columns for
/// [`write_folded`]: noted copy by copy, so that a copy's loaded fold can go once its new one
/// is made.
#[derive(Default)]
struct Changed {
    link_copy: Vec<Uuid>,
    link_url: Vec<String>,
    link_all: Vec<i32>,
    link_human: Vec<i32>,
    client_copy: Vec<Uuid>,
    client_name: Vec<String>,
    client_device: Vec<String>,
    client_all: Vec<i32>,
    client_human: Vec<i32>,
    recent_copy: Vec<Uuid>,
    recent: Vec<serde_json::Value>,
}

impl Changed {
    /// Notes what of `new` differs from `before` (the stored fold; `None` for a copy new to
    /// the state).
    fn note(&mut self, before: Option<&CopyFold>, new: &CopyFold) {
        let copy = new.state.copy_id;
        for (url, &(all, human)) in &new.links {
            if before.and_then(|b| b.links.get(url)) != Some(&(all, human)) {
                self.link_copy.push(copy);
                self.link_url.push(url.clone());
                self.link_all.push(all);
                self.link_human.push(human);
            }
        }
        for (key, &(all, human)) in &new.clients {
            if before.and_then(|b| b.clients.get(key)) != Some(&(all, human)) {
                let (client, device) = key;
                self.client_copy.push(copy);
                self.client_name.push(client.clone());
                self.client_device.push(device.clone());
                self.client_all.push(all);
                self.client_human.push(human);
            }
        }
        // A copy new to the state gets its row even without clicks: a state without one is
        // read as written by older code.
        if before.is_none_or(|b| b.recent_clicks != new.recent_clicks) {
            self.recent_copy.push(copy);
            self.recent
                .push(fold::recent_clicks_json(&new.recent_clicks));
        }
    }
}

/// Stores the new fold of the copies folded in Rust: every state row (inserted or updated in
/// place), and of links, clients and recent clicks the rows `changed` holds.
async fn write_folded(
    tx: &Transaction<'_>,
    folded: &[CopyFold],
    changed: Changed,
) -> Result<(), InsightsError> {
    if folded.is_empty() {
        return Ok(());
    }
    let sink = tx
        .copy_in(&format!(
            "COPY fold_state ({STATE_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let ts = Type::TIMESTAMPTZ;
    let w = BinaryCopyInWriter::new(
        sink,
        &[
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::DATE,
            Type::BOOL,
            ts.clone(),
            Type::INT4,
            Type::INT4,
            Type::INT4,
            Type::INT4,
            ts.clone(),
            ts.clone(),
            ts.clone(),
            ts.clone(),
            ts,
            Type::INT4,
            Type::BOOL,
            Type::BOOL,
            Type::BOOL,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ],
    );
    pin_mut!(w);
    for f in folded {
        let s = &f.state;
        let row: [&(dyn ToSql + Sync); 25] = [
            &s.copy_id,
            &s.message_id,
            &s.dims.template_key,
            &s.dims.sender_id,
            &s.dims.team_id,
            &s.dims.visibility,
            &s.dims.day,
            &s.bounced,
            &s.delivered_at,
            &s.opens,
            &s.human_opens,
            &s.clicks,
            &s.human_clicks,
            &s.first_open_at,
            &s.first_human_open_at,
            &s.first_click_at,
            &s.first_human_click_at,
            &s.last_event_at,
            &s.replies,
            &s.soft_bounced,
            &s.complained,
            &s.unsubscribed,
            &s.crm.deal,
            &s.crm.lead,
            &s.crm.project,
        ];
        w.as_mut().write(&row).await?;
    }
    w.finish().await?;
    let sets: Vec<String> = STATE_COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "copy_id")
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    tx.batch_execute(&format!(
        "INSERT INTO insights_copy_state SELECT * FROM fold_state ORDER BY copy_id
         ON CONFLICT (copy_id) DO UPDATE SET {};
         DELETE FROM fold_state;",
        sets.join(", ")
    ))
    .await?;

    let Changed {
        link_copy,
        link_url,
        link_all,
        link_human,
        client_copy,
        client_name,
        client_device,
        client_all,
        client_human,
        recent_copy,
        recent,
    } = changed;
    if !link_copy.is_empty() {
        tx.execute(
            "INSERT INTO insights_copy_links (copy_id, url, clicks, human_clicks)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::int4[])
             ON CONFLICT (copy_id, url)
             DO UPDATE SET clicks = EXCLUDED.clicks, human_clicks = EXCLUDED.human_clicks",
            &[&link_copy, &link_url, &link_all, &link_human],
        )
        .await?;
    }
    if !client_copy.is_empty() {
        tx.execute(
            "INSERT INTO insights_copy_clients (copy_id, client, device, opens, human_opens)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::int4[])
             ON CONFLICT (copy_id, client, device)
             DO UPDATE SET opens = EXCLUDED.opens, human_opens = EXCLUDED.human_opens",
            &[
                &client_copy,
                &client_name,
                &client_device,
                &client_all,
                &client_human,
            ],
        )
        .await?;
    }
    if !recent_copy.is_empty() {
        tx.execute(
            "INSERT INTO insights_copy_fold (copy_id, recent_clicks)
             SELECT * FROM unnest($1::uuid[], $2::jsonb[])
             ON CONFLICT (copy_id) DO UPDATE SET recent_clicks = EXCLUDED.recent_clicks",
            &[&recent_copy, &recent],
        )
        .await?;
    }
    Ok(())
}

/// COPYs the rollup deltas of the copies folded in Rust into the batch's delta tables, where
/// [`apply_deltas`] adds them (with those of recomputed copies) to the rollups.
async fn write_deltas(tx: &Transaction<'_>, deltas: fold::Deltas) -> Result<(), InsightsError> {
    let daily = deltas.daily.iter().map(|(d, c)| (d, vec![], &c[..]));
    copy_deltas(tx, "fold_delta_daily", &[], DAILY_COUNTS, daily.collect()).await?;
    let links = deltas
        .links
        .iter()
        .map(|((d, url), c)| (d, vec![url as &(dyn ToSql + Sync)], &c[..]));
    copy_deltas(
        tx,
        "fold_delta_links",
        &["url"],
        LINK_COUNTS,
        links.collect(),
    )
    .await?;
    let clients = deltas.clients.iter().map(|((d, client, device), c)| {
        let extra: Vec<&(dyn ToSql + Sync)> = vec![client, device];
        (d, extra, &c[..])
    });
    let extra = ["client", "device"];
    copy_deltas(
        tx,
        "fold_delta_clients",
        &extra,
        CLIENT_COUNTS,
        clients.collect(),
    )
    .await?;
    copy_crm_deltas(tx, &deltas.crm).await
}

/// COPYs the deltas of `insights_crm_totals` into `fold_delta_crm`.
async fn copy_crm_deltas(
    tx: &Transaction<'_>,
    rows: &HashMap<fold::CrmKey, [i64; 15]>,
) -> Result<(), InsightsError> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx
        .copy_in(&format!(
            "COPY fold_delta_crm ({CRM_KEYS}, {}) FROM STDIN (FORMAT binary)",
            DAILY_COUNTS.join(", ")
        ))
        .await?;
    let mut types = vec![
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
    ];
    types.extend(DAILY_COUNTS.iter().map(|_| Type::INT8));
    let w = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(w);
    for (k, n) in rows {
        let facet = k.facet.as_str();
        let mut row: Vec<&(dyn ToSql + Sync)> = vec![
            &facet,
            &k.value,
            &k.template_key,
            &k.sender_id,
            &k.team_id,
            &k.visibility,
        ];
        row.extend(n.iter().map(|c| c as &(dyn ToSql + Sync)));
        w.as_mut().write(&row).await?;
    }
    w.finish().await?;
    Ok(())
}

/// One delta row: its dimensions, its text keys (`extra` columns) and its counts.
type DeltaRow<'a> = (&'a fold::Dims, Vec<&'a (dyn ToSql + Sync)>, &'a [i64]);

/// COPYs `rows` into `table` (dimensions, then the `extra` text columns, then `counts`).
async fn copy_deltas(
    tx: &Transaction<'_>,
    table: &str,
    extra: &[&str],
    counts: &[&str],
    rows: Vec<DeltaRow<'_>>,
) -> Result<(), InsightsError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut cols = vec![DIMS.to_string()];
    cols.extend(extra.iter().map(|c| c.to_string()));
    cols.extend(counts.iter().map(|c| c.to_string()));
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            cols.join(", ")
        ))
        .await?;
    let mut types = vec![Type::TEXT, Type::DATE, Type::INT8, Type::INT8, Type::TEXT];
    types.extend(extra.iter().map(|_| Type::TEXT));
    types.extend(counts.iter().map(|_| Type::INT8));
    let w = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(w);
    for (d, keys, n) in rows {
        let mut row: Vec<&(dyn ToSql + Sync)> = vec![
            &d.template_key,
            &d.day,
            &d.sender_id,
            &d.team_id,
            &d.visibility,
        ];
        row.extend(keys);
        row.extend(n.iter().map(|c| c as &(dyn ToSql + Sync)));
        w.as_mut().write(&row).await?;
    }
    w.finish().await?;
    Ok(())
}

/// Recomputes the new state of the copies in `fold_recompute` from their events up to `until`
/// (every event when `None`) into the work tables. A copy without events gets no new state.
async fn recompute_into_new_state(
    tx: &Transaction<'_>,
    until: Option<(i64, i64)>,
) -> Result<(), InsightsError> {
    tx.batch_execute("ANALYZE fold_recompute").await?;
    let classified = classified_events_until_sql("SELECT copy_id FROM fold_recompute", until);
    let url = crate::queue::links::url_sql("c.message_id", "c.link_idx");
    tx.execute(
        &format!(
            "INSERT INTO fold_classified
             SELECT c.copy_id, c.message_id, c.kind, c.occurred_at, c.link_idx,
                    c.client, c.device, c.final_class, c.seq, c.final_reason,
                    CASE WHEN c.kind = 'click'
                         THEN coalesce({url}, '#' || c.link_idx::text, '#') END
             FROM ({classified}) c"
        ),
        &[],
    )
    .await?;
    // Temp tables have no statistics: without them the planner guesses a few rows and joins
    // them with nested loops.
    tx.batch_execute("ANALYZE fold_classified").await?;
    let recent = fold::RECENT_CLICKS_SQL;
    tx.batch_execute(&format!(
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
               bool_or(c.kind = 'unsubscribe'),
               m.deal, m.lead, m.project
        FROM fold_classified c JOIN messages m ON m.id = c.message_id
        GROUP BY c.copy_id, m.id;
        ANALYZE fold_state;

        INSERT INTO fold_links
        SELECT c.copy_id, c.url, count(*), count(*) FILTER (WHERE c.final_class IN ('human', 'proxy'))
        FROM fold_classified c
        JOIN fold_state s ON s.copy_id = c.copy_id
        WHERE c.kind = 'click'
        GROUP BY 1, 2;

        -- The clicks a later click may still put in a sweep, or needs to be judged: those of
        -- the window counted as a person and the last few (`hindsight::add_click`).
        INSERT INTO fold_recent
        SELECT s.copy_id, coalesce(r.recent, '[]'::jsonb)
        FROM fold_state s LEFT JOIN (
            SELECT c.copy_id, {recent} AS recent
            FROM (SELECT k.*, max(k.occurred_at) OVER (PARTITION BY k.copy_id) AS last_click,
                         row_number() OVER (
                             PARTITION BY k.copy_id
                             ORDER BY k.occurred_at DESC, k.url COLLATE \"C\" DESC,
                                      coalesce(k.final_class IN ('human', 'proxy'), false) DESC
                         ) AS from_last
                  FROM fold_classified k WHERE k.kind = 'click') c
            WHERE c.occurred_at >= c.last_click - interval '{} seconds'
              AND (c.final_class IN ('human', 'proxy') OR c.from_last <= {kept_last})
            GROUP BY c.copy_id) r USING (copy_id);

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
        crate::classify::hindsight::SWEEP_SECONDS,
        kept_last = crate::classify::hindsight::KEPT_LAST,
    ))
    .await?;
    Ok(())
}

/// Puts (new state - old state) of the copies in `fold_copies`, whose new state is in the work
/// tables (none for a copy that is gone), into the delta tables, and replaces their state.
async fn replace_states(tx: &Transaction<'_>) -> Result<(), InsightsError> {
    let mut sql = String::new();
    // Rollup deltas: new contributions count +1, old ones -1. Dimensions come from the copy
    // state (new, or old for copies whose message is gone).
    let counts = DAILY_COUNTS.join(", ");
    let state_sums = "sum(sg), sum(sg * bounced::int), sum(sg * opens), sum(sg * human_opens),
        sum(sg * (opens > 0)::int), sum(sg * (human_opens > 0)::int),
        sum(sg * clicks), sum(sg * human_clicks),
        sum(sg * (clicks > 0)::int), sum(sg * (human_clicks > 0)::int),
        sum(sg * replies), sum(sg * (replies > 0)::int),
        sum(sg * soft_bounced::int), sum(sg * complained::int),
        sum(sg * unsubscribed::int)";
    let signed_states = "(SELECT 1 AS sg, * FROM fold_state
              UNION ALL
              SELECT -1, s.* FROM insights_copy_state s JOIN fold_copies f USING (copy_id)) d";
    sql.push_str(&format!(
        "
        INSERT INTO fold_delta_daily ({DIMS}, {counts})
        SELECT {DIMS}, {state_sums} FROM {signed_states} GROUP BY {DIMS};

        INSERT INTO fold_delta_crm ({CRM_KEYS}, {counts})
        SELECT {CRM_KEYS}, {state_sums}
        FROM {signed_states}
        CROSS JOIN LATERAL (VALUES ('deal', d.deal), ('lead', d.lead), ('project', d.project))
            AS f (facet, value)
        WHERE f.value IS NOT NULL
        GROUP BY {CRM_KEYS};

        INSERT INTO fold_delta_links ({DIMS}, url, clicks, human_clicks, unique_clicks,
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
        GROUP BY {DIMS}, url;

        INSERT INTO fold_delta_clients ({DIMS}, client, device, opens, human_opens,
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
        GROUP BY {DIMS}, client, device;
        "
    ));
    sql.push_str(
        "
        DELETE FROM insights_copy_links l USING fold_copies f WHERE l.copy_id = f.copy_id;
        DELETE FROM insights_copy_clients c USING fold_copies f WHERE c.copy_id = f.copy_id;
        DELETE FROM insights_copy_state s USING fold_copies f WHERE s.copy_id = f.copy_id;
        DELETE FROM insights_copy_fold s USING fold_copies f WHERE s.copy_id = f.copy_id;
        INSERT INTO insights_copy_state SELECT * FROM fold_state;
        INSERT INTO insights_copy_links SELECT * FROM fold_links;
        INSERT INTO insights_copy_clients SELECT * FROM fold_clients;
        INSERT INTO insights_copy_fold SELECT * FROM fold_recent;
        -- The work tables are emptied at commit; emptied now too, for a caller that folds
        -- again in the same transaction (DELETE: a TRUNCATE makes new files for each table).
        DELETE FROM fold_copies; DELETE FROM fold_recompute; DELETE FROM fold_classified;
        DELETE FROM fold_state; DELETE FROM fold_links; DELETE FROM fold_clients;
        DELETE FROM fold_recent;
        ",
    );
    tx.batch_execute(&sql).await?;
    Ok(())
}

/// Adds the delta tables to the rollups and empties them. Rows are upserted in key order, so
/// that two workers moving the same rollup rows wait for each other instead of deadlocking.
async fn apply_deltas(tx: &Transaction<'_>) -> Result<(), InsightsError> {
    let mut sql = String::new();
    sql.push_str(&add_to_rollup(
        "insights_daily",
        DIMS,
        DAILY_COUNTS,
        "fold_delta_daily",
    ));
    sql.push_str(&add_to_rollup(
        "insights_totals",
        TOTAL_DIMS,
        DAILY_COUNTS,
        "fold_delta_daily",
    ));
    sql.push_str(&add_to_rollup(
        "insights_links",
        &format!("{DIMS}, url"),
        LINK_COUNTS,
        "fold_delta_links",
    ));
    sql.push_str(&add_to_rollup(
        "insights_links_totals",
        &format!("{TOTAL_DIMS}, url"),
        LINK_COUNTS,
        "fold_delta_links",
    ));
    sql.push_str(&add_to_rollup(
        "insights_clients",
        &format!("{DIMS}, client, device"),
        CLIENT_COUNTS,
        "fold_delta_clients",
    ));
    sql.push_str(&add_to_rollup(
        "insights_clients_totals",
        &format!("{TOTAL_DIMS}, client, device"),
        CLIENT_COUNTS,
        "fold_delta_clients",
    ));
    sql.push_str(&add_to_rollup(
        "insights_crm_totals",
        CRM_KEYS,
        DAILY_COUNTS,
        "fold_delta_crm",
    ));
    sql.push_str(
        "DELETE FROM fold_delta_daily; DELETE FROM fold_delta_links;
         DELETE FROM fold_delta_clients; DELETE FROM fold_delta_crm;",
    );
    tx.batch_execute(&sql).await?;
    Ok(())
}

/// Recomputes the copies in `fold_copies` from all their events and moves the rollups by the
/// difference (copies whose events are gone leave the rollups).
pub(crate) async fn fold_copies(tx: &Transaction<'_>) -> Result<(), InsightsError> {
    tx.execute(
        "INSERT INTO fold_recompute SELECT copy_id FROM fold_copies ON CONFLICT DO NOTHING",
        &[],
    )
    .await?;
    recompute_into_new_state(tx, None).await?;
    replace_states(tx).await?;
    apply_deltas(tx).await
}

/// Events not folded yet (settled or not) and the age in seconds of the oldest of them.
pub async fn lag(client: &Client) -> Result<(i64, f64), InsightsError> {
    let (mut events, mut age) = (0, 0.0f64);
    for mark in client
        .query(
            "SELECT id, txid, seq FROM insights_watermark ORDER BY id",
            &[],
        )
        .await?
    {
        let (part, txid, seq): (i16, i64, i64) = (mark.get(0), mark.get(1), mark.get(2));
        // Parameters, not a join with the watermark row, so that the planner uses the fold
        // index.
        let row = client
            .query_one(
                "SELECT count(*),
                        coalesce(extract(epoch FROM now() - min(occurred_at)), 0)::float8
                 FROM events WHERE (txid, seq) > ($1, $2) AND mailtally_fold_part(copy_id) = $3",
                &[&txid, &seq, &part],
            )
            .await?;
        events += row.get::<_, i64>(0);
        age = age.max(row.get::<_, f64>(1));
    }
    Ok((events, age.max(0.0)))
}

/// Folds until nothing settled is left in any part; `progress` is told the events folded after
/// each batch. Returns the events folded. One worker: it goes round the parts, folding a batch
/// of each that no other worker holds. `wait` is for a run that must leave every event
/// committed before it started folded (the `aggregate` command, tests): it waits for a part
/// held by another worker or node, and for events that are not settled yet because some older
/// transaction, in any database of the cluster, is still running (for at most
/// [`SETTLE_WAIT`]). Without `wait` (the job in `serve`) the run stops there and the next tick
/// goes on.
pub async fn run_until_caught_up(
    client: &mut Client,
    limit: i64,
    wait: bool,
    progress: impl Fn(u64) + Sync,
) -> Result<u64, InsightsError> {
    run_worker(client, 0, limit, wait, &progress).await
}

/// Folds with one worker on each of `clients` at once (the parts let as many work in parallel
/// as there are parts), until caught up as [`run_until_caught_up`] says. Returns the events
/// folded by all of them.
pub async fn run_workers(
    clients: Vec<&mut Client>,
    limit: i64,
    wait: bool,
    progress: impl Fn(u64) + Sync,
) -> Result<u64, InsightsError> {
    let runs = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| run_worker(c, i, limit, wait, &progress));
    let folded = futures_util::future::try_join_all(runs).await?;
    Ok(folded.into_iter().sum())
}

async fn run_worker(
    client: &mut Client,
    first: usize,
    limit: i64,
    wait: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, InsightsError> {
    let started = Instant::now();
    let mut total = 0;
    // Workers start on different parts, so that they do not queue for one.
    let parts: Vec<i16> = (0..PARTS)
        .map(|i| FIRST_PART + (i + first as i16) % PARTS)
        .collect();
    // A waiting run's goal: in each part, the newest event committed before it started.
    let mut targets: Vec<(i16, i64, i64)> = Vec::new();
    if wait {
        for &part in &parts {
            if let Some(r) = client
                .query_opt(
                    "SELECT txid, seq FROM events WHERE mailtally_fold_part(copy_id) = $1
                     ORDER BY txid DESC, seq DESC LIMIT 1",
                    &[&part],
                )
                .await?
            {
                targets.push((part, r.get(0), r.get(1)));
            }
        }
    }
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(100));
    loop {
        let mut folded = 0;
        for &part in &parts {
            if let Some(b) = fold_batch(client, limit, part).await? {
                total += b.events;
                folded += b.events;
                if b.events > 0 {
                    progress(b.events);
                }
            }
        }
        if folded > 0 {
            continue;
        }
        // Nothing was left to fold here: done, unless a waiting run's goal is not reached in
        // some part. A part whose goal is settled is being folded by another worker: wait for
        // it. One whose goal is held back by an older open transaction is waited for at most
        // SETTLE_WAIT.
        let mut behind = Progress::Folded;
        for &(part, txid, seq) in &targets {
            behind = behind.max(folded_past(client, part, txid, seq).await?);
        }
        match behind {
            Progress::Folded => break,
            Progress::Unsettled if started.elapsed() >= SETTLE_WAIT => break,
            _ => pause().await,
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

/// How far a part has come towards an event, the worse the greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Progress {
    /// The part's watermark has reached the event, or the event is gone (erased).
    Folded,
    /// Not yet, and the event's transaction is older than every running one: a batch will
    /// fold it.
    Settled,
    /// Not yet, and an older transaction still runs: no batch may fold it yet.
    Unsettled,
}

/// How far `part` has come towards its event (`txid`, `seq`).
async fn folded_past(
    client: &Client,
    part: i16,
    txid: i64,
    seq: i64,
) -> Result<Progress, InsightsError> {
    let row = client
        .query_one(
            "SELECT (w.txid, w.seq) >= ($2, $3)
                    OR NOT EXISTS (SELECT 1 FROM events WHERE (txid, seq) = ($2, $3)),
                    $2 < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             FROM insights_watermark w WHERE w.id = $1",
            &[&part, &txid, &seq],
        )
        .await?;
    Ok(match (row.get(0), row.get(1)) {
        (true, _) => Progress::Folded,
        (false, true) => Progress::Settled,
        (false, false) => Progress::Unsettled,
    })
}

/// The job inside `serve`: a run of one worker per part every `every`, until shutdown. Errors
/// are logged and retried at the next tick (PostgreSQL may be away for a while).
pub async fn serve_loop(
    pool: deadpool_postgres::Pool,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let run = async {
            let mut pooled = Vec::new();
            for _ in 0..PARTS {
                pooled.push(pool.get().await?);
            }
            let clients = pooled.iter_mut().map(|c| -> &mut Client { c }).collect();
            run_workers(clients, DEFAULT_BATCH, false, |_| {}).await
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
    work_tables(tx).await?;
    tx.execute(
        "SELECT 1 FROM insights_watermark ORDER BY id FOR UPDATE",
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
