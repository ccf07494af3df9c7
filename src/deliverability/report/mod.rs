//! Bounces and complaints as they arrive in a sender's mailbox: [`read`] takes one whole message
//! and says whether it is a delivery status notification (RFC 3464, status codes RFC 3463), a
//! bounce of one of the common non-standard shapes, or an abuse feedback report (ARF, RFC 5965),
//! and what it says: who, how badly, and which of our messages it is about.
//!
//! Owns: reading those formats. Pure: no database, no I/O, no clock, no HTTP; what to do with a
//! report (suppression, events, counts) belongs to [`super::record`].
//!
//! Must never: panic or loop long on any bytes (anyone can send mail to a mailbox, so every
//! input is an attacker's), return a string that holds a line break or is unbounded, or call a
//! message a bounce on a guess. A report says what a message claims, not that it is true: a
//! forged DSN reads like a real one, so callers match `copy_token` or `original_message_id`
//! against their own copies before acting on it.

/// A message from `tests/it/deliverability_samples/`.
#[cfg(test)]
macro_rules! sample {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/deliverability_samples/",
            $name
        ))
        .as_slice()
    };
}

mod arf;
mod dsn;
mod fields;
mod plain;

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Longest diagnostic text kept, in characters.
pub const DIAGNOSTIC_MAX: usize = 1000;
/// Longest address kept; longer ones are not addresses (RFC 5321 allows 254 in a path).
pub const ADDRESS_MAX: usize = 320;
/// Longest Message-ID and copy token kept; longer ones are dropped, not cut.
pub const ID_MAX: usize = 256;
/// Longest value of the other short fields (action, feedback type, reporter, dates).
pub const FIELD_MAX: usize = 200;
/// Most recipients read from one report; a DSN naming more is still read, the rest unnamed.
pub const RECIPIENTS_MAX: usize = 100;

/// How a report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Permanent: the recipient will not take mail (5.x.x, or 5xx in a non-standard bounce).
    HardBounce,
    /// Transient: delayed, or failed for a reason that may pass (4.x.x, 4xx).
    SoftBounce,
    /// The recipient reported the message as abuse.
    Complaint,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::HardBounce => "hard_bounce",
            Kind::SoftBounce => "soft_bounce",
            Kind::Complaint => "complaint",
        }
    }
}

/// Which shape the message had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `multipart/report; report-type=delivery-status` with a `message/delivery-status` part.
    Rfc3464,
    /// `multipart/report; report-type=feedback-report` with a `message/feedback-report` part.
    Arf,
    /// A bounce or complaint in prose: `"qmail"`, `"exim"`, `"exchange-ndr"`, `"mailer-daemon"`
    /// (Postfix, Sendmail and others' text), `"jmrp"` (Microsoft's non-ARF complaint).
    NonStandard(&'static str),
}

impl Format {
    pub fn label(self) -> &'static str {
        match self {
            Format::Rfc3464 => "rfc3464",
            Format::Arf => "arf",
            Format::NonStandard(name) => name,
        }
    }
}

/// One recipient a report is about. Every string is one line and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// As written (without `rfc822;` and `<>`), case kept; at most [`ADDRESS_MAX`] characters.
    pub address: String,
    /// What happened to this recipient; a report may mix failed and delayed recipients.
    pub kind: Kind,
    /// The DSN's `Action`, lower case (`failed`, `delayed`); None outside RFC 3464.
    pub action: Option<String>,
    /// RFC 3463 status, `class.subject.detail` (`5.1.1`), from the report or its text.
    pub status: Option<String>,
    /// The remote server's words (`Diagnostic-Code` without `smtp;`), at most
    /// [`DIAGNOSTIC_MAX`] characters.
    pub diagnostic: Option<String>,
}

impl Recipient {
    /// A complaining recipient: complaints carry no action, status or diagnostic.
    fn complaint(address: String) -> Recipient {
        Recipient {
            address,
            kind: Kind::Complaint,
            action: None,
            status: None,
            diagnostic: None,
        }
    }
}

