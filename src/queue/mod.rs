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
use tokio_postgres::types::ToSql;
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
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let template = tx
        .prepare_cached(
            "INSERT INTO templates (key, first_subject) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .await?;
    let message = tx
        .prepare_cached(
            "INSERT INTO messages (id, sender_id, team_id, visibility, template_key, subject,
                 header_message_id, envelope_from, deal, lead, project, track, size_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await?;
    // unnest: one statement for any number of recipients.
    let copies = tx
        .prepare_cached(
            "INSERT INTO copies (id, message_id, recipient, body)
             SELECT c.id, $1, c.recipient, c.body
             FROM unnest($2::uuid[], $3::text[], $4::bytea[]) AS c (id, recipient, body)",
        )
        .await?;
    let events = tx
        .prepare_cached(
            "INSERT INTO events (id, occurred_at, message_id, copy_id, kind)
             SELECT e.id, now(), $1, e.copy_id, 'accepted'
             FROM unnest($2::uuid[], $3::uuid[]) AS e (id, copy_id)",
        )
        .await?;
    let copy_ids: Vec<Uuid> = m.copies.iter().map(|c| c.id).collect();
    let recipients: Vec<&str> = m.copies.iter().map(|c| c.recipient.as_str()).collect();
    let bodies: Vec<&[u8]> = m.copies.iter().map(|c| c.body.as_slice()).collect();
    let event_ids: Vec<Uuid> = m.copies.iter().map(|_| Uuid::now_v7()).collect();
    let f = &m.facts;
    // Sent together: tokio-postgres pipelines them on the connection, in this order.
    let template_params: [&(dyn ToSql + Sync); 2] = [&f.template_key, &f.subject];
    let message_params: [&(dyn ToSql + Sync); 13] = [
        &m.id,
        &m.sender_id,
        &m.team_id,
        &m.visibility,
        &f.template_key,
        &f.subject,
        &f.message_id,
        &m.envelope_from,
        &f.deal,
        &f.lead,
        &f.project,
        &m.track,
        &size,
    ];
    let copy_params: [&(dyn ToSql + Sync); 4] = [&m.id, &copy_ids, &recipients, &bodies];
    let event_params: [&(dyn ToSql + Sync); 3] = [&m.id, &event_ids, &copy_ids];
    futures_util::try_join!(
        tx.execute(&template, &template_params),
        tx.execute(&message, &message_params),
        tx.execute(&copies, &copy_params),
        tx.execute(&events, &event_params),
    )?;
    tx.commit().await?;
    QUEUED.notify_waiters();
    Ok(())
}
