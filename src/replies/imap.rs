//! An IMAP session on one mailbox (async-imap): connect with TLS, STARTTLS or plain, log in,
//! select the folder, fetch the headers of messages past a UID, and wait for news (IDLE where
//! the server has it).
//!
//! The connection goes through the address policy of [`crate::netguard`], plain IMAP only where
//! `MAILBOX_ALLOW_PLAINTEXT` allows it, and a failure is reported by its class: what the server
//! said goes to the log, never to `last_error`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};

use super::mailbox::{Mailbox, Security};
use super::ReplyError;
use crate::netguard::{AddressPolicy, Blocked, GuardError};

/// A byte stream an IMAP session runs over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// How long connecting, logging in and each command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Most messages fetched in one command.
const FETCH_BATCH: u32 = 200;
/// Largest message read whole (a bounce or a complaint carries the original, often cut); a
/// larger one is judged by its header alone.
pub const MAX_REPORT_BYTES: u32 = 4 * 1024 * 1024;

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

/// Why an IMAP session failed, as `GET /api/me/mailbox` shows it: a class, never the server's
/// text (which may be an internal service's banner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapFailure {
    /// The address policy refused every address of the host.
    NotAllowed(Blocked),
    /// `security: none` while `MAILBOX_ALLOW_PLAINTEXT` is off.
    PlaintextNotAllowed,
    Dns,
    ConnectRefused,
    Connect,
    /// No answer in time, at the named step.
    Timeout(&'static str),
    Tls,
    InvalidServerName,
    StarttlsRefused,
    LoginRejected,
    SelectFailed,
    NoUidValidity,
    ConnectionClosed,
    /// A `* BYE` (or anything but OK and PREAUTH) as the greeting.
    Greeting,
    /// The server's answer is not IMAP, or not the one expected.
    Protocol,
}

impl std::fmt::Display for ImapFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImapFailure::NotAllowed(class) => write!(
                f,
                "address not allowed: the host is {class} (OUTBOUND_ALLOWED_NETWORKS)"
            ),
            ImapFailure::PlaintextNotAllowed => f.write_str(
                "plain IMAP is not allowed on this server (MAILBOX_ALLOW_PLAINTEXT); use tls or starttls",
            ),
            ImapFailure::Dns => f.write_str("DNS lookup failed"),
            ImapFailure::ConnectRefused => f.write_str("connection refused"),
            ImapFailure::Connect => f.write_str("connection failed"),
            ImapFailure::Timeout(step) => {
                write!(f, "timeout: no answer to {step} within {COMMAND_TIMEOUT:?}")
            }
            ImapFailure::Tls => f.write_str("TLS handshake failed"),
            ImapFailure::InvalidServerName => f.write_str("the host is not a valid TLS server name"),
            ImapFailure::StarttlsRefused => f.write_str("the server refused STARTTLS"),
            ImapFailure::LoginRejected => f.write_str("login rejected by the server"),
            ImapFailure::SelectFailed => f.write_str("the folder cannot be selected"),
            ImapFailure::NoUidValidity => f.write_str("the server gives no UIDVALIDITY"),
            ImapFailure::ConnectionClosed => f.write_str("the server closed the connection"),
            ImapFailure::Greeting => f.write_str("the server refused the session in its greeting"),
            ImapFailure::Protocol => f.write_str("the server's answer is not valid IMAP"),
        }
    }
}

impl ImapFailure {
    /// Failures that retrying cannot mend: the mailbox waits for a new `PUT`. A rejected
    /// password is one: retried, it can lock the account or get mailtally's address banned
    /// by the provider for every user.
    pub fn permanent(self) -> bool {
        matches!(
            self,
            ImapFailure::PlaintextNotAllowed | ImapFailure::LoginRejected
        )
    }
}

impl From<GuardError> for ImapFailure {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::NotAllowed(class) => ImapFailure::NotAllowed(class),
            GuardError::Dns(_) | GuardError::DnsTimeout | GuardError::NoAddress => ImapFailure::Dns,
            GuardError::Refused => ImapFailure::ConnectRefused,
            GuardError::ConnectTimeout => ImapFailure::Timeout("connect"),
            GuardError::Connect(_) => ImapFailure::Connect,
        }
    }
}

/// A failure with what the server or the system said, for the log only.
fn fail(failure: ImapFailure, detail: impl std::fmt::Display) -> ReplyError {
    ReplyError::Imap {
        failure,
        detail: detail.to_string(),
    }
}

/// An error of async-imap at some step: its class, its text kept for the log.
fn imap(step: ImapFailure) -> impl Fn(async_imap::error::Error) -> ReplyError {
    move |e| {
        let failure = match &e {
            async_imap::error::Error::ConnectionLost => ImapFailure::ConnectionClosed,
            async_imap::error::Error::Io(io) => io_failure(io),
            async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_) => step,
            _ => ImapFailure::Protocol,
        };
        fail(failure, e)
    }
}

fn io_failure(io: &std::io::Error) -> ImapFailure {
    match io.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => ImapFailure::ConnectionClosed,
        // async-imap reports what it cannot parse as an I/O error of another kind.
        _ => ImapFailure::Protocol,
    }
}

