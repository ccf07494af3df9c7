//! EHLO/HELO (what the relay offers) and STARTTLS.

use super::auth;
use super::reply::push_lines;
use super::session::{Next, Session};

pub(super) fn hello(s: &mut Session, host: String, extended: bool) -> Next {
    // A new greeting resets the transaction (RFC 5321 4.1.4).
    s.tx = None;
    let host: String = host.chars().take(255).collect();
    let greeting = format!("{} Hello {}", s.shared.hostname, host);
    s.helo = Some(host);
    if !extended {
        s.reply(250, "", &greeting);
        return Next::Continue;
    }
    let mut lines = vec![
        greeting,
        "PIPELINING".to_string(),
        format!("SIZE {}", s.ctx().settings.relay.max_message_size),
        "8BITMIME".to_string(),
        "SMTPUTF8".to_string(),
        "ENHANCEDSTATUSCODES".to_string(),
        "CHUNKING".to_string(),
    ];
    if !s.tls {
        lines.push("STARTTLS".to_string());
    }
    // AUTH is offered only where it may be used, so clients do not send passwords in clear.
    if auth::allowed(s) {
        lines.push("AUTH PLAIN LOGIN".to_string());
    }
    lines.push("HELP".to_string());
    push_lines(&mut s.out, 250, &lines);
    Next::Continue
}

/// `input_drained`: no byte followed STARTTLS in the same read. Bytes that did are a command
/// injection attempt (CVE-2011-0411 style): they would be executed as if sent over TLS.
pub(super) fn starttls(s: &mut Session, input_drained: bool) -> Next {
    if s.tls {
        s.reply(503, "5.5.1", "TLS already active");
        return Next::Continue;
    }
    if !input_drained {
        s.reply(
            554,
            "5.5.1",
            "Commands pipelined after STARTTLS are not allowed",
        );
        return Next::Close;
    }
    s.reply(220, "2.0.0", "Ready to start TLS");
    Next::StartTls
}
