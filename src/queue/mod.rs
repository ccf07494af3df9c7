//! The durable queue in PostgreSQL: enqueue a message and its copies in one transaction, claim
//! due copies under a lease, record each attempt's outcome, and the retry schedule.
//!
//! Owns the `messages`, `copies`, `link_lists` (a message's tracked links, stored once per
//! distinct list; `links` is their view per message) and `templates` rows, the copies' delivery state, the
//! senders' pacing and budgets. It must never record an outcome
//! for a copy whose lease it no longer holds, and never lose a committed copy.

pub mod budget;
pub mod claim;
pub mod commit;
pub mod links;
pub mod pacing;
pub mod retry;
pub mod templates;

use std::sync::LazyLock;

use thiserror::Error;
use tokio::sync::Notify;
use uuid::Uuid;

pub use claim::{claim, record, release_own_leases, Claimed, Outcome};
pub use commit::{CommitShape, GroupCommit};

/// What is known of a message from its control headers (or the API request that made it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFacts {
    /// X-Mailtally-Template, else derived from the normalised subject.
    pub template_key: String,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// X-Mailtally-Track as the rewrite read it (or the default).
    pub track: Option<String>,
    /// X-Mailtally-Visibility when valid.
    pub visibility: Option<String>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    /// `X-Mailtally-Group: separate`: copies addressed one by one, sent at the sender's pace.
    pub separate: bool,
}

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("message of {0} bytes is too large to store")]
    TooLarge(usize),
    #[error("{0}")]
    OverBudget(budget::OverBudget),
    #[error(transparent)]
    Commit(#[from] commit::CommitError),
    /// The failure of a whole group commit, shared by each of its messages.
    #[error("group commit failed: {0}")]
    Group(std::sync::Arc<QueueError>),
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

#[derive(Debug, Default)]
pub struct NewCopy {
    pub id: Uuid,
    pub recipient: String,
    pub body: Vec<u8>,
    /// The copy's own Message-ID, when it was composed for its recipient alone.
    pub header_message_id: Option<String>,
    /// The merge values it was composed with.
    pub fields: Option<serde_json::Value>,
    /// Not delivered before this time (pacing, scheduled sends); `None`: at once.
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Its recipient is on the sender's suppression list: recorded as `suppressed`, never sent
    /// and not counted as sent.
    pub suppressed: bool,
}

impl NewMessage {
    /// The bytes its copies take: what the sending bounds count.
    pub fn copy_bytes(&self) -> u64 {
        self.copies.iter().map(|c| c.body.len() as u64).sum()
    }
}

/// A message's copies and links as the arrays its insert statements unnest.
struct Columns<'a> {
    copy_ids: Vec<Uuid>,
    recipients: Vec<&'a str>,
    bodies: Vec<&'a [u8]>,
    message_ids: Vec<Option<&'a str>>,
    fields: Vec<Option<&'a serde_json::Value>>,
    not_before: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    /// `queued`, or `suppressed` for a copy that is never sent.
    statuses: Vec<&'static str>,
    /// The copies that are sent, each with its `accepted` event.
    accepted: Vec<Uuid>,
    event_ids: Vec<Uuid>,
    link_indexes: Vec<i32>,
    link_urls: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(m: &'a NewMessage) -> Self {
        let copies = &m.copies;
        Columns {
            copy_ids: copies.iter().map(|c| c.id).collect(),
            recipients: copies.iter().map(|c| c.recipient.as_str()).collect(),
            bodies: copies.iter().map(|c| c.body.as_slice()).collect(),
            message_ids: copies
                .iter()
                .map(|c| c.header_message_id.as_deref())
                .collect(),
            fields: copies.iter().map(|c| c.fields.as_ref()).collect(),
            not_before: copies.iter().map(|c| c.not_before).collect(),
            statuses: copies
                .iter()
                .map(|c| if c.suppressed { "suppressed" } else { "queued" })
                .collect(),
            accepted: copies
                .iter()
                .filter(|c| !c.suppressed)
                .map(|c| c.id)
                .collect(),
            event_ids: copies
                .iter()
                .filter(|c| !c.suppressed)
                .map(|_| Uuid::now_v7())
                .collect(),
            link_indexes: m.links.iter().map(|l| l.0).collect(),
            link_urls: m.links.iter().map(|l| l.1.as_str()).collect(),
        }
    }
}

/// Registers the queue's metrics, so that they are exported before the first commit.
pub fn register_metrics() {
    std::sync::LazyLock::force(&commit::METRICS);
}

/// Wakes this process's delivery workers when mail is queued (other nodes poll).
pub static QUEUED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Stores the message, its copies and an `accepted` event per copy in one transaction.
pub async fn enqueue(pool: &deadpool_postgres::Pool, m: &NewMessage) -> Result<(), QueueError> {
    let client = pool.get().await?;
    insert(&client, m).await?;
    QUEUED.notify_waiters();
    Ok(())
}

