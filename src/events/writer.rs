//! The batch writer: one task that takes events from the channel and hands them, a batch every
//! flush interval or every N events, whichever comes first, to one of two connections
//! ([`super::lane`]), so that one batch is written while the other commits.
//!
//! A batch PostgreSQL does not take (an error, a timeout) goes to the spool (a replayed one
//! stays in its segment) and the writer retries the database once a second; while it is away,
//! batches go straight to the spool. Only rows PostgreSQL refuses for their contents are dropped.
//! Once a write succeeds again the spool is replayed, one segment at a time, its batches on
//! both connections as fresh ones are. Most spooled events were never written (the channel was
//! full), so a replayed batch is first COPYed straight in; one that meets an event already stored
//! (a timeout after the commit, a crash during replay) is written again with
//! `ON CONFLICT DO NOTHING` on the key chosen at the edge, so that it lands once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::lane::{Lane, MessageOfCopy, Mode};
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
            batch_size: 5000,
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
    let mut writer = Writer {
        pool,
        messages: Arc::default(),
        idle: Vec::with_capacity(LANES),
        running: JoinSet::new(),
        spool: Arc::new(Mutex::new(spool)),
        overflow,
        config,
        down_until: None,
        replay_failed: false,
        depth_of: sink.clone(),
    };
    for _ in 0..LANES {
        let lane = writer.new_lane();
        writer.idle.push(lane);
    }
    let task = tokio::spawn(writer.run(rx, stop.clone()));
    Ok((sink, WriterHandle { stop, task }))
}

struct Writer {
    pool: Pool,
    /// Shared by the lanes.
    messages: Arc<std::sync::Mutex<MessageOfCopy>>,
    /// Connections not writing at the moment.
    idle: Vec<Lane>,
    /// Batches being written, each on its lane; at most `LANES`.
    running: JoinSet<Written>,
    spool: Arc<Mutex<Spool>>,
    overflow: Arc<Overflow>,
    config: WriterConfig,
    /// Set after a failure: until then batches go straight to the spool.
    down_until: Option<Instant>,
    /// A batch of the segment being replayed was not written: the segment stays.
    replay_failed: bool,
    depth_of: EventSink,
}

/// A lane back from writing a batch, with the batch (spooled when the write failed) and
/// whether it came from the spool.
type Written = (Lane, Vec<Event>, Origin, Result<(), WriterError>);

/// Where a batch being written came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Channel,
    Spool,
}

/// Connections writing at once: one batch's COPY overlaps the previous one's commit, and
/// PostgreSQL maintains the indexes of two batches on two cores.
const LANES: usize = 2;

/// Whether an error means "PostgreSQL is away" (retry later) rather than "this batch is bad".
/// Only a data error (class 22) or a violated constraint (23) is the batch's own fault; every
/// other error (a read-only standby after a failover, a lock timeout, a migration under way)
/// passes, and dropping the batch's rows for it would lose events.
fn is_outage(e: &WriterError) -> bool {
    match e {
        WriterError::Db(db) => match db.code() {
            Some(code) => !["22", "23"]
                .iter()
                .any(|class| code.code().starts_with(class)),
            None => true,
        },
        _ => true,
    }
}

