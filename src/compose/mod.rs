//! Composing mail for recipients one by one: stored templates with merge fields, signatures,
//! group emails and the follow-ups of `followup/`. Each recipient's message is written as MIME,
//! then goes through the same rewrite and queue as mail submitted over SMTP.
//!
//! Owns template content, merge fields and per-recipient composition. It must never send to
//! anyone unless every recipient's message could be composed (a missing field is an error
//! before anything is queued), never put a recipient's value into a header unescaped, and never
//! queue the same idempotent request twice.

pub mod build;
pub mod merge;
pub mod templates;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::Address;
use sha2::Digest;
use thiserror::Error;
use uuid::Uuid;

use crate::api::accounts::User;
use crate::queue::{self, NewCopy, NewMessage, QueueError};
use crate::relay::MessageFacts;
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

/// The answer to a group email: the message, its copies by id, when they go.
pub fn answer(m: &NewMessage, send_at: Option<DateTime<Utc>>) -> serde_json::Value {
    let mut copies: Vec<&NewCopy> = m.copies.iter().collect();
    copies.sort_by_key(|c| c.id);
    serde_json::json!({
        "message_id": m.id,
        "copies": m.copies.len(),
        "recipients": copies.iter().map(|c| serde_json::json!({
            "email": c.recipient, "copy_id": c.id,
        })).collect::<Vec<_>>(),
        "send_at": send_at,
    })
}

/// Queues a composed message at the sender's pace, in one transaction with its idempotency
/// record. `Ok(Some(answer))`: the key was used already (by a request that committed first),
/// nothing was queued, and `answer` is what that request got.
pub async fn queue(
    pool: &deadpool_postgres::Pool,
    m: &mut NewMessage,
    per_minute: u32,
    idem: Option<(&Idempotency, &serde_json::Value)>,
) -> Result<Option<serde_json::Value>, ComposeError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if let Some((idem, answer)) = idem {
        let mut stored = answer.clone();
        if let Some(o) = stored.as_object_mut() {
            o.remove("recipients");
        }
        let answer = &stored;
        // A concurrent request with the same key waits here for the first one's commit.
        let inserted = tx
            .execute(
                "INSERT INTO group_sends (sender_id, idempotency_key, request_hash, message_id,
                     response)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&m.sender_id, &idem.key, &idem.request_hash, &m.id, answer],
            )
            .await?;
        if inserted == 0 {
            drop(tx);
            return earlier_answer(&client, m.sender_id, idem).await;
        }
    }
    queue::pacing::assign(&tx, m, per_minute).await?;
    queue::insert(&tx, m).await?;
    tx.commit().await?;
    queue::QUEUED.notify_waiters();
    Ok(None)
}
