//! Charsets of rewritten parts: decode to UTF-8 for the tokenizer, encode back.
//!
//! A part keeps its charset when its bytes survive decode + encode unchanged and the charset
//! is stateless (segments are then encoded independently). UTF-16, UTF-7, ISO-2022-JP and
//! any charset whose round trip is not exact are converted to UTF-8 instead.

use std::borrow::Cow;

use encoding_rs::{Encoding, ISO_2022_JP, REPLACEMENT, UTF_16BE, UTF_16LE, UTF_8};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Encode back in this charset (characters it cannot hold become `&#NNNN;`).
    Same(&'static Encoding),
    /// The part becomes UTF-8 and its labels say so.
    ToUtf8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CharsetError {
    #[error("unknown charset {0:?} on non-ASCII text")]
    Unknown(String),
    #[error("text is not valid {0}")]
    Malformed(&'static str),
}

/// Decode `bytes` labelled `label`.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    label: Option<&str>,
) -> Result<(Cow<'a, str>, Plan), CharsetError> {
    let label = label
        .map(|l| {
            l.trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "us-ascii".to_owned());
    if label == "utf-7" || label == "unicode-1-1-utf-7" {
        return utf7(bytes)
            .map(|s| (Cow::Owned(s), Plan::ToUtf8))
            .ok_or(CharsetError::Malformed("UTF-7"));
    }
    let Some(enc) = Encoding::for_label(label.as_bytes()) else {
        // Unknown names on plain ASCII are harmless; anything else we would garble.
        return match std::str::from_utf8(bytes) {
            Ok(s) if s.is_ascii() => Ok((Cow::Borrowed(s), Plan::Same(UTF_8))),
            _ => Err(CharsetError::Unknown(label)),
        };
    };
    if enc == REPLACEMENT {
        return Err(CharsetError::Unknown(label));
    }
    if enc == UTF_16LE || enc == UTF_16BE {
        // MIME's bare "UTF-16" without a BOM is big-endian (RFC 2781); a BOM decides.
        let fallback = if label == "utf-16le" {
            UTF_16LE
        } else {
            UTF_16BE
        };
        let (enc, bom) = Encoding::for_bom(bytes).unwrap_or((fallback, 0));
        let (text, had_errors) = enc.decode_without_bom_handling(bytes.get(bom..).unwrap_or(&[]));
        if had_errors {
            return Err(CharsetError::Malformed("UTF-16"));
        }
        return Ok((Cow::Owned(text.into_owned()), Plan::ToUtf8));
    }
    let text = enc
        .decode_without_bom_handling_and_without_replacement(bytes)
        .ok_or(CharsetError::Malformed(enc.name()))?;
    if enc == ISO_2022_JP {
        return Ok((text, Plan::ToUtf8));
    }
    if enc != UTF_8 && *enc.encode(&text).0 != *bytes {
        return Ok((text, Plan::ToUtf8));
    }
    Ok((text, Plan::Same(enc)))
}

/// Whether `encode` changes the bytes at all (else the UTF-8 text is the output).
pub(crate) fn reencodes(plan: Plan) -> bool {
    matches!(plan, Plan::Same(enc) if enc != UTF_8)
}

/// Encode UTF-8 text (from `decode`) with `plan`.
pub(crate) fn encode(text: &[u8], plan: Plan) -> Vec<u8> {
    match plan {
        Plan::Same(enc) if enc != UTF_8 => {
            let s = String::from_utf8_lossy(text);
            enc.encode(&s).0.into_owned()
        }
        _ => text.to_vec(),
    }
}

/// RFC 2152 UTF-7 (mail still carries it now and then).
fn utf7(bytes: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(bytes.len());
    let mut units: Vec<u16> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'+' {
            if !b.is_ascii() {
                return None;
            }
            out.push(b as char);
            i += 1;
            continue;
        }
        i += 1;
        if bytes.get(i) == Some(&b'-') {
            out.push('+');
            i += 1;
            continue;
        }
        let (mut acc, mut bits) = (0u32, 0u32);
        units.clear();
        while let Some(&c) = bytes.get(i) {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => break,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 16 {
                bits -= 16;
                units.push((acc >> bits) as u16);
                acc &= (1 << bits) - 1;
            }
            i += 1;
        }
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        for c in char::decode_utf16(units.iter().copied()) {
            out.push(c.ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_stays_latin1() {
        let (t, p) = decode(b"caf\xe9", Some("ISO-8859-1")).unwrap();
        assert_eq!(t, "café");
        assert_eq!(encode(t.as_bytes(), p), b"caf\xe9");
        // What Latin-1 cannot hold becomes a character reference.
        assert_eq!(encode("☃".as_bytes(), p), b"&#9731;");
    }

    #[test]
    fn utf16_and_utf7_convert() {
        let (t, p) = decode(b"\xfe\xff\x00h\x00i", Some("utf-16")).unwrap();
        assert_eq!((&*t, p), ("hi", Plan::ToUtf8));
        let (t, _) = decode(b"\x00h\x00i", Some("UTF-16")).unwrap();
        assert_eq!(t, "hi");
        let (t, p) = decode(b"Hi Mom -+Jjo--!", Some("utf-7")).unwrap();
        assert_eq!((&*t, p), ("Hi Mom -☺-!", Plan::ToUtf8));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(decode(b"\xff\xfe\xfd", Some("utf-8")).is_err());
        assert!(decode(b"\xe9", Some("x-no-such")).is_err());
        assert!(decode(b"plain", Some("x-no-such")).is_ok());
    }
}
