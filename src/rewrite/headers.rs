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

/// The message addressed to `recipient` alone: its top-level `To` and `Cc` fields give way to
/// one `To: <recipient>` where the first of them was (or at the end of the header block).
/// Every other byte stays.
pub fn addressed_to(msg: &[u8], recipient: &str) -> Vec<u8> {
    let fields = fields(msg, 0, msg.len());
    let eol = eol_of(msg);
    let end = fields.last().map(|f| f.span.end).unwrap_or(0);
    let mut out = Vec::with_capacity(msg.len() + recipient.len() + 8);
    let mut at = 0;
    let mut written = false;
    for f in fields.iter().filter(|f| f.is(msg, "to") || f.is(msg, "cc")) {
        out.extend_from_slice(&msg[at..f.span.start]);
        if !written {
            out.extend_from_slice(format!("To: <{recipient}>").as_bytes());
            out.extend_from_slice(eol);
            written = true;
        }
        at = f.span.end;
    }
    if !written {
        out.extend_from_slice(&msg[at..end]);
        out.extend_from_slice(format!("To: <{recipient}>").as_bytes());
        out.extend_from_slice(eol);
        at = end;
    }
    out.extend_from_slice(&msg[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressed_to_one_recipient() {
        let raw = b"From: a@x\r\nTo: b@y,\r\n c@z\r\nSubject: s\r\nCc: d@w\r\n\r\nTo: body\r\n";
        assert_eq!(
            addressed_to(raw, "c@z"),
            b"From: a@x\r\nTo: <c@z>\r\nSubject: s\r\n\r\nTo: body\r\n".to_vec()
        );
        let raw = b"From: a@x\nSubject: s\n\nbody";
        assert_eq!(
            addressed_to(raw, "c@z"),
            b"From: a@x\nSubject: s\nTo: <c@z>\n\nbody".to_vec()
        );
    }

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
