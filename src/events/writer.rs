//! The batch writer: one task that takes events from the channel and writes them to PostgreSQL
//! with binary COPY, every flush interval or every batch of N events, whichever comes first.
//!
//! A batch PostgreSQL does not take (an error, a timeout) goes to the spool and the writer
//! retries the database once a second; while it is away, batches go straight to the spool.
//! Once a write succeeds again the spool is replayed, one segment at a time. Rows are inserted
//! with `ON CONFLICT DO NOTHING` on the primary key chosen at the edge, so a batch written twice
//! (a timeout after the commit, a crash during replay) lands once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Pool};
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_util::sync::CancellationToken;

use super::spool::{self, Spool, SpoolError};
use super::{Event, EventSink, Overflow, METRICS};

#[derive(Debug, Error)]
pub enum WriterError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("spool task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch_size: usize,
    pub channel_capacity: usize,
    pub flush_interval: Duration,
    /// A write that takes longer is given up and spooled (it may still commit: replay is
    /// idempotent).
    pub flush_timeout: Duration,
    /// How long to leave PostgreSQL alone after a failure.
    pub retry_after: Duration,
    pub spool_dir: PathBuf,
}

impl WriterConfig {
    pub fn new(spool_dir: PathBuf) -> WriterConfig {
        WriterConfig {
            batch_size: 1000,
            channel_capacity: 65536,
            flush_interval: Duration::from_millis(100),
            flush_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(1),
            spool_dir,
        }
    }
}

/// The running writer; [`WriterHandle::shutdown`] drains it.
pub struct WriterHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl WriterHandle {
    /// Stops taking new events, writes what is queued to PostgreSQL (or the spool when it
    /// cannot), and returns when everything is durable.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "event writer ended abnormally");
        }
    }
}

/// Opens the spool and starts the writer; returns the sink producers push into.
pub fn start(pool: Pool, config: WriterConfig) -> Result<(EventSink, WriterHandle), WriterError> {
    let spool = Spool::open(&config.spool_dir)?;
    METRICS.spool_bytes.set(spool.bytes() as i64);
    if !spool.is_empty() {
        tracing::info!(dir = %spool.dir().display(), bytes = spool.bytes(), "event spool holds events from an earlier run; replaying once PostgreSQL answers");
    }
    let (sink, rx, overflow) = super::channel(config.channel_capacity);
    let stop = CancellationToken::new();
    let writer = Writer {
        pool,
        client: None,
        spool: Arc::new(Mutex::new(spool)),
        overflow,
        config,
        down_until: None,
        depth_of: sink.clone(),
    };
    let task = tokio::spawn(writer.run(rx, stop.clone()));
    Ok((sink, WriterHandle { stop, task }))
}

struct Writer {
    pool: Pool,
    /// The writer's own connection (with its staging table), taken out of the pool for good.
    client: Option<ClientWrapper>,
    spool: Arc<Mutex<Spool>>,
    overflow: Arc<Overflow>,
    config: WriterConfig,
    /// Set after a failure: until then batches go straight to the spool.
    down_until: Option<Instant>,
    depth_of: EventSink,
}

const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS events_staging (
    id uuid, occurred_at timestamptz, copy_id uuid, kind text, link_idx int4, class text,
    reason text, ip inet, user_agent text, method text, client text, device text, os text
) ON COMMIT DELETE ROWS";

const COPY: &str = "COPY events_staging (id, occurred_at, copy_id, kind, link_idx, class, reason, \
    ip, user_agent, method, client, device, os) FROM STDIN BINARY";

// message_id is resolved here, in one statement per batch, never on the request path.
const INSERT: &str = "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, link_idx, \
    class, reason, ip, user_agent, method, client, device, os)
    SELECT s.id, s.occurred_at, c.message_id, s.copy_id, s.kind, s.link_idx, s.class, s.reason,
           s.ip, s.user_agent, s.method, s.client, s.device, s.os
    FROM events_staging s JOIN copies c ON c.id = s.copy_id
    ON CONFLICT DO NOTHING";

