//! One writer connection: writes a batch of events in one transaction with binary COPY.
//!
//! A batch fresh from the channel is COPYed straight into `events`: its ids were chosen at the
//! edge and never written before, so it needs no conflict check. A batch that may have been
//! written already (a spool replay, a retry after a timeout that may have committed, or a fresh
//! batch that met a duplicate) goes through a staging table and `INSERT ... ON CONFLICT DO
//! NOTHING`, so it lands once.
//!
//! Which message a copy belongs to is kept in memory ([`MessageOfCopy`]), looked up in
//! `copies` only for copies not seen yet, and forgotten whenever copies were removed (the
//! `copies_removed` count, read in the same transaction): events of unknown or erased copies
//! never become rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Pool};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::writer::WriterError;
use super::{Event, Kind, METRICS};
use crate::classify::Class;

/// Copies remembered at most; beyond, the memory starts again (a lookup per new copy costs
/// one indexed read per batch, so forgetting is cheap).
const MEMORY_LIMIT: usize = 1 << 18;

/// Which message each copy belongs to, as far as the writer has looked it up.
#[derive(Debug, Default)]
pub struct MessageOfCopy {
    /// The `copies_removed` count the entries were read under.
    generation: Option<i64>,
    known: HashMap<Uuid, Uuid>,
}

/// How a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Never written before: COPY straight into `events`.
    Fresh,
    /// Perhaps written before: staged, then inserted with `ON CONFLICT DO NOTHING`.
    Again,
}

const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS events_staging (
    id uuid, occurred_at timestamptz, message_id uuid, copy_id uuid, kind text, link_idx int4,
    class text, reason text, ip inet, user_agent text, method text, client text, device text,
    os text
) ON COMMIT DELETE ROWS";

/// The columns of `events` a writer COPYs, in the order of [`TYPES`] and [`row`].
pub const COLUMNS: &str =
    "id, occurred_at, message_id, copy_id, kind, link_idx, class, reason, ip, \
    user_agent, method, client, device, os";

/// The binary COPY types of [`COLUMNS`].
pub const TYPES: &[Type] = &[
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::UUID,
    Type::TEXT,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::INET,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// One connection of the writer and what it needs to write.
pub struct Lane {
    pool: Pool,
    client: Option<ClientWrapper>,
    messages: Arc<Mutex<MessageOfCopy>>,
    flush_timeout: Duration,
}

impl Lane {
    pub fn new(pool: Pool, messages: Arc<Mutex<MessageOfCopy>>, flush_timeout: Duration) -> Lane {
        Lane {
            pool,
            client: None,
            messages,
            flush_timeout,
        }
    }

    /// Forgets the connection (after an outage).
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// Writes a batch; returns the rows inserted. Gives up after the flush timeout (the
    /// transaction may still commit: write it again with [`Mode::Again`]).
    pub async fn write(&mut self, batch: &[Event], mode: Mode) -> Result<u64, WriterError> {
        let started = Instant::now();
        let limit = self.flush_timeout;
        let inserted = tokio::time::timeout(limit, self.copy_batch(batch, mode))
            .await
            .map_err(|_| WriterError::Timeout(limit))??;
        METRICS
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        METRICS.batch_size.observe(batch.len() as f64);
        METRICS.written.inc_by(inserted);
        if inserted < batch.len() as u64 {
            tracing::debug!(
                batch = batch.len(),
                inserted,
                "events already stored or of unknown copies"
            );
        }
        Ok(inserted)
    }

    async fn copy_batch(&mut self, batch: &[Event], mode: Mode) -> Result<u64, WriterError> {
        if self.client.is_none() {
            let client = deadpool_postgres::Object::take(self.pool.get().await?);
            client.batch_execute(STAGING).await?;
            self.client = Some(client);
        }
        let client = self.client.as_mut().expect("connected just above");
        let messages = self.messages.clone();
        let first = {
            let tx = client.transaction().await?;
            let known = resolve(&tx, &messages, batch).await?;
            match copy_rows(&tx, batch, &known, mode).await {
                Ok(n) => tx.commit().await.map(|_| n),
                Err(e) => Err(e),
            }
        };
        match first {
            Ok(n) => Ok(n),
            // A fresh batch holding an event already stored (its id came twice): once more,
            // skipping what is there.
            Err(e) if mode == Mode::Fresh && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let tx = client.transaction().await?;
                let known = resolve(&tx, &messages, batch).await?;
                let n = copy_rows(&tx, batch, &known, Mode::Again).await?;
                tx.commit().await?;
                Ok(n)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The message of each copy of `batch` that exists, from memory, looking up the copies not
/// seen yet. Runs in the batch's transaction, so a removal counted before it is seen.
async fn resolve(
    tx: &Transaction<'_>,
    messages: &Mutex<MessageOfCopy>,
    batch: &[Event],
) -> Result<HashMap<Uuid, Uuid>, tokio_postgres::Error> {
    let generation = crate::queue::copies_removed(tx).await?;
    let mut known = HashMap::new();
    let mut missing = Vec::new();
    {
        let mut memory = messages.lock().expect("message memory lock");
        if memory.generation != Some(generation) {
            memory.known.clear();
            memory.generation = Some(generation);
        }
        for e in batch {
            if known.contains_key(&e.copy_id) {
                continue;
            }
            match memory.known.get(&e.copy_id) {
                Some(m) => {
                    known.insert(e.copy_id, *m);
                }
                None => missing.push(e.copy_id),
            }
        }
    }
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(known);
    }
    let found = crate::queue::messages_of_copies(tx, &missing).await?;
    let mut memory = messages.lock().expect("message memory lock");
    if memory.generation == Some(generation) {
        if memory.known.len() + found.len() > MEMORY_LIMIT {
            memory.known.clear();
        }
        memory.known.extend(found.iter().copied());
    }
    known.extend(found);
    Ok(known)
}

/// One event as the values of [`COLUMNS`].
pub fn row<'a>(e: &'a Event, message_id: &'a Uuid) -> [&'a (dyn ToSql + Sync); 14] {
    [
        &e.id,
        &e.occurred_at,
        message_id,
        &e.copy_id,
        &e.kind,
        &e.link_idx,
        &e.class,
        &e.reason,
        &e.ip,
        &e.user_agent,
        &e.method,
        &e.client,
        &e.device,
        &e.os,
    ]
}

/// Both are written as their text spelling (`events.kind`, `events.class`).
macro_rules! text_column {
    ($t:ty) => {
        impl ToSql for $t {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }
    };
}
text_column!(Kind);
text_column!(Class);

/// COPYs the events whose copy is known; returns the rows inserted.
async fn copy_rows(
    tx: &Transaction<'_>,
    batch: &[Event],
    known: &HashMap<Uuid, Uuid>,
    mode: Mode,
) -> Result<u64, tokio_postgres::Error> {
    let target = match mode {
        Mode::Fresh => "events",
        Mode::Again => "events_staging",
    };
    let sink = tx
        .copy_in(&format!("COPY {target} ({COLUMNS}) FROM STDIN BINARY"))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, TYPES);
    tokio::pin!(writer);
    for e in batch {
        let Some(message_id) = known.get(&e.copy_id) else {
            continue;
        };
        writer.as_mut().write(&row(e, message_id)).await?;
    }
    let copied = writer.finish().await?;
    match mode {
        Mode::Fresh => Ok(copied),
        Mode::Again => {
            tx.execute(
                &format!(
                    "INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM events_staging
                     ON CONFLICT DO NOTHING"
                ),
                &[],
            )
            .await
        }
    }
}
