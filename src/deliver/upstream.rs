//! Where copies go: an upstream SMTP server through lettre's pooled async transport, or the
//! capture sink (the body is already in PostgreSQL: delivering is marking it delivered).

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::DeliverError;
use crate::config::Settings;

/// How one attempt ended, before the retry schedule is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// 4xx, refused connection, timeout: try again later.
    Transient(String),
    /// 5xx or an unusable envelope: never retried.
    Permanent(String),
}

/// Where a copy went: the label set of `delivery_latency_seconds{via}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Upstream,
    Capture,
}

impl Via {
    pub const ALL: [Via; 2] = [Via::Upstream, Via::Capture];

    pub fn label(self) -> &'static str {
        match self {
            Via::Upstream => "upstream",
            Via::Capture => "capture",
        }
    }
}

pub enum Transport {
    /// The transport and the longest wait for one command (UPSTREAM_TIMEOUT).
    Smtp(AsyncSmtpTransport<Tokio1Executor>, Duration),
    Capture,
}

impl Transport {
    pub fn from_settings(settings: &Settings) -> Result<Self, DeliverError> {
        let Some(url) = &settings.deliver.upstream_url else {
            return Ok(Transport::Capture);
        };
        let url = with_tls_mode(url);
        let workers = u32::try_from(settings.deliver.workers.max(1)).unwrap_or(u32::MAX);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|e| DeliverError::Upstream(e.to_string()))?
            .timeout(Some(settings.deliver.upstream_timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(workers)
                    .idle_timeout(Duration::from_secs(30)),
            )
            .build();
        Ok(Transport::Smtp(
            transport,
            settings.deliver.upstream_timeout,
        ))
    }

    pub fn via(&self) -> &'static str {
        match self {
            Transport::Smtp(..) => Via::Upstream.label(),
            Transport::Capture => Via::Capture.label(),
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Transport::Smtp(..) => "smtp",
            Transport::Capture => "capture sink",
        }
    }

    /// Sends `body`, its line ends normalised (`rewrite::crlf`): MAIL FROM `from` (empty: the
    /// null sender), RCPT TO `to`.
    pub async fn send(&self, from: &str, to: &str, body: &[u8]) -> Attempt {
        let (transport, command_timeout) = match self {
            Transport::Capture => return Attempt::Delivered,
            Transport::Smtp(t, timeout) => (t, *timeout),
        };
        let from = if from.is_empty() {
            None
        } else {
            match from.parse() {
                Ok(a) => Some(a),
                Err(e) => return Attempt::Permanent(format!("bad sender address: {e}")),
            }
        };
        let to = match to.parse() {
            Ok(a) => a,
            Err(e) => return Attempt::Permanent(format!("bad recipient address: {e}")),
        };
        let envelope = match Envelope::new(from, vec![to]) {
            Ok(e) => e,
            Err(e) => return Attempt::Permanent(format!("bad envelope: {e}")),
        };
        // Copies are normalised before they are queued; a copy queued by an older version may
        // still hold a bare CR or LF, which lettre's dot-stuffing (after CRLF only) would let
        // end the upstream's DATA early (SMTP smuggling).
        let body = crate::rewrite::crlf::normalise(body);
        // lettre always ends DATA with CRLF "." CRLF: the copy's own final line end is that CRLF.
        let body = body.strip_suffix(b"\r\n").unwrap_or(&body);
        // Bounded as a whole too: a peer that trickles replies must not hold the lease forever.
        let sent =
            tokio::time::timeout(command_timeout * 3, transport.send_raw(&envelope, body)).await;
        match sent {
            Ok(Ok(_)) => Attempt::Delivered,
            Ok(Err(e)) if e.is_permanent() => Attempt::Permanent(e.to_string()),
            Ok(Err(e)) => Attempt::Transient(e.to_string()),
            Err(_) => Attempt::Transient("upstream timed out".to_string()),
        }
    }
}

/// DESIGN: `smtp://` means STARTTLS. Required when credentials are sent, opportunistic
/// otherwise (a local relay without TLS); an explicit `tls=` parameter wins.
fn with_tls_mode(url: &str) -> String {
    if url.contains("tls=none") {
        // lettre spells plain SMTP as "no tls parameter".
        return url.replace("?tls=none", "").replace("&tls=none", "");
    }
    if !url.starts_with("smtp://") || url.contains("tls=") {
        return url.to_string();
    }
    let authority = url["smtp://".len()..]
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let mode = if authority.contains('@') {
        "required"
    } else {
        "opportunistic"
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}tls={mode}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_get_starttls() {
        assert_eq!(
            with_tls_mode("smtp://u:p@mx:587"),
            "smtp://u:p@mx:587?tls=required"
        );
        assert_eq!(
            with_tls_mode("smtp://127.0.0.1:25"),
            "smtp://127.0.0.1:25?tls=opportunistic"
        );
        assert_eq!(with_tls_mode("smtps://mx"), "smtps://mx");
        assert_eq!(with_tls_mode("smtp://mx:25?tls=none"), "smtp://mx:25");
    }

    /// The scheme is case-insensitive: `SMTP://` with credentials is STARTTLS required like
    /// `smtp://`, never a plain connection that sends the password in clear text.
    #[test]
    fn a_scheme_in_capitals_gets_starttls_too() {
        use crate::config::{Settings, Sources};
        for (given, sent) in [
            ("SMTP://u:p@mx:587", "smtp://u:p@mx:587?tls=required"),
            ("Smtp://mx:25", "smtp://mx:25?tls=opportunistic"),
            ("SMTPS://u:p@mx", "smtps://u:p@mx"),
        ] {
            let s =
                Settings::from_sources(&Sources::from_pairs([("UPSTREAM_URL", given)])).unwrap();
            assert_eq!(
                with_tls_mode(s.deliver.upstream_url.as_deref().unwrap()),
                sent
            );
        }
    }
}
