//! `mailtally serve`: brings every stage up in order, and down in reverse on SIGTERM/SIGINT.

use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::accounts;
use crate::base::Base;
use crate::config::Settings;
use crate::events::writer::{self, WriterConfig};
use crate::notify::stream::Hub;
use crate::rewrite::Rewriter;
use crate::store::{self, Database, StoreError};
use crate::track::delivered::DeliveryCache;
use crate::track::Tracker;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dkim(#[from] crate::rewrite::dkim::DkimError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("cannot create the first user: {0}")]
    FirstUser(#[from] accounts::AccountError),
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    #[error(transparent)]
    Deliver(#[from] crate::deliver::DeliverError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the event writer: {0}")]
    Events(#[from] crate::events::writer::WriterError),
    #[error(transparent)]
    Track(#[from] crate::track::TrackError),
    #[error(transparent)]
    Geo(#[from] crate::insights::geo::GeoError),
}

/// How often `serve` folds new events into the rollups.
const AGGREGATION_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the database (starting the embedded cluster when no URL is set), applies pending
/// migrations, and returns it with a pool.
pub async fn open_store(
    settings: &Settings,
) -> Result<(Database, deadpool_postgres::Pool), StoreError> {
    let db = Database::open(
        settings.store.database_url.as_deref(),
        &settings.store.data_dir,
    )
    .await?;
    if let Some(cluster) = &db.cluster {
        tracing::info!(dir = %cluster.dir().display(), owner = cluster.is_owner(), "embedded PostgreSQL running");
    }
    let pool = store::pool(&db.url, 32)?;
    let applied = store::migrate(&pool).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "database migrated");
    }
    Ok((db, pool))
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal(token: CancellationToken) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
    Ok(())
}

/// A first admin when the installation has no user, so that a new user can send at once.
async fn first_user(ctx: &Base) -> Result<(), ServeError> {
    let mut client = ctx.pool.get().await.map_err(StoreError::from)?;
    if accounts::count_users(&**client).await? > 0 {
        return Ok(());
    }
    let email = "admin@mailtally.localhost";
    let password = accounts::new_api_token()[3..19].to_string();
    let created = accounts::add_user(
        &mut client,
        email,
        &password,
        Some("default"),
        accounts::Role::Admin,
    )
    .await;
    let new = match created {
        Ok(new) => new,
        // Another node made the first user at the same moment.
        Err(accounts::AccountError::Exists(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let smtp = ctx.settings.relay.listen;
    println!(
        "\nmailtally: first user created (shown once, keep them):\n  \
         e-mail:    {email}\n  password:  {password}\n  API token: {token}\n\n\
         Send a first message:\n  \
         swaks --server {host} --port {port} --auth PLAIN --auth-user {email} --auth-password '{password}' \\\n    \
         --from {email} --to someone@example.com --header 'X-Mailtally-Template: welcome' \\\n    \
         --header 'Subject: Hello' --body '<html><body><p>Hi, see <a href=\"https://example.com/\">our site</a></p></body></html>' \\\n    \
         --add-header 'Content-Type: text/html; charset=utf-8'\n\n\
         Then watch it at {public}/insights (sign in with the API token).\n",
        token = new.api_token,
        host = smtp.ip(),
        port = smtp.port(),
        public = ctx.settings.rewrite.public_url,
    );
    Ok(())
}

/// Runs everything until SIGTERM/SIGINT, then stops in order: listeners first, so that no new
/// work arrives, then the database if this process started it.
/// Every stage's metrics, so that `/metrics` lists each series (at zero) from the start.
fn register_metrics() {
    crate::metrics::init();
    crate::relay::register_metrics();
    crate::queue::register_metrics();
    crate::deliver::register_metrics();
    crate::events::register_metrics();
    crate::track::register_metrics();
    crate::notify::metrics::register();
    crate::followup::register_metrics();
    crate::replies::register_metrics();
    crate::deliverability::register_metrics();
    crate::http::register_metrics();
    crate::insights::metrics::init();
}

pub async fn run(settings: Settings) -> Result<(), ServeError> {
    register_metrics();
    let settings = Arc::new(settings);
    let shutdown = CancellationToken::new();
    shutdown_signal(shutdown.clone()).await?;

    let (db, pool) = open_store(&settings).await?;
    let result = run_with_store(settings, pool, db.url.clone(), shutdown).await;
    db.close();
    result
}

async fn run_with_store(
    settings: Arc<Settings>,
    pool: deadpool_postgres::Pool,
    database_url: String,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let stored_secret = store::server_settings::tracking_secret(&pool).await?;
    let rewriter = Rewriter::new(&settings, &stored_secret)?;
    // The writer starts before anything can produce events and stops after HTTP has.
    let mut writer_config = WriterConfig::new(settings.store.data_dir.join("spool"));
    writer_config.batch_size = settings.events.batch_size;
    writer_config.channel_capacity = settings.events.channel_capacity;
    let (events, writer) = writer::start(pool.clone(), writer_config)?;
    let deliveries = DeliveryCache::new();
    let background = CancellationToken::new();
    deliveries.spawn_poller(pool.clone(), background.clone());
    let tracker = Arc::new(Tracker::new(
        &settings,
        rewriter.keys.clone(),
        deliveries,
        events,
    )?);
    let ctx = Base {
        settings: settings.clone(),
        pool,
        database_url,
        shutdown: shutdown.clone(),
    };
    let locator = Arc::new(crate::insights::geo::Locator::open(
        settings.track.geoip_database.as_deref(),
    )?);
    let handles = crate::http::Handles {
        tracker,
        hub: Hub::default(),
        rewriter,
        locator,
    };
    let result = serve_http(&ctx, handles, &settings, &shutdown).await;
    background.cancel();
    writer.shutdown().await;
    if result.is_ok() {
        tracing::info!("mailtally stopped");
    }
    result
}

async fn serve_http(
    ctx: &Base,
    handles: crate::http::Handles,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    partitions(ctx).await?;
    first_user(ctx).await?;
    tokio::spawn(partition_upkeep(ctx.clone()));
    let rewriter = handles.rewriter.clone();
    let notify_tasks = crate::notify::start(ctx, &handles.hub);

    // SMTP before HTTP, so that a healthy /healthz means mail is accepted too. The relay binds
    // before the workers start: delivery frees the leases this node's name held before a
    // restart, which must not happen while another process with the same address runs.
    let relay = crate::relay::start(ctx.clone(), rewriter.clone()).await?;
    let deliver = crate::deliver::start(ctx.clone()).await?;
    let http = crate::http::start(ctx.clone(), handles).map_err(|source| ServeError::HttpBind {
        addr: settings.http.listen,
        source,
    })?;
    let http_handle = http.handle();
    tracing::info!(http = %settings.http.listen, public_url = %settings.rewrite.public_url, "mailtally serving");

    let http_task = tokio::spawn(http);
    let aggregation = tokio::spawn(crate::insights::aggregate::serve_loop(
        ctx.pool.clone(),
        AGGREGATION_EVERY,
        shutdown.clone(),
    ));
    let followups = tokio::spawn(crate::followup::serve_loop(ctx.clone(), rewriter));
    let mailboxes = tokio::spawn(crate::replies::serve_loop(ctx.clone()));
    shutdown.cancelled().await;
    // Sessions first (their in-flight DATA commits finish), then workers after their attempt.
    relay.stopped().await;
    deliver.stopped().await;
    let _ = aggregation.await;
    let _ = followups.await;
    let _ = mailboxes.await;
    http_handle.stop(true).await;
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ServeError::Http(e)),
        Err(e) => tracing::warn!(error = %e, "HTTP task ended abnormally"),
    }
    for task in notify_tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Creates next months' event partitions and drops those past `RETENTION_DAYS`.
async fn partitions(ctx: &Base) -> Result<(), StoreError> {
    let client = ctx.pool.get().await?;
    client
        .execute("SELECT mailtally_ensure_event_partitions(1, 3)", &[])
        .await?;
    store::retention::drop_expired(&**client, ctx.settings.store.retention_days).await?;
    Ok(())
}

/// Keeps next months' event partitions ahead of time in a long-running process.
async fn partition_upkeep(ctx: Base) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(6 * 3600));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = partitions(&ctx).await {
                    tracing::warn!(error = %e, "cannot create event partitions; will retry");
                }
            }
        }
    }
}
