//! STARTTLS: the server certificate from TLS_CERT/TLS_KEY, or a self-signed one made on first
//! start and kept under MAILTALLY_DATA so that clients that pin it keep working.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::TlsAcceptor;

use crate::config::Settings;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for STARTTLS.
pub fn acceptor(settings: &Settings) -> Result<TlsAcceptor, TlsError> {
    let (cert_path, key_path) = match (&settings.relay.tls_cert, &settings.relay.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => self_signed(&settings.store.data_dir.join("tls"))?,
    };
    let certs = {
        let pem = read(&cert_path)?;
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Read {
                path: cert_path.clone(),
                source,
            })?
    };
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path));
    }
    let key = {
        let pem = read(&key_path)?;
        rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(|source| TlsError::Read {
                path: key_path.clone(),
                source,
            })?
            .ok_or_else(|| TlsError::NoKey(key_path.clone()))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Paths of the self-signed pair under `dir`, made when missing.
fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("smtp-cert.pem");
    let key_path = dir.join("smtp-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let names = vec!["localhost".to_string(), crate::base::host_name()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    // Key first: a crash between the two writes leaves no certificate, so the pair is remade.
    write(&key_path, &certified.key_pair.serialize_pem())?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600));
    }
    write(&cert_path, &certified.cert.pem())?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed certificate for STARTTLS");
    Ok((cert_path, key_path))
}
