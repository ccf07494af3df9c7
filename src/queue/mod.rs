//! The durable queue in PostgreSQL: enqueue a message and its copies in one transaction, claim
//! due copies under a lease, record each attempt's outcome, and the retry schedule.
//!
//! Owns the `messages`/`copies` rows and their delivery state. It must never record an outcome
//! for a copy whose lease it no longer holds, and never lose a committed copy.

pub mod claim;
pub mod retry;

use std::sync::LazyLock;

use thiserror::Error;
use tokio::sync::Notify;
use uuid::Uuid;

pub use claim::{claim, record, release_own_leases, Claimed, Outcome};

use crate::relay::MessageFacts;

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("message of {0} bytes is too large to store")]
    TooLarge(usize),
}

/// A message accepted by the relay, ready to be stored.
#[derive(Debug)]
pub struct NewMessage {
    pub id: Uuid,
    pub sender_id: i64,
    pub team_id: Option<i64>,
    pub visibility: String,
    pub track: String,
    pub envelope_from: String,
    pub size_bytes: usize,
    pub facts: MessageFacts,
    /// Tracked links: (index, destination).
    pub links: Vec<(i32, String)>,
    /// Why the message went out unchanged, when it did.
    pub untouched: Option<String>,
    pub copies: Vec<NewCopy>,
}

#[derive(Debug)]
pub struct NewCopy {
    pub id: Uuid,
    pub recipient: String,
    pub body: Vec<u8>,
}

/// Wakes this process's delivery workers when mail is queued (other nodes poll).
pub static QUEUED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Stores the message, its copies and an `accepted` event per copy in one transaction.
pub async fn enqueue(pool: &deadpool_postgres::Pool, m: &NewMessage) -> Result<(), QueueError> {
    let size = i32::try_from(m.size_bytes).map_err(|_| QueueError::TooLarge(m.size_bytes))?;
    let client = pool.get().await?;
    // One statement, so one round trip and one commit: the CTEs insert the template, the
    // message, its copies (unnest: any number of recipients) and their `accepted` events; the
    // foreign keys are checked at the end of the statement.
    let statement = client
        .prepare_cached(
            "WITH template AS (
                 INSERT INTO templates (key, first_subject) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING
             ), message AS (
                 INSERT INTO messages (id, sender_id, team_id, visibility, template_key, subject,
                     header_message_id, envelope_from, deal, lead, project, track, size_bytes,
                     untouched)
                 VALUES ($3, $4, $5, $6, $1, $2, $7, $8, $9, $10, $11, $12, $13, $20)
             ), link AS (
                 INSERT INTO links (message_id, idx, url)
                 SELECT $3, l.idx, l.url FROM unnest($18::int4[], $19::text[]) AS l (idx, url)
             ), copy AS (
                 INSERT INTO copies (id, message_id, recipient, body)
                 SELECT c.id, $3, c.recipient, c.body
                 FROM unnest($14::uuid[], $15::text[], $16::bytea[]) AS c (id, recipient, body)
             )
             INSERT INTO events (id, occurred_at, message_id, copy_id, kind)
             SELECT e.id, now(), $3, e.copy_id, 'accepted'
             FROM unnest($17::uuid[], $14::uuid[]) AS e (id, copy_id)",
        )
        .await?;
    let copy_ids: Vec<Uuid> = m.copies.iter().map(|c| c.id).collect();
    let recipients: Vec<&str> = m.copies.iter().map(|c| c.recipient.as_str()).collect();
    let bodies: Vec<&[u8]> = m.copies.iter().map(|c| c.body.as_slice()).collect();
    let event_ids: Vec<Uuid> = m.copies.iter().map(|_| Uuid::now_v7()).collect();
    let link_indexes: Vec<i32> = m.links.iter().map(|l| l.0).collect();
    let link_urls: Vec<&str> = m.links.iter().map(|l| l.1.as_str()).collect();
    let f = &m.facts;
    client
        .execute(
            &statement,
            &[
                &f.template_key,
                &f.subject,
                &m.id,
                &m.sender_id,
                &m.team_id,
                &m.visibility,
                &f.message_id,
                &m.envelope_from,
                &f.deal,
                &f.lead,
                &f.project,
                &m.track,
                &size,
                &copy_ids,
                &recipients,
                &bodies,
                &event_ids,
                &link_indexes,
                &link_urls,
                &m.untouched,
            ],
        )
        .await?;
    QUEUED.notify_waiters();
    Ok(())
}
