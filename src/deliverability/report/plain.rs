//! Bounces without a `message/delivery-status` part, read from their prose, and Microsoft's
//! non-ARF complaint (JMRP). Conservative on purpose: a message is read as a bounce only when
//! it comes from a mail system (`MAILER-DAEMON`, `postmaster`, Exchange's `MicrosoftExchange…`
//! or a "Mail Delivery Subsystem" name), has one of the known shapes, and names a recipient
//! with a 4 or 5 class (an RFC 3463 status or an SMTP code) — or, for qmail and Exim, which say
//! so in words, "permanent error". Anything less is None.
//!
//! Shapes: qmail ("Hi. This is the qmail-send program", then `<addr>:` paragraphs), Exim
//! ("This message was created automatically by mail delivery software"), Exchange and Outlook
//! NDRs ("Delivery has failed to these recipients or groups", "Undeliverable:" subjects), and
//! the classic Postfix/Sendmail texts ("could not be delivered", "permanent fatal errors").

use mail_parser::{Message, MessageParser, PartType};

use crate::replies::detect::AUTO_SUBJECTS;

use super::{
    address, arf::reported_to, ids, kind_of, line, overall, returned, smtp_code_in, status_in,
    Format, Kind, Recipient, Report, DIAGNOSTIC_MAX, RECIPIENTS_MAX,
};

/// Characters of body text read at most; bounces put the part that matters first.
const TEXT_MAX: usize = 64 * 1024;
/// Characters after a shape's marker searched for recipients.
const REGION_MAX: usize = 16 * 1024;

/// Local parts of the addresses mail systems send bounces from.
const DAEMONS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "postmaster",
    "mdaemon",
];

/// Display names mail systems sign bounces with.
const DAEMON_NAMES: &[&str] = &[
    "mail delivery subsystem",
    "mail delivery system",
    "mail administrator",
];

/// The shapes, in the order they are tried: (label, lower-case markers in the body).
const SHAPES: &[(&str, &[&str])] = &[
    ("qmail", &["this is the qmail-send program"]),
    (
        "exim",
        &["this message was created automatically by mail delivery software"],
    ),
    (
        "exchange-ndr",
        &[
            "delivery has failed to these recipients",
            "the following recipient(s) cannot be reached",
            "your message to the following recipients could not be delivered",
            "your message couldn't be delivered",
            "your message wasn't delivered",
        ],
    ),
    (
        "mailer-daemon",
        &[
            "could not be delivered to one or more recipients",
            "following addresses had permanent fatal errors",
            "following addresses had transient non-fatal errors",
            "could not be delivered",
            "message could not be delivered",
            "delivery to the following recipient failed",
            "delivery to the following recipients failed",
            "delivery has been delayed",
            "was not delivered to",
            "unable to deliver your message",
        ],
    ),
];

/// Where the copy of the original starts in a bounce that quotes it in its text.
const ORIGINAL_MARKERS: &[&str] = &[
    "--- below this line is a copy of the message.",
    "------ this is a copy of the message",
    "------ this is a copy of the body of the message",
    "original message headers:",
    "----- original message -----",
    "------ original message ------",
    "--- the header of the original message is following.",
    "----- original message follows -----",
];

