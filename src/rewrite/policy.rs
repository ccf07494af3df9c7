//! Which links are tracked. One place, so that HTML, VML and text links follow one rule.

use std::borrow::Cow;

use super::token::MAX_URL_LEN;

/// Why a link is left as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Empty,
    Mailto,
    Tel,
    Sms,
    /// In-page `#` link.
    Fragment,
    /// A merge tag left for the sending platform (`{{url}}`, `*|URL|*`).
    MergeTag,
    /// `data-mailtally="off"`.
    OptedOut,
    /// The List-Unsubscribe URL, or a link whose text or URL says unsubscribe.
    Unsubscribe,
    /// Already points at our own `PUBLIC_URL`.
    AlreadyTracked,
    /// Any other scheme (or none): only http(s) can be redirected to.
    NotWeb,
    /// Longer than a token may carry.
    TooLong,
}

#[derive(Clone, Debug)]
pub struct LinkPolicy {
    /// `PUBLIC_URL` with one trailing `/`.
    own_prefix: String,
    /// URLs named by the message's List-Unsubscribe header.
    list_unsubscribe: Vec<String>,
}

/// Words that mark an unsubscribe link, lower case, in the link text.
const UNSUB_TEXT: &[&str] = &[
    "unsubscribe",
    "opt out",
    "opt-out",
    "abmelden",
    "désabonner",
    "desabonner",
    "désinscri",
    "desinscri",
    "darse de baja",
    "cancelar suscripción",
    "afmelden",
    "disiscriviti",
];
/// The same in the URL.
const UNSUB_URL: &[&str] = &["unsubscribe", "unsub", "optout", "opt-out", "opt_out"];

