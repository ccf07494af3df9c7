//! What every running stage shares: settings, the database pool, the tracking secrets and the
//! shutdown signal. Cheap to clone.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::events::EventSink;
use crate::track::Tracker;

#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    /// The URL behind the pool, for dedicated connections (LISTEN).
    pub database_url: String,
    /// Live events for this node's stream clients.
    pub event_hub: crate::notify::stream::Hub,
    /// How the relay rewrites messages (public URL, default tracking, DKIM).
    pub rewrite: Arc<crate::rewrite::RewriteSettings>,
    /// The current tracking secret, then rotated-out ones whose tokens still verify.
    pub tracking_secrets: Arc<TrackingSecrets>,
    /// Cancelled when the process begins a graceful shutdown.
    pub shutdown: CancellationToken,
    /// Where every stage sends its events; never blocks.
    pub events: EventSink,
    /// The state of the tracking endpoints.
    pub tracker: Arc<Tracker>,
}

#[derive(Debug, Clone)]
pub struct TrackingSecrets {
    pub current: Vec<u8>,
    pub previous: Vec<Vec<u8>>,
}

/// The tracking secret: `TRACKING_SECRET` when set, else the one generated on first start and
/// kept in the database, so that every node and every restart signs alike.
pub async fn tracking_secrets(
    settings: &Settings,
    pool: &Pool,
) -> Result<TrackingSecrets, crate::store::StoreError> {
    let previous = settings
        .rewrite
        .tracking_secret_previous
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    if let Some(secret) = &settings.rewrite.tracking_secret {
        return Ok(TrackingSecrets {
            current: secret.as_bytes().to_vec(),
            previous,
        });
    }
    let client = pool.get().await?;
    let fresh = {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    };
    // Two nodes starting together both try; the first insert wins and both read it back.
    client
        .execute(
            "INSERT INTO server_settings (key, value) VALUES ('tracking_secret', $1)
             ON CONFLICT (key) DO NOTHING",
            &[&fresh],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT value FROM server_settings WHERE key = 'tracking_secret'",
            &[],
        )
        .await?;
    Ok(TrackingSecrets {
        current: row.get::<_, String>(0).into_bytes(),
        previous,
    })
}

impl TrackingSecrets {
    /// The keys that sign and verify tracking tokens.
    pub fn keys(&self) -> crate::rewrite::TokenKeys {
        crate::rewrite::TokenKeys::new(&self.current, &self.previous)
    }
}

/// The rewrite stage's settings from the process settings (reads the DKIM key file when set).
pub fn rewrite_settings(
    settings: &Settings,
) -> Result<crate::rewrite::RewriteSettings, crate::rewrite::dkim::DkimError> {
    use crate::rewrite::{DkimSettings, RewriteSettings, TrackMode};
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
            crate::rewrite::dkim::Signer::new(&dkim)?;
            Some(dkim)
        }
        _ => None,
    };
    Ok(rs)
}
