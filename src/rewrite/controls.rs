//! The `X-Mailtally-*` control headers and the template key.

use super::headers::Field;
use super::TrackMode;

/// What the sender asked for, stored with the message; the headers never leave the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controls {
    pub template: String,
    /// `X-Mailtally-Template` was given (otherwise derived from the subject).
    pub template_explicit: bool,
    pub track: TrackMode,
    pub visibility: Option<String>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// `X-Mailtally-Group: separate`: each recipient's copy is addressed to them alone.
    pub separate: bool,
    /// Each copy gets `List-Unsubscribe` and one-click `List-Unsubscribe-Post` headers, unless
    /// `X-Mailtally-List-Unsubscribe: off` or the message has its own `List-Unsubscribe`.
    pub list_unsubscribe: bool,
}

pub(crate) const PREFIX: &str = "x-mailtally-";

/// Read the controls from the top-level fields. `subject` is the decoded subject when a
/// parser could decode it; `names` are the recipients' display names and local parts.
pub(crate) fn read(
    raw: &[u8],
    fields: &[Field],
    subject: Option<String>,
    names: &[String],
    default_track: TrackMode,
) -> Controls {
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.is(raw, name))
            .map(|f| f.text(raw))
            .filter(|v| !v.is_empty())
    };
    let subject = subject.or_else(|| get("subject"));
    let explicit = get("x-mailtally-template");
    let track = get("x-mailtally-track")
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_track);
    Controls {
        template_explicit: explicit.is_some(),
        template: explicit.unwrap_or_else(|| template_key(subject.as_deref().unwrap_or(""), names)),
        track,
        // An empty value is kept (and refused by the relay): read as absent, it would take the
        // sender's default, which may be wider than what the sender meant.
        visibility: fields
            .iter()
            .find(|f| f.is(raw, "x-mailtally-visibility"))
            .map(|f| f.text(raw).to_ascii_lowercase()),
        deal: get("x-mailtally-deal"),
        lead: get("x-mailtally-lead"),
        project: get("x-mailtally-project"),
        subject,
        message_id: get("message-id"),
        separate: get("x-mailtally-group").is_some_and(|v| v.eq_ignore_ascii_case("separate")),
        list_unsubscribe: !get("x-mailtally-list-unsubscribe")
            .is_some_and(|v| v.eq_ignore_ascii_case("off"))
            && get("list-unsubscribe").is_none(),
    }
}

const MONTHS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
];
const REPLY_PREFIXES: &[&str] = &["re", "fw", "fwd", "aw", "wg", "sv", "vs", "tr", "rv", "r"];

/// A key that one template's sends share: the subject lower-cased, reply prefixes dropped,
/// numbers, dates and the recipients' names folded into placeholders.
pub fn template_key(subject: &str, names: &[String]) -> String {
    let mut s = subject.trim().to_lowercase();
    // "Re: Fwd: [2] ..." prefixes.
    loop {
        let t = s.trim_start();
        let word_end = t.find(':').unwrap_or(0);
        let word = t[..word_end].trim();
        let word = word.split('[').next().unwrap_or("").trim();
        if word_end > 0 && REPLY_PREFIXES.contains(&word) {
            s = t[word_end + 1..].to_owned();
        } else {
            break;
        }
    }
    let names: Vec<String> = names
        .iter()
        .flat_map(|n| {
            n.split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.chars().count() >= 2)
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut words: Vec<String> = Vec::new();
    for w in s.split_whitespace() {
        // Keep punctuation around a word, fold the word itself.
        let core: &str = w.trim_matches(|c: char| !c.is_alphanumeric());
        let placeholder = if core.is_empty() {
            None
        } else if core.chars().any(|c| c.is_ascii_digit()) || MONTHS.contains(&core) {
            // Numbers, dates, order ids: any digit makes the word a number.
            Some("#")
        } else if names.iter().any(|n| n == core) {
            Some("{name}")
        } else {
            None
        };
        let folded = match placeholder {
            Some(p) => w.replacen(core, p, 1),
            None => w.to_owned(),
        };
        // "3 June 2025" is one date, not three numbers.
        if folded == "#" && words.last().is_some_and(|l| l == "#") {
            continue;
        }
        words.push(folded);
    }
    let key = words.join(" ");
    if key.is_empty() {
        "(no subject)".to_owned()
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_template_one_key() {
        let names = vec!["Jane Doe".to_owned(), "jane.doe".to_owned()];
        let a = template_key("Re: Invoice 1234 for Jane, due 2024-05-01", &names);
        let b = template_key("Invoice 99 for Bob, due 3 June 2025", &["Bob".to_owned()]);
        assert_eq!(a, "invoice # for {name}, due #");
        assert_eq!(a, b);
        assert_eq!(template_key("", &[]), "(no subject)");
    }
}
