//! RFC 3464 delivery status notifications: the `message/delivery-status` parts of a
//! `multipart/report`, a group of per-message fields and then one group per recipient, and the
//! returned original (`message/rfc822` or `text/rfc822-headers`) for its Message-ID and copy
//! token.
//!
//! Per recipient (RFC 3463 classes): `failed` with 5.x.x is a hard bounce; `failed` with 4.x.x,
//! and `delayed`, are soft; `delivered`, `relayed` and `expanded` are not bounces, and a report
//! naming only those is None. A `failed` recipient with no 4 or 5 class anywhere (Status or an
//! SMTP code in Diagnostic-Code) is read as soft, so that suppression waits for a clearer report.

use mail_parser::Message;

use super::fields::{self, get, untyped, Field};
use super::{
    address, is_type, kind_of, line, overall, returned, status, status_in, token, Format, Kind,
    Recipient, Report, DIAGNOSTIC_MAX, FIELD_MAX, RECIPIENTS_MAX,
};

/// The fields of one recipient, as written.
#[derive(Default)]
struct Fields<'a> {
    final_recipient: Option<&'a str>,
    original_recipient: Option<&'a str>,
    action: Option<&'a str>,
    status: Option<&'a str>,
    diagnostic: Option<&'a str>,
}

impl Fields<'_> {
    fn is_recipient(&self) -> bool {
        self.final_recipient.is_some() || self.original_recipient.is_some() || self.action.is_some()
    }
}

/// The recipients of one group. A group is meant to hold one, but some senders leave out the
/// blank line between recipients: a second Final-Recipient or Original-Recipient starts the
/// next.
fn split(group: &[Field]) -> Vec<Fields<'_>> {
    let mut out = Vec::new();
    let mut cur = Fields::default();
    for f in group {
        let v = Some(f.value.as_str());
        match f.name.as_str() {
            "final-recipient" => {
                if cur.final_recipient.is_some() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.final_recipient = v;
            }
            "original-recipient" => {
                if cur.original_recipient.is_some() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.original_recipient = v;
            }
            "action" => cur.action = cur.action.or(v),
            "status" => cur.status = cur.status.or(v),
            "diagnostic-code" => cur.diagnostic = cur.diagnostic.or(v),
            _ => {}
        }
    }
    out.push(cur);
    out.retain(Fields::is_recipient);
    out
}

/// What one recipient's fields say, or None when they do not name a bounce.
fn recipient(f: &Fields<'_>) -> Option<(Kind, Option<Recipient>)> {
    let action = f
        .action
        .and_then(|a| a.split(|c: char| c.is_whitespace() || c == '(').next())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let diagnostic = f
        .diagnostic
        .map(untyped)
        .and_then(|d| line(d, DIAGNOSTIC_MAX));
    let status = f
        .status
        .and_then(status)
        .or_else(|| diagnostic.as_deref().and_then(status_in));
    let smtp = diagnostic.as_deref().and_then(super::smtp_code_in);
    let kind = match action.as_str() {
        "failed" => kind_of(status.as_deref(), smtp).unwrap_or(Kind::SoftBounce),
        "delayed" => Kind::SoftBounce,
        "delivered" | "relayed" | "expanded" => return None,
        // No action, or one RFC 3464 does not define: only a 4 or 5 class makes it a bounce.
        _ => kind_of(status.as_deref(), smtp)?,
    };
    let address = f
        .final_recipient
        .and_then(address)
        .or_else(|| f.original_recipient.and_then(address));
    let found = address.map(|address| Recipient {
        address,
        kind,
        action: line(&action, FIELD_MAX),
        status,
        diagnostic,
    });
    Some((kind, found))
}

