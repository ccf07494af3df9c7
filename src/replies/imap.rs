//! An IMAP session on one mailbox (async-imap): connect with TLS, STARTTLS or plain, log in,
//! select the folder, fetch the headers of messages past a UID, and wait for news (IDLE where
//! the server has it).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::mailbox::{Mailbox, Security};
use super::ReplyError;

/// A byte stream an IMAP session runs over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// How long connecting, logging in and each command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Most messages fetched in one command.
const FETCH_BATCH: u32 = 200;

fn tls_connector() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .expect("ring supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls(stream: Box<dyn Io>, host: &str) -> Result<Box<dyn Io>, ReplyError> {
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| ReplyError::Imap(format!("`{host}` is not a valid TLS server name")))?;
    let stream = tls_connector()
        .connect(name, stream)
        .await
        .map_err(|e| ReplyError::Imap(format!("TLS with {host}: {e}")))?;
    Ok(Box::new(stream))
}

fn imap(e: impl std::fmt::Display) -> ReplyError {
    ReplyError::Imap(e.to_string())
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, ReplyError>>,
) -> Result<T, ReplyError> {
    tokio::time::timeout(COMMAND_TIMEOUT, f)
        .await
        .map_err(|_| ReplyError::Imap(format!("{what}: no answer within {COMMAND_TIMEOUT:?}")))?
}

/// A logged-in session with the folder selected.
pub struct Connection {
    session: Session,
    pub uidvalidity: u32,
    pub idle: bool,
}

/// One message's header past the checkpoint.
pub struct Found {
    pub uid: u32,
    pub header: Vec<u8>,
    pub internal_date: Option<chrono::DateTime<chrono::Utc>>,
}

impl Connection {
    pub async fn open(m: &Mailbox, password: &str) -> Result<Connection, ReplyError> {
        timed("connect and log in", async {
            let tcp = TcpStream::connect((m.host.as_str(), m.port))
                .await
                .map_err(|e| ReplyError::Imap(format!("connect to {}:{}: {e}", m.host, m.port)))?;
            let stream: Box<dyn Io> = match m.security {
                Security::Tls => tls(Box::new(tcp), &m.host).await?,
                Security::None => Box::new(tcp),
                Security::Starttls => {
                    let mut client = async_imap::Client::new(Box::new(tcp) as Box<dyn Io>);
                    client.read_response().await.map_err(imap)?;
                    client
                        .run_command_and_check_ok("STARTTLS", None)
                        .await
                        .map_err(imap)?;
                    let inner = client.into_inner();
                    // The greeting was read on the plain connection; none follows STARTTLS.
                    let stream = tls(inner, &m.host).await?;
                    return login(async_imap::Client::new(stream), m, password).await;
                }
            };
            let mut client = async_imap::Client::new(stream);
            client.read_response().await.map_err(imap)?;
            login(client, m, password).await
        })
        .await
    }

    /// The headers of messages with a UID above `after`, oldest first, at most a batch.
    pub async fn fetch_after(&mut self, after: u32) -> Result<Vec<Found>, ReplyError> {
        let range = format!("{}:*", after.saturating_add(1));
        timed("fetch", async {
            let mut stream = self
                .session
                .uid_fetch(&range, "(UID INTERNALDATE BODY.PEEK[HEADER])")
                .await
                .map_err(imap)?;
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                let f = item.map_err(imap)?;
                // `n:*` also names the last message when its UID is below n.
                let Some(uid) = f.uid.filter(|u| *u > after) else {
                    continue;
                };
                out.push(Found {
                    uid,
                    header: f.header().map(<[u8]>::to_vec).unwrap_or_default(),
                    internal_date: f.internal_date().map(|d| d.with_timezone(&chrono::Utc)),
                });
            }
            out.sort_by_key(|f| f.uid);
            out.truncate(FETCH_BATCH as usize);
            Ok(out)
        })
        .await
    }

    /// Waits until the server reports news (IDLE) or `most` has passed (IDLE's own limit, or
    /// the poll interval of a server without IDLE), or `stop` fires.
    pub async fn wait(
        self,
        most: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Connection, ReplyError> {
        let Connection {
            session,
            uidvalidity,
            idle,
        } = self;
        if !idle {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(most) => {}
            }
            return Ok(Connection {
                session,
                uidvalidity,
                idle,
            });
        }
        let mut handle = session.idle();
        timed("IDLE", async { handle.init().await.map_err(imap) }).await?;
        {
            let (news, interrupt) = handle.wait_with_timeout(most);
            tokio::select! {
                r = news => { r.map_err(imap)?; }
                _ = stop.cancelled() => {}
            }
            drop(interrupt);
        }
        let session = timed("DONE", async { handle.done().await.map_err(imap) }).await?;
        Ok(Connection {
            session,
            uidvalidity,
            idle,
        })
    }

    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.session.logout()).await;
    }
}

async fn login(
    client: async_imap::Client<Box<dyn Io>>,
    m: &Mailbox,
    password: &str,
) -> Result<Connection, ReplyError> {
    let mut session = client
        .login(&m.username, password)
        // The server's text, never the password.
        .await
        .map_err(|(e, _)| ReplyError::Imap(format!("login as {}: {e}", m.username)))?;
    let idle = session.capabilities().await.map_err(imap)?.has_str("IDLE");
    let selected = session.select(&m.folder).await.map_err(imap)?;
    let uidvalidity = selected
        .uid_validity
        .ok_or_else(|| ReplyError::Imap("the server gives no UIDVALIDITY".into()))?;
    Ok(Connection {
        session,
        uidvalidity,
        idle,
    })
}
