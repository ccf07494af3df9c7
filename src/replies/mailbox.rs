//! The named queries of the `mailboxes` table: each user's IMAP account, its checkpoint and
//! the lease of the node watching it.

use serde::Serialize;

/// How to reach an IMAP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (port 993).
    Tls,
    /// STARTTLS on a plain connection (port 143).
    Starttls,
    /// No TLS: only where `MAILBOX_ALLOW_PLAINTEXT` allows it (servers on loopback or a
    /// trusted network).
    None,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Tls => "tls",
            Security::Starttls => "starttls",
            Security::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Security> {
        match s.to_ascii_lowercase().as_str() {
            "tls" | "ssl" | "imaps" => Some(Security::Tls),
            "starttls" => Some(Security::Starttls),
            "none" | "plain" => Some(Security::None),
            _ => None,
        }
    }
}

/// One watched mailbox; the password stays sealed until a connection needs it.
#[derive(Clone)]
pub struct Mailbox {
    pub user_id: i64,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub password_sealed: Vec<u8>,
    pub folder: String,
    pub uidvalidity: Option<i64>,
    pub last_uid: i64,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("user_id", &self.user_id)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

/// Whether a mailbox is watched, or given up after failing until it is set again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MailboxState {
    Active,
    Failed,
}

/// What `GET /api/me/mailbox` shows: never the password.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxStatus {
    pub state: MailboxState,
    pub host: String,
    pub port: i32,
    pub security: String,
    pub username: String,
    pub folder: String,
    pub last_uid: i64,
    pub last_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    /// Failed connections since the last successful read.
    pub failures: i32,
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
    pub failed_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub struct NewMailbox<'a> {
    pub host: &'a str,
    pub port: u16,
    pub security: Security,
    pub username: &'a str,
    pub password_sealed: &'a [u8],
    pub folder: &'a str,
}

/// Sets the user's mailbox. A different account or folder starts from a fresh checkpoint; it is
/// picked up by a watcher at once, with its failures forgotten.
pub async fn put(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
    m: &NewMailbox<'_>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO mailboxes AS b (user_id, host, port, security, username, password_sealed,
                 folder)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_id) DO UPDATE SET
                 host = EXCLUDED.host, port = EXCLUDED.port, security = EXCLUDED.security,
                 username = EXCLUDED.username, password_sealed = EXCLUDED.password_sealed,
                 folder = EXCLUDED.folder, last_error = NULL, updated_at = now(),
                 lease_until = NULL, failures = 0, retry_at = NULL, failed_at = NULL,
                 uidvalidity = CASE WHEN (b.host, b.port, b.username, b.folder)
                     = (EXCLUDED.host, EXCLUDED.port, EXCLUDED.username, EXCLUDED.folder)
                     THEN b.uidvalidity END,
                 last_uid = CASE WHEN (b.host, b.port, b.username, b.folder)
                     = (EXCLUDED.host, EXCLUDED.port, EXCLUDED.username, EXCLUDED.folder)
                     THEN b.last_uid ELSE 0 END",
            &[
                &user_id,
                &m.host,
                &i32::from(m.port),
                &m.security.as_str(),
                &m.username,
                &m.password_sealed,
                &m.folder,
            ],
        )
        .await?;
    Ok(())
}

pub async fn status(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
) -> Result<Option<MailboxStatus>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT host, port, security, username, folder, last_uid, last_sync_at, last_error,
                    failures, retry_at, failed_at
             FROM mailboxes WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row.map(|r| MailboxStatus {
        state: match r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(10) {
            Some(_) => MailboxState::Failed,
            None => MailboxState::Active,
        },
        host: r.get(0),
        port: r.get(1),
        security: r.get(2),
        username: r.get(3),
        folder: r.get(4),
        last_uid: r.get(5),
        last_sync_at: r.get(6),
        last_error: r.get(7),
        failures: r.get(8),
        retry_at: r.get(9),
        failed_at: r.get(10),
    }))
}

pub async fn delete(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .execute("DELETE FROM mailboxes WHERE user_id = $1", &[&user_id])
        .await?
        > 0)
}