/// A bounce or JMRP complaint in prose, or None.
pub(super) fn read(message: &Message<'_>) -> Option<Report> {
    if let Some(r) = jmrp(message) {
        return Some(r);
    }
    if !from_mail_system(message) {
        return None;
    }
    let subject = message.subject().unwrap_or("").trim().to_ascii_lowercase();
    if AUTO_SUBJECTS.iter().any(|s| subject.starts_with(s)) {
        return None;
    }
    let full = message.body_text(0)?;
    let full = match full.char_indices().nth(TEXT_MAX) {
        Some((end, _)) => full.get(..end).unwrap_or(""),
        None => &full,
    };
    // ASCII lower case keeps byte offsets, so positions found in it index `full`.
    let lower = full.to_ascii_lowercase();
    let cut = ORIGINAL_MARKERS
        .iter()
        .filter_map(|m| find_words(&lower, m))
        .min()
        .unwrap_or(lower.len());
    let (body, body_lower) = (full.get(..cut)?, lower.get(..cut)?);

    let mut shape = SHAPES.iter().find_map(|(label, markers)| {
        markers
            .iter()
            .filter_map(|m| find_words(body_lower, m))
            .min()
            .map(|at| (*label, at))
    });
    if shape.is_none() && subject.starts_with("undeliverable:") {
        shape = Some(("exchange-ndr", 0));
    }
    let (label, at) = shape?;
    let region = body.get(at..)?;
    let region = match region.char_indices().nth(REGION_MAX) {
        Some((end, _)) => region.get(..end)?,
        None => region,
    };
    let permanent = matches!(label, "qmail" | "exim")
        && (body_lower.contains("this is a permanent error")
            || body_lower.contains("permanent error; i've given up"));

    let own = own_addresses(message);
    // Per address, the first block that names a class; Exchange names each recipient twice,
    // first in words and then with the code.
    let mut found: Vec<(String, Option<Recipient>)> = Vec::new();
    for (addr, text) in blocks(region) {
        if own.iter().any(|o| o.eq_ignore_ascii_case(&addr)) {
            continue;
        }
        let status = status_in(&text);
        let kind = kind_of(status.as_deref(), smtp_code_in(&text))
            .or(permanent.then_some(Kind::HardBounce));
        let read = kind.map(|kind| Recipient {
            address: addr.clone(),
            kind,
            action: None,
            status,
            diagnostic: line(&text, DIAGNOSTIC_MAX),
        });
        if let Some((_, slot)) = found.iter_mut().find(|(a, _)| *a == addr) {
            if slot.is_none() {
                *slot = read;
            }
        } else if found.len() < RECIPIENTS_MAX {
            found.push((addr, read));
        }
    }
    let recipients: Vec<Recipient> = found.into_iter().filter_map(|(_, r)| r).collect();
    if recipients.is_empty() {
        return None;
    }
    let (mut original_message_id, mut copy_token) = returned(message);
    if original_message_id.is_none() && copy_token.is_none() {
        (original_message_id, copy_token) = quoted_original(full, &lower, cut);
    }
    Some(Report {
        kind: overall(recipients.iter().map(|r| r.kind)),
        format: Format::NonStandard(label),
        recipients,
        original_message_id,
        copy_token,
        feedback_type: None,
        reporter: None,
        arrival_date: None,
        original_mail_from: None,
    })
}

/// Where `phrase` (lower case, words separated by single spaces) starts in `text`, with any run
/// of whitespace, line breaks included, between its words: bounce texts are wrapped anywhere.
fn find_words(text: &str, phrase: &str) -> Option<usize> {
    let mut words = phrase.split(' ');
    let first = words.next()?;
    let rest: Vec<&str> = words.collect();
    'start: for (at, _) in text.match_indices(first) {
        let mut tail = text.get(at + first.len()..)?;
        for w in &rest {
            let trimmed = tail.trim_start();
            if trimmed.len() == tail.len() {
                continue 'start;
            }
            match trimmed.strip_prefix(w) {
                Some(t) => tail = t,
                None => continue 'start,
            }
        }
        return Some(at);
    }
    None
}

/// Whether the message comes from a mail system rather than a person.
fn from_mail_system(message: &Message<'_>) -> bool {
    let Some(from) = message.from().and_then(|a| a.first()) else {
        return false;
    };
    let local = from
        .address()
        .and_then(|a| a.rsplit_once('@').map(|(l, _)| l).or(Some(a)))
        .unwrap_or("")
        .to_ascii_lowercase();
    let name = from.name().unwrap_or("").trim().to_ascii_lowercase();
    DAEMONS.contains(&local.as_str())
        || local.starts_with("microsoftexchange")
        || DAEMON_NAMES.contains(&name.as_str())
}

/// The bounce's own From and To: they name the mail system and the sender, never a recipient.
fn own_addresses(message: &Message<'_>) -> Vec<String> {
    [message.from(), message.to()]
        .into_iter()
        .flatten()
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(str::to_string)
        .collect()
}

