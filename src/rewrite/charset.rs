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
    #[error("UTF-16 text of undeclared byte order that cannot be told")]
    ByteOrder,
    #[error("UTF-16 byte-order mark contradicts the label {0:?}")]
    ByteOrderMark(String),
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
        // Unknown names on plain ASCII are harmless; anything else we would garble. Zero
        // bytes are not text but the high bytes of UTF-16 or UTF-32 under a label of its own
        // (`utf-32`, `utf16`), which an ASCII link or pixel would break.
        return match std::str::from_utf8(bytes) {
            Ok(s) if s.is_ascii() && !s.contains('\0') => Ok((Cow::Borrowed(s), Plan::Same(UTF_8))),
            _ => Err(CharsetError::Unknown(label)),
        };
    };
    if enc == REPLACEMENT {
        return Err(CharsetError::Unknown(label));
    }
    if enc == UTF_16LE || enc == UTF_16BE {
        let (enc, bom) = utf16_order(bytes, &label)?;
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

/// The byte order of a UTF-16 part and the length of its byte-order mark.
///
/// `utf-16le` / `utf-16be` (and Microsoft's `unicodefeff` / `unicodefffe`) declare it; a BOM
/// agreeing with the label is dropped. Other UTF-16 labels (`utf-16`, `ucs-2`, `unicode`)
/// leave it to a BOM, else to the zero bytes of ASCII-range text: RFC 2781 says big-endian,
/// but Windows mailers write little-endian without a BOM, and decoding that as big-endian
/// turns English into CJK. When neither tells, the part is not converted at all.
fn utf16_order(bytes: &[u8], label: &str) -> Result<(&'static Encoding, usize), CharsetError> {
    let bom = match bytes {
        [0xFF, 0xFE, ..] => Some(UTF_16LE),
        [0xFE, 0xFF, ..] => Some(UTF_16BE),
        _ => None,
    };
    let declared = match label {
        "utf-16le" | "unicodefeff" => Some(UTF_16LE),
        "utf-16be" | "unicodefffe" => Some(UTF_16BE),
        _ => None,
    };
    match (declared, bom) {
        (Some(d), Some(b)) if d == b => Ok((d, 2)),
        (Some(_), Some(_)) => Err(CharsetError::ByteOrderMark(label.to_owned())),
        (Some(d), None) => Ok((d, 0)),
        (None, Some(b)) => Ok((b, 2)),
        (None, None) => utf16_order_of_text(bytes).map(|e| (e, 0)),
    }
}

/// Tell little- from big-endian UTF-16 by its zero bytes: a character below U+0100 has a
/// zero high byte, which comes second (LE) or first (BE). Markup and Latin text are full of
/// them; text without them (CJK only) or with both kinds in similar numbers is not guessed.
fn utf16_order_of_text(bytes: &[u8]) -> Result<&'static Encoding, CharsetError> {
    let units = bytes.len() / 2;
    let (mut zero_first, mut zero_second) = (0usize, 0usize);
    for pair in bytes.chunks_exact(2) {
        zero_first += usize::from(pair[0] == 0);
        zero_second += usize::from(pair[1] == 0);
    }
    // At least a quarter of the characters below U+0100, and the other byte zero at most an
    // eighth as often (U+0100, U+0200, ... have a zero low byte; U+0000 counts on both).
    let tells = |major: usize, minor: usize| major * 4 >= units && major > 0 && minor * 8 <= major;
    if tells(zero_second, zero_first) {
        Ok(UTF_16LE)
    } else if tells(zero_first, zero_second) {
        Ok(UTF_16BE)
    } else {
        Err(CharsetError::ByteOrder)
    }
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

    fn utf16(text: &str, le: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for u in bom.then_some(0xFEFF).into_iter().chain(text.encode_utf16()) {
            out.extend_from_slice(&if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        out
    }

    #[test]
    fn utf16_byte_order_is_detected_or_declared() {
        let text = "<p>Hello Bob, your order has shipped.</p>";
        for le in [true, false] {
            for bom in [true, false] {
                let bytes = utf16(text, le, bom);
                for label in ["utf-16", "UTF-16", "ucs-2", "unicode"] {
                    let (t, p) = decode(&bytes, Some(label)).unwrap();
                    assert_eq!((&*t, p), (text, Plan::ToUtf8), "{label} le={le} bom={bom}");
                }
                let own = if le { "utf-16le" } else { "utf-16be" };
                let (t, _) = decode(&bytes, Some(own)).unwrap();
                assert_eq!(t, text, "{own} bom={bom}");
                let other = if le { "utf-16be" } else { "utf-16le" };
                if bom {
                    assert_eq!(
                        decode(&bytes, Some(other)),
                        Err(CharsetError::ByteOrderMark(other.to_owned()))
                    );
                }
            }
        }
        // Latin text with a few characters whose low byte is zero (U+0100) still tells.
        let t = "Āa Ābcdefghijklmnop";
        assert_eq!(decode(&utf16(t, true, false), Some("utf-16")).unwrap().0, t);
        assert_eq!(
            decode(&utf16(t, false, false), Some("utf-16")).unwrap().0,
            t
        );
    }

    #[test]
    fn utf16_of_untellable_order_is_not_guessed() {
        // CJK only: no zero bytes either way.
        let cjk = "日本語のテキストです";
        for le in [true, false] {
            assert_eq!(
                decode(&utf16(cjk, le, false), Some("utf-16")),
                Err(CharsetError::ByteOrder)
            );
            // With a BOM or a declaring label it is fine.
            assert_eq!(
                decode(&utf16(cjk, le, true), Some("utf-16")).unwrap().0,
                cjk
            );
        }
        assert_eq!(
            decode(&utf16(cjk, true, false), Some("utf-16le"))
                .unwrap()
                .0,
            cjk
        );
        // As many zero bytes first as second.
        assert_eq!(
            decode(b"\x00\x00\x00\x00", Some("utf-16")),
            Err(CharsetError::ByteOrder)
        );
        assert_eq!(decode(b"", Some("utf-16")), Err(CharsetError::ByteOrder));
        // A UTF-8 BOM is not a UTF-16 one.
        assert_eq!(
            decode(b"\xef\xbb\xbfhi", Some("utf-16")),
            Err(CharsetError::ByteOrder)
        );
    }

    #[test]
    fn zero_bytes_under_an_unknown_label_are_not_ascii() {
        let wide: Vec<u8> = "<p>Hi</p>"
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        assert_eq!(
            decode(&wide, Some("utf-32")),
            Err(CharsetError::Unknown("utf-32".into()))
        );
        assert_eq!(
            decode(&utf16("<p>Hi</p>", true, false), Some("utf16")),
            Err(CharsetError::Unknown("utf16".into()))
        );
        let (t, p) = decode(b"<p>Hi</p>", Some("x-unknown")).unwrap();
        assert_eq!((&*t, p), ("<p>Hi</p>", Plan::Same(UTF_8)));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(decode(b"\xff\xfe\xfd", Some("utf-8")).is_err());
        assert!(decode(b"\xe9", Some("x-no-such")).is_err());
        assert!(decode(b"plain", Some("x-no-such")).is_ok());
    }
}
