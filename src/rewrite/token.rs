//! Tracking tokens: what `/o/`, `/c/` and `/u/` (the List-Unsubscribe URL) carry.
//!
//! A token is `base64url(version | kind | copy | [link | url] | mac)` without padding, where
//! `mac` is HMAC-SHA256 over everything before it, truncated to 128 bits. The click token
//! carries its destination so that the redirect needs no database. Verification is
//! constant-time and accepts rotated-out secrets that are still listed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const KIND_OPEN: u8 = b'o';
const KIND_CLICK: u8 = b'c';
const KIND_UNSUBSCRIBE: u8 = b'u';
/// 128 bits: the floor the design sets for truncated MACs.
const MAC_LEN: usize = 16;
/// Longest destination a click token carries; longer URLs are not tracked (see `policy`).
pub const MAX_URL_LEN: usize = 8 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not base64url")]
    Encoding,
    #[error("token is too short or too long")]
    Length,
    #[error("unknown token version {0}")]
    Version(u8),
    #[error("unknown token kind")]
    Kind,
    #[error("token signature does not verify")]
    Signature,
    #[error("token URL is not UTF-8")]
    Url,
}

/// The secrets tokens are signed with: the current one signs, all of them verify.
#[derive(Clone)]
pub struct TokenKeys {
    /// Per-purpose keys derived from each secret, current first.
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "TokenKeys({} keys)", self.keys.len())
    }
}

impl TokenKeys {
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> Self {
        let keys = std::iter::once(current)
            .chain(previous.iter().map(Vec::as_slice))
            .map(derive)
            .collect();
        TokenKeys { keys }
    }

    fn signer(&self) -> &HmacSha256 {
        // `new` always puts the current key first.
        &self.keys[0]
    }
}

/// Derive the token key from the server secret, so that the same secret used elsewhere
/// (webhook signing, sessions) never yields the same MACs.
fn derive(secret: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"mailtally tracking token v1");
    let sub = mac.finalize().into_bytes();
    <HmacSha256 as Mac>::new_from_slice(&sub).expect("HMAC takes any key length")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Open { copy: Uuid },
    Click { copy: Uuid, link: u32, url: String },
    Unsubscribe { copy: Uuid },
}

pub fn open_token(keys: &TokenKeys, copy: Uuid) -> String {
    let mut buf = Vec::with_capacity(2 + 16 + MAC_LEN);
    buf.extend_from_slice(&[VERSION, KIND_OPEN]);
    buf.extend_from_slice(copy.as_bytes());
    seal(keys, buf)
}

/// The copy's List-Unsubscribe token: as long as an open token, signed for another purpose,
/// so that neither can stand for the other.
pub fn unsubscribe_token(keys: &TokenKeys, copy: Uuid) -> String {
    let mut buf = Vec::with_capacity(2 + 16 + MAC_LEN);
    buf.extend_from_slice(&[VERSION, KIND_UNSUBSCRIBE]);
    buf.extend_from_slice(copy.as_bytes());
    seal(keys, buf)
}

pub fn click_token(keys: &TokenKeys, copy: Uuid, link: u32, url: &str) -> String {
    let mut buf = Vec::with_capacity(2 + 16 + 4 + url.len() + MAC_LEN);
    buf.extend_from_slice(&[VERSION, KIND_CLICK]);
    buf.extend_from_slice(copy.as_bytes());
    buf.extend_from_slice(&link.to_be_bytes());
    buf.extend_from_slice(url.as_bytes());
    seal(keys, buf)
}

/// Length in characters of an open token (all open tokens have the same length).
pub fn open_token_len() -> usize {
    b64_len(2 + 16 + MAC_LEN)
}

/// Length in characters of a click token for a URL of `url_len` bytes.
pub fn click_token_len(url_len: usize) -> usize {
    b64_len(2 + 16 + 4 + url_len + MAC_LEN)
}

fn b64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

