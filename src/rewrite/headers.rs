//! Raw header fields with their byte spans, for edits that must leave every other byte alone.

use std::ops::Range;

#[derive(Clone, Debug)]
pub(crate) struct Field {
    /// The whole field, folded lines and final line break included.
    pub span: Range<usize>,
    pub name: Range<usize>,
    /// After the colon, up to (not including) the final line break.
    pub value: Range<usize>,
}

impl Field {
    pub(crate) fn is(&self, raw: &[u8], name: &str) -> bool {
        raw.get(self.name.clone())
            .is_some_and(|n| n.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    }

    pub(crate) fn name_starts_with(&self, raw: &[u8], prefix: &str) -> bool {
        raw.get(self.name.clone()).is_some_and(|n| {
            let n = n.trim_ascii();
            n.len() >= prefix.len() && n[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        })
    }

    /// The value unfolded and trimmed.
    pub(crate) fn text(&self, raw: &[u8]) -> String {
        let v = raw.get(self.value.clone()).unwrap_or(&[]);
        let s = String::from_utf8_lossy(v);
        s.split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The fields of the header block in `raw[start..end]`. Stops at the empty line; a line that
/// is neither a field nor a continuation ends the block too (as parsers do).
pub(crate) fn fields(raw: &[u8], start: usize, end: usize) -> Vec<Field> {
    let end = end.min(raw.len());
    let mut out: Vec<Field> = Vec::new();
    let mut i = start;
    while i < end {
        let line_end = raw[i..end]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| i + p + 1)
            .unwrap_or(end);
        let line = &raw[i..line_end];
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if content.is_empty() {
            break;
        }
        if matches!(content[0], b' ' | b'\t') {
            if let Some(f) = out.last_mut() {
                f.span.end = line_end;
                f.value.end = i + content.len();
                i = line_end;
                continue;
            }
            break;
        }
        let Some(colon) = content.iter().position(|&b| b == b':') else {
            break;
        };
        out.push(Field {
            span: i..line_end,
            name: i..i + colon,
            value: i + colon + 1..i + content.len(),
        });
        i = line_end;
    }
    out
}

/// Where the header block ends (the start of the empty line), or `None` when there is none.
pub(crate) fn block_end(raw: &[u8], start: usize, end: usize) -> usize {
    fields(raw, start, end)
        .last()
        .map(|f| f.span.end)
        .unwrap_or(start)
}

/// The line ending a block of text uses: CRLF when it has any, else LF.
pub(crate) fn eol_of(raw: &[u8]) -> &'static [u8] {
    match raw.iter().position(|&b| b == b'\n') {
        Some(p) if p > 0 && raw[p - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_fields() {
        let raw = b"Subject: a\r\n b\r\nX-Mailtally-Track: off\r\n\r\nbody";
        let f = fields(raw, 0, raw.len());
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].text(raw), "a b");
        assert!(f[1].is(raw, "x-mailtally-track"));
        assert_eq!(&raw[f[1].span.clone()], b"X-Mailtally-Track: off\r\n");
        assert_eq!(block_end(raw, 0, raw.len()), raw.len() - 6);
    }
}