/// The address a line starts with: `<a@b>:` (qmail, Postfix), `a@b` (Exim, Exchange),
/// `Name<mailto:a@b>` and `Name (a@b)` (Exchange), `a@b on date` (Exchange 2003).
fn lead_address(l: &str) -> Option<String> {
    let l = l.trim();
    if let Some(at) = l.find("<mailto:") {
        let rest = l.get(at + "<mailto:".len()..)?;
        return address(rest.get(..rest.find('>')?)?);
    }
    if l.ends_with(')') {
        if let Some(open) = l.rfind('(') {
            if let Some(a) = address(l.get(open + 1..l.len() - 1)?) {
                return Some(a);
            }
        }
    }
    let first = l.split_whitespace().next()?;
    let first = first.trim_end_matches([':', ',', '.']);
    if !first.starts_with('<') && first.contains(['<', '>']) {
        return None;
    }
    address(first)
}

/// The recipient blocks of a region: a line starting with an address and the lines after it
/// up to a blank line or the next such line, as (address, the block on one line).
fn blocks(region: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut open = false;
    for l in region.lines() {
        if l.trim().is_empty() {
            open = false;
            continue;
        }
        if let Some(addr) = lead_address(l) {
            if out.len() >= RECIPIENTS_MAX * 4 {
                break;
            }
            // What follows the address on its own line is part of the block (Postfix).
            let rest = l.trim().split_once(char::is_whitespace).map(|(_, r)| r);
            out.push((addr, rest.unwrap_or("").trim().to_string()));
            open = true;
            continue;
        }
        if let (true, Some((_, text))) = (open, out.last_mut()) {
            if text.len() < DIAGNOSTIC_MAX * 4 {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(l.trim());
            }
        }
    }
    out
}

/// The Message-ID and copy token of an original quoted in the text after `cut`.
fn quoted_original(full: &str, lower: &str, cut: usize) -> (Option<String>, Option<String>) {
    let Some(after) = full.get(cut..) else {
        return (None, None);
    };
    // Skip the marker line itself and blank lines before the headers.
    let start = lower
        .get(cut..)
        .and_then(|l| l.find('\n'))
        .map(|n| n + 1)
        .unwrap_or(after.len());
    let headers = after
        .get(start..)
        .unwrap_or("")
        .trim_start_matches(['\r', '\n', ' ']);
    MessageParser::default()
        .parse_headers(headers.as_bytes())
        .map(|m| ids(&m))
        .unwrap_or((None, None))
}