fn seal(keys: &TokenKeys, mut buf: Vec<u8>) -> String {
    let mut mac = keys.signer().clone();
    mac.update(&buf);
    let tag = mac.finalize().into_bytes();
    buf.extend_from_slice(&tag[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(&buf)
}

pub fn verify(keys: &TokenKeys, token: &str) -> Result<Verified, TokenError> {
    if token.len() > b64_len(2 + 16 + 4 + MAX_URL_LEN + MAC_LEN) {
        return Err(TokenError::Length);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| TokenError::Encoding)?;
    if raw.len() < 2 + 16 + MAC_LEN {
        return Err(TokenError::Length);
    }
    let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
    // Check the MAC before looking at anything the sender controls.
    let mut ok = subtle::Choice::from(0);
    for key in &keys.keys {
        let mut mac = key.clone();
        mac.update(body);
        let full = mac.finalize().into_bytes();
        ok |= full[..MAC_LEN].ct_eq(tag);
    }
    if !bool::from(ok) {
        return Err(TokenError::Signature);
    }
    if body[0] != VERSION {
        return Err(TokenError::Version(body[0]));
    }
    let copy = Uuid::from_slice(&body[2..18]).map_err(|_| TokenError::Length)?;
    match body[1] {
        KIND_OPEN if body.len() == 18 => Ok(Verified::Open { copy }),
        KIND_UNSUBSCRIBE if body.len() == 18 => Ok(Verified::Unsubscribe { copy }),
        KIND_CLICK if body.len() >= 22 => {
            let mut link = [0u8; 4];
            link.copy_from_slice(&body[18..22]);
            let url = std::str::from_utf8(&body[22..]).map_err(|_| TokenError::Url)?;
            Ok(Verified::Click {
                copy,
                link: u32::from_be_bytes(link),
                url: url.to_owned(),
            })
        }
        KIND_OPEN | KIND_CLICK => Err(TokenError::Length),
        _ => Err(TokenError::Kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"current secret", &[b"old secret".to_vec()])
    }

    #[test]
    fn open_round_trip() {
        let copy = Uuid::now_v7();
        let t = open_token(&keys(), copy);
        assert_eq!(t.len(), open_token_len());
        assert_eq!(verify(&keys(), &t), Ok(Verified::Open { copy }));
    }

    #[test]
    fn unsubscribe_round_trip_and_no_other_token_stands_for_it() {
        let copy = Uuid::now_v7();
        let t = unsubscribe_token(&keys(), copy);
        assert_eq!(t.len(), open_token_len());
        assert_eq!(verify(&keys(), &t), Ok(Verified::Unsubscribe { copy }));
        let open = open_token(&keys(), copy);
        assert_eq!(verify(&keys(), &open), Ok(Verified::Open { copy }));
        assert_ne!(open, t);
    }

    #[test]
    fn click_round_trip() {
        let copy = Uuid::now_v7();
        let url = "https://example.com/a?b=c&d=é#f";
        let t = click_token(&keys(), copy, 7, url);
        assert_eq!(t.len(), click_token_len(url.len()));
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            verify(&keys(), &t),
            Ok(Verified::Click {
                copy,
                link: 7,
                url: url.into()
            })
        );
    }

    #[test]
    fn rotated_secret_still_verifies() {
        let old = TokenKeys::new(b"old secret", &[]);
        let copy = Uuid::now_v7();
        let t = click_token(&old, copy, 1, "https://x.test/");
        assert!(verify(&keys(), &t).is_ok());
        // Once dropped from the list it no longer does.
        let new_only = TokenKeys::new(b"current secret", &[]);
        assert_eq!(verify(&new_only, &t), Err(TokenError::Signature));
    }

    #[test]
    fn tampered_other_secret_and_truncated_are_rejected() {
        let copy = Uuid::now_v7();
        let t = click_token(&keys(), copy, 3, "https://example.com/");
        // Tampered: flip one character in the middle (the URL).
        let mut b = t.clone().into_bytes();
        let i = b.len() / 2;
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(b).unwrap();
        assert_eq!(verify(&keys(), &tampered), Err(TokenError::Signature));
        // Another secret.
        let other = TokenKeys::new(b"someone else", &[]);
        assert_eq!(
            verify(
                &keys(),
                &click_token(&other, copy, 3, "https://example.com/")
            ),
            Err(TokenError::Signature)
        );
        // Truncated, at every length.
        for n in 0..t.len() {
            assert!(verify(&keys(), &t[..n]).is_err(), "prefix {n} accepted");
        }
        let o = open_token(&keys(), copy);
        for n in 0..o.len() {
            assert!(verify(&keys(), &o[..n]).is_err());
        }
        assert_eq!(verify(&keys(), "!!!"), Err(TokenError::Encoding));
    }
}
