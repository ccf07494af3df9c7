//! Content-Transfer-Encoding: decode a part's body, encode the rewritten one.
//!
//! Encoders work on the flattened rewritten text in which tokens are placeholders, and report
//! where each token's characters land, so that copies are patched instead of re-encoded.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::copy::{Chunk, Patch, SlotKind, PLACEHOLDER};

/// The longest line SMTP allows, without its CRLF (RFC 5321 4.5.3.1.6).
pub(crate) const MAX_LINE: usize = 998;
const B64_LINE: usize = 76;
const QP_LINE: usize = 76;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cte {
    /// 7bit, 8bit, binary or absent: the body is the text itself.
    Identity,
    QuotedPrintable,
    Base64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    #[error("unsupported Content-Transfer-Encoding {0:?}")]
    Unsupported(String),
    #[error("body is not valid base64")]
    Base64,
}

pub(crate) fn parse_cte(value: Option<&str>) -> Result<Cte, TransferError> {
    // Only exact names: a reader that does not decode a misspelt "quoted printable" would
    // see our soft line breaks inside the tracked URLs.
    let v = value.unwrap_or("7bit").trim().to_ascii_lowercase();
    match v.as_str() {
        // Spellings seen in the wild that every reader treats as plain.
        "" | "7bit" | "8bit" | "binary" | "7-bit" | "8-bit" | "7bits" | "8bits" | "plain"
        | "text" | "none" | "8 bit" | "7 bit" => Ok(Cte::Identity),
        "quoted-printable" => Ok(Cte::QuotedPrintable),
        "base64" => Ok(Cte::Base64),
        _ => Err(TransferError::Unsupported(v)),
    }
}

pub(crate) fn decode(body: &[u8], cte: Cte) -> Result<Cow<'_, [u8]>, TransferError> {
    match cte {
        Cte::Identity => Ok(Cow::Borrowed(body)),
        Cte::QuotedPrintable => Ok(Cow::Owned(decode_qp(body))),
        Cte::Base64 => {
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let clean = trim_padding(&clean);
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(clean)
                .map(Cow::Owned)
                .map_err(|_| TransferError::Base64)
        }
    }
}

fn trim_padding(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && b[end - 1] == b'=' {
        end -= 1;
    }
    &b[..end]
}