/// None when the message has no `message/delivery-status` part naming a recipient; else the
/// report, or Some(None) when every recipient it names was delivered, relayed or expanded.
pub(super) fn read(message: &Message<'_>) -> Option<Option<Report>> {
    let mut named = false;
    let mut kinds = Vec::new();
    let mut original_id = None;
    let mut recipients: Vec<Recipient> = Vec::new();
    let mut reporter = None;
    let mut arrival_date = None;
    let parts = message
        .parts
        .iter()
        .skip(1)
        .filter(|p| is_type(p, "message", &["delivery-status", "global-delivery-status"]));
    for part in parts {
        for group in fields::groups(part.contents()) {
            if reporter.is_none() {
                reporter = get(&group, "reporting-mta").and_then(|v| line(untyped(v), FIELD_MAX));
            }
            if arrival_date.is_none() {
                arrival_date = get(&group, "arrival-date").and_then(|v| line(v, FIELD_MAX));
            }
            if original_id.is_none() {
                // Gmail names the original here too, for when it returns no part of it.
                original_id = get(&group, "x-original-message-id")
                    .and_then(|v| token(v.trim().trim_matches(['<', '>'])))
                    .map(|id| format!("<{id}>"));
            }
            for f in split(&group) {
                named = true;
                let Some((kind, found)) = recipient(&f) else {
                    continue;
                };
                kinds.push(kind);
                if let Some(r) = found {
                    let seen = recipients.iter().any(|s| s.address == r.address);
                    if !seen && recipients.len() < RECIPIENTS_MAX {
                        recipients.push(r);
                    }
                }
            }
        }
    }
    if !named {
        return None;
    }
    if kinds.is_empty() {
        return Some(None);
    }
    let (original_message_id, copy_token) = returned(message);
    Some(Some(Report {
        kind: overall(kinds),
        format: Format::Rfc3464,
        recipients,
        original_message_id: original_message_id.or(original_id),
        copy_token,
        feedback_type: None,
        reporter,
        arrival_date,
        original_mail_from: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_clean, original, summary};
    use super::super::{read, Format, Kind, Report};

    fn one(raw: &[u8]) -> Report {
        let r = read(raw).expect("a bounce");
        assert_clean(&r);
        assert_eq!(r.format, Format::Rfc3464);
        assert_eq!(r.feedback_type, None);
        r
    }

    #[test]
    fn postfix_hard_bounce_with_returned_headers() {
        let r = one(sample!("postfix-hard.eml"));
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.recipients.len(), 1);
        let p = &r.recipients[0];
        assert_eq!(p.address, "nobody@example.org");
        assert_eq!(p.kind, Kind::HardBounce);
        assert_eq!(p.action.as_deref(), Some("failed"));
        assert_eq!(p.status.as_deref(), Some("5.1.1"));
        assert_eq!(
            p.diagnostic.as_deref(),
            Some("550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table")
        );
        assert_eq!(
            original(&r),
            (
                Some("<0195f7a2-3b1c-7d4e-8f90-a1b2c3d4e5f6@mail.example.com>"),
                Some("cp_01JPB6Z4W8Q3N5R7T9V2X4Y6Z8")
            )
        );
        assert_eq!(r.reporter.as_deref(), Some("mx1.example.com"));
        assert_eq!(
            r.arrival_date.as_deref(),
            Some("Mon, 16 Mar 2026 09:14:05 +0000 (UTC)")
        );
    }

    #[test]
    fn postfix_delay_is_soft() {
        let r = one(sample!("postfix-delayed.eml"));
        assert_eq!(r.kind, Kind::SoftBounce);
        let p = &r.recipients[0];
        assert_eq!(p.address, "bob@slow.example.net");
        assert_eq!(p.action.as_deref(), Some("delayed"));
        assert_eq!(p.status.as_deref(), Some("4.4.1"));
        assert_eq!(
            p.diagnostic.as_deref(),
            Some("connect to mx.slow.example.net[203.0.113.7]:25: Connection timed out")
        );
        assert_eq!(
            original(&r),
            (
                Some("<q1-2026@mail.example.com>"),
                Some("cp_01JPE1M2N3P4Q5R6S7T8V9W0X1")
            )
        );
    }

    #[test]
    fn office_365_with_its_html_first_part() {
        let r = one(sample!("office365.eml"));
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.recipients.len(), 1);
        let p = &r.recipients[0];
        assert_eq!(p.address, "carol@fabrikam.com");
        assert_eq!(p.status.as_deref(), Some("5.1.10"));
        assert_eq!(
            p.diagnostic.as_deref(),
            Some("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
        );
        // Header names are case-insensitive.
        assert_eq!(
            original(&r),
            (
                Some("<0195f8b0-1111-7222-8333-944455566677@mail.contoso.com>"),
                Some("cp_01JPGA0B1C2D3E4F5G6H7J8K9M")
            )
        );
    }

    #[test]
    fn gmail_with_the_whole_original_attached() {
        let r = one(sample!("gmail.eml"));
        assert_eq!(r.kind, Kind::HardBounce);
        let p = &r.recipients[0];
        assert_eq!(p.address, "no.such.user.8812@gmail.com");
        assert_eq!(p.status.as_deref(), Some("5.1.1"));
        let d = p.diagnostic.as_deref().unwrap();
        assert!(
            d.starts_with("550-5.1.1 The email account that you tried to reach does not exist.")
        );
        assert!(d.ends_with("a1si2345678ybb.4 - gsmtp"), "{d}");
        assert_eq!(
            original(&r),
            (
                Some("<0195f9c1-aaaa-7bbb-8ccc-ddddeeeeffff@mail.example.com>"),
                Some("cp_01JPJ7K8L9M0N1P2Q3R4S5T6V7")
            )
        );
        assert_eq!(r.reporter.as_deref(), Some("googlemail.com"));
    }

    #[test]
    fn without_its_report_part_the_text_is_read() {
        let whole = String::from_utf8_lossy(sample!("postfix-hard.eml")).into_owned();
        let start = whole.find("Content-Description: Delivery report").unwrap();
        let end = whole
            .find("Content-Description: Undelivered Message Headers")
            .unwrap();
        let text_only = format!("{}{}", &whole[..start], &whole[end..]);
        let r = read(text_only.as_bytes()).unwrap();
        assert_clean(&r);
        assert_eq!(r.format, Format::NonStandard("mailer-daemon"));
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.recipients[0].address, "nobody@example.org");
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            original(&r),
            (
                Some("<0195f7a2-3b1c-7d4e-8f90-a1b2c3d4e5f6@mail.example.com>"),
                Some("cp_01JPB6Z4W8Q3N5R7T9V2X4Y6Z8")
            )
        );
        // A report whose recipients were all delivered is not read again as prose, whatever
        // its text says.
        let delivered = whole.replace("Action: failed", "Action: delivered");
        assert_eq!(read(delivered.as_bytes()), None);
    }

    #[test]
    fn line_ends_do_not_matter() {
        let lf = read(sample!("postfix-hard.eml")).unwrap();
        let crlf = String::from_utf8_lossy(sample!("postfix-hard.eml")).replace('\n', "\r\n");
        assert_eq!(read(crlf.as_bytes()), Some(lf));
    }

    const HEAD: &str = "From: MAILER-DAEMON@mx.example.net\r\nTo: ann@example.com\r\nSubject: Returned mail\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n";

    fn with(groups: &str) -> Option<Report> {
        read(format!("{HEAD}{groups}\r\n--b--\r\n").as_bytes())
    }

    #[test]
    fn mixed_recipients_and_missing_blank_lines() {
        // Two recipients without the blank line between them, one of them delivered.
        let r = with("Final-Recipient: rfc822; a@example.org\r\nAction: delayed\r\nStatus: 4.2.2\r\nFinal-Recipient: rfc822; b@example.org\r\nAction: failed\r\nStatus: 5.2.1\r\n\r\nFinal-Recipient: rfc822; c@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n").unwrap();
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(
            summary(&r),
            [
                ("a@example.org", Kind::SoftBounce, Some("4.2.2")),
                ("b@example.org", Kind::HardBounce, Some("5.2.1"))
            ]
        );
        assert_eq!(r.original_message_id, None);
        assert_eq!(r.copy_token, None);
    }

    #[test]
    fn classes_per_rfc_3463() {
        let kind = |g: &str| with(g).map(|r| r.kind);
        // failed with a transient class: the sender gave up, the address may still be good.
        assert_eq!(
            kind("Final-Recipient: rfc822; a@x.example\r\nAction: failed\r\nStatus: 4.4.7\r\n"),
            Some(Kind::SoftBounce)
        );
        // failed with no status but a permanent SMTP reply.
        assert_eq!(kind("Final-Recipient: rfc822; a@x.example\r\nAction: failed\r\nDiagnostic-Code: smtp; 550 no such user\r\n"), Some(Kind::HardBounce));
        // failed with nothing to tell the class by.
        assert_eq!(
            kind("Final-Recipient: rfc822; a@x.example\r\nAction: failed\r\n"),
            Some(Kind::SoftBounce)
        );
        // No action: the status alone decides; 2.x.x is not a bounce.
        assert_eq!(
            kind("Final-Recipient: rfc822; a@x.example\r\nStatus: 5.1.1\r\n"),
            Some(Kind::HardBounce)
        );
        assert_eq!(
            kind("Final-Recipient: rfc822; a@x.example\r\nStatus: 2.0.0\r\n"),
            None
        );
        assert_eq!(
            kind("Final-Recipient: rfc822; a@x.example\r\nAction: expanded\r\nStatus: 2.0.0\r\n"),
            None
        );
        // A failed recipient whose address is unreadable still makes a bounce, named by none.
        let r =
            with("Final-Recipient: x400; c=us;a=;p=x;o=y\r\nAction: failed\r\nStatus: 5.1.1\r\n")
                .unwrap();
        assert_eq!((r.kind, r.recipients.len()), (Kind::HardBounce, 0));
        // Upper case and comments are read; Original-Recipient stands in for Final-Recipient.
        let r = with("Original-Recipient: RFC822; <Zoe@X.example>\r\nAction: FAILED (bad mailbox)\r\nStatus: 5.1.1 (user unknown)\r\n").unwrap();
        assert_eq!(r.recipients[0].address, "Zoe@X.example");
        assert_eq!(r.recipients[0].action.as_deref(), Some("failed"));
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
    }
}