/// Takes the mailboxes nobody watches (no lease, or an expired one) for `node`, except those
/// waiting out a backoff and those given up.
pub async fn claim(
    client: &impl deadpool_postgres::GenericClient,
    node: &str,
    lease_seconds: f64,
) -> Result<Vec<Mailbox>, tokio_postgres::Error> {
    let rows = client
        .query(
            "UPDATE mailboxes b SET lease_owner = $1,
                 lease_until = now() + make_interval(secs => $2)
             FROM (SELECT user_id FROM mailboxes
                   WHERE (lease_until IS NULL OR lease_until < now())
                     AND failed_at IS NULL AND (retry_at IS NULL OR retry_at <= now())
                   FOR UPDATE SKIP LOCKED) free
             WHERE b.user_id = free.user_id
             RETURNING b.user_id, b.host, b.port, b.security, b.username, b.password_sealed,
                       b.folder, b.uidvalidity, b.last_uid",
            &[&node, &lease_seconds],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Mailbox {
            user_id: r.get(0),
            host: r.get(1),
            port: u16::try_from(r.get::<_, i32>(2)).unwrap_or(143),
            security: Security::parse(r.get(3)).unwrap_or(Security::Tls),
            username: r.get(4),
            password_sealed: r.get(5),
            folder: r.get(6),
            uidvalidity: r.get(7),
            last_uid: r.get(8),
        })
        .collect())
}

/// Extends `node`'s lease; false when the lease is gone (the mailbox was changed, deleted or
/// taken over), and the watcher must stop.
pub async fn renew(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
    node: &str,
    lease_seconds: f64,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .execute(
            "UPDATE mailboxes SET lease_until = now() + make_interval(secs => $3)
             WHERE user_id = $1 AND lease_owner = $2 AND lease_until IS NOT NULL",
            &[&user_id, &node, &lease_seconds],
        )
        .await?
        > 0)
}

/// Records how far the mailbox was read (only while `node` holds it); a read clears the
/// failures.
pub async fn checkpoint(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
    node: &str,
    uidvalidity: i64,
    last_uid: i64,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE mailboxes SET uidvalidity = $3, last_uid = $4, last_sync_at = now(),
                 last_error = $5, failures = 0, retry_at = NULL
             WHERE user_id = $1 AND lease_owner = $2",
            &[&user_id, &node, &uidvalidity, &last_uid, &error],
        )
        .await?;
    Ok(())
}

/// How failed connections are retried.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The wait after the first failure; it doubles with each one.
    pub first: std::time::Duration,
    pub most: std::time::Duration,
    /// Failures in a row after which the mailbox is given up.
    pub give_up_after: u32,
}

/// What became of a mailbox after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Retried by whichever node claims it once the backoff is over.
    Retry { failures: i32 },
    /// Given up until it is set again.
    GivenUp { failures: i32 },
    /// `node` no longer held it (it was set again, deleted or taken over): nothing recorded.
    NotHeld,
}

/// Records why the mailbox cannot be read, for `GET /api/me/mailbox`, and frees it until its
/// backoff is over, or for good after `backoff.give_up_after` failures or a `permanent` one.
pub async fn failed(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
    node: &str,
    error: &str,
    permanent: bool,
    backoff: Backoff,
) -> Result<AfterFailure, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "UPDATE mailboxes SET last_error = $3, updated_at = now(), failures = failures + 1,
                 lease_until = NULL,
                 failed_at = CASE WHEN $4 OR failures + 1 >= $5 THEN now() END,
                 retry_at = now() + make_interval(secs => least($6 * power(2, least(failures, 60)), $7))
             WHERE user_id = $1 AND lease_owner = $2 AND lease_until IS NOT NULL
             RETURNING failures, failed_at IS NOT NULL",
            &[
                &user_id,
                &node,
                &error,
                &permanent,
                &i32::try_from(backoff.give_up_after.max(1)).unwrap_or(i32::MAX),
                &backoff.first.as_secs_f64(),
                &backoff.most.as_secs_f64(),
            ],
        )
        .await?;
    Ok(match row {
        None => AfterFailure::NotHeld,
        Some(r) if r.get::<_, bool>(1) => AfterFailure::GivenUp { failures: r.get(0) },
        Some(r) => AfterFailure::Retry { failures: r.get(0) },
    })
}

/// Gives the mailbox up (shutdown), so that another node takes it at once.
pub async fn release(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
    node: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE mailboxes SET lease_until = NULL WHERE user_id = $1 AND lease_owner = $2",
            &[&user_id, &node],
        )
        .await?;
    Ok(())
}

/// Frees every lease `node` held (its watchers' owners are `node#...`).
pub async fn release_node(
    client: &impl deadpool_postgres::GenericClient,
    node: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE mailboxes SET lease_until = NULL
             WHERE starts_with(lease_owner, $1 || '#')",
            &[&node],
        )
        .await
}
