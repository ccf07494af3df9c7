//! RFC 5965 abuse feedback reports (ARF): a `multipart/report; report-type=feedback-report`
//! with a `message/feedback-report` part and the reported message (`message/rfc822` or
//! `text/rfc822-headers`) as its third part. This is how Yahoo, AOL, Microsoft (JMRP in ARF
//! form), Comcast and most feedback loops send a "this is spam" click.
//!
//! Only `Feedback-Type: abuse` is a complaint. The other types (`fraud`, `virus`, `other`,
//! `not-spam`, `auth-failure`, `dkim`) are not a recipient asking for no more mail, and read as
//! None. A feedback-report part without a Feedback-Type (RFC 5965 requires one, some loops
//! leave it out) is read as abuse: the part's type already says it is a complaint report, and
//! `feedback_type` stays None so that the caller can tell.
//!
//! The complaining recipient is each `Original-Rcpt-To`, else the reported message's `To`;
//! loops that redact it (`redacted@...`, or no address at all) leave `recipients` empty.

use mail_parser::{Message, MessageParser, PartType};

use super::fields::{self, get, Field};
use super::{
    address, is_type, line, returned, Format, Kind, Recipient, Report, FIELD_MAX, RECIPIENTS_MAX,
};

/// The report of a message with a `message/feedback-report` part, or None.
pub(super) fn read(message: &Message<'_>) -> Option<Report> {
    let part = message
        .parts
        .iter()
        .skip(1)
        .find(|p| is_type(p, "message", &["feedback-report"]))?;
    // One block by RFC 5965; a stray blank line does not end it.
    let block: Vec<Field> = fields::groups(part.contents())
        .into_iter()
        .flatten()
        .collect();
    let feedback_type = get(&block, "feedback-type").and_then(|v| line(v, FIELD_MAX));
    let feedback_type = feedback_type.map(|v| v.to_ascii_lowercase());
    if feedback_type.as_deref().is_some_and(|t| t != "abuse") {
        return None;
    }
    let mut addresses: Vec<String> = block
        .iter()
        .filter(|f| f.name == "original-rcpt-to")
        .filter_map(|f| address(&f.value))
        .collect();
    if addresses.is_empty() {
        addresses = reported_to(message);
    }
    addresses.retain(|a| !is_redacted(a));
    addresses.dedup();
    addresses.truncate(RECIPIENTS_MAX);
    let recipients = addresses.into_iter().map(Recipient::complaint).collect();
    let (original_message_id, copy_token) = returned(message);
    Some(Report {
        kind: Kind::Complaint,
        format: Format::Arf,
        recipients,
        original_message_id,
        copy_token,
        feedback_type,
        reporter: get(&block, "user-agent").and_then(|v| line(v, FIELD_MAX)),
        arrival_date: get(&block, "arrival-date")
            .or_else(|| get(&block, "received-date"))
            .and_then(|v| line(v, FIELD_MAX)),
        original_mail_from: get(&block, "original-mail-from")
            .and_then(|v| address(v).or_else(|| line(v, FIELD_MAX))),
    })
}

/// The `To` addresses of the reported message, whole or headers only.
pub(super) fn reported_to(message: &Message<'_>) -> Vec<String> {
    let to = |m: &Message<'_>| -> Vec<String> {
        m.to()
            .into_iter()
            .flat_map(|a| a.iter())
            .filter_map(|a| a.address())
            .filter_map(address)
            .take(RECIPIENTS_MAX)
            .collect()
    };
    for p in message.parts.iter().skip(1) {
        if let PartType::Message(m) = &p.body {
            return to(m);
        }
        if is_type(p, "text", &["rfc822-headers", "rfc822-header"])
            || is_type(p, "message", &["rfc822-headers"])
        {
            if let Some(m) = MessageParser::default().parse_headers(p.contents()) {
                return to(&m);
            }
        }
    }
    Vec::new()
}

/// Feedback loops that hide the recipient write a placeholder in its place.
fn is_redacted(address: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(local, _)| local.eq_ignore_ascii_case("redacted"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_clean, original};
    use super::super::{read, Format, Kind};

    #[test]
    fn yahoo_abuse_report() {
        let r = read(sample!("arf-yahoo.eml")).unwrap();
        assert_clean(&r);
        assert_eq!((r.kind, r.format), (Kind::Complaint, Format::Arf));
        assert_eq!(r.feedback_type.as_deref(), Some("abuse"));
        assert_eq!(r.recipients.len(), 1);
        assert_eq!(r.recipients[0].address, "heidi@yahoo.com");
        assert_eq!(r.recipients[0].kind, Kind::Complaint);
        assert_eq!(r.recipients[0].status, None);
        assert_eq!(
            original(&r),
            (
                Some("<news-0323@mail.example.com>"),
                Some("cp_01JPS4C5D6E7F8G9H0J1K2M3N4")
            )
        );
        assert_eq!(r.reporter.as_deref(), Some("Yahoo!-Mail-Feedback/2.0"));
        assert_eq!(
            r.arrival_date.as_deref(),
            Some("Mon, 23 Mar 2026 06:10:02 +0000")
        );
        assert_eq!(
            r.original_mail_from.as_deref(),
            Some("bounces+ann=example.com@example.com")
        );
    }

    #[test]
    fn aol_report_with_the_recipient_redacted() {
        let r = read(sample!("arf-aol-redacted.eml")).unwrap();
        assert_clean(&r);
        assert_eq!((r.kind, r.format), (Kind::Complaint, Format::Arf));
        assert!(r.recipients.is_empty(), "{:?}", r.recipients);
        assert_eq!(
            original(&r),
            (
                Some("<sale-0324@mail.example.com>"),
                Some("cp_01JPV6E7F8G9H0J1K2M3N4P5Q6")
            )
        );
        assert_eq!(r.reporter.as_deref(), Some("AOL SComp"));
    }

    #[test]
    fn feedback_types() {
        let yahoo = String::from_utf8_lossy(sample!("arf-yahoo.eml")).into_owned();
        for other in ["not-spam", "auth-failure", "fraud", "virus", "other"] {
            let raw = yahoo.replace("Feedback-Type: abuse", &format!("Feedback-Type: {other}"));
            assert_eq!(read(raw.as_bytes()), None, "{other}");
        }
        let upper = yahoo.replace("Feedback-Type: abuse", "Feedback-Type: Abuse");
        assert_eq!(
            read(upper.as_bytes()).unwrap().feedback_type.as_deref(),
            Some("abuse")
        );
        // No Feedback-Type: read as abuse, and said to be absent.
        let none = yahoo.replace("Feedback-Type: abuse\n", "");
        let r = read(none.as_bytes()).unwrap();
        assert_eq!((r.kind, r.feedback_type), (Kind::Complaint, None));
        // No Original-Rcpt-To: the reported message's To.
        let to = yahoo.replace("Original-Rcpt-To: heidi@yahoo.com\n", "");
        assert_eq!(
            read(to.as_bytes()).unwrap().recipients[0].address,
            "heidi@yahoo.com"
        );
    }
}
