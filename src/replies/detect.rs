//! What a message found in a sender's mailbox is: a person's reply to a tracked copy, an
//! auto-reply, a bounce, or something else; and recording a reply as an event of that copy.

use chrono::{DateTime, Utc};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use uuid::Uuid;

/// What the headers of one mailbox message say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Names earlier messages (In-Reply-To first, then References, newest first).
    Reply {
        answers: Vec<String>,
        from: Option<String>,
        message_id: Option<String>,
        at: Option<DateTime<Utc>>,
    },
    /// Out-of-office and other automatic answers (RFC 3834 and common practice).
    AutoReply(&'static str),
    /// A delivery status notification.
    Bounce(&'static str),
    /// Not an answer to anything.
    Unrelated,
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Reply { .. } => "reply",
            Verdict::AutoReply(_) => "auto_reply",
            Verdict::Bounce(_) => "bounce",
            Verdict::Unrelated => "unrelated",
        }
    }
}

/// Message-IDs (`<...>`) in a header value, in order.
fn ids(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let id = &rest[start..start + len + 1];
        if id.len() > 2 && !id.contains(char::is_whitespace) {
            out.push(id.to_string());
        }
        rest = &rest[start + len + 1..];
    }
    out
}

/// Subject openings of automatic answers, lower case (read by `deliverability` too).
pub(crate) const AUTO_SUBJECTS: &[&str] = &[
    "auto:",
    "automatic reply",
    "autoreply",
    "auto-reply",
    "auto reply",
    "out of office",
    "out of the office",
    "abwesenheitsnotiz",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
];

const BOUNCE_SUBJECTS: &[&str] = &[
    "undelivered mail returned to sender",
    "delivery status notification (failure)",
    "mail delivery failed",
    "undeliverable:",
    "mail delivery subsystem",
    "returned mail:",
    "delivery failure",
];

/// Classifies a message by its header block (the body is not needed).
pub fn classify(header: &[u8]) -> Verdict {
    let Some(m) = MessageParser::default().parse_headers(header) else {
        return Verdict::Unrelated;
    };
    let raw = |name: &str| {
        m.header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let subject = m.subject().unwrap_or("").trim().to_lowercase();
    let from = m
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_ascii_lowercase);
    let local = from
        .as_deref()
        .and_then(|f| f.split('@').next())
        .unwrap_or("");

    if m.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    }) {
        return Verdict::Bounce("multipart/report");
    }
    if matches!(local, "mailer-daemon" | "postmaster") {
        return Verdict::Bounce("from the mail system");
    }
    if raw("return-path") == "<>" && BOUNCE_SUBJECTS.iter().any(|s| subject.starts_with(s)) {
        return Verdict::Bounce("null sender");
    }
    if BOUNCE_SUBJECTS.iter().any(|s| subject.starts_with(s)) {
        return Verdict::Bounce("subject");
    }
    let auto = raw("auto-submitted");
    if !auto.is_empty() && auto != "no" {
        return Verdict::AutoReply("Auto-Submitted");
    }
    if !raw("x-autoreply").is_empty()
        || !raw("x-autorespond").is_empty()
        || !raw("x-autoresponder").is_empty()
    {
        return Verdict::AutoReply("X-Autoreply");
    }
    if matches!(
        raw("precedence").as_str(),
        "auto_reply" | "bulk" | "junk" | "list"
    ) {
        return Verdict::AutoReply("Precedence");
    }
    if AUTO_SUBJECTS.iter().any(|s| subject.starts_with(s)) {
        return Verdict::AutoReply("subject");
    }

    let text = |v: &HeaderValue| -> Vec<String> {
        match v {
            HeaderValue::Text(t) => ids(&format!("<{t}>")),
            HeaderValue::TextList(l) => l.iter().flat_map(|t| ids(&format!("<{t}>"))).collect(),
            _ => Vec::new(),
        }
    };
    let mut answers = text(m.in_reply_to());
    let mut references = text(m.references());
    references.reverse();
    for r in references {
        if !answers.contains(&r) {
            answers.push(r);
        }
    }
    if answers.is_empty() {
        return Verdict::Unrelated;
    }
    Verdict::Reply {
        answers,
        from,
        message_id: m.message_id().map(|id| format!("<{id}>")),
        at: m
            .date()
            .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0)),
    }
}

/// The event id of a reply: the same reply found twice (a second node, a rescan after a
/// UIDVALIDITY change, a restart before the checkpoint was saved) is the same event.
pub fn reply_event_id(copy: Uuid, reply_key: &str) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6d61_696c_7461_6c6c_7972_6570_6c69_6573);
    Uuid::new_v5(&NAMESPACE, format!("{copy}\n{reply_key}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_auto_replies_and_bounces() {
        let reply = b"From: Bob <Bob@Example.net>\r\nTo: ann@example.com\r\nSubject: Re: Offer\r\nMessage-ID: <r1@example.net>\r\nIn-Reply-To: <orig@example.com>\r\nReferences: <first@example.com>\r\n <orig@example.com>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n";
        match classify(reply) {
            Verdict::Reply {
                answers,
                from,
                message_id,
                at,
            } => {
                assert_eq!(answers, vec!["<orig@example.com>", "<first@example.com>"]);
                assert_eq!(from.as_deref(), Some("bob@example.net"));
                assert_eq!(message_id.as_deref(), Some("<r1@example.net>"));
                assert_eq!(at.unwrap().to_rfc3339(), "2026-11-27T10:00:00+00:00");
            }
            other => panic!("{other:?}"),
        }
        let ooo = b"From: bob@example.net\r\nSubject: Automatic reply: Offer\r\nIn-Reply-To: <orig@example.com>\r\n\r\n";
        assert_eq!(classify(ooo), Verdict::AutoReply("subject"));
        let rfc3834 = b"From: bob@example.net\r\nAuto-Submitted: auto-replied\r\nSubject: Re: Offer\r\nIn-Reply-To: <orig@example.com>\r\n\r\n";
        assert_eq!(classify(rfc3834), Verdict::AutoReply("Auto-Submitted"));
        let manual = b"From: bob@example.net\r\nAuto-Submitted: no\r\nSubject: Re: x\r\nIn-Reply-To: <orig@example.com>\r\n\r\n";
        assert!(matches!(classify(manual), Verdict::Reply { .. }));
        let dsn = b"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\nSubject: Undelivered Mail Returned to Sender\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n";
        assert!(matches!(classify(dsn), Verdict::Bounce(_)));
        let fresh = b"From: bob@example.net\r\nSubject: Hello\r\n\r\n";
        assert_eq!(classify(fresh), Verdict::Unrelated);
        assert_eq!(classify(b"\xff\xfe garbage"), Verdict::Unrelated);
    }

    #[test]
    fn event_ids_are_stable() {
        let c = Uuid::now_v7();
        assert_eq!(reply_event_id(c, "<r@x>"), reply_event_id(c, "<r@x>"));
        assert_ne!(reply_event_id(c, "<r@x>"), reply_event_id(c, "<s@x>"));
    }
}
