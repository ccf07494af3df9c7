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
    /// No TLS: only for servers on loopback or a trusted network.
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

/// What `GET /api/me/mailbox` shows: never the password.
#[derive(Debug, Serialize)]
pub struct MailboxStatus {
    pub host: String,
    pub port: i32,
    pub security: String,
    pub username: String,
    pub folder: String,
    pub last_uid: i64,
    pub last_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
}

pub struct NewMailbox<'a> {
    pub host: &'a str,
    pub port: u16,
    pub security: Security,
    pub username: &'a str,
    pub password_sealed: &'a [u8],
    pub folder: &'a str,
}

/// Sets the user's mailbox. A different account or folder starts from a fresh checkpoint and
/// is picked up by a watcher at once.
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
                 lease_until = NULL,
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
            "SELECT host, port, security, username, folder, last_uid, last_sync_at, last_error
             FROM mailboxes WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row.map(|r| MailboxStatus {
        host: r.get(0),
        port: r.get(1),
        security: r.get(2),
        username: r.get(3),
        folder: r.get(4),
        last_uid: r.get(5),
        last_sync_at: r.get(6),
        last_error: r.get(7),
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

/// Takes the mailboxes nobody watches (no lease, or an expired one) for `node`.
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
                   WHERE lease_until IS NULL OR lease_until < now()
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

/// Records how far the mailbox was read (only while `node` holds it).
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
                 last_error = $5
             WHERE user_id = $1 AND lease_owner = $2",
            &[&user_id, &node, &uidvalidity, &last_uid, &error],
        )
        .await?;
    Ok(())
}

/// Records why the mailbox cannot be read, for `GET /api/me/mailbox`.
pub async fn failed(
    client: &impl deadpool_postgres::GenericClient,
    user_id: i64,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE mailboxes SET last_error = $2, updated_at = now() WHERE user_id = $1",
            &[&user_id, &error],
        )
        .await?;
    Ok(())
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
