//! Composing mail for recipients one by one: stored templates with merge fields, signatures,
//! group emails and the follow-ups of `followup/`. Each recipient's message is written as MIME,
//! then goes through the same rewrite and queue as mail submitted over SMTP.
//!
//! Owns merge fields and per-recipient composition (template content is `queue::templates`'s). It must never send to
//! anyone unless every recipient's message could be composed (a missing field is an error
//! before anything is queued), never put a recipient's value into a header unescaped, and never
//! queue the same idempotent request twice.

pub mod build;
pub mod merge;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::Address;
use sha2::Digest;
use thiserror::Error;
use uuid::Uuid;

use crate::accounts::User;
use crate::queue::MessageFacts;
use crate::queue::{self, NewCopy, NewMessage, QueueError};
use crate::rewrite::{self, RewriteSettings, TokenKeys};
pub use build::Signature;
pub use merge::{MergeError, MergeText, Target};

#[derive(Debug, Error)]
pub enum ComposeError {
    #[error("{recipient}: {error}")]
    Merge {
        recipient: String,
        error: MergeError,
    },
    #[error("cannot write the message: {0}")]
    Build(String),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    /// The copies are over SUBMISSION_MAX_BYTES: nothing was queued.
    #[error("nothing was sent: the copies take more than the limit of {max} bytes per request")]
    TooLarge { max: u64 },
    /// Every recipient is on the sender's suppression list: nothing was queued.
    #[error("nothing was sent: every recipient is on the sender's suppression list ({})",
        .0.iter().map(|s| format!("{}: {}", s.email, s.reason)).collect::<Vec<_>>().join(", "))]
    AllSuppressed(Vec<SuppressedRecipient>),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// One recipient of composed mail and their merge values.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub address: Address,
    pub name: Option<String>,
    pub fields: BTreeMap<String, String>,
}

impl Recipient {
    /// The values merged for this recipient: their fields, and `email`.
    fn values(&self) -> BTreeMap<String, String> {
        let mut v = self.fields.clone();
        v.entry("email".into())
            .or_insert_with(|| self.address.to_string());
        v
    }
}

/// Where a composed message sits in a conversation (follow-ups answer an earlier copy).
#[derive(Debug, Clone)]
pub struct Thread {
    /// The Message-ID answered, when the earlier copy had one.
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    /// The subject as sent, without merge fields: "Re: " is put before it.
    pub subject: String,
}

/// What is sent to every recipient, before merging.
#[derive(Debug, Clone)]
pub struct Composition {
    pub sender: User,
    pub sender_name: Option<String>,
    pub template_key: String,
    /// The subject as written, with its merge fields (stored with the message).
    pub subject_source: String,
    pub subject: MergeText,
    pub html: MergeText,
    pub text: Option<MergeText>,
    pub visibility: String,
    pub track: Option<String>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
    pub thread: Option<Thread>,
}

impl Composition {
    /// A composition from a template's parts, with the sender's signature appended.
    pub fn new(
        sender: User,
        template_key: String,
        subject: &str,
        html: &str,
        text: Option<&str>,
        signature: &Signature,
    ) -> Composition {
        let (html, text) = build::with_signature(html, text, signature);
        Composition {
            visibility: sender.default_visibility.clone(),
            sender,
            sender_name: None,
            template_key,
            subject_source: subject.to_string(),
            subject: MergeText::parse(subject),
            html: MergeText::parse(&html),
            text: text.as_deref().map(MergeText::parse),
            track: None,
            deal: None,
            lead: None,
            project: None,
            send_at: None,
            thread: None,
        }
    }

    /// Merges every recipient's values, without writing anything: the first problems found,
    /// one per recipient, at most `limit`.
    pub fn check(&self, recipients: &[Recipient], limit: usize) -> Vec<ComposeError> {
        recipients
            .iter()
            .filter_map(|r| self.merge(r).err())
            .take(limit)
            .collect()
    }

    /// The merged subject, HTML and text of every recipient, in bytes: less than their copies
    /// will take (headers, MIME and the tracking come on top), so a bound it passes is checked
    /// again on the copies; what it does not pass is refused before any copy is written.
    pub fn merged_bytes(&self, recipients: &[Recipient]) -> u64 {
        recipients
            .iter()
            .filter_map(|r| self.merge(r).ok())
            .map(|(s, h, t)| (s.len() + h.len() + t.map_or(0, |t| t.len())) as u64)
            .sum()
    }

