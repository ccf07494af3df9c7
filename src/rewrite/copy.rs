//! Segments and slots: the message rewritten once, each recipient's copy filled in.
//!
//! `prepare` produces one template copy in which every token is a placeholder of its final
//! length (token lengths depend only on the URL, never on the copy), plus patches saying where
//! each token's characters land. A copy is then a memcpy plus one HMAC per slot: transfer
//! encodings are not redone per recipient, only the few base64 groups that hold a token.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use uuid::Uuid;

use super::token::{self, TokenKeys};
use super::TrackedLink;

/// What fills a slot in one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// The copy's open token (the pixel).
    Open,
    /// The click token of link `n` (index into `Prepared::links`).
    Click(u32),
    /// The copy's List-Unsubscribe token.
    Unsubscribe,
}

/// Rewritten text before transfer encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    Lit(Vec<u8>),
    Token { slot: SlotKind, len: usize },
}

/// Placeholder byte for a token: a QP- and base64-neutral character, so that the template's
/// layout (soft line breaks, groups) is exactly the layout of every real copy.
pub(crate) const PLACEHOLDER: u8 = b'A';

/// Where one token's characters go in the output.
#[derive(Clone, Debug)]
pub(crate) enum Patch {
    /// Verbatim token characters written at these `(offset, len)` runs, in order.
    Plain {
        slot: SlotKind,
        runs: Vec<(usize, usize)>,
    },
    /// Base64 body: the 3-byte groups that hold the token are re-encoded with the constant
    /// bytes around it (`lead`, `trail`) and written across `runs` (line breaks skipped).
    Base64 {
        slot: SlotKind,
        lead: Vec<u8>,
        trail: Vec<u8>,
        runs: Vec<(usize, usize)>,
    },
}

impl Patch {
    pub(crate) fn shift(&mut self, by: usize) {
        let runs = match self {
            Patch::Plain { runs, .. } | Patch::Base64 { runs, .. } => runs,
        };
        for r in runs {
            r.0 += by;
        }
    }

    /// Where the token's first characters go.
    pub(crate) fn start(&self) -> usize {
        match self {
            Patch::Plain { runs, .. } | Patch::Base64 { runs, .. } => {
                runs.first().map(|r| r.0).unwrap_or(0)
            }
        }
    }

    pub(crate) fn slot(&self) -> SlotKind {
        match self {
            Patch::Plain { slot, .. } | Patch::Base64 { slot, .. } => *slot,
        }
    }
}

/// Fill the template with one copy's tokens.
pub(crate) fn fill(
    template: &[u8],
    patches: &[Patch],
    links: &[TrackedLink],
    keys: &TokenKeys,
    copy: Uuid,
) -> Vec<u8> {
    let mut out = template.to_vec();
    let mut open: Option<String> = None;
    let mut unsubscribe: Option<String> = None;
    let mut clicks: Vec<Option<String>> = vec![None; links.len()];
    let mut scratch = Vec::new();
    let mut encoded = String::new();
    for p in patches {
        let tok: &str = match p.slot() {
            SlotKind::Open => open.get_or_insert_with(|| token::open_token(keys, copy)),
            SlotKind::Unsubscribe => {
                unsubscribe.get_or_insert_with(|| token::unsubscribe_token(keys, copy))
            }
            SlotKind::Click(i) => {
                let (Some(slot), Some(link)) = (clicks.get_mut(i as usize), links.get(i as usize))
                else {
                    continue;
                };
                slot.get_or_insert_with(|| token::click_token(keys, copy, link.index, &link.url))
            }
        };
        match p {
            Patch::Plain { runs, .. } => write_runs(&mut out, runs, tok.as_bytes()),
            Patch::Base64 {
                lead, trail, runs, ..
            } => {
                scratch.clear();
                scratch.extend_from_slice(lead);
                scratch.extend_from_slice(tok.as_bytes());
                scratch.extend_from_slice(trail);
                encoded.clear();
                STANDARD.encode_string(&scratch, &mut encoded);
                write_runs(&mut out, runs, encoded.as_bytes());
            }
        }
    }
    out
}

fn write_runs(out: &mut [u8], runs: &[(usize, usize)], mut src: &[u8]) {
    for &(at, len) in runs {
        let n = len.min(src.len());
        if let Some(dst) = out.get_mut(at..at + n) {
            dst.copy_from_slice(&src[..n]);
        }
        src = &src[n..];
    }
}
