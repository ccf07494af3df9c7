//! Tags as they appear in the source: the HTML spec's tag states run over raw bytes, to find
//! where a tag ends and the exact byte span of each attribute value. The tokenizer reports
//! decoded names and values only; these spans are what lets the rewrite change one value and
//! copy every other byte.

use std::ops::Range;

use super::Quote;

/// A tag as it appears in the source.
#[derive(Debug)]
pub(crate) struct RawTag {
    pub start: usize,
    pub attrs: Vec<RawAttr>,
}

#[derive(Debug)]
pub(crate) struct RawAttr {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub quote: Quote,
}

impl RawTag {
    /// The first attribute of that name (later duplicates are dropped, as the spec says).
    pub(super) fn attr(&self, src: &[u8], name: &str) -> Option<(Range<usize>, Quote)> {
        self.attrs
            .iter()
            .find(|a| {
                src.get(a.name.clone())
                    .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            })
            .map(|a| (a.value.clone(), a.quote))
    }
}

/// Find the tag named `name` that ends exactly at `end`, starting the search at `from`.
pub(super) fn find_tag(
    src: &[u8],
    from: usize,
    end: usize,
    name: &str,
    end_tag: bool,
) -> Option<RawTag> {
    let hay = src.get(from..end)?;
    let mut i = 0;
    while let Some(off) = hay.get(i..).and_then(|h| h.iter().position(|&b| b == b'<')) {
        let at = from + i + off;
        if let Some(t) = scan_tag(src, at, name, end_tag) {
            if t.1 == end {
                return Some(t.0);
            }
        }
        i += off + 1;
    }
    None
}

pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// Scan one tag from its `<` with the spec's tag states; returns the tag and its end.
pub(crate) fn scan_tag(
    src: &[u8],
    lt: usize,
    name: &str,
    end_tag: bool,
) -> Option<(RawTag, usize)> {
    let mut i = lt + 1;
    if end_tag {
        if src.get(i) != Some(&b'/') {
            return None;
        }
        i += 1;
    }
    let n = name.as_bytes();
    let got = src.get(i..i + n.len())?;
    if !got.eq_ignore_ascii_case(n) {
        return None;
    }
    i += n.len();
    match src.get(i) {
        Some(&b) if is_ws(b) || b == b'/' || b == b'>' => {}
        _ => return None,
    }
    let mut attrs = Vec::new();
    let end = attrs_end(src, i, Some(&mut attrs))?;
    Some((RawTag { start: lt, attrs }, end))
}

/// Where a tag ends (just past its `>`), scanning from the byte after its name; the
/// attributes go into `attrs` when it is given. `None` when the input ends inside the tag,
/// which the tokenizer then drops.
pub(super) fn attrs_end(
    src: &[u8],
    mut i: usize,
    mut attrs: Option<&mut Vec<RawAttr>>,
) -> Option<usize> {
    let mut push = |name: Range<usize>, value: Range<usize>, quote: Quote| {
        if let Some(a) = attrs.as_deref_mut() {
            a.push(RawAttr { name, value, quote });
        }
    };
    loop {
        // Before attribute name (a `/` is the self-closing state, which goes back here).
        while let Some(&b) = src.get(i) {
            if is_ws(b) || b == b'/' {
                i += 1;
            } else {
                break;
            }
        }
        match src.get(i) {
            None => return None,
            Some(b'>') => return Some(i + 1),
            _ => {}
        }
        // Attribute name: the first character may be `=`.
        let ns = i;
        i += 1;
        while let Some(&b) = src.get(i) {
            if is_ws(b) || b == b'/' || b == b'>' || b == b'=' {
                break;
            }
            i += 1;
        }
        let name = ns..i;
        // After attribute name.
        while src.get(i).is_some_and(|&b| is_ws(b)) {
            i += 1;
        }
        if src.get(i) != Some(&b'=') {
            push(name, i..i, Quote::Unquoted);
            continue;
        }
        i += 1;
        while src.get(i).is_some_and(|&b| is_ws(b)) {
            i += 1;
        }
        match src.get(i) {
            None => return None,
            Some(&q @ (b'"' | b'\'')) => {
                let vs = i + 1;
                let len = memchr::memchr(q, src.get(vs..)?)?;
                let quote = if q == b'"' {
                    Quote::Double
                } else {
                    Quote::Single
                };
                push(name, vs..vs + len, quote);
                i = vs + len + 1;
            }
            Some(b'>') => push(name, i..i, Quote::Unquoted),
            Some(_) => {
                let vs = i;
                while let Some(&b) = src.get(i) {
                    if is_ws(b) || b == b'>' {
                        break;
                    }
                    i += 1;
                }
                push(name, vs..i, Quote::Unquoted);
            }
        }
    }
}
