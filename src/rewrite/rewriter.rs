//! The rewrite stage's handle: how copies are rewritten and the keys that sign their tokens,
//! built once from the settings and shared by everything that makes copies (the relay, group
//! emails, follow-ups) or checks tokens (the tracking endpoints).

use std::sync::Arc;

use crate::config::Settings;

use super::dkim::{DkimError, Signer};
use super::{DkimSettings, RewriteSettings, TokenKeys, TrackMode};

#[derive(Clone, Debug)]
pub struct Rewriter {
    pub settings: Arc<RewriteSettings>,
    pub keys: TokenKeys,
}

impl Rewriter {
    /// `stored_secret` is the generated secret kept in the database, used when
    /// `TRACKING_SECRET` is not set.
    pub fn new(settings: &Settings, stored_secret: &str) -> Result<Self, DkimError> {
        Ok(Rewriter {
            settings: Arc::new(rewrite_settings(settings)?),
            keys: token_keys(settings, stored_secret),
        })
    }
}

/// The keys that sign and verify tracking tokens: `TRACKING_SECRET` (else the stored one)
/// signs; it and the rotated-out `TRACKING_SECRET_PREVIOUS` verify.
pub fn token_keys(settings: &Settings, stored_secret: &str) -> TokenKeys {
    let current = settings
        .rewrite
        .tracking_secret
        .as_deref()
        .unwrap_or(stored_secret);
    let previous: Vec<Vec<u8>> = settings
        .rewrite
        .tracking_secret_previous
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    TokenKeys::new(current.as_bytes(), &previous)
}

/// The rewrite's settings from the process settings (reads the DKIM key file when set).
pub fn rewrite_settings(settings: &Settings) -> Result<RewriteSettings, DkimError> {
    let mut rs = RewriteSettings::new(&settings.rewrite.public_url);
    rs.track_text_links = settings.rewrite.track_text_links;
    rs.default_track = settings
        .rewrite
        .default_track
        .parse::<TrackMode>()
        .unwrap_or(TrackMode::OpensAndClicks);
    rs.dkim = match (
        &settings.rewrite.dkim_selector,
        &settings.rewrite.dkim_domain,
        &settings.rewrite.dkim_key,
    ) {
        (Some(selector), Some(domain), Some(key)) => {
            let dkim = DkimSettings::from_file(selector, domain, key)?;
            // A key that cannot sign is an error at startup, not a silent "no key".
            Signer::new(&dkim)?;
            Some(dkim)
        }
        _ => None,
    };
    Ok(rs)
}