    /// (subject, html, text) for one recipient.
    fn merge(&self, r: &Recipient) -> Result<(String, String, Option<String>), ComposeError> {
        let values = r.values();
        let err = |error| ComposeError::Merge {
            recipient: r.address.to_string(),
            error,
        };
        let subject = match &self.thread {
            Some(t) => reply_subject(&t.subject),
            None => self.subject.render(&values, Target::Header).map_err(err)?,
        };
        let html = self.html.render(&values, Target::Html).map_err(err)?;
        let text = match &self.text {
            Some(t) => Some(t.render(&values, Target::Text).map_err(err)?),
            None => None,
        };
        Ok((subject, html, text))
    }

    /// Every recipient's copy, merged, written, rewritten and ready to queue as one message.
    pub fn render(
        &self,
        recipients: &[Recipient],
        settings: &RewriteSettings,
        keys: &TokenKeys,
    ) -> Result<NewMessage, ComposeError> {
        let sender_address: Address = self
            .sender
            .email
            .parse()
            .map_err(|e| ComposeError::Build(format!("sender address: {e}")))?;
        let from = Mailbox::new(self.sender_name.clone(), sender_address.clone());
        let mut controls = vec![("Template", self.template_key.clone())];
        if let Some(t) = &self.track {
            controls.push(("Track", t.clone()));
        }
        let mut copies = Vec::with_capacity(recipients.len());
        let mut links: BTreeMap<i32, String> = BTreeMap::new();
        let mut untouched = None;
        let mut size = 0;
        for r in recipients {
            let (subject, html, text) = self.merge(r)?;
            let message_id = build::message_id(&sender_address);
            let draft = build::Draft {
                from: from.clone(),
                to: Mailbox::new(r.name.clone(), r.address.clone()),
                subject,
                html,
                text,
                message_id: message_id.clone(),
                in_reply_to: self.thread.as_ref().and_then(|t| t.in_reply_to.clone()),
                references: self.thread.as_ref().and_then(|t| t.references.clone()),
                controls: controls.clone(),
            };
            let raw = build::build(&draft)?;
            let prepared = rewrite::prepare(&raw, settings);
            for l in &prepared.links {
                // Links that differ between recipients (a merge field in a URL) keep the first
                // recipient's URL in reports; each click still redirects to its own.
                links.entry(l.index as i32).or_insert_with(|| l.url.clone());
            }
            untouched = untouched.or(prepared.untouched.map(|u| u.as_str().to_string()));
            let id = Uuid::now_v7();
            let recipient = r.address.to_string();
            let body = prepared.render(keys, id, &recipient);
            size = size.max(body.len());
            copies.push(NewCopy {
                id,
                recipient,
                body,
                header_message_id: Some(message_id),
                fields: Some(serde_json::json!(r.fields)),
                not_before: self.send_at,
                // Suppressed recipients were taken out before anything was composed.
                suppressed: false,
            });
        }
        Ok(NewMessage {
            id: Uuid::now_v7(),
            sender_id: self.sender.id,
            team_id: self.sender.team_id,
            visibility: self.visibility.clone(),
            track: self
                .track
                .clone()
                .unwrap_or_else(|| settings.default_track_text().to_string()),
            envelope_from: self.sender.email.clone(),
            size_bytes: size,
            facts: MessageFacts {
                template_key: self.template_key.clone(),
                subject: Some(match &self.thread {
                    Some(t) => reply_subject(&t.subject),
                    None => self.subject_source.clone(),
                }),
                message_id: None,
                track: self.track.clone(),
                visibility: Some(self.visibility.clone()),
                deal: self.deal.clone(),
                lead: self.lead.clone(),
                project: self.project.clone(),
                separate: false,
            },
            links: links.into_iter().collect(),
            untouched,
            copies,
        })
    }
}

/// "Re: " before a subject that does not already start with it.
pub fn reply_subject(subject: &str) -> String {
    let s = subject.trim();
    if s.len() >= 3 && s[..3].eq_ignore_ascii_case("re:") {
        s.to_string()
    } else {
        format!("Re: {s}")
    }
}

