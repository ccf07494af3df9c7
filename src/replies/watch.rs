//! The watchers inside `serve`: each mailbox is held by one node at a time (a lease renewed
//! while it reads), read from its checkpoint, then watched with IDLE or polled. A failed
//! connection frees the mailbox until its backoff is over (doubling from 2 seconds up to 5
//! minutes), whichever node takes it then; after `MAILBOX_MAX_FAILURES` in a row, or a failure
//! that retrying cannot mend, it is given up until it is set again.

use std::sync::LazyLock;
use std::time::Duration;

use mail_parser::MessageParser;
use prometheus::IntCounterVec;
use uuid::Uuid;

use super::detect::{self, Verdict};
use super::imap::{Connection, Found};
use super::mailbox::{self, AfterFailure, Backoff, Mailbox};
use super::seal::Sealer;
use super::ReplyError;
use crate::base::Base;

pub static REPLIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "mailbox_messages_total",
        "messages read in watched mailboxes, by verdict (reply, auto_reply, bounce, unrelated, unmatched)",
        &["verdict"],
    )
});

/// How often a node looks for mailboxes nobody watches.
const CLAIM_EVERY: Duration = Duration::from_secs(2);
/// The wait after a first failed connection; it doubles with each failure, up to the cap.
const FIRST_RETRY: Duration = Duration::from_secs(2);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

struct Watch {
    ctx: Base,
    sealer: Sealer,
    owner: String,
    lease_seconds: f64,
    /// Longest wait between two reads (IDLE's limit, or the poll interval).
    wait: Duration,
    policy: crate::netguard::AddressPolicy,
    backoff: Backoff,
}

