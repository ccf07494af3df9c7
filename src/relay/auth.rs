//! AUTH PLAIN and AUTH LOGIN (RFC 4954) against the users table.

use base64::Engine;
use smtp_proto::request::receiver::LineReceiver;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::session::{Mode, Next, Session};
use super::METRICS;
use crate::accounts;

/// Plain-text mechanisms need TLS, except on loopback when the setting allows it.
pub(super) fn allowed(s: &Session) -> bool {
    s.tls || (s.ctx().settings.relay.allow_plain_auth_on_loopback && s.peer.ip().is_loopback())
}

pub(super) async fn start(s: &mut Session, mechanism: u64, initial: String) -> Next {
    if s.user.is_some() {
        s.reply(503, "5.5.1", "Already authenticated");
        return Next::Continue;
    }
    if s.tx.is_some() {
        s.reply(503, "5.5.1", "AUTH not allowed during a mail transaction");
        return Next::Continue;
    }
    if s.helo.is_none() {
        s.reply(503, "5.5.1", "Send EHLO first");
        return Next::Continue;
    }
    if let Some(wait) = s.shared.auth_limiter.blocked(s.peer.ip()) {
        return too_many_from_address(s, wait);
    }
    if mechanism != AUTH_PLAIN && mechanism != AUTH_LOGIN {
        s.reply(504, "5.5.4", "Unrecognized authentication type");
        return Next::Continue;
    }
    if !allowed(s) {
        s.reply(
            538,
            "5.7.11",
            "Encryption required for requested authentication mechanism",
        );
        return Next::Continue;
    }
    let initial = initial.trim();
    if mechanism == AUTH_PLAIN {
        if initial.is_empty() {
            s.reply(334, "", "");
            s.mode = Mode::AuthPlain(LineReceiver::new(()));
            return Next::Continue;
        }
        return plain_response(s, initial.as_bytes()).await;
    }
    if initial.is_empty() {
        s.reply(334, "", "VXNlcm5hbWU6");
        s.mode = Mode::AuthLogin {
            line: LineReceiver::new(()),
            username: None,
        };
        return Next::Continue;
    }
    login_response(s, initial.as_bytes(), None).await
}

/// Decodes one base64 client response; `None` after replying when it is bad or a cancel.
fn decode(s: &mut Session, response: &[u8]) -> Option<Vec<u8>> {
    let response = response.trim_ascii();
    if response == b"*" {
        s.reply(501, "5.0.0", "Authentication cancelled");
        return None;
    }
    if response == b"=" {
        return Some(Vec::new());
    }
    match base64::engine::general_purpose::STANDARD.decode(response) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            s.reply(501, "5.5.2", "Invalid base64 data");
            None
        }
    }
}

pub(super) async fn plain_response(s: &mut Session, response: &[u8]) -> Next {
    let Some(decoded) = decode(s, response) else {
        return Next::Continue;
    };
    // authzid NUL authcid NUL password
    let mut parts = decoded.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        s.reply(501, "5.5.2", "Malformed AUTH PLAIN response");
        return Next::Continue;
    };
    let (Ok(authzid), Ok(authcid), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(authcid),
        std::str::from_utf8(password),
    ) else {
        s.reply(501, "5.5.2", "Credentials are not UTF-8");
        return Next::Continue;
    };
    // Acting as another user is not offered.
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
        return failed(s);
    }
    let (user, password) = (authcid.to_string(), password.to_string());
    verify(s, &user, &password).await
}

pub(super) async fn login_response(
    s: &mut Session,
    response: &[u8],
    username: Option<String>,
) -> Next {
    let Some(decoded) = decode(s, response) else {
        return Next::Continue;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        s.reply(501, "5.5.2", "Credentials are not UTF-8");
        return Next::Continue;
    };
    match username {
        None => {
            s.reply(334, "", "UGFzc3dvcmQ6");
            s.mode = Mode::AuthLogin {
                line: LineReceiver::new(()),
                username: Some(text),
            };
            Next::Continue
        }
        Some(username) => verify(s, &username, &text).await,
    }
}

async fn verify(s: &mut Session, username: &str, password: &str) -> Next {
    let client = match s.ctx().pool.get().await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "AUTH: no database connection");
            s.reply(454, "4.7.0", "Temporary authentication failure");
            return Next::Continue;
        }
    };
    match accounts::authenticate_password(&**client, username, password).await {
        Ok(Some(user)) => {
            tracing::debug!(peer = %s.peer, user = %user.email, "SMTP AUTH succeeded");
            s.user = Some(user);
            s.reply(235, "2.7.0", "Authentication successful");
            Next::Continue
        }
        Ok(None) => failed(s),
        Err(e) => {
            tracing::warn!(error = %e, "AUTH: database error");
            s.reply(454, "4.7.0", "Temporary authentication failure");
            Next::Continue
        }
    }
}

fn failed(s: &mut Session) -> Next {
    METRICS.auth_failures_total.inc();
    s.auth_failures += 1;
    tracing::info!(peer = %s.peer, failures = s.auth_failures, "SMTP AUTH failed");
    if let Some(wait) = s.shared.auth_limiter.fail(s.peer.ip()) {
        return too_many_from_address(s, wait);
    }
    if s.auth_failures >= s.ctx().settings.relay.max_auth_failures.max(1) {
        s.reply(421, "4.7.0", "Too many failed authentication attempts");
        return Next::Close;
    }
    s.reply(535, "5.7.8", "Authentication credentials invalid");
    Next::Continue
}

/// The client's address has used up its failures for the window (AUTH_MAX_FAILURES_PER_IP).
fn too_many_from_address(s: &mut Session, wait: std::time::Duration) -> Next {
    let secs = crate::accounts::limiter::retry_after_secs(wait);
    tracing::warn!(peer = %s.peer, retry_after = secs, "SMTP AUTH refused: too many failures from this address");
    s.reply(
        421,
        "4.7.0",
        &format!("Too many failed authentication attempts from your address; try again in {secs} seconds"),
    );
    Next::Close
}