/// Recipients rendered and written at a time: a group email holds one chunk's copies in
/// memory, not all of them.
pub const CHUNK: usize = 100;

/// The bounds a group email is queued under.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// SENDER_RATE_PER_MINUTE.
    pub per_minute: u32,
    /// SUBMISSION_MAX_BYTES (0: none).
    pub max_bytes: u64,
    /// SENDER_MAX_BYTES_PER_HOUR (0: none).
    pub per_hour: u64,
}

/// The answer to a group email: what was queued. The answer repeated for an `Idempotency-Key`
/// has no `recipients`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QueuedAnswer {
    pub message_id: Uuid,
    /// How many copies (one a recipient).
    pub copies: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<QueuedCopy>>,
    pub send_at: Option<DateTime<Utc>>,
    /// Recipients on the sender's suppression list: never sent (listed by the API when any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<SuppressedRecipient>,
}

/// A recipient left out because the sender's suppression list holds the address.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SuppressedRecipient {
    pub email: String,
    /// `hard_bounce`, `soft_bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QueuedCopy {
    pub email: String,
    pub copy_id: Uuid,
}

/// What [`queue_in_chunks`] did.
#[derive(Debug)]
pub enum Queued {
    /// Queued now; the answer to give.
    New(serde_json::Value),
    /// The Idempotency-Key's first request queued it: nothing was, and this is its answer.
    Earlier(serde_json::Value),
}

/// Renders and writes a group email [`CHUNK`] recipients at a time in one transaction, at the
/// sender's pace, with its idempotency record; the copies' bytes are bounded as they are
/// written and charged to the sender's hourly budget before the commit. Over a bound, the
/// transaction is rolled back: nothing is queued.
pub async fn queue_in_chunks(
    pool: &deadpool_postgres::Pool,
    composition: std::sync::Arc<Composition>,
    recipients: Vec<Recipient>,
    settings: std::sync::Arc<RewriteSettings>,
    keys: TokenKeys,
    bounds: Bounds,
    idem: Option<&Idempotency>,
) -> Result<Queued, ComposeError> {
    let message_id = Uuid::now_v7();
    let send_at = composition.send_at;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (recipients, suppressed) =
        leave_out_suppressed(&tx, &composition.sender, recipients).await?;
    if recipients.is_empty() {
        return Err(ComposeError::AllSuppressed(suppressed));
    }
    if let Some(idem) = idem {
        let stored = answer_json(&QueuedAnswer {
            message_id,
            copies: recipients.len(),
            recipients: None,
            send_at,
            suppressed: suppressed.clone(),
        });
        // A concurrent request with the same key waits here for the first one's commit.
        let inserted = tx
            .execute(
                "INSERT INTO group_sends (sender_id, idempotency_key, request_hash, message_id,
                     response)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &composition.sender.id,
                    &idem.key,
                    &idem.request_hash,
                    &message_id,
                    &stored,
                ],
            )
            .await?;
        if inserted == 0 {
            drop(tx);
            let earlier = earlier_answer(&client, composition.sender.id, idem).await?;
            return Ok(Queued::Earlier(earlier.unwrap_or(serde_json::Value::Null)));
        }
    }
    let step_us = match bounds.per_minute {
        0 => 0,
        n => 60_000_000 / i64::from(n),
    };
    let mut listed: Vec<(Uuid, String)> = Vec::with_capacity(recipients.len());
    let mut bytes: u64 = 0;
    let mut size = 0;
    let mut untouched = None;
    for (k, chunk) in recipients.chunks(CHUNK).enumerate() {
        let (c, s, keys, chunk) = (
            composition.clone(),
            settings.clone(),
            keys.clone(),
            chunk.to_vec(),
        );
        let mut m = tokio::task::spawn_blocking(move || c.render(&chunk, &s, &keys))
            .await
            .map_err(|_| ComposeError::Build("the server is shutting down".into()))??;
        m.id = message_id;
        bytes += m.copy_bytes();
        if bounds.max_bytes > 0 && bytes > bounds.max_bytes {
            return Err(ComposeError::TooLarge {
                max: bounds.max_bytes,
            });
        }
        if let (Some(at), true) = (send_at, k > 0) {
            // A scheduled send is spread from its own time: this chunk goes on from the last.
            let from = at + chrono::Duration::microseconds(step_us * (k * CHUNK) as i64);
            for c in &mut m.copies {
                c.not_before = Some(from);
            }
        }
        queue::pacing::assign(&tx, &mut m, bounds.per_minute).await?;
        if k == 0 {
            queue::insert(&tx, &m).await?;
        } else {
            queue::insert_copies(&tx, &m).await?;
        }
        size = size.max(m.size_bytes);
        untouched = untouched.or(m.untouched.clone());
        listed.extend(m.copies.into_iter().map(|c| (c.id, c.recipient)));
    }
    queue::set_size(&*tx, message_id, size, untouched.as_deref()).await?;
    let sender = composition.sender.id;
    queue::budget::charge(pool, sender, bytes, bounds.per_hour).await?;
    if let Err(e) = tx.commit().await {
        if let Err(e) = queue::budget::refund(pool, sender, bytes, bounds.per_hour).await {
            tracing::warn!(error = %e, "cannot give back a sending budget charge");
        }
        return Err(e.into());
    }
    queue::QUEUED.notify_waiters();
    listed.sort_by_key(|c| c.0);
    let copies = listed.len();
    let recipients = listed
        .into_iter()
        .map(|(copy_id, email)| QueuedCopy { email, copy_id })
        .collect();
    Ok(Queued::New(answer_json(&QueuedAnswer {
        message_id,
        copies,
        recipients: Some(recipients),
        send_at,
        suppressed,
    })))
}