/// Runs until shutdown; does nothing without `MAILBOX_KEY`. On shutdown every watcher logs
/// out and gives its mailbox up, so that another node (or this one restarted) takes it at once.
pub async fn serve_loop(ctx: Base) {
    let Some(key) = ctx.settings.replies.mailbox_key.clone() else {
        return;
    };
    let poll = ctx
        .settings
        .replies
        .poll_every
        .max(Duration::from_millis(200));
    let lease = (poll.as_secs_f64() * 3.0).max(90.0);
    let node = crate::deliver::node_name(&ctx);
    // Leases this node held before a restart (a kill) are its own to take back: no other
    // process can have this node's name.
    if let Ok(client) = ctx.pool.get().await {
        if let Err(e) = mailbox::release_node(&client, &node).await {
            tracing::warn!(error = %e, "cannot free this node's earlier mailbox leases");
        }
    }
    let mut watchers = tokio::task::JoinSet::new();
    loop {
        let owner = format!("{node}#{}", Uuid::now_v7());
        let claimed = async {
            let client = ctx.pool.get().await?;
            Ok::<_, ReplyError>(mailbox::claim(&client, &owner, lease).await?)
        }
        .await;
        match claimed {
            Ok(boxes) => {
                for m in boxes {
                    let w = Watch {
                        ctx: ctx.clone(),
                        sealer: Sealer::new(&key),
                        owner: owner.clone(),
                        lease_seconds: lease,
                        wait: poll.min(Duration::from_secs_f64(lease / 3.0)),
                        policy: crate::netguard::AddressPolicy::from_settings(&ctx.settings),
                        backoff: Backoff {
                            first: FIRST_RETRY,
                            most: LONGEST_RETRY,
                            give_up_after: ctx.settings.replies.max_failures,
                        },
                    };
                    watchers.spawn(w.run(m));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for mailboxes to watch"),
        }
        while watchers.try_join_next().is_some() {}
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(CLAIM_EVERY) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while watchers.join_next().await.is_some() {}
    })
    .await;
}

impl Watch {
    /// Watches `m` until shutdown, the lease is lost or a failure; a failure frees the mailbox
    /// for a later claim, after its backoff.
    async fn run(self, mut m: Mailbox) {
        let Err(e) = self.session(&mut m).await else {
            if let Ok(client) = self.ctx.pool.get().await {
                let _ = mailbox::release(&client, m.user_id, &self.owner).await;
            }
            return;
        };
        let permanent = match &e {
            ReplyError::Imap { failure, detail } => {
                // What the server said is for the operator, escaped (Debug), never for the API.
                tracing::debug!(user = m.user_id, host = %m.host, %failure, ?detail, "IMAP failure");
                failure.permanent()
            }
            ReplyError::Sealed => true,
            ReplyError::Db(_) | ReplyError::Pool(_) => false,
        };
        let recorded = async {
            let client = self.ctx.pool.get().await?;
            Ok::<_, ReplyError>(
                mailbox::failed(
                    &client,
                    m.user_id,
                    &self.owner,
                    &e.to_string(),
                    permanent,
                    self.backoff,
                )
                .await?,
            )
        }
        .await;
        match recorded {
            Ok(AfterFailure::Retry { failures }) => {
                tracing::warn!(user = m.user_id, host = %m.host, error = %e, failures, "mailbox watch failed; retrying after a backoff");
            }
            Ok(AfterFailure::GivenUp { failures }) => {
                tracing::warn!(user = m.user_id, host = %m.host, error = %e, failures, "mailbox watch failed; given up until the mailbox is set again");
            }
            Ok(AfterFailure::NotHeld) => {}
            // The lease runs out and another claim retries it.
            Err(db) => {
                tracing::warn!(user = m.user_id, error = %e, record_error = %db, "mailbox watch failed and the failure cannot be recorded");
            }
        }
    }

    async fn renew(&self, m: &Mailbox) -> Result<bool, ReplyError> {
        let client = self.ctx.pool.get().await?;
        Ok(mailbox::renew(&client, m.user_id, &self.owner, self.lease_seconds).await?)
    }

    /// One connection: catch up from the checkpoint, then wait for news, until shutdown or the
    /// lease is lost (Ok), or an error.
    async fn session(&self, m: &mut Mailbox) -> Result<(), ReplyError> {
        let password = self.sealer.open(&m.password_sealed)?;
        let mut conn = Connection::open(
            m,
            &password,
            &self.policy,
            self.ctx.settings.replies.allow_plaintext,
        )
        .await?;
        drop(password);
        let validity = i64::from(conn.uidvalidity);
        if m.uidvalidity != Some(validity) {
            // UIDs of another validity mean nothing here: read the folder again. Event ids
            // derived from each reply keep what was counted before from counting twice.
            m.uidvalidity = Some(validity);
            m.last_uid = 0;
        }
        loop {
            loop {
                let batch = conn.fetch_after(m.last_uid as u32).await?;
                if batch.is_empty() {
                    break;
                }
                for f in &batch {
                    let verdict = detect::classify(&f.header);
                    if matches!(verdict, Verdict::Bounce(_)) || from_feedback_loop(&f.header) {
                        let whole = conn.fetch_message(f.uid).await?;
                        self.record_report(m, f, whole.as_deref()).await?;
                    } else {
                        self.record(m, f, verdict).await?;
                    }
                    m.last_uid = i64::from(f.uid);
                }
                let client = self.ctx.pool.get().await?;
                mailbox::checkpoint(&client, m.user_id, &self.owner, validity, m.last_uid, None)
                    .await?;
            }
            {
                let client = self.ctx.pool.get().await?;
                mailbox::checkpoint(&client, m.user_id, &self.owner, validity, m.last_uid, None)
                    .await?;
            }
            if self.ctx.shutdown.is_cancelled() || !self.renew(m).await? {
                conn.logout().await;
                return Ok(());
            }
            conn = conn.wait(self.wait, &self.ctx.shutdown).await?;
        }
    }

    /// Records a bounce or a complaint of one of the user's copies: events and suppressions
    /// (see [`crate::deliverability::record`]); a message that reads as neither is counted
    /// as a bounce-like message only.
    async fn record_report(
        &self,
        m: &Mailbox,
        f: &Found,
        whole: Option<&[u8]>,
    ) -> Result<(), ReplyError> {
        let Some(report) = whole.and_then(crate::deliverability::read) else {
            REPLIES.with_label_values(&["bounce"]).inc();
            return Ok(());
        };
        let d = &self.ctx.settings.deliverability;
        let soft = crate::deliverability::record::SoftBounces {
            limit: d.soft_bounce_limit,
            window: d.soft_bounce_window,
        };
        // The report's own Message-ID keys its events, so that reading it again after a new
        // UIDVALIDITY records nothing twice; without one, its place in the folder does.
        let key = MessageParser::default()
            .parse_headers(&f.header)
            .and_then(|h| h.message_id().map(|id| format!("<{id}>")))
            .unwrap_or_else(|| format!("uid {}/{}", m.uidvalidity.unwrap_or(0), f.uid));
        let at = f.internal_date.unwrap_or_else(chrono::Utc::now);
        let client = self.ctx.pool.get().await?;
        let done =
            crate::deliverability::record::record(&**client, m.user_id, &report, &key, at, soft)
                .await?;
        crate::deliverability::count(&report, &done);
        REPLIES
            .with_label_values(&[if done.events > 0 {
                "bounce"
            } else {
                "unmatched"
            }])
            .inc();
        Ok(())
    }

    /// Records a reply to one of the user's tracked copies; auto-replies and bounces are
    /// counted in the metric only.
    async fn record(&self, m: &Mailbox, f: &Found, verdict: Verdict) -> Result<(), ReplyError> {
        let Verdict::Reply {
            answers,
            from,
            message_id,
            at,
        } = verdict
        else {
            REPLIES.with_label_values(&[verdict.label()]).inc();
            return Ok(());
        };
        let client = self.ctx.pool.get().await?;
        let candidates = client
            .query(
                "SELECT c.id, c.message_id, c.recipient FROM copies c
                 JOIN messages m ON m.id = c.message_id
                 WHERE c.header_message_id = ANY($1) AND m.sender_id = $2
                 UNION
                 SELECT c.id, c.message_id, c.recipient FROM messages m
                 JOIN copies c ON c.message_id = m.id
                 WHERE m.header_message_id = ANY($1) AND m.sender_id = $2",
                &[&answers, &m.user_id],
            )
            .await?;
        // The copy of the person who answered; when the reply comes from another address,
        // the copy only if there is one.
        let same = |r: &&tokio_postgres::Row| {
            from.as_deref()
                .is_some_and(|f| r.get::<_, String>(2).eq_ignore_ascii_case(f))
        };
        let chosen = candidates
            .iter()
            .find(same)
            .or((candidates.len() == 1).then(|| &candidates[0]));
        let Some(copy) = chosen else {
            REPLIES.with_label_values(&["unmatched"]).inc();
            return Ok(());
        };
        let (copy_id, message_id_of_copy, recipient): (Uuid, Uuid, String) =
            (copy.get(0), copy.get(1), copy.get(2));
        let key =
            message_id.unwrap_or_else(|| format!("uid {}/{}", m.uidvalidity.unwrap_or(0), f.uid));
        // The server's arrival time: deterministic (the same reply read twice is one event)
        // and not set by the sender.
        let occurred = f.internal_date.or(at).unwrap_or_else(chrono::Utc::now);
        client
            .execute(
                crate::events::sql::INSERT_REPLY,
                &[
                    &detect::reply_event_id(copy_id, &key),
                    &occurred,
                    &message_id_of_copy,
                    &copy_id,
                    &from,
                ],
            )
            .await?;
        crate::followup::cancel_for_recipient(&client, m.user_id, &recipient, "replied").await?;
        REPLIES.with_label_values(&["reply"]).inc();
        Ok(())
    }
}

/// Microsoft's feedback loop (JMRP) sends its complaints as ordinary mail from one address, which
/// reply detection does not take for a report: such a message is read whole too.
fn from_feedback_loop(header: &[u8]) -> bool {
    MessageParser::default()
        .parse_headers(header)
        .and_then(|h| h.from()?.first()?.address().map(str::to_ascii_lowercase))
        .is_some_and(|a| a == "staff@hotmail.com")
}