/// Like [`enqueue`], with each copy given the next free slot of the sender's sending rate
/// (`per_minute`; 0: no pacing) in the same transaction.
pub async fn enqueue_paced(
    pool: &deadpool_postgres::Pool,
    m: &mut NewMessage,
    per_minute: u32,
) -> Result<(), QueueError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    pacing::assign(&tx, m, per_minute).await?;
    insert(&tx, m).await?;
    tx.commit().await?;
    QUEUED.notify_waiters();
    Ok(())
}

/// The copies of a message.
pub async fn copies_of_message(
    client: &impl tokio_postgres::GenericClient,
    message_id: Uuid,
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id FROM copies WHERE message_id = $1",
            &[&message_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every copy sent to `recipient`, compared case-insensitively.
pub async fn copies_sent_to(
    client: &impl tokio_postgres::GenericClient,
    recipient: &str,
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id FROM copies WHERE lower(recipient) = lower($1)",
            &[&recipient.trim()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes a message; its copies go with it (foreign keys), and its link list when no other
/// message shares it. Like [`delete_copies`],
/// it counts a removal in `copies_removed`, which the event writer reads (see
/// [`copies_removed`]).
pub async fn delete_message(
    client: &impl tokio_postgres::GenericClient,
    message_id: Uuid,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "WITH gone AS (DELETE FROM messages WHERE id = $1 RETURNING id, link_list),
             list AS (
                 DELETE FROM link_lists l USING gone WHERE l.digest = gone.link_list
                 AND NOT EXISTS (SELECT 1 FROM messages m
                                 WHERE m.link_list = l.digest AND m.id <> gone.id)
             )
             UPDATE copies_removed SET generation = generation + 1
             WHERE id = 1 AND EXISTS (SELECT 1 FROM gone)",
            &[&message_id],
        )
        .await?;
    Ok(())
}

/// Deletes copies, whatever their state, and counts a removal in `copies_removed` in the same
/// statement, so that the count changes exactly when the copies are gone.
pub async fn delete_copies(
    client: &impl tokio_postgres::GenericClient,
    copies: &[Uuid],
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "WITH gone AS (DELETE FROM copies WHERE id = ANY($1) RETURNING id)
             UPDATE copies_removed SET generation = generation + 1
             WHERE id = 1 AND EXISTS (SELECT 1 FROM gone)",
            &[&copies],
        )
        .await?;
    Ok(())
}

/// How many times copies have been removed (erasure, message deletion). Whoever keeps which
/// message a copy belongs to in memory reads this in the transaction that uses what it keeps,
/// and forgets everything when it changed.
pub async fn copies_removed(
    client: &impl tokio_postgres::GenericClient,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT generation FROM copies_removed WHERE id = 1", &[])
        .await?
        .get(0))
}

/// The message of each of `copies` that exists: (copy, message) pairs; unknown ones are absent.
pub async fn messages_of_copies(
    client: &impl tokio_postgres::GenericClient,
    copies: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, message_id FROM copies WHERE id = ANY($1)",
            &[&copies],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Records the size and the untouched reason of a message whose copies were added in parts
/// (group emails), once all of them are in.
pub async fn set_size(
    client: &impl tokio_postgres::GenericClient,
    message_id: Uuid,
    size_bytes: usize,
    untouched: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE messages SET size_bytes = $2, untouched = $3 WHERE id = $1",
            &[
                &message_id,
                &i32::try_from(size_bytes).unwrap_or(i32::MAX),
                &untouched,
            ],
        )
        .await?;
    Ok(())
}

/// Archives a message (kept, hidden from lists); returns when it was archived, the first time.
pub async fn archive(
    client: &impl tokio_postgres::GenericClient,
    message_id: Uuid,
) -> Result<chrono::DateTime<chrono::Utc>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "UPDATE messages SET archived_at = coalesce(archived_at, now()) WHERE id = $1
             RETURNING archived_at",
            &[&message_id],
        )
        .await?;
    Ok(row.get(0))
}

