//! DATA and BDAT: receiving the message, then handing it to the rewrite stage and the queue.
//! "250" is answered only after the queue's transaction has committed.

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use uuid::Uuid;

use super::session::{Mode, Next, Session};
use super::{RejectReason, METRICS};
use crate::queue::{self, NewCopy, NewMessage};

pub(super) fn data(s: &mut Session) -> Next {
    if !s.may_submit() {
        RejectReason::Auth.count();
        s.reply(530, "5.7.0", "Authentication required");
        return Next::Continue;
    }
    let Some(tx) = s.tx.as_ref() else {
        s.reply(503, "5.5.1", "Need MAIL and RCPT before DATA");
        return Next::Continue;
    };
    if tx.recipients.is_empty() {
        s.reply(554, "5.5.1", "No valid recipients");
        return Next::Continue;
    }
    if tx.bdat_started {
        s.reply(503, "5.5.1", "DATA not allowed after BDAT");
        return Next::Continue;
    }
    s.reply(354, "", "End data with <CR><LF>.<CR><LF>");
    s.mode = Mode::Data(DataReceiver::new());
    Next::Continue
}

pub(super) async fn bdat(s: &mut Session, chunk_size: usize, is_last: bool) -> Next {
    let refusal = if !s.may_submit() {
        RejectReason::Auth.count();
        Some((530, "5.7.0", "Authentication required"))
    } else {
        match s.tx.as_ref() {
            None => Some((503, "5.5.1", "Need MAIL and RCPT before BDAT")),
            Some(tx) if tx.recipients.is_empty() => Some((554, "5.5.1", "No valid recipients")),
            Some(_) => None,
        }
    };
    if let Some((code, enhanced, text)) = refusal {
        // The refusal is the next reply either way, so it may go before the chunk is read.
        s.reply(code, enhanced, text);
        if chunk_size > 0 {
            s.mode = Mode::BdatDiscard(DummyDataReceiver::new_bdat(chunk_size));
        }
        return Next::Continue;
    }
    if let Some(tx) = s.tx.as_mut() {
        tx.bdat_started = true;
    }
    if chunk_size == 0 {
        return chunk_received(s, is_last).await;
    }
    s.mode = Mode::Bdat(BdatReceiver::new(chunk_size, is_last));
    Next::Continue
}

pub(super) async fn chunk_received(s: &mut Session, is_last: bool) -> Next {
    if is_last {
        return finish(s).await;
    }
    let size = s.tx.as_ref().map(|tx| tx.body.len()).unwrap_or(0);
    s.reply(250, "2.0.0", &format!("{size} octets received"));
    Next::Continue
}

/// The end of DATA or of the last BDAT chunk: commit, then answer.
pub(super) async fn finish(s: &mut Session) -> Next {
    let Some(tx) = s.tx.take() else {
        s.reply(503, "5.5.1", "No mail transaction");
        return Next::Continue;
    };
    if tx.oversized {
        RejectReason::Size.count();
        s.reply(
            552,
            "5.3.4",
            "Message size exceeds fixed maximum message size",
        );
        return Next::Continue;
    }
    let (facts, copies) = copies_for(&tx.body, &tx.recipients);
    let visibility = facts
        .visibility
        .clone()
        .unwrap_or_else(|| tx.sender.default_visibility.clone());
    let track = facts
        .track
        .clone()
        .unwrap_or_else(|| s.ctx().settings.default_track.clone());
    let message = NewMessage {
        id: Uuid::now_v7(),
        sender_id: tx.sender.id,
        team_id: tx.sender.team_id,
        visibility,
        track,
        envelope_from: tx.envelope_from,
        size_bytes: tx.body.len(),
        facts,
        copies: copies
            .into_iter()
            .map(|(id, recipient, body)| NewCopy {
                id,
                recipient,
                body,
            })
            .collect(),
    };
    match queue::enqueue(&s.ctx().pool, &message).await {
        Ok(()) => {
            METRICS.messages_accepted_total.inc();
            s.reply(250, "2.0.0", &format!("Ok: queued as {}", message.id));
        }
        Err(e) => {
            RejectReason::Database.count();
            tracing::error!(error = %e, "cannot queue a message");
            s.reply(
                451,
                "4.3.0",
                "Temporary failure storing the message, try again later",
            );
        }
    }
    Next::Continue
}

/// What the relay learns of a message from its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFacts {
    /// X-Mailtally-Template, else derived from the normalised subject.
    pub template_key: String,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// X-Mailtally-Track when valid.
    pub track: Option<String>,
    /// X-Mailtally-Visibility when valid.
    pub visibility: Option<String>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
}

