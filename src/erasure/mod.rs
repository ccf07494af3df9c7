//! Erasure: a message, or everything of one recipient, removed from every table in one
//! transaction, with the reports corrected.
//!
//! Owns the order of the steps, not the tables: each table's owner deletes its own rows (the
//! queue its messages and copies, events its events, notify its outbox, follow-ups the
//! unsubscribes, deliverability the suppression list) and insights takes the copies out of its rollups. It must never leave a
//! rollup counting a copy that is gone, nor let the aggregation job fold an event of a copy
//! being erased (insights holds its lock for the transaction).

use thiserror::Error;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::insights::{aggregate, InsightsError};

#[derive(Debug, Error)]
pub enum EraseError {
    #[error(transparent)]
    Insights(#[from] InsightsError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// Deletes a message with its copies and events and takes its copies out of the rollups.
pub async fn erase_message(tx: &Transaction<'_>, message_id: Uuid) -> Result<(), EraseError> {
    let copies = crate::queue::copies_of_message(tx, message_id).await?;
    aggregate::mark_for_forgetting(tx, &copies, Some(message_id)).await?;
    tx.execute(crate::events::sql::DELETE_FOR_COPIES, &[&copies])
        .await?;
    crate::queue::delete_message(tx, message_id).await?;
    aggregate::forget_marked(tx).await?;
    Ok(())
}

/// Erases one recipient: every copy sent to `recipient` (compared case-insensitively), its
/// events, notifications and unsubscribes, and its share of every rollup. Returns how many
/// copies were erased.
pub async fn erase_recipient(tx: &Transaction<'_>, recipient: &str) -> Result<u64, EraseError> {
    let copies = crate::queue::copies_sent_to(tx, recipient).await?;
    aggregate::mark_for_forgetting(tx, &copies, None).await?;
    tx.execute(crate::events::sql::DELETE_FOR_COPIES, &[&copies])
        .await?;
    crate::notify::outbox::delete_for_copies(tx, &copies).await?;
    crate::queue::delete_copies(tx, &copies).await?;
    // Follow-ups went with their copies; the unsubscribe record holds the address too.
    crate::followup::rules::forget_unsubscribes(tx, recipient).await?;
    // The suppression list forgets the address but keeps, for complaints and unsubscribes, its
    // digest: erasing someone must never make mailtally mail them again.
    crate::deliverability::suppression::forget_address(tx, recipient).await?;
    aggregate::forget_marked(tx).await?;
    Ok(copies.len() as u64)
}