/// Lenient QP: `=XX` and soft breaks are decoded, anything malformed is kept as it is;
/// hard line breaks are kept exactly (CRLF or LF), so that re-encoding gives them back.
fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b' ' || b == b'\t' {
            // Trailing whitespace on an encoded line was added in transport (RFC 2045 6.7).
            let mut j = i;
            while matches!(body.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            if matches!(
                (body.get(j), body.get(j + 1)),
                (None, _) | (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n'))
            ) {
                i = j;
                continue;
            }
            out.extend_from_slice(&body[i..j]);
            i = j;
            continue;
        }
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        if let (Some(h), Some(l)) = (
            body.get(i + 1).and_then(|&c| hex(c)),
            body.get(i + 2).and_then(|&c| hex(c)),
        ) {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        // Soft line break, allowing transport-added whitespace before it.
        let mut j = i + 1;
        while matches!(body.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        match (body.get(j), body.get(j + 1)) {
            (Some(b'\r'), Some(b'\n')) => i = j + 2,
            (Some(b'\n'), _) => i = j + 1,
            (None, _) => i = j,
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Rewritten text with tokens as placeholders, and where the tokens are.
pub(crate) struct Flat {
    pub data: Vec<u8>,
    pub tokens: Vec<(usize, usize, SlotKind)>,
}

impl Flat {
    pub(crate) fn new(chunks: &[Chunk]) -> Flat {
        let mut data = Vec::new();
        let mut tokens = Vec::new();
        for c in chunks {
            match c {
                Chunk::Lit(b) => data.extend_from_slice(b),
                Chunk::Token { slot, len } => {
                    tokens.push((data.len(), *len, *slot));
                    data.resize(data.len() + len, PLACEHOLDER);
                }
            }
        }
        Flat { data, tokens }
    }

    pub(crate) fn longest_line(&self) -> usize {
        longest_line(&self.data)
    }
}

/// Length of the longest line of `data`, without its line break (LF or CRLF).
pub(crate) fn longest_line(data: &[u8]) -> usize {
    let mut longest = 0;
    let mut start = 0;
    let line = |l: &[u8]| l.strip_suffix(b"\r").unwrap_or(l).len();
    for i in memchr::memchr_iter(b'\n', data) {
        longest = longest.max(line(&data[start..i]));
        start = i + 1;
    }
    longest.max(line(&data[start..]))
}

/// Plain body: the text is the body.
pub(crate) fn encode_identity(flat: Flat) -> (Vec<u8>, Vec<Patch>) {
    let patches = flat
        .tokens
        .iter()
        .map(|&(at, len, slot)| Patch::Plain {
            slot,
            runs: vec![(at, len)],
        })
        .collect();
    (flat.data, patches)
}

/// Quoted-printable. CRLF line breaks of the text are kept as hard breaks, a bare CR or LF
/// is escaped; soft breaks use `eol`. Token characters are always literal, so every copy has this layout.
pub(crate) fn encode_qp(flat: &Flat, eol: &[u8]) -> (Vec<u8>, Vec<Patch>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let d = &flat.data;
    let mut out = Vec::with_capacity(d.len() + d.len() / 8);
    let mut runs: Vec<Vec<(usize, usize)>> = vec![Vec::new(); flat.tokens.len()];
    let mut tok = 0;
    let mut col = 0;
    let mut i = 0;
    // Bytes before `next_tok` belong to no token (tokens are sorted and do not overlap).
    let mut next_tok = flat.tokens.first().map_or(usize::MAX, |t| t.0);
    while i < d.len() {
        let b = d[i];
        if b == b'\r' && d.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            col = 0;
            i += 2;
            continue;
        }
        // A bare LF (or CR) of the text, `=0A` in the part (hard breaks are CRLF: the message
        // was normalised), is written `=0A` again: as a raw byte it would be a bare line end.
        // Fast path: bytes outside any token, up to the next line break, token or soft
        // break: runs of literal bytes copied at once, escapes in between. The same output
        // as the general case below.
        if i < next_tok {
            let start = i;
            let end = d.len().min(next_tok);
            loop {
                let limit = end.min(i + (QP_LINE - 1).saturating_sub(col));
                let mut j = i;
                while j < limit && qp_literal(d, j) {
                    j += 1;
                }
                out.extend_from_slice(&d[i..j]);
                col += j - i;
                i = j;
                let Some(&b) = d.get(i) else { break };
                if i >= end || b == b'\n' || b == b'\r' || qp_literal(d, i) || col + 3 > QP_LINE - 1
                {
                    break;
                }
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                col += 3;
                i += 1;
            }
            if i > start {
                continue;
            }
        }
        let line_end = match d.get(i + 1) {
            None | Some(b'\n') => true,
            Some(b'\r') => d.get(i + 2) == Some(&b'\n'),
            _ => false,
        };
        let literal =
            ((33..=126).contains(&b) && b != b'=') || ((b == b' ' || b == b'\t') && !line_end);
        let need = if literal { 1 } else { 3 };
        // Keep one column for the `=` of a soft break.
        if col + need > QP_LINE - 1 {
            out.push(b'=');
            out.extend_from_slice(eol);
            col = 0;
        }
        if i >= next_tok {
            while tok < flat.tokens.len() && flat.tokens[tok].0 + flat.tokens[tok].1 <= i {
                tok += 1;
            }
            if let Some(&(s, len, _)) = flat.tokens.get(tok) {
                if i >= s && i < s + len {
                    let r = &mut runs[tok];
                    match r.last_mut() {
                        Some((at, n)) if *at + *n == out.len() => *n += 1,
                        _ => r.push((out.len(), 1)),
                    }
                }
            }
            // The first token that byte `i + 1` is not past.
            let mut t = tok;
            while t < flat.tokens.len() && flat.tokens[t].0 + flat.tokens[t].1 <= i + 1 {
                t += 1;
            }
            next_tok = flat.tokens.get(t).map_or(usize::MAX, |t| t.0);
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        col += need;
        i += 1;
    }
    let patches = flat
        .tokens
        .iter()
        .zip(runs)
        .map(|(&(_, _, slot), runs)| Patch::Plain { slot, runs })
        .collect();
    (out, patches)
}

/// Whether `encode_qp` writes `d[i]` as itself: printable ASCII other than `=`, or a space
/// or tab that does not end its line.
fn qp_literal(d: &[u8], i: usize) -> bool {
    match d.get(i).copied().unwrap_or(b'=') {
        b'=' => false,
        33..=126 => true,
        b' ' | b'\t' => !matches!(
            (d.get(i + 1), d.get(i + 2)),
            (None, _) | (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n'))
        ),
        _ => false,
    }
}

/// Base64 in 76-character lines, each ended by `eol`.
pub(crate) fn encode_base64(flat: &Flat, eol: &[u8]) -> (Vec<u8>, Vec<Patch>) {
    let enc = STANDARD.encode(&flat.data);
    let mut out = Vec::with_capacity(enc.len() + enc.len() / B64_LINE * eol.len() + eol.len());
    for line in enc.as_bytes().chunks(B64_LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    let at = |k: usize| k + (k / B64_LINE) * eol.len();
    let d = &flat.data;
    let patches = flat
        .tokens
        .iter()
        .map(|&(s, len, slot)| {
            let g0 = s / 3 * 3;
            let g1 = (s + len).div_ceil(3).saturating_mul(3).min(d.len());
            let c0 = g0 / 3 * 4;
            let c1 = c0 + (g1 - g0).div_ceil(3) * 4;
            let mut runs = Vec::new();
            let mut k = c0;
            while k < c1 {
                let line_end = (k / B64_LINE + 1) * B64_LINE;
                let n = (line_end.min(c1)) - k;
                runs.push((at(k), n));
                k += n;
            }
            Patch::Base64 {
                slot,
                lead: d[g0..s].to_vec(),
                trail: d[s + len..g1].to_vec(),
                runs,
            }
        })
        .collect();
    (out, patches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_round_trip_keeps_line_breaks() {
        let text = b"caf\xe9 =\r\nline two=\r\nthree\nfour".to_vec();
        let flat = Flat {
            data: text.clone(),
            tokens: vec![],
        };
        let (enc, _) = encode_qp(&flat, b"\r\n");
        assert_eq!(*decode(&enc, Cte::QuotedPrintable).unwrap(), text);
        assert!(crate::rewrite::crlf::is_normal(&enc), "no bare line end");
        let long = vec![b'x'; 3000];
        let (enc, _) = encode_qp(
            &Flat {
                data: long.clone(),
                tokens: vec![],
            },
            b"\n",
        );
        assert!(enc.split(|&b| b == b'\n').all(|l| l.len() <= 76));
        assert_eq!(*decode(&enc, Cte::QuotedPrintable).unwrap(), long);
    }

    #[test]
    fn base64_round_trip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let (enc, _) = encode_base64(
            &Flat {
                data: data.clone(),
                tokens: vec![],
            },
            b"\r\n",
        );
        assert_eq!(*decode(&enc, Cte::Base64).unwrap(), data);
    }
}
