//! DATA and BDAT: receiving the message, then handing it to the rewrite stage and the queue.
//! "250" is answered only after the queue's transaction has committed.

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use uuid::Uuid;

use super::session::{Mode, Next, Session};
use super::{RejectReason, METRICS};
use crate::queue::{self, NewCopy, NewMessage};
use crate::rewrite::{self, RewriteSettings, TokenKeys};

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
    // The rewrite is CPU work (a few ms for a large message): off the session's thread.
    let rewrite = s.ctx().rewrite.clone();
    let keys = s.ctx().tracking_secrets.keys();
    let (body, recipients) = (tx.body, tx.recipients);
    let handoff = match tokio::task::spawn_blocking(move || {
        let handoff = copies_for(&body, &recipients, &rewrite, &keys);
        (handoff, body.len())
    })
    .await
    {
        Ok(done) => done,
        Err(_) => {
            // copies_for does not panic (the rewrite catches its own); a JoinError here means
            // the runtime is shutting down.
            RejectReason::Database.count();
            s.reply(
                451,
                "4.3.0",
                "Temporary failure processing the message, try again later",
            );
            return Next::Continue;
        }
    };
    let (
        Handoff {
            facts,
            links,
            untouched,
            copies,
        },
        size_bytes,
    ) = handoff;
    if let Some(why) = untouched {
        METRICS
            .messages_untouched_total
            .with_label_values(&[why.as_str(), why.cause()])
            .inc();
    }
    let visibility = facts
        .visibility
        .clone()
        .unwrap_or_else(|| tx.sender.default_visibility.clone());
    let track = facts
        .track
        .clone()
        .unwrap_or_else(|| s.ctx().settings.default_track.clone());
    let mut message = NewMessage {
        id: Uuid::now_v7(),
        sender_id: tx.sender.id,
        team_id: tx.sender.team_id,
        visibility,
        track,
        envelope_from: tx.envelope_from,
        size_bytes,
        facts,
        links,
        untouched: untouched.map(|u| u.as_str().to_string()),
        copies: copies
            .into_iter()
            .map(|(id, recipient, body)| NewCopy {
                id,
                recipient,
                body,
                ..Default::default()
            })
            .collect(),
    };
    let queued = if message.facts.separate {
        let rate = s.ctx().settings.sender_rate_per_minute;
        queue::enqueue_paced(&s.ctx().pool, &mut message, rate).await
    } else {
        queue::enqueue(&s.ctx().pool, &message).await
    };
    match queued {
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
    /// X-Mailtally-Track as the rewrite read it (or the default).
    pub track: Option<String>,
    /// X-Mailtally-Visibility when valid.
    pub visibility: Option<String>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    /// `X-Mailtally-Group: separate`: copies addressed one by one, sent at the sender's pace.
    pub separate: bool,
}

/// The rewrite stage's result for one message: its facts, tracked links, why it went out
/// unchanged (if it did), and one copy per recipient.
pub struct Handoff {
    pub facts: MessageFacts,
    pub links: Vec<(i32, String)>,
    pub untouched: Option<rewrite::Untouched>,
    pub copies: Vec<(Uuid, String, Vec<u8>)>,
}

/// The hand-off to the rewrite stage: the message is rewritten once, then each recipient's
/// copy is rendered with its own tokens. The control headers never leave the relay.
pub fn copies_for(
    raw: &[u8],
    recipients: &[String],
    settings: &RewriteSettings,
    keys: &TokenKeys,
) -> Handoff {
    let prepared = rewrite::prepare(raw, settings);
    let c = &prepared.controls;
    let visibility = c
        .visibility
        .as_ref()
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| matches!(v.as_str(), "private" | "team" | "shared"));
    let facts = MessageFacts {
        template_key: c.template.clone(),
        subject: c.subject.clone(),
        message_id: c.message_id.clone(),
        track: Some(c.track.as_str().to_string()),
        visibility,
        deal: c.deal.clone(),
        lead: c.lead.clone(),
        project: c.project.clone(),
        separate: c.separate,
    };
    let copies = recipients
        .iter()
        .map(|r| {
            let id = Uuid::now_v7();
            (id, r.clone(), prepared.render(keys, id, r))
        })
        .collect();
    Handoff {
        facts,
        links: prepared
            .links
            .iter()
            .map(|l| (l.index as i32, l.url.clone()))
            .collect(),
        untouched: prepared.untouched,
        copies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff(raw: &[u8], recipients: &[&str]) -> Handoff {
        let settings = RewriteSettings::new("https://t.example.com");
        let keys = TokenKeys::new(b"secret", &[]);
        let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
        copies_for(raw, &recipients, &settings, &keys)
    }

    #[test]
    fn control_headers_are_read_and_stripped() {
        let raw = b"From: a@example.com\r\nX-Mailtally-Template: welcome\r\nSubject: Hi\r\n there\r\nx-mailtally-visibility: Private\r\nX-Mailtally-Deal: d1\r\nMessage-ID: <1@x>\r\n\r\nbody\r\nX-Mailtally-Template: not a header\r\n";
        let h = handoff(raw, &["b@example.com"]);
        assert_eq!(h.facts.template_key, "welcome");
        assert_eq!(h.facts.subject.as_deref(), Some("Hi there"));
        assert_eq!(h.facts.visibility.as_deref(), Some("private"));
        assert_eq!(h.facts.deal.as_deref(), Some("d1"));
        assert_eq!(h.facts.message_id.as_deref(), Some("<1@x>"));
        assert_eq!(h.facts.track.as_deref(), Some("opens,clicks"));
        assert_eq!(
            h.copies[0].2,
            b"From: a@example.com\r\nSubject: Hi\r\n there\r\nMessage-ID: <1@x>\r\n\r\nbody\r\nX-Mailtally-Template: not a header\r\n"
        );
    }

    #[test]
    fn each_recipient_gets_its_own_tokens_and_links_are_listed() {
        let raw = b"Subject: Offer\r\nContent-Type: text/html\r\n\r\n<a href=\"https://example.com/a\">a</a>";
        let h = handoff(raw, &["x@example.com", "y@example.com"]);
        assert_eq!(h.links, vec![(0, "https://example.com/a".to_string())]);
        assert_eq!(h.copies.len(), 2);
        assert_ne!(h.copies[0].0, h.copies[1].0);
        assert_ne!(h.copies[0].2, h.copies[1].2, "different tokens per copy");
        assert!(h.untouched.is_none());
        let h = handoff(b"no headers at all", &[]);
        assert!(h.copies.is_empty());
        assert!(!h.facts.template_key.is_empty());
    }
}
