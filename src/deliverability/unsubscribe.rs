//! An unsubscribe of one copy's recipient (the List-Unsubscribe one-click POST, or the page's
//! button): an `unsubscribe` event of the copy, the address on the sender's suppression list,
//! and the sender's pending follow-ups to it cancelled, in one transaction.

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::suppression::{self, Reason, Scope};

#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// What an unsubscribe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The address is now (or was already) suppressed for the copy's sender.
    Done { recipient: String },
    /// No such copy (erased, or never sent): nothing to do.
    UnknownCopy,
}

/// How an unsubscribe came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// RFC 8058: a mail client's POST of `List-Unsubscribe=One-Click`.
    OneClick,
    /// The button of the page a GET of the URL shows.
    Page,
}

impl Way {
    pub const ALL: [Way; 2] = [Way::OneClick, Way::Page];

    /// The event's detail and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Way::OneClick => "one-click",
            Way::Page => "page",
        }
    }
}

/// Unsubscribes the recipient of `copy`.
pub async fn unsubscribe(
    pool: &Pool,
    copy: Uuid,
    way: Way,
) -> Result<Unsubscribed, UnsubscribeError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT c.recipient, m.sender_id, m.team_id FROM copies c
             JOIN messages m ON m.id = c.message_id WHERE c.id = $1",
            &[&copy],
        )
        .await?
    else {
        return Ok(Unsubscribed::UnknownCopy);
    };
    let (recipient, sender_id, team_id): (String, i64, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    tx.execute(
        crate::events::sql::INSERT_UNSUBSCRIBE,
        &[&copy, &chrono::Utc::now(), &Uuid::now_v7(), &way.as_str()],
    )
    .await?;
    let added = suppression::add(
        &*tx,
        Scope::for_sender(sender_id, team_id),
        &recipient,
        Reason::Unsubscribe,
        Some(copy),
        Some(way.as_str()),
        None,
    )
    .await?;
    crate::followup::cancel_for_recipient(&tx, sender_id, &recipient, "unsubscribed").await?;
    tx.commit().await?;
    super::METRICS
        .unsubscribes
        .with_label_values(&[way.as_str()])
        .inc();
    if added {
        super::METRICS
            .suppressed
            .with_label_values(&[Reason::Unsubscribe.as_str()])
            .inc();
    }
    Ok(Unsubscribed::Done { recipient })
}