/// The hand-off to the rewrite stage: one copy per recipient with its id and bytes.
///
/// For now the identity: each copy is the message as received, minus the `X-Mailtally-*`
/// header fields (they never leave the relay). To be replaced by `rewrite::prepare` and
/// `Prepared::render`.
pub fn copies_for(
    raw: &[u8],
    recipients: &[String],
) -> (MessageFacts, Vec<(Uuid, String, Vec<u8>)>) {
    let fields = header_fields(raw);
    let mut facts = MessageFacts::default();
    let mut stripped = Vec::with_capacity(raw.len());
    let mut kept_from = 0;
    for field in &fields {
        let name = &raw[field.start..field.name_end];
        let value = || unfold(&raw[field.name_end + 1..field.end]);
        let name_lower = name.trim_ascii().to_ascii_lowercase();
        match name_lower.as_slice() {
            b"subject" => facts.subject = Some(value()),
            b"message-id" => facts.message_id = Some(value()),
            _ => {}
        }
        if let Some(control) = name_lower.strip_prefix(b"x-mailtally-") {
            let v = value();
            let v = (!v.is_empty()).then_some(v);
            match control {
                b"template" => facts.template_key = v.unwrap_or_default(),
                b"track" => facts.track = v.and_then(|v| valid_track(&v)),
                b"visibility" => {
                    facts.visibility = v
                        .map(|v| v.to_ascii_lowercase())
                        .filter(|v| matches!(v.as_str(), "private" | "team" | "shared"))
                }
                b"deal" => facts.deal = v,
                b"lead" => facts.lead = v,
                b"project" => facts.project = v,
                _ => {}
            }
            stripped.extend_from_slice(&raw[kept_from..field.start]);
            kept_from = field.end;
        }
    }
    stripped.extend_from_slice(&raw[kept_from..]);
    if let Some(subject) = &facts.subject {
        // RFC 2047 encoded words are decoded for display and for the template key.
        if subject.contains("=?") {
            if let Some(decoded) = mail_parser::MessageParser::new()
                .parse_headers(raw)
                .and_then(|m| m.subject().map(str::to_string))
            {
                facts.subject = Some(decoded);
            }
        }
    }
    facts.template_key = facts.template_key.chars().take(200).collect();
    if facts.template_key.is_empty() {
        facts.template_key = template_key_from_subject(facts.subject.as_deref());
    }
    let copies = recipients
        .iter()
        .map(|r| (Uuid::now_v7(), r.clone(), stripped.clone()))
        .collect();
    (facts, copies)
}

/// One header field: `start..end` covers the name, the value, its folded lines and line end.
struct HeaderField {
    start: usize,
    name_end: usize,
    end: usize,
}

/// The fields of the header section (up to the first empty line).
fn header_fields(raw: &[u8]) -> Vec<HeaderField> {
    let mut fields: Vec<HeaderField> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let line_end = raw[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(raw.len());
        let line = &raw[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match fields.last_mut() {
            Some(field) if continuation => field.end = line_end,
            _ => match line.iter().position(|b| *b == b':') {
                Some(colon) => fields.push(HeaderField {
                    start: pos,
                    name_end: pos + colon,
                    end: line_end,
                }),
                // Not a header line: the body began without an empty line.
                None => break,
            },
        }
        pos = line_end;
    }
    fields
}

fn unfold(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn valid_track(value: &str) -> Option<String> {
    let mut parts: Vec<String> = value
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    parts.sort();
    parts.dedup();
    match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["clicks", "opens"] => Some("opens,clicks".into()),
        ["opens"] => Some("opens".into()),
        ["clicks"] => Some("clicks".into()),
        ["off"] => Some("off".into()),
        _ => None,
    }
}

/// Lower case, reply/forward prefixes removed, whitespace collapsed.
fn template_key_from_subject(subject: Option<&str>) -> String {
    let mut s = subject.unwrap_or("").trim().to_lowercase();
    loop {
        let trimmed = ["re:", "fwd:", "fw:", "aw:", "tr:"]
            .iter()
            .find_map(|p| s.strip_prefix(p).map(|rest| rest.trim_start().to_string()));
        match trimmed {
            Some(rest) => s = rest,
            None => break,
        }
    }
    let key: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    if key.is_empty() {
        "(no subject)".to_string()
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_headers_are_read_and_stripped() {
        let raw = b"From: a@example.com\r\nX-Mailtally-Template: welcome\r\nSubject: Hi\r\n there\r\nx-mailtally-visibility: Private\r\nX-Mailtally-Deal: d1\r\n\tcontinued\r\nMessage-ID: <1@x>\r\n\r\nbody\r\nX-Mailtally-Template: not a header\r\n";
        let (facts, copies) = copies_for(raw, &["b@example.com".to_string()]);
        assert_eq!(facts.template_key, "welcome");
        assert_eq!(facts.subject.as_deref(), Some("Hi there"));
        assert_eq!(facts.visibility.as_deref(), Some("private"));
        assert_eq!(facts.deal.as_deref(), Some("d1 continued"));
        assert_eq!(facts.message_id.as_deref(), Some("<1@x>"));
        assert_eq!(
            copies[0].2,
            b"From: a@example.com\r\nSubject: Hi\r\n there\r\nMessage-ID: <1@x>\r\n\r\nbody\r\nX-Mailtally-Template: not a header\r\n"
        );
    }

    #[test]
    fn template_key_falls_back_to_the_subject() {
        let (facts, copies) = copies_for(b"Subject: Re: RE:  Big   News\r\n\r\nx", &[]);
        assert_eq!(facts.template_key, "big news");
        assert!(copies.is_empty());
        let (facts, _) = copies_for(b"no headers at all", &[]);
        assert_eq!(facts.template_key, "(no subject)");
        assert_eq!(
            valid_track("clicks, opens").as_deref(),
            Some("opens,clicks")
        );
        assert_eq!(valid_track("everything"), None);
    }
}
