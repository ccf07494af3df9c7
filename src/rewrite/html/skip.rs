//! What the tokenizer need not see. Most of an email is markup the rewrite never touches:
//! table scaffolding, `<td style=...>`, `<span>`, text, comments, and Outlook conditional
//! comments that hold no link or `<meta>`. Tokenizing it all is
//! most of the cost of a rewrite, so, while no link is collecting its text, the sink looks
//! ahead with the spec's own rules for where each such construct ends and drops it from the
//! tokenizer's input. It stops (and hands over to the tokenizer) at anything the sink reads or
//! whose end it is not certain of. `scan_reference` in the module above runs with no skipping
//! at all; tests and a fuzz target check that both always find the same.

use super::cond_comment_is_read;
use super::tags::{attrs_end, is_ws};

/// Start tags the sink reads, or that switch the tokenizer to another state. Any name
/// starting with `v:` (VML) is read too.
const READ_START: &[&[u8]] = &[
    b"a",
    b"area",
    b"meta",
    b"style",
    b"script",
    b"title",
    b"textarea",
    b"xmp",
    b"iframe",
    b"noembed",
    b"noframes",
    b"plaintext",
];

/// End tags the sink reads (when no link is open).
const READ_END: &[&[u8]] = &[b"body", b"html"];

/// The tokenizer is in its data state at `at` and nothing reads text: the first position
/// from which it must read again (the `<` of something the sink needs, or the end).
pub(super) fn next_needed(src: &[u8], at: usize) -> usize {
    let mut p = at;
    loop {
        let Some(lt) = src.get(p..).and_then(|rest| memchr::memchr(b'<', rest)) else {
            return src.len();
        };
        let lt = p + lt;
        match unread_end(src, lt) {
            Some(end) => p = end,
            None => return lt,
        }
    }
}

/// Where the construct starting at the `<` at `lt` ends, if the sink never reads it and its
/// end is certain; `None` hands it to the tokenizer.
fn unread_end(src: &[u8], lt: usize) -> Option<usize> {
    match *src.get(lt + 1)? {
        b if b.is_ascii_alphabetic() => tag_end(src, lt + 1, READ_START, true),
        b'/' if src.get(lt + 2).is_some_and(u8::is_ascii_alphabetic) => {
            tag_end(src, lt + 2, READ_END, false)
        }
        b'!' => declaration_end(src, lt),
        // `</` followed by anything else, `<?`: rare; the tokenizer handles them.
        b'/' | b'?' => None,
        // A `<` that starts nothing is a character; the tokenizer reads on from the next byte.
        _ => Some(lt + 1),
    }
}

/// A tag whose name starts at `name_at`: its end, unless its name is one of `read`.
fn tag_end(src: &[u8], name_at: usize, read: &[&[u8]], vml_read: bool) -> Option<usize> {
    let rest = src.get(name_at..)?;
    let len = rest
        .iter()
        .position(|&b| is_ws(b) || b == b'/' || b == b'>')?;
    let name = &rest[..len];
    if read.iter().any(|r| r.eq_ignore_ascii_case(name))
        || (vml_read && name.len() >= 2 && name[..2].eq_ignore_ascii_case(b"v:"))
    {
        return None;
    }
    attrs_end(src, name_at + len, None)
}

/// `<!`: a comment (unless conditional, which the sink reads) or a bogus comment. Doctypes and
/// CDATA sections are left to the tokenizer.
fn declaration_end(src: &[u8], lt: usize) -> Option<usize> {
    let rest = src.get(lt + 2..)?;
    if rest.starts_with(b"--") {
        let inner = lt + 4;
        // Conditional comments (`[if ...`, after white space) are read; be sure it is not one.
        let first = src
            .get(inner..)?
            .iter()
            .find(|&&b| !matches!(b, b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b' '))?;
        let end = comment_end(src, inner)?;
        // A conditional comment is read only when it can hold something.
        if (*first == b'[' || !first.is_ascii())
            && src.get(inner..end).is_some_and(cond_comment_is_read)
        {
            return None;
        }
        return Some(end);
    }
    // Too short to tell a bogus comment from `<!--`, `<!DOCTYPE` or `<![CDATA[`.
    if rest.len() < 7 {
        return None;
    }
    if rest[..7].eq_ignore_ascii_case(b"doctype") || rest.starts_with(b"[CDATA[") {
        return None;
    }
    // A bogus comment (`<![endif]>`, ...) ends at the first `>`.
    memchr::memchr(b'>', rest).map(|i| lt + 2 + i + 1)
}

/// The end of a comment whose text starts at `inner` (just after `<!--`): `<!-->` and
/// `<!--->` are empty comments; otherwise the first `-->` or `--!>` closes it (the nested
/// `<!--` states of the spec end it at the same place).
fn comment_end(src: &[u8], inner: usize) -> Option<usize> {
    let text = src.get(inner..)?;
    if text.starts_with(b">") {
        return Some(inner + 1);
    }
    if text.starts_with(b"->") {
        return Some(inner + 2);
    }
    let mut from = 0;
    while let Some(i) = memchr::memmem::find(&text[from..], b"--") {
        let d = from + i;
        match text.get(d + 2) {
            Some(b'>') => return Some(inner + d + 3),
            Some(b'!') if text.get(d + 3) == Some(&b'>') => return Some(inner + d + 4),
            Some(_) => from = d + 1,
            None => return None,
        }
    }
    None
}
