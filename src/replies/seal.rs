//! IMAP passwords at rest: ChaCha20-Poly1305 under a key derived from the `MAILBOX_KEY`
//! setting. The database alone never gives the password back.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::ReplyError;

/// The cipher for one installation's `MAILBOX_KEY`.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

const NONCE_LEN: usize = 12;

impl Sealer {
    pub fn new(secret: &str) -> Sealer {
        // A fixed label, so that the same secret used elsewhere yields another key.
        let key = Sha256::new()
            .chain_update(b"mailtally mailbox password v1\0")
            .chain_update(secret.as_bytes())
            .finalize();
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// nonce || ciphertext-with-tag
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("ChaCha20-Poly1305 encrypts any input shorter than 256 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, ReplyError> {
        if sealed.len() < NONCE_LEN {
            return Err(ReplyError::Sealed);
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), data)
            .map_err(|_| ReplyError::Sealed)?;
        String::from_utf8(plain).map_err(|_| ReplyError::Sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let s = Sealer::new("a mailbox key of at least thirty-two chars");
        let sealed = s.seal("hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_ne!(s.seal("hunter2"), sealed, "a fresh nonce each time");
        assert_eq!(s.open(&sealed).unwrap(), "hunter2");
        let other = Sealer::new("another mailbox key of thirty-two chars");
        assert!(other.open(&sealed).is_err());
        assert!(s.open(&sealed[..5]).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open(&tampered).is_err());
    }
}