/// Microsoft's JMRP complaint in its own form: from `staff@hotmail.com`, subject "complaint
/// about message from <ip>", the reported message attached, the recipient in its
/// `X-HmXmrOriginalRecipient`.
fn jmrp(message: &Message<'_>) -> Option<Report> {
    let from = message.from()?.first()?.address()?;
    let subject = message.subject().unwrap_or("").trim().to_ascii_lowercase();
    if !from.eq_ignore_ascii_case("staff@hotmail.com")
        || !subject.starts_with("complaint about message from")
    {
        return None;
    }
    let reported = message.parts.iter().skip(1).find_map(|p| match &p.body {
        PartType::Message(m) => Some(m),
        _ => None,
    })?;
    let mut addresses: Vec<String> = reported
        .header_raw("X-HmXmrOriginalRecipient")
        .and_then(address)
        .into_iter()
        .collect();
    if addresses.is_empty() {
        addresses = reported_to(message);
    }
    let (original_message_id, copy_token) = ids(reported);
    Some(Report {
        kind: Kind::Complaint,
        format: Format::NonStandard("jmrp"),
        recipients: addresses.into_iter().map(Recipient::complaint).collect(),
        original_message_id,
        copy_token,
        feedback_type: None,
        reporter: None,
        arrival_date: None,
        original_mail_from: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_clean, original, summary};
    use super::super::{read, Format, Kind, Report};

    fn one(raw: &[u8], format: &'static str) -> Report {
        let r = read(raw).expect("a bounce");
        assert_clean(&r);
        assert_eq!(r.format, Format::NonStandard(format));
        r
    }

    #[test]
    fn phrases_across_line_breaks() {
        use super::find_words;
        assert_eq!(
            find_words("x could not\r\n be  delivered", "could not be delivered"),
            Some(2)
        );
        assert_eq!(
            find_words("could notbe delivered", "could not be delivered"),
            None
        );
        assert_eq!(find_words("could not", "could not be"), None);
        assert_eq!(find_words("", "a"), None);
    }

    #[test]
    fn qmail_without_a_delivery_status_part() {
        let r = one(sample!("qmail.eml"), "qmail");
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(
            summary(&r),
            [
                ("dave@old-isp.example", Kind::HardBounce, Some("5.1.1")),
                ("erin@example.net", Kind::HardBounce, Some("5.1.1"))
            ]
        );
        assert_eq!(
            r.recipients[1].diagnostic.as_deref(),
            Some("Sorry, no mailbox here by that name. (#5.1.1)")
        );
        assert_eq!(r.recipients[0].action, None);
        // The copy of the message after qmail's marker.
        assert_eq!(
            original(&r),
            (
                Some("<inv-2026-03@mail.example.com>"),
                Some("cp_01JPM0A1B2C3D4E5F6G7H8J9K0")
            )
        );
    }

    #[test]
    fn exim_text_bounce() {
        let r = one(sample!("exim.eml"), "exim");
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.recipients.len(), 1);
        let p = &r.recipients[0];
        assert_eq!(p.address, "frank@example.org");
        assert_eq!(p.status.as_deref(), Some("5.2.1"));
        assert!(p
            .diagnostic
            .as_deref()
            .unwrap()
            .ends_with("550 5.2.1 <frank@example.org>: mailbox disabled"));
        assert_eq!(
            original(&r),
            (
                Some("<fu-7@mail.example.com>"),
                Some("cp_01JPP2B3C4D5E6F7G8H9J0K1M2")
            )
        );
    }

    #[test]
    fn old_exchange_ndr() {
        let r = one(sample!("exchange2003.eml"), "exchange-ndr");
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.recipients.len(), 1);
        assert_eq!(r.recipients[0].address, "grace@corp.example.com");
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(r.original_message_id, None);
    }

    #[test]
    fn exchange_2007_text_ndr() {
        // The Exchange 2007 text shape, both mentions of the recipient, without its report part.
        let raw = b"From: postmaster@example.com\r\nTo: ann@example.jp\r\nSubject: Undeliverable: Nyaan\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nDelivery has failed to these recipients or distribution lists:\r\n\r\nNeko<mailto:mikeneko@example.co.jp>\r\nThe recipient's e-mail address was not found in the recipient's e-mail system.\r\n\r\nDiagnostic information for administrators:\r\n\r\nGenerating server: mta4.example.org\r\n\r\nmikeneko@example.co.jp\r\n#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\r\n\r\nOriginal message headers:\r\n\r\nTo: Neko <mikeneko@example.co.jp>\r\nMessage-ID: <n1@example.jp>\r\n";
        let r = one(raw, "exchange-ndr");
        assert_eq!(r.recipients.len(), 1);
        assert_eq!(r.recipients[0].address, "mikeneko@example.co.jp");
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            r.recipients[0].diagnostic.as_deref(),
            Some("#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##")
        );
        assert_eq!(r.original_message_id.as_deref(), Some("<n1@example.jp>"));
    }

    #[test]
    fn a_transient_code_is_soft() {
        let raw = b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\r\nTo: ann@example.com\r\nSubject: Warning: could not send message for past 4 hours\r\n\r\n    **********************************************\r\n    **      THIS IS A WARNING MESSAGE ONLY      **\r\n    **********************************************\r\n\r\nThe message could not be delivered for 4 hours.\r\n\r\n<pat@example.org>\r\n    (reason: 451 4.4.1 reply: read error from mx.example.org.)\r\n";
        let r = one(raw, "mailer-daemon");
        assert_eq!(r.kind, Kind::SoftBounce);
        assert_eq!(r.recipients[0].address, "pat@example.org");
        assert_eq!(r.recipients[0].status.as_deref(), Some("4.4.1"));
    }

    #[test]
    fn jmrp_complaint() {
        let r = one(sample!("jmrp.eml"), "jmrp");
        assert_eq!(r.kind, Kind::Complaint);
        assert_eq!(r.recipients.len(), 1);
        assert_eq!(r.recipients[0].address, "ivan@outlook.com");
        assert_eq!(r.recipients[0].kind, Kind::Complaint);
        assert_eq!(
            original(&r),
            (
                Some("<offer-0325@mail.example.com>"),
                Some("cp_01JPX8G9H0J1K2M3N4P5Q6R7S8")
            )
        );
        // The same shape from anyone else is nothing.
        let other = String::from_utf8_lossy(sample!("jmrp.eml"))
            .replace("From: staff@hotmail.com", "From: someone@example.net");
        assert_eq!(read(other.as_bytes()), None);
    }
}