const TYPES: &[Type] = &[
    Type::UUID,
    Type::TIMESTAMPTZ,
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

/// Whether an error means "PostgreSQL is away" (retry later) rather than "this batch is bad".
fn is_outage(e: &WriterError) -> bool {
    match e {
        WriterError::Db(db) => match db.code() {
            // Connection, resources, operator intervention, system errors, rollbacks.
            Some(code) => ["08", "53", "57", "58", "40", "XX"]
                .iter()
                .any(|class| code.code().starts_with(class)),
            None => true,
        },
        _ => true,
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
        let n = self.config.batch_size.max(1);
        let mut buf: Vec<Event> = Vec::with_capacity(n);
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events left by an earlier run go in first.
        self.replay().await;
        loop {
            let room = n - buf.len();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.overflow.notify.notified() => {}
                got = rx.recv_many(&mut buf, room), if room > 0 => {
                    if got == 0 {
                        break;
                    }
                    if buf.len() < n {
                        continue;
                    }
                }
            }
            METRICS.channel_depth.set(self.depth_of.depth() as i64);
            self.spool_overflow().await;
            if !buf.is_empty() {
                let batch = std::mem::replace(&mut buf, Vec::with_capacity(n));
                self.write_or_spool(batch).await;
            }
            if self.is_up() && !self.spool.lock().await.is_empty() {
                self.replay().await;
            }
        }
        // Drain: nothing new arrives once HTTP has stopped; what is queued must be durable.
        rx.close();
        while let Ok(e) = rx.try_recv() {
            buf.push(e);
            if buf.len() >= n {
                let batch = std::mem::replace(&mut buf, Vec::with_capacity(n));
                self.write_or_spool(batch).await;
            }
        }
        if !buf.is_empty() {
            self.write_or_spool(buf).await;
        }
        self.spool_overflow().await;
        METRICS.channel_depth.set(0);
        tracing::info!("event writer drained");
    }

    fn is_up(&self) -> bool {
        self.down_until.is_none_or(|t| Instant::now() >= t)
    }

    async fn spool_overflow(&mut self) {
        let events = self.overflow.take();
        if !events.is_empty() {
            self.spool_events(events, "channel_full").await;
        }
    }

    async fn write_or_spool(&mut self, batch: Vec<Event>) {
        if !self.is_up() {
            self.spool_events(batch, "database_down").await;
            return;
        }
        match self.write_checked(&batch).await {
            Ok(()) => {}
            Err(e) => {
                self.failed(&e);
                self.spool_events(batch, "database_error").await;
            }
        }
    }

    /// Writes a batch; a batch PostgreSQL refuses for its contents (not for an outage) is
    /// written row by row and the refused rows are dropped with an error, so that one bad row
    /// can never stop the pipeline by failing every replay. Only outages are returned.
    async fn write_checked(&mut self, batch: &[Event]) -> Result<(), WriterError> {
        let e = match self.write(batch).await {
            Ok(_) => return Ok(()),
            Err(e) if is_outage(&e) => return Err(e),
            Err(e) => e,
        };
        tracing::error!(error = %e, events = batch.len(), "PostgreSQL refused a batch; writing it row by row");
        for event in batch {
            match self.write(std::slice::from_ref(event)).await {
                Ok(_) => {}
                Err(e) if is_outage(&e) => return Err(e),
                Err(e) => {
                    METRICS.rejected.inc();
                    tracing::error!(error = %e, ?event, "PostgreSQL refused an event; dropped");
                }
            }
        }
        Ok(())
    }

    fn failed(&mut self, e: &WriterError) {
        if self.down_until.is_none() {
            tracing::warn!(error = %e, "PostgreSQL does not take events; spooling them to disk until it does");
        }
        METRICS.flush_failures.inc();
        self.client = None;
        self.down_until = Some(Instant::now() + self.config.retry_after);
    }

    /// Writes one batch; returns the rows inserted.
    async fn write(&mut self, batch: &[Event]) -> Result<u64, WriterError> {
        let started = Instant::now();
        let limit = self.config.flush_timeout;
        let inserted = tokio::time::timeout(limit, self.copy_batch(batch))
            .await
            .map_err(|_| WriterError::Timeout(limit))??;
        if self.down_until.take().is_some() {
            tracing::info!("PostgreSQL takes events again");
        }
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

    async fn copy_batch(&mut self, batch: &[Event]) -> Result<u64, WriterError> {
        if self.client.is_none() {
            let client = deadpool_postgres::Object::take(self.pool.get().await?);
            client.batch_execute(STAGING).await?;
            self.client = Some(client);
        }
        let client = self.client.as_mut().expect("connected just above");
        let tx = client.transaction().await?;
        let sink = tx.copy_in(COPY).await?;
        let writer = BinaryCopyInWriter::new(sink, TYPES);
        tokio::pin!(writer);
        for e in batch {
            let class = e.class.map(|c| c.as_str());
            let row: [&(dyn ToSql + Sync); 13] = [
                &e.id,
                &e.occurred_at,
                &e.copy_id,
                &e.kind.as_str(),
                &e.link_idx,
                &class,
                &e.reason,
                &e.ip,
                &e.user_agent,
                &e.method,
                &e.client,
                &e.device,
                &e.os,
            ];
            writer.as_mut().write(&row).await?;
        }
        writer.finish().await?;
        let inserted = tx.execute(INSERT, &[]).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn spool_events(&mut self, events: Vec<Event>, cause: &'static str) {
        let count = events.len() as u64;
        let spool = self.spool.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut spool = spool.blocking_lock();
            let r = spool.append(&events);
            (r, spool.bytes())
        })
        .await;
        match result {
            Ok((Ok(_), bytes)) => {
                METRICS.spooled.with_label_values(&[cause]).inc_by(count);
                METRICS.spool_bytes.set(bytes as i64);
            }
            // Nowhere left to keep them: say so loudly; this is the one way events are lost.
            Ok((Err(e), _)) => {
                tracing::error!(error = %e, events = count, "cannot spool events: they are lost")
            }
            Err(e) => {
                tracing::error!(error = %e, events = count, "spool task failed: events lost")
            }
        }
    }

    /// Replays the spool into PostgreSQL, oldest segment first; stops at the first failure.
    async fn replay(&mut self) {
        let segments = {
            let spool = self.spool.clone();
            match tokio::task::spawn_blocking(move || spool.blocking_lock().seal()).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot list the event spool");
                    return;
                }
                Err(_) => return,
            }
        };
        for path in segments {
            let p = path.clone();
            let read = match tokio::task::spawn_blocking(move || spool::read_segment(&p)).await {
                Ok(Ok(Some(r))) => r,
                // Another process sharing the data directory is still writing it.
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read a spool segment");
                    return;
                }
                Err(_) => return,
            };
            METRICS
                .spool_corrupt
                .inc_by(read.corrupt as u64 + u64::from(read.torn));
            for chunk in read.events.chunks(self.config.batch_size.max(1)) {
                if let Err(e) = self.write_checked(chunk).await {
                    self.failed(&e);
                    return;
                }
                METRICS.replayed.inc_by(chunk.len() as u64);
            }
            let spool = self.spool.clone();
            let removed = tokio::task::spawn_blocking(move || {
                let mut spool = spool.blocking_lock();
                let r = spool.remove(&path);
                (r, spool.bytes())
            })
            .await;
            match removed {
                Ok((Ok(()), bytes)) => METRICS.spool_bytes.set(bytes as i64),
                Ok((Err(e), _)) => {
                    // Replaying it again later is harmless (idempotent), so go on.
                    tracing::error!(error = %e, "cannot remove a replayed spool segment");
                    return;
                }
                Err(_) => return,
            }
            tracing::info!(
                events = read.events.len(),
                "spooled events replayed into PostgreSQL"
            );
        }
    }
}
