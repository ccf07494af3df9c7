//! `mailtally serve`: brings every stage up in order, and down in reverse on SIGTERM/SIGINT.

use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::api::accounts;
use crate::config::Settings;
use crate::context::{self, Context};
use crate::store::{self, Database, StoreError};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("cannot create the first user: {0}")]
    FirstUser(#[from] accounts::AccountError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// How often `serve` folds new events into the rollups.
const AGGREGATION_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the database (starting the embedded cluster when no URL is set), applies pending
/// migrations, and returns it with a pool.
pub async fn open_store(
    settings: &Settings,
) -> Result<(Database, deadpool_postgres::Pool), StoreError> {
    let db = Database::open(settings.database_url.as_deref(), &settings.data_dir).await?;
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
async fn first_user(ctx: &Context) -> Result<(), ServeError> {
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
    let smtp = ctx.settings.smtp_listen;
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
        public = ctx.settings.public_url,
    );
    Ok(())
}

/// Runs everything until SIGTERM/SIGINT, then stops in order: listeners first, so that no new
/// work arrives, then the database if this process started it.
pub async fn run(settings: Settings) -> Result<(), ServeError> {
    crate::metrics::init();
    let settings = Arc::new(settings);
    let shutdown = CancellationToken::new();
    shutdown_signal(shutdown.clone()).await?;

    let (db, pool) = open_store(&settings).await?;
    let result = run_with_store(settings, pool, shutdown).await;
    db.close();
    result
}

async fn run_with_store(
    settings: Arc<Settings>,
    pool: deadpool_postgres::Pool,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let tracking_secrets = Arc::new(context::tracking_secrets(&settings, &pool).await?);
    let ctx = Context {
        settings: settings.clone(),
        pool,
        tracking_secrets,
        shutdown: shutdown.clone(),
    };
    partitions(&ctx).await?;
    first_user(&ctx).await?;

    let http = crate::http::start(ctx.clone()).map_err(|source| ServeError::HttpBind {
        addr: settings.http_listen,
        source,
    })?;
    let http_handle = http.handle();
    tracing::info!(http = %settings.http_listen, public_url = %settings.public_url, "mailtally serving");

    let http_task = tokio::spawn(http);
    let aggregation = tokio::spawn(crate::insights::aggregate::serve_loop(
        ctx.pool.clone(),
        AGGREGATION_EVERY,
        shutdown.clone(),
    ));
    shutdown.cancelled().await;
    let _ = aggregation.await;
    http_handle.stop(true).await;
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ServeError::Http(e)),
        Err(e) => tracing::warn!(error = %e, "HTTP task ended abnormally"),
    }
    tracing::info!("mailtally stopped");
    Ok(())
}

/// Makes sure the monthly event partitions around now exist.
async fn partitions(ctx: &Context) -> Result<(), StoreError> {
    let client = ctx.pool.get().await?;
    client
        .execute("SELECT mailtally_ensure_event_partitions(1, 3)", &[])
        .await?;
    Ok(())
}
