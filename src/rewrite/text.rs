//! URLs in text/plain parts: found, decided by the same policy, replaced by tracked URLs.
//! Never a pixel.

use std::ops::Range;

use super::copy::Chunk;
use super::html::splice;
use super::mime::Ctx;

/// Rewrite a text/plain text: tracked URLs become slots.
pub(crate) fn rewrite(src: &str, ctx: &mut Ctx) -> Vec<Chunk> {
    let mut edits = Vec::new();
    for u in find_urls(src) {
        let (Some(url), Some(context)) = (src.get(u.span.clone()), src.get(u.context.clone()))
        else {
            continue;
        };
        if let Some(slot) = ctx.track(url, url, context, false, false) {
            edits.push((
                u.span,
                vec![Chunk::Lit(ctx.click_prefix.clone().into_bytes()), slot],
            ));
        }
    }
    splice(src.as_bytes(), edits)
}

/// A URL in plain text and the text before it on its line and the previous one (for the
/// unsubscribe check: "To unsubscribe, visit:\nhttps://...").
pub(crate) struct TextUrl {
    pub span: Range<usize>,
    pub context: Range<usize>,
}

pub(crate) fn find_urls(text: &str) -> Vec<TextUrl> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let scheme_len = if starts_ci(rest, b"https://") {
            8
        } else if starts_ci(rest, b"http://") {
            7
        } else {
            i += 1;
            continue;
        };
        // Only at a word start: "xhttp://" is not a link.
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'/') {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + scheme_len;
        while end < b.len() {
            let c = b[end];
            if c.is_ascii_whitespace() || c.is_ascii_control() || b"<>\"`".contains(&c) {
                break;
            }
            end += 1;
        }
        // Trailing punctuation belongs to the sentence; a `)` only if unbalanced.
        while end > start + scheme_len {
            let c = b[end - 1];
            if b".,;:!?'*]}".contains(&c) {
                end -= 1;
            } else if c == b')' {
                let s = &b[start..end];
                let opens = s.iter().filter(|&&x| x == b'(').count();
                let closes = s.iter().filter(|&&x| x == b')').count();
                if closes > opens {
                    end -= 1;
                } else {
                    break;
                }
            } else {
                break;
            }
        }
        // `end` stops at ASCII bytes only, so it is a char boundary.
        if end > start + scheme_len {
            let line_start = b[..start].iter().rposition(|&c| c == b'\n').unwrap_or(0);
            let prev = b[..line_start]
                .iter()
                .rposition(|&c| c == b'\n')
                .map(|p| p + 1)
                .unwrap_or(0);
            out.push(TextUrl {
                span: start..end,
                context: prev..start,
            });
        }
        i = end.max(i + 1);
    }
    out
}

fn starts_ci(s: &[u8], p: &[u8]) -> bool {
    s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_text() {
        let t = "See https://a.test/x. Or (http://b.test/y_(z)) and\r\nHTTPS://c.test/?q=1, ok";
        let got: Vec<&str> = find_urls(t).iter().map(|u| &t[u.span.clone()]).collect();
        assert_eq!(
            got,
            [
                "https://a.test/x",
                "http://b.test/y_(z)",
                "HTTPS://c.test/?q=1"
            ]
        );
    }
}
