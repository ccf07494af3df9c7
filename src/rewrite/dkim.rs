//! DKIM: the relay's own signature on each final copy (a client's signature does not survive
//! rewriting).

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};

/// Configured signing identity.
#[derive(Clone, Debug)]
pub struct DkimSettings {
    pub selector: String,
    pub domain: String,
    /// Private key, PEM (PKCS#1 or PKCS#8 RSA, or PKCS#8 Ed25519).
    pub key_pem: String,
}

impl DkimSettings {
    /// Read the key file named in the settings.
    pub fn from_file(
        selector: &str,
        domain: &str,
        path: &std::path::Path,
    ) -> Result<Self, DkimError> {
        let key_pem = std::fs::read_to_string(path).map_err(|e| DkimError::Key(e.to_string()))?;
        Ok(DkimSettings {
            selector: selector.into(),
            domain: domain.into(),
            key_pem,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key: {0}")]
    Key(String),
    #[error("DKIM signing: {0}")]
    Sign(String),
}

/// Headers the relay signs (absent ones are signed as absent, so they cannot be added later).
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

pub(crate) enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed(DkimSigner<Ed25519Key, Done>),
}

impl Signer {
    pub(crate) fn new(s: &DkimSettings) -> Result<Signer, DkimError> {
        use rustls_pki_types_compat::parse_key;
        let der =
            parse_key(&s.key_pem).ok_or_else(|| DkimError::Key("no private key in PEM".into()))?;
        if let Ok(k) = RsaKey::<Sha256>::from_key_der(der.clone_key()) {
            return Ok(Signer::Rsa(
                DkimSigner::from_key(k)
                    .domain(&s.domain)
                    .selector(&s.selector)
                    .headers(SIGNED.iter().copied()),
            ));
        }
        // `openssl genpkey -algorithm ed25519` writes PKCS#8 v1, without the public key, which
        // the checked constructor refuses; the public key is derived from the seed instead.
        let k = Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_der())
            .map_err(|e| DkimError::Key(e.to_string()))?;
        Ok(Signer::Ed(
            DkimSigner::from_key(k)
                .domain(&s.domain)
                .selector(&s.selector)
                .headers(SIGNED.iter().copied()),
        ))
    }

    /// The `DKIM-Signature` field to put in front of `message`.
    pub(crate) fn header(&self, message: &[u8]) -> Result<String, DkimError> {
        let sig = match self {
            Signer::Rsa(s) => s.sign(message),
            Signer::Ed(s) => s.sign(message),
        }
        .map_err(|e| DkimError::Sign(e.to_string()))?;
        Ok(sig.to_header())
    }
}

mod rustls_pki_types_compat {
    use rustls_pemfile::Item;
    use rustls_pki_types::PrivateKeyDer;

    pub(super) fn parse_key(pem: &str) -> Option<PrivateKeyDer<'static>> {
        let mut rd = pem.as_bytes();
        for item in rustls_pemfile::read_all(&mut rd).flatten() {
            match item {
                Item::Pkcs1Key(k) => return Some(PrivateKeyDer::Pkcs1(k)),
                Item::Pkcs8Key(k) => return Some(PrivateKeyDer::Pkcs8(k)),
                Item::Sec1Key(k) => return Some(PrivateKeyDer::Sec1(k)),
                _ => {}
            }
        }
        None
    }
}