async fn tls(stream: Box<dyn Io>, host: &str) -> Result<Box<dyn Io>, ReplyError> {
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| fail(ImapFailure::InvalidServerName, e))?;
    let stream = tls_connector()
        .connect(name, stream)
        .await
        .map_err(|e| fail(ImapFailure::Tls, e))?;
    Ok(Box::new(stream))
}

/// Reads the server's greeting: `* OK` or `* PREAUTH`, anything else is a failure.
async fn greeting(client: &mut async_imap::Client<Box<dyn Io>>) -> Result<(), ReplyError> {
    use async_imap::imap_proto::{Response, Status};
    let response = client
        .read_response()
        .await
        .map_err(|e| fail(io_failure(&e), e))?
        .ok_or_else(|| fail(ImapFailure::ConnectionClosed, "no greeting"))?;
    match response.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            ..
        } => Ok(()),
        other => Err(fail(ImapFailure::Greeting, format!("{other:?}"))),
    }
}

async fn timed<T>(
    step: &'static str,
    f: impl std::future::Future<Output = Result<T, ReplyError>>,
) -> Result<T, ReplyError> {
    tokio::time::timeout(COMMAND_TIMEOUT, f)
        .await
        .map_err(|_| fail(ImapFailure::Timeout(step), "no answer"))?
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
    /// Connects to an address `policy` allows, with the mailbox's security; `security: none`
    /// only when `allow_plaintext`.
    pub async fn open(
        m: &Mailbox,
        password: &str,
        policy: &AddressPolicy,
        allow_plaintext: bool,
    ) -> Result<Connection, ReplyError> {
        if m.security == Security::None && !allow_plaintext {
            return Err(fail(ImapFailure::PlaintextNotAllowed, "security none"));
        }
        timed("connect and log in", async {
            let tcp = policy
                .connect(&m.host, m.port, COMMAND_TIMEOUT)
                .await
                .map_err(|e| {
                    let detail = format!("{e:?}");
                    fail(e.into(), detail)
                })?;
            let stream: Box<dyn Io> = match m.security {
                Security::Tls => tls(Box::new(tcp), &m.host).await?,
                Security::None => Box::new(tcp),
                Security::Starttls => {
                    let mut client = async_imap::Client::new(Box::new(tcp) as Box<dyn Io>);
                    greeting(&mut client).await?;
                    client
                        .run_command_and_check_ok("STARTTLS", None)
                        .await
                        .map_err(imap(ImapFailure::StarttlsRefused))?;
                    let inner = client.into_inner();
                    // The greeting was read on the plain connection; none follows STARTTLS.
                    let stream = tls(inner, &m.host).await?;
                    return login(async_imap::Client::new(stream), m, password).await;
                }
            };
            let mut client = async_imap::Client::new(stream);
            greeting(&mut client).await?;
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
                .map_err(imap(ImapFailure::Protocol))?;
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                let f = item.map_err(imap(ImapFailure::Protocol))?;
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

    /// The whole message `uid` when it is at most [`MAX_REPORT_BYTES`], else `None`.
    pub async fn fetch_message(&mut self, uid: u32) -> Result<Option<Vec<u8>>, ReplyError> {
        let set = uid.to_string();
        timed("fetch", async {
            let size = {
                let mut stream = self
                    .session
                    .uid_fetch(&set, "(UID RFC822.SIZE)")
                    .await
                    .map_err(imap(ImapFailure::Protocol))?;
                let mut size = None;
                while let Some(item) = stream.next().await {
                    let f = item.map_err(imap(ImapFailure::Protocol))?;
                    if f.uid == Some(uid) {
                        size = f.size;
                    }
                }
                size
            };
            if size.is_none_or(|n| n > MAX_REPORT_BYTES) {
                return Ok(None);
            }
            let mut stream = self
                .session
                .uid_fetch(&set, "(UID BODY.PEEK[])")
                .await
                .map_err(imap(ImapFailure::Protocol))?;
            let mut body = None;
            while let Some(item) = stream.next().await {
                let f = item.map_err(imap(ImapFailure::Protocol))?;
                if f.uid == Some(uid) {
                    body = f.body().map(<[u8]>::to_vec);
                }
            }
            Ok(body)
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
        timed("IDLE", async {
            handle.init().await.map_err(imap(ImapFailure::Protocol))
        })
        .await?;
        {
            let (news, interrupt) = handle.wait_with_timeout(most);
            tokio::select! {
                r = news => { r.map_err(imap(ImapFailure::Protocol))?; }
                _ = stop.cancelled() => {}
            }
            drop(interrupt);
        }
        let session = timed("DONE", async {
            handle.done().await.map_err(imap(ImapFailure::Protocol))
        })
        .await?;
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
        .await
        // The server's text goes to the log, never the password.
        .map_err(|(e, _)| imap(ImapFailure::LoginRejected)(e))?;
    let idle = session
        .capabilities()
        .await
        .map_err(imap(ImapFailure::Protocol))?
        .has_str("IDLE");
    let selected = session
        .select(&m.folder)
        .await
        .map_err(imap(ImapFailure::SelectFailed))?;
    let uidvalidity = selected
        .uid_validity
        .ok_or_else(|| fail(ImapFailure::NoUidValidity, "SELECT without UIDVALIDITY"))?;
    Ok(Connection {
        session,
        uidvalidity,
        idle,
    })
}