/// What one bounce or complaint says. Every string is one line and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// [`Kind::Complaint`] for a complaint; for a bounce [`Kind::HardBounce`] when any recipient
    /// failed permanently, else [`Kind::SoftBounce`].
    pub kind: Kind,
    pub format: Format,
    /// The bounced or complaining recipients. May be empty: feedback loops often redact the
    /// recipient, and then only `copy_token` or `original_message_id` say whose copy it was.
    pub recipients: Vec<Recipient>,
    /// Message-ID of the returned original, with its `<>`.
    pub original_message_id: Option<String>,
    /// `X-Mailtally-Copy` of the returned original (whole message or headers), if present.
    pub copy_token: Option<String>,
    /// ARF `Feedback-Type` as written, lower case (`abuse`); None for bounces, and for an ARF
    /// report that names none (read as abuse, see `arf.rs`).
    pub feedback_type: Option<String>,
    /// Who wrote the report: DSN `Reporting-MTA` (without `dns;`), ARF `User-Agent`.
    pub reporter: Option<String>,
    /// `Arrival-Date` (DSN) or `Arrival-Date`/`Received-Date` (ARF), as written.
    pub arrival_date: Option<String>,
    /// ARF `Original-Mail-From`: the envelope sender of the reported message.
    pub original_mail_from: Option<String>,
}

impl Report {
    /// Every string in the report with the most characters it may hold, named by field: what
    /// a caller stores or shows, and what the tests and the fuzz target check.
    pub fn strings(&self) -> Vec<(&'static str, &str, usize)> {
        let Report {
            kind: _,
            format,
            recipients,
            original_message_id,
            copy_token,
            feedback_type,
            reporter,
            arrival_date,
            original_mail_from,
        } = self;
        let mut out = vec![("format", format.label(), FIELD_MAX)];
        let optional = [
            ("original_message_id", original_message_id, ID_MAX),
            ("copy_token", copy_token, ID_MAX),
            ("feedback_type", feedback_type, FIELD_MAX),
            ("reporter", reporter, FIELD_MAX),
            ("arrival_date", arrival_date, FIELD_MAX),
            (
                "original_mail_from",
                original_mail_from,
                ADDRESS_MAX.max(FIELD_MAX),
            ),
        ];
        for (name, v, max) in optional {
            out.extend(v.as_deref().map(|v| (name, v, max)));
        }
        for r in recipients {
            let Recipient {
                address,
                kind: _,
                action,
                status,
                diagnostic,
            } = r;
            out.push(("address", address, ADDRESS_MAX));
            out.extend(action.as_deref().map(|v| ("action", v, FIELD_MAX)));
            out.extend(status.as_deref().map(|v| ("status", v, FIELD_MAX)));
            out.extend(
                diagnostic
                    .as_deref()
                    .map(|v| ("diagnostic", v, DIAGNOSTIC_MAX)),
            );
        }
        out
    }
}

/// Reads one whole message (the bytes as fetched over IMAP). Some only for a bounce or a
/// complaint; None for everything else, including auto-replies, read receipts, ordinary replies
/// and newsletters, and for anything this reader is unsure of.
pub fn read(raw: &[u8]) -> Option<Report> {
    let message = MessageParser::default().parse(raw)?;
    match report_type(&message).as_deref() {
        Some("feedback-report") => arf::read(&message),
        // A report without a type is read as a DSN when it has a delivery-status part.
        // When its delivery-status part names no recipient, its text may still.
        Some("delivery-status") | Some("") => match dsn::read(&message) {
            Some(report) => report,
            None => plain::read(&message),
        },
        // Read receipts (disposition-notification), TLS reports and the like.
        Some(_) => None,
        None => plain::read(&message),
    }
}

/// The `report-type` of a `multipart/report` message, lower case ("" when absent); None when
/// the message is not a report.
fn report_type(message: &Message<'_>) -> Option<String> {
    let ct = message.parts.first()?.content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        return None;
    }
    Some(
        ct.attribute("report-type")
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether a part's type is `ctype/subtype` (case-insensitive).
fn is_type(part: &MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| subtypes.iter().any(|t| s.eq_ignore_ascii_case(t)))
    })
}

/// The Message-ID and `X-Mailtally-Copy` of the returned original: the first `message/rfc822`
/// (or `message/global`) part, else the first `text/rfc822-headers` part.
fn returned(message: &Message<'_>) -> (Option<String>, Option<String>) {
    let whole = message.parts.iter().skip(1).find_map(|p| match &p.body {
        PartType::Message(m) => Some(ids(m)),
        _ => None,
    });
    if let Some(found) = whole {
        return found;
    }
    message
        .parts
        .iter()
        .skip(1)
        .filter(|p| {
            is_type(p, "text", &["rfc822-headers", "rfc822-header"])
                || is_type(p, "message", &["rfc822-headers", "rfc822", "global"])
        })
        .find_map(|p| MessageParser::default().parse_headers(p.contents()))
        .map(|m| ids(&m))
        .unwrap_or((None, None))
}

