//! Line endings: every bare CR and bare LF becomes CRLF, the only line end SMTP (RFC 5321
//! section 2.3.8) and MIME know.
//!
//! Why: a body relayed with a bare `LF.CRLF`, `LF.LF`, `CR.CR` or `CR.CRLF` reaches an upstream
//! that may end DATA there and read what follows as a second, hidden transaction (SMTP
//! smuggling). Once every line ends in CRLF, the sender's dot-stuffing (lettre stuffs a dot
//! after each CRLF) covers every line, so no line of the message can end the upstream's DATA.
//! Normalising loses nothing: each bare line end becomes the line end that receivers read it as.

use std::borrow::Cow;

use memchr::memchr2;

/// Normalises a byte stream that arrives in pieces: a CR that ends one piece is kept back until
/// the next byte shows whether it was the first half of a CRLF.
#[derive(Debug, Default, Clone)]
pub struct CrlfNormaliser {
    pending_cr: bool,
}

impl CrlfNormaliser {
    pub fn new() -> CrlfNormaliser {
        CrlfNormaliser::default()
    }

    /// Appends `input`, normalised, to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        if std::mem::take(&mut self.pending_cr) {
            out.extend_from_slice(b"\r\n");
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        out.reserve(input.len());
        while let Some(at) = memchr2(b'\r', b'\n', input) {
            out.extend_from_slice(&input[..at]);
            match (input[at], input.get(at + 1)) {
                (b'\r', Some(b'\n')) => {
                    out.extend_from_slice(b"\r\n");
                    input = &input[at + 2..];
                }
                (b'\r', None) => {
                    self.pending_cr = true;
                    return;
                }
                // A bare CR, or a bare LF.
                _ => {
                    out.extend_from_slice(b"\r\n");
                    input = &input[at + 1..];
                }
            }
        }
        out.extend_from_slice(input);
    }

    /// The end of the stream: a CR kept back is a bare CR.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Whether every CR and LF of `bytes` is part of a CRLF.
pub fn is_normal(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = memchr2(b'\r', b'\n', rest) {
        if rest[at] == b'\n' || rest.get(at + 1) != Some(&b'\n') {
            return false;
        }
        rest = &rest[at + 2..];
    }
    true
}

/// `bytes` with every bare CR and bare LF turned into CRLF; borrowed when there is none.
pub fn normalise(bytes: &[u8]) -> Cow<'_, [u8]> {
    if is_normal(bytes) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut n = CrlfNormaliser::new();
    n.push(bytes, &mut out);
    n.finish(&mut out);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_cr_and_bare_lf_become_crlf_and_crlf_stays() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"plain", b"plain"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\nb", b"a\r\nb"),
            (b"a\rb", b"a\r\nb"),
            (b"a\n.\r\nMAIL FROM:<x@y>", b"a\r\n.\r\nMAIL FROM:<x@y>"),
            (b"a\n.\n", b"a\r\n.\r\n"),
            (b"a\r.\r", b"a\r\n.\r\n"),
            (b"a\r.\r\n", b"a\r\n.\r\n"),
            (b"\n\r\r\n\n\r", b"\r\n\r\n\r\n\r\n\r\n"),
            (b"\r\r\n", b"\r\n\r\n"),
            (b"end\r", b"end\r\n"),
            (b"\n", b"\r\n"),
        ];
        for (input, want) in cases {
            let got = normalise(input);
            assert_eq!(got.as_ref(), *want, "{:?}", String::from_utf8_lossy(input));
            assert!(is_normal(&got));
            assert_eq!(
                is_normal(input),
                matches!(got, Cow::Borrowed(_)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_cr_ending_one_piece_and_an_lf_starting_the_next_are_one_crlf() {
        let mut n = CrlfNormaliser::new();
        let mut out = Vec::new();
        n.push(b"line one\r", &mut out);
        assert_eq!(out, b"line one", "the CR waits for the next piece");
        n.push(b"\nline two\r", &mut out);
        n.push(b"", &mut out);
        n.push(b".\r", &mut out);
        n.push(b"\r", &mut out);
        n.finish(&mut out);
        assert_eq!(out, b"line one\r\nline two\r\n.\r\n\r\n");
    }

    #[test]
    fn any_split_gives_what_the_whole_gives() {
        let whole: &[u8] = b"a\r\n\r\rb\n\n.\r.\r\n\rc\r";
        let want = normalise(whole).into_owned();
        for i in 0..=whole.len() {
            for j in i..=whole.len() {
                let mut n = CrlfNormaliser::new();
                let mut out = Vec::new();
                n.push(&whole[..i], &mut out);
                n.push(&whole[i..j], &mut out);
                n.push(&whole[j..], &mut out);
                n.finish(&mut out);
                assert_eq!(out, want, "split at {i} and {j}");
            }
        }
    }
}
