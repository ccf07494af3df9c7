//! Reply detection: each user's mailbox, watched over IMAP (IDLE where the server has it,
//! polling otherwise, with UIDVALIDITY/UID checkpoints). A message whose `In-Reply-To` or
//! `References` names the Message-ID of a tracked copy becomes a `reply` event of that copy;
//! auto-replies are recognised and not counted; bounces and complaints are read whole and
//! handed to [`crate::deliverability`].
//!
//! Owns the `mailboxes` table and the watchers. It must never store or log an IMAP password in
//! clear, never count one reply twice (event ids derive from the reply), and never attribute a
//! reply to a copy of another user.

pub mod detect;
pub mod imap;
pub mod mailbox;
pub mod seal;
pub mod watch;

use thiserror::Error;

pub use seal::Sealer;
pub use watch::serve_loop;

#[derive(Debug, Error)]
pub enum ReplyError {
    /// Shown by its class only; `detail` (what the server or the system said) is for the log.
    #[error("IMAP: {failure}")]
    Imap {
        failure: imap::ImapFailure,
        detail: String,
    },
    #[error(
        "the stored mailbox password cannot be decrypted with MAILBOX_KEY (was the key changed?)"
    )]
    Sealed,
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Registers the reply metrics, every verdict at zero.
pub fn register_metrics() {
    for verdict in ["reply", "auto_reply", "bounce", "unrelated", "unmatched"] {
        watch::REPLIES.with_label_values(&[verdict]);
    }
}
