//! Group commit: messages that sessions hand over within `QUEUE_COMMIT_WINDOW` of each other go
//! into one transaction with one commit (one WAL flush), and each session hears the outcome of
//! that commit alone, so that 250 still means "committed and on disk".
//!
//! A group is first written optimistically, its inserts pipelined on one connection. When one of
//! them fails the whole transaction is rolled back and the group is written again message by
//! message, each inside a savepoint: the failing message is answered with its own error and
//! stored nowhere, the others commit. `QUEUE_COMMITTERS` groups are in flight at once, each on
//! its own connection, so that PostgreSQL works on one group while the next one fills.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{insert, NewMessage, QueueError, QUEUED};

/// How the group commit is shaped (the `[queue]` settings).
#[derive(Debug, Clone, Copy)]
pub struct CommitShape {
    /// How long the first message of a group waits for others.
    pub window: Duration,
    /// The most messages in one group.
    pub max_messages: usize,
    /// Groups committed at once.
    pub committers: usize,
}

/// A message waiting for its group's commit, and who to tell.
struct Pending {
    message: NewMessage,
    done: oneshot::Sender<Result<(), QueueError>>,
}

/// The handle sessions enqueue through; cheap to clone. The committers stop once every handle
/// is gone and the last group is committed.
#[derive(Clone)]
pub struct GroupCommit {
    to_commit: mpsc::Sender<Pending>,
}

/// The group commit's own failures, as a session sees them.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the group commit has stopped")]
    Stopped,
}

impl GroupCommit {
    /// Starts `shape.committers` committers on `pool`.
    pub fn start(pool: deadpool_postgres::Pool, shape: CommitShape) -> Self {
        let (to_commit, waiting) = mpsc::channel(shape.max_messages.max(1) * 4);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..shape.committers.max(1) {
            tokio::spawn(committer(pool.clone(), waiting.clone(), shape));
        }
        GroupCommit { to_commit }
    }

    /// Stores the message, its copies and their `accepted` events; returns once the group it
    /// went into is committed, with that message's own outcome.
    pub async fn enqueue(&self, message: NewMessage) -> Result<(), QueueError> {
        let started = std::time::Instant::now();
        let (done, outcome) = oneshot::channel();
        self.to_commit
            .send(Pending { message, done })
            .await
            .map_err(|_| QueueError::Commit(CommitError::Stopped))?;
        let outcome = outcome
            .await
            .map_err(|_| QueueError::Commit(CommitError::Stopped))?;
        METRICS
            .wait_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    }
}

/// Takes the next group off the shared queue and commits it, until the queue is closed.
async fn committer(
    pool: deadpool_postgres::Pool,
    waiting: Arc<Mutex<mpsc::Receiver<Pending>>>,
    shape: CommitShape,
) {
    loop {
        let mut group = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut group = vec![first];
            let deadline = tokio::time::Instant::now() + shape.window;
            while group.len() < shape.max_messages {
                // Those already waiting join at once; then wait out the window for more.
                match waiting.try_recv() {
                    Ok(next) => {
                        group.push(next);
                        continue;
                    }
                    Err(_) if shape.window.is_zero() => break,
                    Err(_) => {}
                }
                match tokio::time::timeout_at(deadline, waiting.recv()).await {
                    Ok(Some(next)) => group.push(next),
                    _ => break,
                }
            }
            group
        };
        // Two groups that both insert the same new template keys or link lists wait on each
        // other's rows; taking them in one order keeps those waits from forming cycles (one
        // PostgreSQL breaks anyway fails an insert, and the group is written one by one).
        group.sort_by(|a, b| {
            (&a.message.facts.template_key, &a.message.links)
                .cmp(&(&b.message.facts.template_key, &b.message.links))
        });
        METRICS.groups_total.inc();
        METRICS.grouped_messages.observe(group.len() as f64);
        let outcomes = commit_group(&pool, &group).await;
        if outcomes.iter().any(Result::is_ok) {
            QUEUED.notify_waiters();
        }
        for (pending, outcome) in group.into_iter().zip(outcomes) {
            // A session that went away meanwhile no longer listens; its message stays committed.
            let _ = pending.done.send(outcome);
        }
    }
}

/// The outcome of each message of `group`, in order.
async fn commit_group(
    pool: &deadpool_postgres::Pool,
    group: &[Pending],
) -> Vec<Result<(), QueueError>> {
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return every(group, QueueError::Pool(e)),
    };
    match all_at_once(&mut client, group).await {
        Ok(true) => return group.iter().map(|_| Ok(())).collect(),
        Ok(false) => {}
        Err(e) => return every(group, e),
    }
    METRICS.one_by_one_total.inc();
    one_by_one(&mut client, group).await
}

/// Writes the whole group in one transaction, its inserts pipelined. `Ok(false)`: one insert
/// failed and nothing was committed.
async fn all_at_once(
    client: &mut deadpool_postgres::Client,
    group: &[Pending],
) -> Result<bool, QueueError> {
    let tx = client.transaction().await?;
    let inserted = join_all(group.iter().map(|p| insert(&tx, &p.message))).await;
    if inserted.iter().any(Result::is_err) {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Writes the group one message at a time, each in a savepoint, and commits those that went
/// in; a failed commit fails them all.
async fn one_by_one(
    client: &mut deadpool_postgres::Client,
    group: &[Pending],
) -> Vec<Result<(), QueueError>> {
    let mut tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return every(group, QueueError::Db(e)),
    };
    let mut outcomes = Vec::with_capacity(group.len());
    for p in group {
        let outcome = match tx.savepoint("message").await {
            Ok(savepoint) => match insert(&savepoint, &p.message).await {
                Ok(()) => savepoint.commit().await.map_err(QueueError::Db),
                Err(e) => match savepoint.rollback().await {
                    Ok(()) => Err(e),
                    // The transaction is unusable now: nothing of the group can commit.
                    Err(gone) => return every(group, QueueError::Db(gone)),
                },
            },
            Err(e) => Err(QueueError::Db(e)),
        };
        outcomes.push(outcome);
    }
    if let Err(e) = tx.commit().await {
        return every(group, QueueError::Db(e));
    }
    outcomes
}

/// The same failure for every message of the group.
fn every(group: &[Pending], e: QueueError) -> Vec<Result<(), QueueError>> {
    let e = Arc::new(e);
    group
        .iter()
        .map(|_| Err(QueueError::Group(e.clone())))
        .collect()
}

/// The group commit's metrics.
pub struct CommitMetrics {
    pub groups_total: prometheus::IntCounter,
    pub grouped_messages: prometheus::Histogram,
    pub one_by_one_total: prometheus::IntCounter,
    /// From the handover to the outcome: what a session waits before its 250.
    pub wait_seconds: prometheus::Histogram,
}

pub static METRICS: std::sync::LazyLock<CommitMetrics> =
    std::sync::LazyLock::new(|| CommitMetrics {
        groups_total: crate::metrics::counter(
            "queue_commit_groups_total",
            "group commits of enqueued messages",
        ),
        grouped_messages: crate::metrics::histogram(
            "queue_commit_group_messages",
            "messages in one group commit",
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
        ),
        one_by_one_total: crate::metrics::counter(
            "queue_commit_retried_groups_total",
            "groups written again message by message after one of their inserts failed",
        ),
        wait_seconds: crate::metrics::histogram(
            "queue_commit_wait_seconds",
            "seconds from handing a message to the group commit to its outcome",
            crate::metrics::LATENCY_BUCKETS,
        ),
    });