impl LinkPolicy {
    pub fn new(public_url: &str, list_unsubscribe_header: Option<&str>) -> Self {
        let mut own_prefix = public_url.trim().trim_end_matches('/').to_owned();
        own_prefix.push('/');
        let list_unsubscribe = list_unsubscribe_header
            .map(|h| {
                h.split('<')
                    .skip(1)
                    .filter_map(|s| s.split('>').next())
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        LinkPolicy {
            own_prefix,
            list_unsubscribe,
        }
    }

    /// Decide one link. `url` is the decoded attribute value, `text` what the reader sees.
    pub fn decide(&self, url: &str, text: &str, opted_out: bool) -> Result<(), Skip> {
        let url = browser_url(url);
        let url = url.as_ref();
        if opted_out {
            return Err(Skip::OptedOut);
        }
        if url.is_empty() {
            return Err(Skip::Empty);
        }
        if url.starts_with('#') {
            return Err(Skip::Fragment);
        }
        let scheme = scheme(url);
        match scheme.as_deref() {
            Some("mailto") => return Err(Skip::Mailto),
            Some("tel") | Some("callto") => return Err(Skip::Tel),
            Some("sms") | Some("smsto") => return Err(Skip::Sms),
            Some("http") | Some("https") => {}
            Some(_) => return Err(Skip::NotWeb),
            None if is_merge_tag(url) => return Err(Skip::MergeTag),
            None => return Err(Skip::NotWeb),
        }
        if starts_with_ignore_case(url, &self.own_prefix) {
            return Err(Skip::AlreadyTracked);
        }
        if self.list_unsubscribe.iter().any(|u| u == url) {
            return Err(Skip::Unsubscribe);
        }
        let lower_url = url.to_ascii_lowercase();
        if UNSUB_URL.iter().any(|w| lower_url.contains(w)) {
            return Err(Skip::Unsubscribe);
        }
        let lower_text = text.to_lowercase();
        if UNSUB_TEXT.iter().any(|w| lower_text.contains(w)) {
            return Err(Skip::Unsubscribe);
        }
        if url.len() > MAX_URL_LEN {
            return Err(Skip::TooLong);
        }
        Ok(())
    }
}

/// The URL a browser would follow for a decoded attribute value: the WHATWG URL parser
/// strips leading and trailing C0 controls and spaces and removes every tab, CR and LF
/// before parsing. Mail clients wrap long `href` values across lines; signing the value as
/// written would send the click to a URL nobody asked for.
pub fn browser_url(url: &str) -> Cow<'_, str> {
    let trimmed = url.trim_matches(|c: char| c <= ' ');
    if trimmed.contains(['\t', '\n', '\r']) {
        Cow::Owned(trimmed.replace(['\t', '\n', '\r'], ""))
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// The URL scheme, lower case, when the value has one (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":").
fn scheme(url: &str) -> Option<String> {
    let colon = url.find(':')?;
    let s = &url[..colon];
    let mut chars = s.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
    {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

fn is_merge_tag(url: &str) -> bool {
    ["{{", "{%", "*|", "%%", "[[", "${", "<%"]
        .iter()
        .any(|m| url.contains(m))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> LinkPolicy {
        LinkPolicy::new(
            "https://t.example.com/",
            Some("<mailto:u@x.test>, <https://x.test/list/leave?id=1>"),
        )
    }

    #[test]
    fn web_links_are_tracked() {
        assert_eq!(p().decide("https://shop.test/a?b=1", "Buy", false), Ok(()));
        assert_eq!(p().decide("  HTTP://shop.test/  ", "", false), Ok(()));
        // A merge tag inside a URL that has a scheme is still a URL.
        assert_eq!(p().decide("https://x.test/{{id}}", "", false), Ok(()));
    }

    #[test]
    fn each_rule() {
        let p = p();
        assert_eq!(p.decide("mailto:a@b.c", "", false), Err(Skip::Mailto));
        assert_eq!(p.decide("MAILTO:a@b.c", "", false), Err(Skip::Mailto));
        assert_eq!(p.decide("tel:+4912345", "", false), Err(Skip::Tel));
        assert_eq!(p.decide("sms:+4912345", "", false), Err(Skip::Sms));
        assert_eq!(p.decide("#top", "", false), Err(Skip::Fragment));
        assert_eq!(p.decide("#", "", false), Err(Skip::Fragment));
        assert_eq!(p.decide("{{action_url}}", "", false), Err(Skip::MergeTag));
        assert_eq!(p.decide("*|UNSUB|*", "", false), Err(Skip::MergeTag));
        assert_eq!(p.decide("https://a.test/", "", true), Err(Skip::OptedOut));
        assert_eq!(
            p.decide("https://x.test/list/leave?id=1", "Leave", false),
            Err(Skip::Unsubscribe)
        );
        assert_eq!(
            p.decide("https://x.test/u?id=1", "Unsubscribe here", false),
            Err(Skip::Unsubscribe)
        );
        assert_eq!(
            p.decide("https://x.test/unsubscribe?id=1", "here", false),
            Err(Skip::Unsubscribe)
        );
        assert_eq!(
            p.decide("https://t.example.com/c/abc", "", false),
            Err(Skip::AlreadyTracked)
        );
        assert_eq!(p.decide("", "", false), Err(Skip::Empty));
        assert_eq!(
            p.decide("javascript:alert(1)", "", false),
            Err(Skip::NotWeb)
        );
        assert_eq!(p.decide("/relative", "", false), Err(Skip::NotWeb));
        let long = format!("https://x.test/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(p.decide(&long, "", false), Err(Skip::TooLong));
    }

    #[test]
    fn values_are_read_as_a_browser_reads_them() {
        assert_eq!(
            browser_url("\u{0}\x1f https://x.test/view/?id=AB\r\n  CD\tEF\n\x0c \u{1}"),
            "https://x.test/view/?id=AB  CDEF"
        );
        // Only tab, CR and LF go from the inside; other controls and spaces stay.
        assert_eq!(
            browser_url("https://x.test/a b\x0bc"),
            "https://x.test/a b\x0bc"
        );
        // Non-ASCII whitespace is not the parser's to strip.
        assert_eq!(
            browser_url("\u{a0}https://x.test/"),
            "\u{a0}https://x.test/"
        );
        assert!(matches!(browser_url("https://x.test/"), Cow::Borrowed(_)));
    }

    #[test]
    fn rules_see_the_value_a_browser_follows() {
        let p = p();
        // A scheme or a word broken by a line break is still that scheme or word.
        assert_eq!(
            p.decide("java\nscript:alert(1)", "", false),
            Err(Skip::NotWeb)
        );
        assert_eq!(p.decide("mail\r\nto:a@b.c", "", false), Err(Skip::Mailto));
        assert_eq!(p.decide("ht\ntps://x.test/a", "", false), Ok(()));
        assert_eq!(p.decide("\n\t#top", "", false), Err(Skip::Fragment));
        assert_eq!(
            p.decide("https://x.test/unsub\r\nscribe?id=1", "here", false),
            Err(Skip::Unsubscribe)
        );
        assert_eq!(
            p.decide("https://x.test/list/\nleave?id=1", "Leave", false),
            Err(Skip::Unsubscribe)
        );
        assert_eq!(
            p.decide("https://t.example.com/\nc/abc", "", false),
            Err(Skip::AlreadyTracked)
        );
        assert_eq!(p.decide(" \r\n\t ", "", false), Err(Skip::Empty));
        // The limit is on what the token would carry.
        let wrapped = format!("https://x.test/{}", "a\r\n".repeat(MAX_URL_LEN / 2));
        assert_eq!(p.decide(&wrapped, "", false), Ok(()));
    }
}