/// More copies of a message already inserted by [`insert`] in the same transaction (a large
/// group email is written a chunk at a time), with their `accepted` events and any link not
/// listed yet.
pub async fn insert_copies(
    client: &impl deadpool_postgres::GenericClient,
    m: &NewMessage,
) -> Result<(), QueueError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            // The message's list so far, with the links it did not list yet.
            "WITH merged AS (
                 SELECT array_agg(idx ORDER BY idx) AS idx, array_agg(url ORDER BY idx) AS urls
                 FROM (SELECT DISTINCT ON (idx) idx, url FROM (
                     SELECT l.idx, l.url, 0 AS first FROM links l WHERE l.message_id = $1
                     UNION ALL
                     SELECT n.idx, n.url, 1 FROM unnest($2::int4[], $3::text[]) AS n (idx, url)
                 ) AS both_lists ORDER BY idx, first) AS one_each
             ), link AS ({}), relink AS (
                 UPDATE messages SET link_list = (
                     SELECT mailtally_link_list_digest(idx, urls) FROM merged)
                 WHERE id = $1 AND (SELECT idx FROM merged) IS NOT NULL
             ), copy AS (
                 INSERT INTO copies (id, message_id, recipient, body, header_message_id, fields,
                     next_attempt_at, status)
                 SELECT c.id, $1, c.recipient, c.body, c.mid, c.fields, coalesce(c.not_before, now()),
                        c.status
                 FROM unnest($4::uuid[], $5::text[], $6::bytea[], $7::text[], $8::jsonb[],
                             $9::timestamptz[], $11::text[])
                      AS c (id, recipient, body, mid, fields, not_before, status)
             )
             {}",
            store_link_list("(SELECT idx FROM merged)", "(SELECT urls FROM merged)"),
            crate::events::sql::insert_accepted("$1", "$10", "$12")
        )
    });
    let statement = client.prepare_cached(&SQL).await?;
    let c = Columns::of(m);
    let before: Option<Vec<u8>> = client
        .query_one("SELECT link_list FROM messages WHERE id = $1", &[&m.id])
        .await?
        .get(0);
    client
        .execute(
            &statement,
            &[
                &m.id,
                &c.link_indexes,
                &c.link_urls,
                &c.copy_ids,
                &c.recipients,
                &c.bodies,
                &c.message_ids,
                &c.fields,
                &c.not_before,
                &c.event_ids,
                &c.statuses,
                &c.accepted,
            ],
        )
        .await?;
    if let Some(before) = before {
        forget_link_list(client, &before).await?;
    }
    Ok(())
}

/// Stores the link list of `idx` and `urls` (SQL expressions of two arrays in index order)
/// unless it is there already or empty: the statement a message's insert splices in.
fn store_link_list(idx: &str, urls: &str) -> String {
    format!(
        "INSERT INTO link_lists (digest, idx, urls)
         SELECT mailtally_link_list_digest(i, u), i, u FROM (SELECT {idx} AS i, {urls} AS u) l
         WHERE cardinality(i) > 0
         ON CONFLICT (digest) DO NOTHING"
    )
}

/// Deletes a link list no message refers to any more.
async fn forget_link_list(
    client: &impl deadpool_postgres::GenericClient,
    digest: &[u8],
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM link_lists l WHERE l.digest = $1
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.link_list = l.digest)",
            &[&digest],
        )
        .await?;
    Ok(())
}

/// The statement behind [`enqueue`], on the caller's connection or transaction (which then
/// wakes the workers with [`QUEUED`] after its commit).
pub async fn insert(
    client: &impl deadpool_postgres::GenericClient,
    m: &NewMessage,
) -> Result<(), QueueError> {
    let size = i32::try_from(m.size_bytes).map_err(|_| QueueError::TooLarge(m.size_bytes))?;
    // One statement, so one round trip and one commit: the CTEs insert the template, the
    // message, its copies (unnest: any number of recipients) and their `accepted` events; the
    // foreign keys are checked at the end of the statement.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            // The key in the sender's scope: their team's, or their own without one.
            "WITH template AS ({}), message AS (
                 INSERT INTO messages (id, sender_id, team_id, visibility, template_key, subject,
                     header_message_id, envelope_from, deal, lead, project, track, size_bytes,
                     untouched, link_list)
                 VALUES ($3, $4, $5, $6, $1, $2, $7, $8, $9, $10, $11, $12, $13, $20,
                         CASE WHEN cardinality($18::int4[]) > 0
                              THEN mailtally_link_list_digest($18, $19) END)
             ), link AS ({}), copy AS (
                 INSERT INTO copies (id, message_id, recipient, body, header_message_id, fields,
                     next_attempt_at, status)
                 SELECT c.id, $3, c.recipient, c.body, c.mid, c.fields, coalesce(c.not_before, now()),
                        c.status
                 FROM unnest($14::uuid[], $15::text[], $16::bytea[], $21::text[], $22::jsonb[],
                             $23::timestamptz[], $24::text[])
                      AS c (id, recipient, body, mid, fields, not_before, status)
             )
             {}",
            templates::register_key_sql("$1", "$2", "$5", "$4"),
            store_link_list("$18::int4[]", "$19::text[]"),
            crate::events::sql::insert_accepted("$3", "$17", "$25")
        )
    });
    let statement = client.prepare_cached(&SQL).await?;
    let c = Columns::of(m);
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
                &c.copy_ids,
                &c.recipients,
                &c.bodies,
                &c.event_ids,
                &c.link_indexes,
                &c.link_urls,
                &m.untouched,
                &c.message_ids,
                &c.fields,
                &c.not_before,
                &c.statuses,
                &c.accepted,
            ],
        )
        .await?;
    Ok(())
}