/// The Message-ID (with `<>`) and copy token in a message's own headers.
fn ids(m: &Message<'_>) -> (Option<String>, Option<String>) {
    let id = m
        .message_id()
        .and_then(|id| token(id.trim_matches(['<', '>'])))
        .map(|id| format!("<{id}>"));
    let copy = m
        .header_raw("X-Mailtally-Copy")
        .and_then(|v| token(v.trim()));
    (id, copy)
}

/// An identifier as is, or None when it is empty, too long, or holds a space or control.
fn token(v: &str) -> Option<String> {
    let ok = !v.is_empty()
        && v.chars().count() <= ID_MAX - 2
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| v.to_string())
}

/// One line of at most `max` characters: every run of whitespace or control characters
/// (CR, LF, NEL, U+2028 and the rest) becomes one space, the ends are trimmed, and the text is
/// cut at a character boundary. None when nothing is left.
fn line(v: &str, max: usize) -> Option<String> {
    let mut out = String::with_capacity(v.len().min(max * 4));
    let mut count = 0;
    let mut space = false;
    for c in v.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            if count + 1 >= max {
                break;
            }
            out.push(' ');
            count += 1;
            space = false;
        }
        if count >= max {
            break;
        }
        out.push(c);
        count += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// An address from `rfc822; <a@b>`, `<a@b>`, `Name <a@b>` or `a@b`; None when what is left
/// does not look like one address.
fn address(v: &str) -> Option<String> {
    let v = v.trim();
    // The address type of RFC 3464 (`rfc822;`), when there is one before any `@`.
    let v = match v.split_once(';') {
        Some((kind, rest)) if !kind.contains('@') => rest.trim(),
        _ => v,
    };
    let v = match (v.rfind('<'), v.rfind('>')) {
        (Some(open), Some(close)) if open < close => v.get(open + 1..close).unwrap_or(""),
        _ => v,
    };
    let v = v.trim().trim_start_matches("mailto:");
    let (local, domain) = v.rsplit_once('@')?;
    let ok = !local.is_empty()
        && domain.contains(|c: char| c.is_ascii_alphanumeric())
        && v.chars().count() <= ADDRESS_MAX
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c));
    ok.then(|| v.to_string())
}

/// An RFC 3463 status (`5.1.1`) at the start of `v`, or None. Class 2, 4 or 5; subject and
/// detail one to three digits.
fn status(v: &str) -> Option<String> {
    let v = v.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let code = v.get(..end)?.trim_end_matches('.');
    let mut parts = code.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let ok = matches!(class, "2" | "4" | "5")
        && parts.next().is_none()
        && (1..=3).contains(&subject.len())
        && (1..=3).contains(&detail.len());
    ok.then(|| code.to_string())
}

/// The first RFC 3463 status inside running text (not part of an IP address or a version).
fn status_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (at, c) in text.char_indices() {
        if !matches!(c, '2' | '4' | '5') || bytes.get(at + 1) != Some(&b'.') {
            continue;
        }
        let before = at.checked_sub(1).and_then(|b| bytes.get(b));
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'.') {
            continue;
        }
        let rest = text.get(at..).unwrap_or("");
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let run = rest.get(..end).unwrap_or("");
        // `5.1.1` but not `5.1.1.4` (an address) nor `5.1.1234`.
        if run.trim_end_matches('.').matches('.').count() != 2 {
            continue;
        }
        if rest
            .get(end..)
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphanumeric()))
        {
            continue;
        }
        if let Some(s) = status(run) {
            return Some(s);
        }
    }
    None
}

/// The first SMTP reply code (`550`, `452`) inside running text: three digits starting with 4
/// or 5, alone as a word, followed by a space, `-`, `)`, `,` or the end.
fn smtp_code_in(text: &str) -> Option<u16> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at + 3 <= bytes.len() {
        let word = bytes.get(at..at + 3)?;
        let before = at.checked_sub(1).and_then(|b| bytes.get(b));
        let after = bytes.get(at + 3);
        if matches!(word[0], b'4' | b'5')
            && word[1].is_ascii_digit()
            && word[2].is_ascii_digit()
            && before.is_none_or(|b| b.is_ascii_whitespace() || matches!(b, b'(' | b'#' | b':'))
            && after.is_none_or(|b| b.is_ascii_whitespace() || matches!(b, b'-' | b')' | b','))
        {
            let n = (word[0] - b'0') as u16 * 100
                + (word[1] - b'0') as u16 * 10
                + (word[2] - b'0') as u16;
            return Some(n);
        }
        at += 1;
    }
    None
}

