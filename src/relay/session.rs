//! One SMTP session: reads bytes, feeds them to the phase in progress (command, DATA, BDAT, AUTH
//! continuation), and writes the buffered replies once the input is drained (PIPELINING).

use std::net::SocketAddr;
use std::slice::Iter;
use std::sync::Arc;

use smtp_proto::request::receiver::{
    BdatReceiver, DataReceiver, DummyDataReceiver, LineReceiver, RequestReceiver,
};
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::reply::{self, push};
use super::{auth, data, ehlo, mail, rcpt, RejectReason, METRICS};
use crate::accounts::User;
use crate::base::Base;
use crate::rewrite::crlf::CrlfNormaliser;

/// What every session of one listener shares.
pub(crate) struct Shared {
    pub hostname: String,
    pub tls: TlsAcceptor,
    pub ctx: Base,
    /// How accepted messages are rewritten and signed.
    pub rewriter: crate::rewrite::Rewriter,
    /// Failed AUTH attempts per client IP, across sessions.
    pub auth_limiter: crate::accounts::limiter::FailureLimiter,
    /// Where accepted messages are committed, in groups.
    pub enqueuer: crate::queue::GroupCommit,
}

/// Unrecognised or malformed commands tolerated before the session is closed.
const MAX_BAD_COMMANDS: u32 = 20;

/// The phase that the next input bytes belong to.
pub(crate) enum Mode {
    Command,
    Data(DataReceiver),
    Bdat(BdatReceiver),
    /// The chunk of a refused BDAT: read and thrown away (RFC 3030 requires reading it).
    BdatDiscard(DummyDataReceiver),
    AuthPlain(LineReceiver<()>),
    AuthLogin {
        line: LineReceiver<()>,
        username: Option<String>,
    },
}

/// A mail transaction: from MAIL FROM until the end of DATA, RSET or a new EHLO.
pub(crate) struct Transaction {
    pub envelope_from: String,
    pub sender: User,
    pub recipients: Vec<String>,
    /// Recipients on the sender's suppression list, accepted to be recorded and not sent.
    pub suppressed: Vec<String>,
    /// The message as received, its line ends normalised (no bare CR or LF: SMTP smuggling).
    pub body: Vec<u8>,
    /// What the DATA or BDAT receiver wrote and the normaliser has not taken yet: a trailing CR
    /// stays here, since the end of DATA takes it back.
    pub raw: Vec<u8>,
    pub normaliser: CrlfNormaliser,
    /// Message bytes received (dot-stuffing removed, before normalising): what SIZE counts.
    pub received: usize,
    /// Which bound the message went past; what follows is read and dropped, then 552.
    pub oversized: Option<Oversize>,
    pub bdat_started: bool,
}

/// The bound a message went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Oversize {
    /// MAX_MESSAGE_SIZE.
    Message,
    /// SUBMISSION_MAX_BYTES: its size times its recipients.
    Submission,
}

impl Transaction {
    pub fn new(envelope_from: String, sender: User) -> Transaction {
        Transaction {
            envelope_from,
            sender,
            recipients: Vec::new(),
            suppressed: Vec::new(),
            body: Vec::new(),
            raw: Vec::new(),
            normaliser: CrlfNormaliser::new(),
            received: 0,
            oversized: None,
            bdat_started: false,
        }
    }

    /// Takes what the receiver wrote into `raw`: counts it, normalises it into `body`, and
    /// drops the body once it is over a bound. `done`: the receiver has seen the end.
    pub fn take_in(&mut self, done: bool, max_size: usize, max_total: u64) {
        let keep = usize::from(!done && self.raw.last() == Some(&b'\r'));
        let split = self.raw.len() - keep;
        self.received += split;
        if self.oversized.is_none() {
            self.normaliser.push(&self.raw[..split], &mut self.body);
            if done {
                self.normaliser.finish(&mut self.body);
            }
        }
        self.raw.drain(..split);
        let total = (self.received as u64).saturating_mul(self.recipients.len() as u64);
        let over = if self.received > max_size {
            Some(Oversize::Message)
        } else if max_total > 0 && total > max_total {
            Some(Oversize::Submission)
        } else {
            None
        };
        if self.oversized.is_none() && over.is_some() {
            self.oversized = over;
            self.body = Vec::new();
        }
    }
}

