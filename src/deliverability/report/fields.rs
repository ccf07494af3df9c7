//! The field blocks of `message/delivery-status` (RFC 3464 §2.1) and `message/feedback-report`
//! (RFC 5965 §3.1) parts: `Name: value` lines like a header, folded lines, and groups separated
//! by blank lines. Lines that are not fields are skipped, as senders put prose there too.

/// Bytes of a part read at most; a real block is a few kilobytes.
const READ_MAX: usize = 256 * 1024;
/// Bytes kept of one unfolded value; [`super::line`] cuts further.
const VALUE_MAX: usize = 4096;
/// Fields read at most from one part.
const FIELDS_MAX: usize = 4000;

/// One field: the name in lower case, the value unfolded and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub name: String,
    pub value: String,
}

/// The groups of fields in a block, in order; empty groups are left out.
pub(super) fn groups(body: &[u8]) -> Vec<Vec<Field>> {
    let text = String::from_utf8_lossy(body.get(..READ_MAX).unwrap_or(body));
    let mut out: Vec<Vec<Field>> = Vec::new();
    let mut group: Vec<Field> = Vec::new();
    let mut count = 0;
    // Whether the previous line was a field, so that a folded line continues it.
    let mut open = false;
    for raw in text.split('\n') {
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if l.trim().is_empty() {
            if !group.is_empty() {
                out.push(std::mem::take(&mut group));
            }
            open = false;
            continue;
        }
        if l.starts_with([' ', '\t']) {
            if let (true, Some(last)) = (open, group.last_mut()) {
                if last.value.len() < VALUE_MAX {
                    last.value.push(' ');
                    last.value.push_str(l.trim());
                }
            }
            continue;
        }
        open = false;
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let is_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !is_name || count >= FIELDS_MAX {
            continue;
        }
        count += 1;
        let mut value = value.trim().to_string();
        if value.len() > VALUE_MAX {
            let mut end = VALUE_MAX;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
        group.push(Field {
            name: name.to_ascii_lowercase(),
            value,
        });
        open = true;
    }
    if !group.is_empty() {
        out.push(group);
    }
    out
}

/// The first value of `name` (lower case) in a group.
pub(super) fn get<'a>(group: &'a [Field], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.value.as_str())
}

/// `type; value` (`dns; mx.example.net`, `smtp; 550 ...`) without the type, when the part
/// before the `;` is a type name.
pub(super) fn untyped(v: &str) -> &str {
    match v.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            rest.trim()
        }
        _ => v.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_fields_in_groups() {
        let block = b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nDiagnostic-Code: smtp; 550 5.1.1 no\r\n  such user\r\nnot a field\r\n\tnot a continuation\r\n\r\n\r\n";
        let g = groups(block);
        assert_eq!(g.len(), 2);
        assert_eq!(get(&g[0], "reporting-mta"), Some("dns; mx.example.net"));
        assert_eq!(
            get(&g[1], "diagnostic-code"),
            Some("smtp; 550 5.1.1 no such user")
        );
        assert_eq!(g[1].len(), 2);
        assert_eq!(untyped("smtp; 550 x"), "550 x");
        assert_eq!(untyped("550 x; y"), "550 x; y");
        assert!(groups(b"").is_empty());
    }
}