/// Writes a batch; a batch PostgreSQL refuses for its contents (not for an outage) is written
/// row by row and the refused rows are dropped with an error, so that one bad row can never
/// stop the pipeline by failing every replay. Only outages are returned.
async fn write_checked(lane: &mut Lane, batch: &[Event], mode: Mode) -> Result<(), WriterError> {
    let e = match lane.write(batch, mode).await {
        Ok(_) => return Ok(()),
        Err(e) if is_outage(&e) => return Err(e),
        Err(e) => e,
    };
    tracing::error!(error = %e, events = batch.len(), "PostgreSQL refused a batch; writing it row by row");
    for event in batch {
        match lane.write(std::slice::from_ref(event), Mode::Again).await {
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

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
        let n = self.config.batch_size.max(1);
        let mut buf: Vec<Event> = Vec::with_capacity(n);
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events left by an earlier run go in first.
        self.replay(usize::MAX, &mut rx, &stop).await;
        loop {
            let room = n - buf.len();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.overflow.notify.notified() => {}
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    self.finished(done).await;
                    continue;
                }
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
            // One segment a round, so that fresh batches are written between segments.
            if self.is_up() && !self.spool.lock().await.is_empty() {
                self.replay(1, &mut rx, &stop).await;
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
        self.settle().await;
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

    /// Hands a batch to a free lane (waiting for one when both are busy), or spools it while
    /// PostgreSQL is away.
    async fn write_or_spool(&mut self, batch: Vec<Event>) {
        self.hand_over(batch, Origin::Channel).await;
    }

    async fn hand_over(&mut self, batch: Vec<Event>, origin: Origin) {
        while self.idle.is_empty() {
            match self.running.join_next().await {
                Some(done) => self.finished(done).await,
                None => break,
            }
        }
        let cause = match (self.is_up(), self.idle.pop()) {
            (true, Some(lane)) => Ok(lane),
            (false, lane) => {
                self.idle.extend(lane);
                Err("database_down")
            }
            (true, None) => Err("database_error"),
        };
        let mut lane = match (cause, origin) {
            (Ok(lane), _) => lane,
            (Err(cause), Origin::Channel) => return self.spool_events(batch, cause).await,
            // Still in its segment, which stays for the next replay.
            (Err(_), Origin::Spool) => {
                self.replay_failed = true;
                return;
            }
        };
        self.running.spawn(async move {
            let result = write_checked(&mut lane, &batch, Mode::Fresh).await;
            (lane, batch, origin, result)
        });
    }

    /// Takes back a lane whose batch is done; spools the batch when it failed.
    async fn finished(&mut self, done: Result<Written, tokio::task::JoinError>) {
        match done {
            Ok((lane, batch, origin, Ok(()))) => {
                if self.down_until.take().is_some() {
                    tracing::info!("PostgreSQL takes events again");
                }
                if origin == Origin::Spool {
                    METRICS.replayed.inc_by(batch.len() as u64);
                }
                self.idle.push(lane);
            }
            Ok((mut lane, batch, origin, Err(e))) => {
                self.failed(&e);
                lane.disconnect();
                self.idle.push(lane);
                match origin {
                    Origin::Channel => self.spool_events(batch, "database_error").await,
                    // Still in its segment, which is kept for the next replay: spooling it
                    // again would grow the spool by a batch at every retry of an outage.
                    Origin::Spool => self.replay_failed = true,
                }
            }
            // A panic is a bug; its batch went with it. The lane is replaced so that the writer
            // keeps its width.
            Err(e) => {
                // Perhaps a batch of the segment being replayed: keep the segment.
                self.replay_failed = true;
                tracing::error!(error = %e, "an event write ended abnormally; its batch is lost");
                self.idle.push(self.new_lane());
            }
        }
    }

    /// Waits for every batch being written.
    async fn settle(&mut self) {
        while let Some(done) = self.running.join_next().await {
            self.finished(done).await;
        }
    }

    fn new_lane(&self) -> Lane {
        Lane::new(
            self.pool.clone(),
            self.messages.clone(),
            self.config.flush_timeout,
        )
    }

    fn failed(&mut self, e: &WriterError) {
        if self.down_until.is_none() {
            tracing::warn!(error = %e, "PostgreSQL does not take events; spooling them to disk until it does");
        }
        METRICS.flush_failures.inc();
        self.down_until = Some(Instant::now() + self.config.retry_after);
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

    /// Replays at most `segments` segments of the spool into PostgreSQL, oldest first, each
    /// segment's batches on both lanes; stops at the first failure. A segment is removed once
    /// every one of its batches was written; else it stays, whole, for the next replay. What
    /// overflows the channel meanwhile is spooled after every batch, so that a long replay under
    /// load never holds the overflow in memory. Fresh events waiting in the channel go first, before
    /// each spooled batch: a replay must not leave the channel to fill and spool what arrives.
    /// A shutdown stops it between batches; the segment stays for the next start.
    async fn replay(
        &mut self,
        segments: usize,
        fresh: &mut mpsc::Receiver<Event>,
        stop: &CancellationToken,
    ) {
        let sealed = {
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
        for path in sealed.into_iter().take(segments) {
            let p = path.clone();
            let mut reader =
                match tokio::task::spawn_blocking(move || spool::SegmentReader::open(&p)).await {
                    Ok(Ok(Some(r))) => r,
                    // Another process sharing the data directory is writing or replaying it.
                    Ok(Ok(None)) => continue,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot read a spool segment");
                        return;
                    }
                    Err(_) => return,
                };
            let mut n_events = 0;
            self.replay_failed = false;
            loop {
                if !self.is_up() || stop.is_cancelled() {
                    // Left where it is: what of it was stored is skipped when it is replayed.
                    self.settle().await;
                    return;
                }
                let n = self.config.batch_size.max(1);
                // Only a whole batch: fewer would be written as a transaction of a few events.
                let mut waiting = Vec::new();
                let whole_batch =
                    self.depth_of.depth() >= n.min(self.config.channel_capacity.max(1));
                while whole_batch && waiting.len() < n {
                    match fresh.try_recv() {
                        Ok(e) => waiting.push(e),
                        Err(_) => break,
                    }
                }
                if !waiting.is_empty() {
                    self.hand_over(waiting, Origin::Channel).await;
                    self.spool_overflow().await;
                    continue;
                }
                let read = tokio::task::spawn_blocking(move || {
                    let batch = reader.next_batch(n);
                    (reader, batch)
                })
                .await;
                let batch = match read {
                    Ok((r, Ok(batch))) => {
                        reader = r;
                        batch
                    }
                    Ok((_, Err(e))) => {
                        tracing::error!(error = %e, "cannot read a spool segment");
                        self.settle().await;
                        return;
                    }
                    Err(_) => {
                        self.settle().await;
                        return;
                    }
                };
                if batch.is_empty() {
                    break;
                }
                n_events += batch.len();
                self.hand_over(batch, Origin::Spool).await;
                self.spool_overflow().await;
            }
            METRICS.spool_corrupt.inc_by(reader.skipped() as u64);
            self.settle().await;
            if self.replay_failed {
                // Replayed again later: what of it was stored is skipped then.
                return;
            }
            let spool = self.spool.clone();
            // The segment stays locked until its name is gone.
            let removed = tokio::task::spawn_blocking(move || {
                let mut spool = spool.blocking_lock();
                let r = spool.remove(reader);
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
            tracing::info!(events = n_events, "spooled events replayed into PostgreSQL");
        }
    }
}
