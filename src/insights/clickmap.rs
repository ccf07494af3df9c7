//! The click map's document: a stored copy's HTML with every tracked link marked by its index's
//! share of clicks and its count, made safe to show in a sandboxed frame (the open pixel and
//! every remote image replaced, links made inert). Pure: the caller reads the copy and counts.
//!
//! A copy's tracked links carry signed click tokens, each naming the link's index in the
//! message, so two links to the same URL are told apart by their tokens, not their URLs.

use crate::rewrite::token::{self, TokenKeys, Verified};

/// Clicks on one link of the message, by its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCount {
    pub index: u32,
    pub url: String,
    pub clicks: i64,
}

/// A transparent 1x1 GIF, what replaces the pixel and every remote image.
const BLANK_IMAGE: &str =
    "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

const BADGE_STYLE: &str = "<style>.mt-badge{display:inline-block;margin-left:4px;padding:1px 6px;\
border-radius:9px;background:#dd6b20;color:#fff;font:bold 12px/1.4 system-ui,sans-serif;\
text-decoration:none;vertical-align:middle}</style>";

/// The text/html part of a raw copy, decoded, if it has one.
pub fn html_of(raw: &[u8]) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    let part = message.html_bodies().next()?;
    part.text_contents().map(str::to_string)
}

/// The share of `clicks` in `total`, as shown on a badge: "25%".
pub fn share(clicks: i64, total: i64) -> String {
    if total <= 0 {
        return "0%".into();
    }
    format!("{:.0}%", clicks as f64 * 100.0 / total as f64)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The copy's HTML for the frame: each tracked link's URL replaced by `#` (its destination in its
/// title) and a badge "share · count" after its start tag; the pixel and every remote image
/// source replaced by a blank image. `public_url` is the base of the tracked links.
pub fn frame_document(
    html: &str,
    public_url: &str,
    keys: &TokenKeys,
    counts: &[LinkCount],
) -> String {
    let public = public_url.trim().trim_end_matches('/');
    let total: i64 = counts.iter().map(|c| c.clicks).sum();
    let click_prefix = format!("{public}/c/");
    let open_prefix = format!("{public}/o/");
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() + 4096);
    // Badges waiting for the end of their link's start tag.
    let mut pending: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &html[i..];
        if rest.starts_with(&click_prefix) {
            let start = i + click_prefix.len();
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| is_token_byte(**b))
                    .count();
            if let Ok(Verified::Click { link, url, .. }) = token::verify(keys, &html[start..end]) {
                let clicks = counts
                    .iter()
                    .find(|c| c.index == link)
                    .map(|c| c.clicks)
                    .unwrap_or(0);
                out.push_str("#link-");
                out.push_str(&link.to_string());
                // The destination as the link's title, in the attribute's own quotes.
                let quote = match i.checked_sub(1).map(|j| bytes[j]) {
                    Some(b'"') => Some('"'),
                    Some(b'\'') => Some('\''),
                    _ => None,
                };
                if let Some(q) = quote {
                    out.push_str(&format!(
                        "{q} title={q}{}{q} data-link={q}{link}",
                        escape(&url)
                    ));
                }
                pending = Some(format!(
                    "<span class=\"mt-badge\" data-link=\"{link}\" data-clicks=\"{clicks}\">{} \u{b7} {clicks}</span>",
                    share(clicks, total)
                ));
                i = end;
                continue;
            }
        }
        if rest.starts_with(&open_prefix) {
            let start = i + open_prefix.len();
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| is_token_byte(**b))
                    .count();
            out.push_str(BLANK_IMAGE);
            i = end;
            continue;
        }
        if let Some(skip) = remote_source(rest) {
            out.push_str(&rest[..skip.0]);
            out.push_str(BLANK_IMAGE);
            i += skip.0 + skip.1;
            continue;
        }
        let b = bytes[i];
        if b == b'>' {
            out.push('>');
            if let Some(badge) = pending.take() {
                out.push_str(&badge);
            }
            i += 1;
            continue;
        }
        if rest.len() >= 6 && rest[..6].eq_ignore_ascii_case("</head") {
            out.push_str(BADGE_STYLE);
        }
        let ch = rest.chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    if !html.to_ascii_lowercase().contains("</head") {
        out.insert_str(0, BADGE_STYLE);
    }
    out
}

/// At an image-loading attribute (`src=`, `background=`, `srcset=`, `poster=`) whose quoted
/// value is remote (`http:`, `https:`, `//`): the length up to the value and the value's length.
fn remote_source(rest: &str) -> Option<(usize, usize)> {
    let lower = rest.get(..12)?.to_ascii_lowercase();
    let name = ["src=", "background=", "srcset=", "poster="]
        .into_iter()
        .find(|n| lower.starts_with(n))?;
    let quote = *rest.as_bytes().get(name.len())?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let value_at = name.len() + 1;
    let value = &rest[value_at..];
    let len = value.find(quote as char)?;
    let v = value[..len].trim_start().to_ascii_lowercase();
    (v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//"))
        .then_some((value_at, len))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_get_badges_by_index_and_images_go() {
        let keys = TokenKeys::new(b"secret", &[]);
        let copy = uuid::Uuid::now_v7();
        let t0 = token::click_token(&keys, copy, 0, "https://example.com/a");
        let t1 = token::click_token(&keys, copy, 1, "https://example.com/a");
        let pixel = token::open_token(&keys, copy);
        let html = format!(
            "<html><head></head><body><a href=\"http://t.test/c/{t0}\">one</a>\
             <a class=x href='http://t.test/c/{t1}'>two</a>\
             <img src=\"https://cdn.example/logo.png\"><img src=\"http://t.test/o/{pixel}\"></body></html>"
        );
        let counts = [
            LinkCount {
                index: 0,
                url: "https://example.com/a".into(),
                clicks: 1,
            },
            LinkCount {
                index: 1,
                url: "https://example.com/a".into(),
                clicks: 3,
            },
        ];
        let doc = frame_document(&html, "http://t.test/", &keys, &counts);
        assert!(
            doc.contains("data-link=\"0\" data-clicks=\"1\">25% \u{b7} 1</span>"),
            "{doc}"
        );
        assert!(
            doc.contains("data-link=\"1\" data-clicks=\"3\">75% \u{b7} 3</span>"),
            "{doc}"
        );
        assert!(!doc.contains("t.test"), "{doc}");
        assert!(!doc.contains("cdn.example"), "{doc}");
        assert!(doc.contains(".mt-badge{"));
    }
}
