//! DATA and BDAT: receiving the message, then handing it to the rewrite stage and the queue.
//! "250" is answered only after the queue's transaction has committed.

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use uuid::Uuid;

use super::session::{Mode, Next, Oversize, Session};
use super::{RejectReason, METRICS};
use crate::accounts::visibility::Visibility;
use crate::queue::budget::OverBudget;
use crate::queue::MessageFacts;
use crate::queue::{self, NewCopy, NewMessage, QueueError};
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
    let Some(mut tx) = s.tx.take() else {
        s.reply(503, "5.5.1", "No mail transaction");
        return Next::Continue;
    };
    // A last BDAT of 0 octets ends the message without a chunk: what was kept back is taken.
    let settings = &s.ctx().settings;
    tx.take_in(
        true,
        settings.relay.max_message_size,
        settings.queue.submission_max_bytes,
    );
    // RFC 3463 X.3.4 "message too big for system": the same message will never fit, so 5xx.
    match tx.oversized {
        Some(Oversize::Message) => {
            RejectReason::Size.count();
            let (code, enhanced, text) = super::reply::MESSAGE_TOO_BIG;
            s.reply(code, enhanced, text);
            return Next::Continue;
        }
        Some(Oversize::Submission) => {
            RejectReason::Size.count();
            let text = submission_too_large(tx.recipients.len(), s);
            s.reply(552, "5.3.4", &text);
            return Next::Continue;
        }
        None => {}
    }
    // The rewrite is CPU work (a few ms for a large message): off the session's thread.
    let rewrite = s.rewriter().settings.clone();
    let keys = s.rewriter().keys.clone();
    let (body, recipients, suppressed) = (tx.body, tx.recipients, tx.suppressed);
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
            bad_visibility,
        },
        size_bytes,
    ) = handoff;
    if let Some(value) = bad_visibility {
        // Refused rather than read as a default: a typo must not widen who sees the message,
        // and the API answers 422 for the same value. RFC 3463 X.6.0: the content is at fault.
        RejectReason::Header.count();
        s.reply(
            554,
            "5.6.0",
            &format!(
                "X-Mailtally-Visibility must be private, team or shared, not \"{}\"",
                reply_safe(&value)
            ),
        );
        return Next::Continue;
    }
    // The copies may be larger than what was received (tokens, pixel): bound what is stored.
    let copy_bytes: u64 = copies.iter().map(|c| c.2.len() as u64).sum();
    let max_total = s.ctx().settings.queue.submission_max_bytes;
    if max_total > 0 && copy_bytes > max_total {
        RejectReason::Size.count();
        let text = submission_too_large(copies.len(), s);
        s.reply(552, "5.3.4", &text);
        return Next::Continue;
    }
    let per_hour = s.ctx().settings.queue.sender_max_bytes_per_hour;
    match queue::budget::charge(&s.ctx().pool, tx.sender.id, copy_bytes, per_hour).await {
        Ok(()) => {}
        Err(QueueError::OverBudget(over)) => {
            RejectReason::Budget.count();
            match over {
                // Can never fit: permanent, like any other size bound (X.3.4).
                OverBudget::Never { .. } => s.reply(552, "5.3.4", &over.to_string()),
                // A policy the sender meets again by waiting: transient, and RFC 3463 X.7.0
                // (security or policy status) since no code names a sending quota.
                OverBudget::Later { .. } => s.reply(451, "4.7.0", &over.to_string()),
            }
            return Next::Continue;
        }
        Err(e) => {
            RejectReason::Database.count();
            tracing::error!(error = %e, "cannot count a message against its sender's budget");
            s.reply(
                451,
                "4.3.0",
                "Temporary failure storing the message, try again later",
            );
            return Next::Continue;
        }
    }
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
        .unwrap_or_else(|| s.ctx().settings.rewrite.default_track.clone());
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
                suppressed: suppressed.contains(&recipient),
                recipient,
                body,
                ..Default::default()
            })
            .collect(),
    };
    let (id, sender) = (message.id, message.sender_id);
    let queued = if message.facts.separate {
        // Paced copies take the sender's next slots in their own transaction.
        let rate = s.ctx().settings.queue.sender_rate_per_minute;
        queue::enqueue_paced(&s.ctx().pool, &mut message, rate).await
    } else {
        s.enqueuer().enqueue(message).await
    };
    match queued {
        Ok(()) => {
            METRICS.messages_accepted_total.inc();
            s.reply(250, "2.0.0", &format!("Ok: queued as {id}"));
        }
        Err(e) => {
            RejectReason::Database.count();
            tracing::error!(error = %e, "cannot queue a message");
            if let Err(e) = queue::budget::refund(&s.ctx().pool, sender, copy_bytes, per_hour).await
            {
                tracing::warn!(error = %e, "cannot give back a sending budget charge");
            }
            s.reply(
                451,
                "4.3.0",
                "Temporary failure storing the message, try again later",
            );
        }
    }
    Next::Continue
}

/// The 552 text for a submission over SUBMISSION_MAX_BYTES.
fn submission_too_large(recipients: usize, s: &Session) -> String {
    format!(
        "Message size times its {recipients} recipients exceeds the limit of {} bytes per submission",
        s.ctx().settings.queue.submission_max_bytes
    )
}

/// A client's value as it may appear in a reply: printable ASCII, at most 64 characters.
pub(super) fn reply_safe(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The rewrite stage's result for one message: its facts, tracked links, why it went out
/// unchanged (if it did), and one copy per recipient.
pub struct Handoff {
    pub facts: MessageFacts,
    pub links: Vec<(i32, String)>,
    pub untouched: Option<rewrite::Untouched>,
    pub copies: Vec<(Uuid, String, Vec<u8>)>,
    /// An `X-Mailtally-Visibility` that is none of the known values, as written.
    pub bad_visibility: Option<String>,
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
    let written = c.visibility.as_ref().map(|v| v.trim().to_ascii_lowercase());
    let known = |v: &String| v.parse::<Visibility>().is_ok();
    let visibility = written.clone().filter(known);
    let bad_visibility = match (&written, &visibility) {
        (Some(_), None) => c.visibility.clone(),
        _ => None,
    };
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
        bad_visibility,
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
        // List-Unsubscribe is off here, so that the copy is the message minus its controls.
        let raw = b"From: a@example.com\r\nX-Mailtally-Template: welcome\r\nSubject: Hi\r\n there\r\nx-mailtally-visibility: Private\r\nX-Mailtally-Deal: d1\r\nX-Mailtally-List-Unsubscribe: off\r\nMessage-ID: <1@x>\r\n\r\nbody\r\nX-Mailtally-Template: not a header\r\n";
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