/// The kind a status or SMTP code names: class 5 is permanent, class 4 transient.
fn kind_of(status: Option<&str>, smtp: Option<u16>) -> Option<Kind> {
    match status.and_then(|s| s.chars().next()) {
        Some('5') => Some(Kind::HardBounce),
        Some('4') => Some(Kind::SoftBounce),
        Some(_) => None,
        None => match smtp.map(|c| c / 100) {
            Some(5) => Some(Kind::HardBounce),
            Some(4) => Some(Kind::SoftBounce),
            _ => None,
        },
    }
}

/// The report's kind from its recipients' (a bounce only: complaints set theirs).
fn overall(kinds: impl IntoIterator<Item = Kind>) -> Kind {
    let mut out = Kind::SoftBounce;
    for k in kinds {
        if k == Kind::HardBounce {
            out = k;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string one line, without control characters, within its bound.
    pub(super) fn assert_clean(r: &Report) {
        for (name, v, max) in r.strings() {
            assert!(!v.is_empty(), "{name} is empty");
            assert!(
                v.chars().count() <= max,
                "{name} is longer than {max}: {v:?}"
            );
            assert!(
                !v.chars()
                    .any(|c| c.is_control() || (c.is_whitespace() && c != ' ')),
                "{name} holds a line break or control: {v:?}"
            );
        }
    }

    /// The returned original's Message-ID and copy token.
    pub(super) fn original(r: &Report) -> (Option<&str>, Option<&str>) {
        (r.original_message_id.as_deref(), r.copy_token.as_deref())
    }

    /// Each recipient's address, kind and status.
    pub(super) fn summary(r: &Report) -> Vec<(&str, Kind, Option<&str>)> {
        r.recipients
            .iter()
            .map(|p| (p.address.as_str(), p.kind, p.status.as_deref()))
            .collect()
    }

    #[test]
    fn not_bounces() {
        for (name, raw) in [
            ("auto-reply", sample!("auto-reply.eml")),
            ("reply", sample!("reply-undeliverable.eml")),
            ("newsletter", sample!("newsletter.eml")),
            ("read receipt", sample!("read-receipt.eml")),
            ("delivered and relayed", sample!("relayed-only.eml")),
            ("forwarded bounce", sample!("forwarded-bounce.eml")),
        ] {
            assert_eq!(read(raw), None, "{name}");
        }
        assert_eq!(read(b""), None);
        assert_eq!(read(b"\xff\xfe garbage"), None);
    }

    #[test]
    fn a_mail_system_with_no_code_is_not_a_bounce() {
        let vague = b"From: MAILER-DAEMON@mx.example.net\r\nTo: ann@example.com\r\nSubject: Returned mail\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\r\n<bob@example.org>: mailbox unavailable\r\n";
        assert_eq!(read(vague), None);
        let coded = String::from_utf8_lossy(vague).replace("unavailable", "unavailable (550)");
        let r = read(coded.as_bytes()).unwrap();
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.format, Format::NonStandard("mailer-daemon"));
        assert_eq!(r.recipients[0].address, "bob@example.org");
        assert_eq!(r.recipients[0].status, None);
    }

    #[test]
    fn strings_are_one_line_and_cut_at_a_character() {
        assert_eq!(line(" a\r\n b\u{2028}c\t ", 10).as_deref(), Some("a b c"));
        assert_eq!(line("ééééé", 3).as_deref(), Some("ééé"));
        assert_eq!(line("ab cd", 3).as_deref(), Some("ab"));
        assert_eq!(line("\r\n", 3), None);
        let long = format!(
            "From: MAILER-DAEMON@x.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 {}\r\n\r\n--b--\r\n",
            "\u{e9}\r\n x\u{85}".repeat(900)
        );
        let r = read(long.as_bytes()).unwrap();
        assert_clean(&r);
        let d = r.recipients[0].diagnostic.as_deref().unwrap();
        // Cut at the limit, or one before it where a space would have ended the line.
        assert!((DIAGNOSTIC_MAX - 1..=DIAGNOSTIC_MAX).contains(&d.chars().count()));
    }

    #[test]
    fn statuses_and_codes_in_text() {
        assert_eq!(status_in("said: 550-5.1.1 The").as_deref(), Some("5.1.1"));
        assert_eq!(status_in("(#4.4.1)").as_deref(), Some("4.4.1"));
        assert_eq!(status_in("host 10.5.1.1 and 192.0.2.25"), None);
        assert_eq!(status_in("v5.1.1 or 5.1.1234 or 5.1.1.4"), None);
        assert_eq!(status_in("ends 5.2.1."), Some("5.2.1".into()));
        assert_eq!(smtp_code_in("said: 550-5.1.1"), Some(550));
        assert_eq!(smtp_code_in("#550 5.1.1"), Some(550));
        assert_eq!(smtp_code_in("port 25, 1550 users, 550x"), None);
        assert_eq!(status("5.1.10").as_deref(), Some("5.1.10"));
        assert_eq!(status("3.1.1"), None);
        assert_eq!(
            address("rfc822; <A@Example.org>").as_deref(),
            Some("A@Example.org")
        );
        assert_eq!(
            address("Neko <mailto:n@example.jp>").as_deref(),
            Some("n@example.jp")
        );
        assert_eq!(address("a b@example.org"), None);
        assert_eq!(address("@example.org"), None);
    }

    /// Every message of the shared corpus is read without a panic, and its DSNs as what they
    /// say (../shared/corpus, see its SOURCES.md).
    #[test]
    fn shared_corpus() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/corpus/mime"
        ));
        let Ok(entries) = std::fs::read_dir(dir) else {
            eprintln!("skipped: ../shared/corpus is absent");
            return;
        };
        let mut found = std::collections::BTreeMap::new();
        for entry in entries {
            let path = entry.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            if let Some(r) = read(&raw) {
                assert_clean(&r);
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                found.insert(name, r);
            }
        }
        let get = |name: &str| {
            found
                .get(name)
                .unwrap_or_else(|| panic!("{name} not read as a bounce: {:?}", found.keys()))
        };
        let r = get("mikel__multipart_report_emails_multi_address_bounce1.eml");
        assert_eq!((r.kind, r.format), (Kind::HardBounce, Format::Rfc3464));
        assert_eq!(r.recipients.len(), 5);
        assert_eq!(r.recipients[0].address, "bbbbvhvbbvkjbhfbvbvjhb@gmail.com");
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<118707422.15521266992174819.JavaMail.root@lvmail01>")
        );
        let r = get("mikel__multipart_report_emails_report_422.eml");
        assert_eq!(r.kind, Kind::SoftBounce);
        assert_eq!(r.recipients[0].address, "fraser@oooooooo.com.au");
        assert_eq!(r.recipients[0].action.as_deref(), Some("delayed"));
        assert_eq!(r.recipients[0].status.as_deref(), Some("4.2.2"));
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<15655788.13.1200472642578.JavaMail.Administrator@mail.ttttt.com.au>")
        );
        let r = get("mikel__multipart_report_emails_report_530.eml");
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.recipients[0].address, "edwin@zzzzzzz.com");
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.3.0"));
        assert_eq!(
            r.recipients[0].diagnostic.as_deref(),
            Some("553 5.3.0 <edwin@zzzzzzz.com>... Unknown E-Mail Address")
        );
        let r = get("mikel__multipart_report_emails_multipart_report_multiple_status.eml");
        assert_eq!(r.recipients[0].address, "u@ci.com");
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.3.0"));
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<4c2a146147ac8_61ff157c4ec1652df@s.h.c.mail>")
        );
        let r = get("nodemailer__fixtures_delivery-status.eml");
        assert_eq!(r.kind, Kind::HardBounce);
        assert_eq!(r.recipients[0].address, "xxxx@xxxx.com");
        assert!(r.recipients[0]
            .diagnostic
            .as_deref()
            .unwrap()
            .starts_with("Amazon SES did not send the message"));
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("<xxxxx@email.amazonses.com>")
        );
        for (name, r) in &found {
            assert!(
                name.contains("report")
                    || name.contains("delivery-status")
                    || name.contains("bounce")
                    || name.contains("mimepart_without_content_type"),
                "{name} read as {r:?}"
            );
        }
    }
}