/// The recipients the sender's suppression list does not hold, and those it does.
pub async fn leave_out_suppressed(
    client: &impl deadpool_postgres::GenericClient,
    sender: &crate::accounts::User,
    recipients: Vec<Recipient>,
) -> Result<(Vec<Recipient>, Vec<SuppressedRecipient>), tokio_postgres::Error> {
    use crate::deliverability::suppression::{self, normal, Scope};
    let addresses: Vec<String> = recipients.iter().map(|r| r.address.to_string()).collect();
    let found = suppression::check(client, Scope::of(sender), &addresses).await?;
    if found.is_empty() {
        return Ok((recipients, Vec::new()));
    }
    let (out, kept): (Vec<Recipient>, Vec<Recipient>) = recipients
        .into_iter()
        .partition(|r| found.contains_key(&normal(r.address.as_ref())));
    let left_out = out
        .iter()
        .map(|r| {
            let email = r.address.to_string();
            let reason = found[&normal(&email)].as_str().to_string();
            SuppressedRecipient { email, reason }
        })
        .collect();
    Ok((kept, left_out))
}

fn answer_json(answer: &QueuedAnswer) -> serde_json::Value {
    // Uuids, numbers, strings and times only: serialising cannot fail.
    serde_json::to_value(answer).expect("a queued answer is JSON")
}

/// An `Idempotency-Key` with the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: Vec<u8>,
}

impl Idempotency {
    pub fn new(key: &str, request: &[u8]) -> Idempotency {
        Idempotency {
            key: key.to_string(),
            request_hash: sha2::Sha256::digest(request).to_vec(),
        }
    }
}

/// The answer an earlier request with the same key got; `Err(IdempotencyMismatch)` when the
/// key came with another request. Its recipients are read from the copies, so that the stored
/// answer holds no address (and an erased recipient is gone from it too).
pub async fn earlier_answer(
    client: &impl deadpool_postgres::GenericClient,
    sender_id: i64,
    idem: &Idempotency,
) -> Result<Option<serde_json::Value>, ComposeError> {
    let row = client
        .query_opt(
            "SELECT request_hash, response, message_id FROM group_sends
             WHERE sender_id = $1 AND idempotency_key = $2",
            &[&sender_id, &idem.key],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    if row.get::<_, Vec<u8>>(0) != idem.request_hash {
        return Err(ComposeError::IdempotencyMismatch);
    }
    let mut answer: serde_json::Value = row.get(1);
    let message_id: Uuid = row.get(2);
    let copies = client
        .query(
            "SELECT recipient, id FROM copies WHERE message_id = $1 ORDER BY id",
            &[&message_id],
        )
        .await?;
    answer["recipients"] = copies
        .iter()
        .map(
            |c| serde_json::json!({"email": c.get::<_, String>(0), "copy_id": c.get::<_, Uuid>(1)}),
        )
        .collect();
    Ok(Some(answer))
}