/// What the session does after a step.
pub(crate) enum Next {
    Continue,
    Close,
    StartTls,
}

pub(crate) struct Session {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    pub tls: bool,
    pub helo: Option<String>,
    pub user: Option<User>,
    pub auth_failures: u32,
    pub bad_commands: u32,
    pub tx: Option<Transaction>,
    /// Replies not yet written.
    pub out: Vec<u8>,
    pub mode: Mode,
    requests: RequestReceiver,
    /// The last sender looked up for a trusted network, reused for its next messages.
    pub trusted_sender: Option<User>,
}

/// Serves one connection until QUIT, an error, a timeout or shutdown.
pub(crate) async fn run(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let mut session = Session {
        shared: shared.clone(),
        peer,
        tls: false,
        helo: None,
        user: None,
        auth_failures: 0,
        bad_commands: 0,
        tx: None,
        out: Vec::with_capacity(512),
        mode: Mode::Command,
        requests: RequestReceiver::default(),
        trusted_sender: None,
    };
    if shared.ctx.shutdown.is_cancelled() {
        let (code, enhanced, text) = reply::SHUTDOWN;
        push(&mut session.out, code, enhanced, text);
        let _ = stream.write_all(&session.out).await;
        return;
    }
    let greeting = format!("{} ESMTP mailtally", shared.hostname);
    push(&mut session.out, 220, "", &greeting);
    match session.drive(&mut stream).await {
        Ok(Next::StartTls) => {
            let idle = shared.ctx.settings.relay.idle_timeout;
            let handshake = tokio::time::timeout(idle, shared.tls.accept(stream)).await;
            match handshake {
                Ok(Ok(mut tls_stream)) => {
                    session.after_starttls();
                    if let Err(e) = session.drive(&mut tls_stream).await {
                        tracing::debug!(%peer, error = %e, "SMTP session ended");
                    }
                    let _ = tls_stream.shutdown().await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(%peer, error = %e, "SMTP session ended"),
    }
}

impl Session {
    pub fn ctx(&self) -> &Base {
        &self.shared.ctx
    }

    pub fn enqueuer(&self) -> &crate::queue::GroupCommit {
        &self.shared.enqueuer
    }

    pub fn rewriter(&self) -> &crate::rewrite::Rewriter {
        &self.shared.rewriter
    }

    pub fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        push(&mut self.out, code, enhanced, text);
    }

    /// RFC 3207: everything learnt before the handshake is forgotten.
    fn after_starttls(&mut self) {
        self.tls = true;
        self.helo = None;
        self.user = None;
        self.tx = None;
        self.mode = Mode::Command;
        self.requests = RequestReceiver::default();
    }

    /// Reads and answers until the session ends or asks for TLS.
    async fn drive<S>(&mut self, stream: &mut S) -> std::io::Result<Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let idle = self.ctx().settings.relay.idle_timeout;
        let shutdown = self.ctx().shutdown.clone();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            if !self.out.is_empty() {
                stream.write_all(&self.out).await?;
                stream.flush().await?;
                self.out.clear();
            }
            let waiting_for_command = matches!(self.mode, Mode::Command);
            let read = tokio::select! {
                read = tokio::time::timeout(idle, stream.read(&mut buf)) => read,
                // Only between commands: a DATA in progress is let finish.
                _ = shutdown.cancelled(), if waiting_for_command => {
                    if self.tx.is_some() {
                        RejectReason::Shutdown.count();
                    }
                    let (code, enhanced, text) = reply::SHUTDOWN;
                    self.reply(code, enhanced, text);
                    stream.write_all(&self.out).await?;
                    return Ok(Next::Close);
                }
            };
            let n = match read {
                Ok(n) => n?,
                Err(_) => {
                    self.reply(421, "4.4.2", "Idle timeout, closing connection");
                    stream.write_all(&self.out).await?;
                    return Ok(Next::Close);
                }
            };
            if n == 0 {
                return Ok(Next::Close);
            }
            let mut bytes = buf[..n].iter();
            while !bytes.as_slice().is_empty() {
                match self.step(&mut bytes).await {
                    Next::Continue => {}
                    Next::Close => {
                        stream.write_all(&self.out).await?;
                        stream.flush().await?;
                        return Ok(Next::Close);
                    }
                    Next::StartTls => {
                        stream.write_all(&self.out).await?;
                        stream.flush().await?;
                        self.out.clear();
                        return Ok(Next::StartTls);
                    }
                }
            }
        }
    }

    /// Feeds input to the phase in progress.
    async fn step(&mut self, bytes: &mut Iter<'_, u8>) -> Next {
        let max_size = self.ctx().settings.relay.max_message_size;
        let max_total = self.ctx().settings.queue.submission_max_bytes;
        match &mut self.mode {
            Mode::Command => self.command(bytes).await,
            Mode::Data(receiver) => {
                let Some(tx) = self.tx.as_mut() else {
                    self.mode = Mode::Command;
                    return Next::Continue;
                };
                let before = bytes.len();
                let done = receiver.ingest(bytes, &mut tx.raw);
                METRICS
                    .received_bytes_total
                    .inc_by((before - bytes.len()) as u64);
                tx.take_in(done, max_size, max_total);
                if done {
                    self.mode = Mode::Command;
                    return data::finish(self).await;
                }
                Next::Continue
            }
            Mode::Bdat(receiver) => {
                let Some(tx) = self.tx.as_mut() else {
                    self.mode = Mode::Command;
                    return Next::Continue;
                };
                let before = bytes.len();
                let done = receiver.ingest(bytes, &mut tx.raw);
                METRICS
                    .received_bytes_total
                    .inc_by((before - bytes.len()) as u64);
                // A CR ending one chunk may meet its LF in the next: only the last chunk ends
                // the message.
                tx.take_in(done && receiver.is_last, max_size, max_total);
                if done {
                    let last = receiver.is_last;
                    self.mode = Mode::Command;
                    return data::chunk_received(self, last).await;
                }
                Next::Continue
            }
            Mode::BdatDiscard(receiver) => {
                if receiver.ingest(bytes) {
                    self.mode = Mode::Command;
                }
                Next::Continue
            }
            Mode::AuthPlain(line) => {
                if !line.ingest(bytes) {
                    return Next::Continue;
                }
                let response = std::mem::take(&mut line.buf);
                self.mode = Mode::Command;
                auth::plain_response(self, &response).await
            }
            Mode::AuthLogin { line, username } => {
                if !line.ingest(bytes) {
                    return Next::Continue;
                }
                let response = std::mem::take(&mut line.buf);
                let username = username.take();
                self.mode = Mode::Command;
                auth::login_response(self, &response, username).await
            }
        }
    }

    async fn command(&mut self, bytes: &mut Iter<'_, u8>) -> Next {
        let request = match self.requests.ingest(bytes) {
            Ok(request) => request.into_owned(),
            Err(ProtoError::NeedsMoreData { .. }) => {
                // The partial line is kept by the receiver until its end arrives.
                *bytes = [].iter();
                return Next::Continue;
            }
            Err(e) => return self.bad_command(e),
        };
        if self.ctx().shutdown.is_cancelled() {
            if self.tx.is_some() {
                RejectReason::Shutdown.count();
            }
            let (code, enhanced, text) = reply::SHUTDOWN;
            self.reply(code, enhanced, text);
            return Next::Close;
        }
        match request {
            Request::Ehlo { host } => ehlo::hello(self, host, true),
            Request::Helo { host } => ehlo::hello(self, host, false),
            Request::StartTls => ehlo::starttls(self, bytes.as_slice().is_empty()),
            Request::Auth {
                mechanism,
                initial_response,
            } => auth::start(self, mechanism, initial_response).await,
            Request::Mail { from } => mail::mail_from(self, from).await,
            Request::Rcpt { to } => rcpt::rcpt_to(self, to).await,
            Request::Data => data::data(self),
            Request::Bdat {
                chunk_size,
                is_last,
            } => data::bdat(self, chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                self.reply(250, "2.0.0", "Ok");
                Next::Continue
            }
            Request::Noop { .. } => {
                self.reply(250, "2.0.0", "Ok");
                Next::Continue
            }
            Request::Quit => {
                self.reply(221, "2.0.0", "Bye");
                Next::Close
            }
            Request::Help { .. } => {
                self.reply(
                    214,
                    "2.0.0",
                    "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY",
                );
                Next::Continue
            }
            Request::Vrfy { .. } => {
                self.reply(
                    252,
                    "2.5.2",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                Next::Continue
            }
            Request::Expn { .. } => {
                self.reply(502, "5.5.1", "EXPN not supported");
                Next::Continue
            }
            Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.reply(502, "5.5.1", "Command not implemented");
                Next::Continue
            }
        }
    }

    fn bad_command(&mut self, error: ProtoError) -> Next {
        match error {
            ProtoError::UnknownCommand => self.reply(500, "5.5.2", "Command unrecognized"),
            ProtoError::InvalidSenderAddress => {
                self.reply(501, "5.1.7", "Bad sender address syntax")
            }
            ProtoError::InvalidRecipientAddress => {
                self.reply(501, "5.1.3", "Bad recipient address syntax")
            }
            ProtoError::SyntaxError { syntax } => {
                self.reply(501, "5.5.4", &format!("Syntax: {syntax}"))
            }
            ProtoError::InvalidParameter { param } => {
                self.reply(501, "5.5.4", &format!("Invalid parameter {param}"))
            }
            ProtoError::UnsupportedParameter { param } => {
                let param: String = param.chars().take(64).collect();
                self.reply(555, "5.5.4", &format!("Unsupported parameter {param}"))
            }
            ProtoError::ResponseTooLong => self.reply(500, "5.5.6", "Line too long"),
            ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                self.reply(500, "5.5.2", "Command unrecognized")
            }
        }
        self.bad_commands += 1;
        if self.bad_commands >= MAX_BAD_COMMANDS {
            self.reply(421, "4.7.0", "Too many errors, closing connection");
            return Next::Close;
        }
        Next::Continue
    }

    /// Whether this peer may submit without AUTH (SUBMIT_TRUSTED_NETWORKS).
    pub fn peer_is_trusted(&self) -> bool {
        let ip = self.peer.ip();
        self.ctx()
            .settings
            .relay
            .trusted_networks
            .iter()
            .any(|net| net.contains(ip))
    }

    /// Whether the peer may start a mail transaction at all.
    pub fn may_submit(&self) -> bool {
        self.user.is_some() || self.peer_is_trusted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Role;

    fn transaction() -> Transaction {
        let user = User {
            id: 1,
            email: "ann@example.com".into(),
            team_id: None,
            role: Role::Member,
            default_visibility: "team".into(),
        };
        let mut tx = Transaction::new("ann@example.com".into(), user);
        tx.recipients.push("bob@example.net".into());
        tx
    }

    /// DATA as the session feeds it, the input cut into pieces of `piece` bytes.
    fn receive(input: &[u8], piece: usize) -> Transaction {
        let mut tx = transaction();
        let mut receiver = DataReceiver::new();
        for chunk in input.chunks(piece) {
            let mut bytes = chunk.iter();
            let done = receiver.ingest(&mut bytes, &mut tx.raw);
            tx.take_in(done, 1 << 20, 0);
            if done {
                assert!(bytes.as_slice().is_empty(), "nothing after the end here");
                return tx;
            }
        }
        panic!("no end of DATA in {:?}", String::from_utf8_lossy(input));
    }

    #[test]
    fn data_is_normalised_whatever_the_pieces() {
        let input = b"a\n.\r\nMAIL FROM:<x@y>\r\r.\r..\r\nb\r\n.\r\n";
        let want = b"a\r\n.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\n..\r\nb\r\n";
        for piece in 1..=input.len() {
            let tx = receive(input, piece);
            assert_eq!(
                String::from_utf8_lossy(&tx.body),
                String::from_utf8_lossy(want),
                "pieces of {piece}"
            );
            assert_eq!(tx.received, 31, "pieces of {piece}");
        }
    }

    #[test]
    fn size_times_recipients_over_the_bound_drops_the_body() {
        let mut tx = transaction();
        tx.recipients.push("carl@example.net".into());
        tx.raw.extend_from_slice(&[b'x'; 600]);
        tx.take_in(false, 1000, 1000);
        assert_eq!(tx.oversized, Some(Oversize::Submission));
        assert!(tx.body.is_empty());
        let mut tx = transaction();
        tx.raw.extend_from_slice(&[b'x'; 1001]);
        tx.take_in(false, 1000, 0);
        assert_eq!(tx.oversized, Some(Oversize::Message));
    }
}
