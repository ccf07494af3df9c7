//! The store: PostgreSQL, the one place mailtally keeps state.
//!
//! Owns the connection pool, the migrations of `sql/`, the embedded default cluster and the
//! installation's own values (`server_settings`). It must never hold business rules: stages
//! own their queries.

pub mod embedded;
pub mod migrate;
pub mod retention;
pub mod server_settings;

use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use thiserror::Error;

pub use deadpool_postgres::Pool as DbPool;
pub use embedded::{Cluster, ClusterError, ClusterOptions};
pub use migrate::MigrateError;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("bad DATABASE_URL: {0}")]
    Url(String),
    #[error("cannot create the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::CreatePoolError),
    #[error("cannot get a database connection: {0}")]
    Connect(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
}

/// A pool of connections to `url`.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    // Validate early so that a typo is reported as such, not as a connection failure later.
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::Url(e.to_string()))?;
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url.to_string());
    cfg.application_name = Some("mailtally".into());
    cfg.connect_timeout = Some(Duration::from_secs(5));
    cfg.manager = Some(ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    });
    cfg.pool = Some(deadpool_postgres::PoolConfig {
        max_size,
        timeouts: deadpool_postgres::Timeouts {
            wait: Some(Duration::from_secs(5)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        },
        ..Default::default()
    });
    Ok(cfg.create_pool(Some(Runtime::Tokio1), tokio_postgres::NoTls)?)
}

/// Applies pending migrations with a dedicated connection; returns the versions applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, StoreError> {
    let mut client = pool.get().await?;
    Ok(migrate::apply(&mut client, migrate::MIGRATIONS).await?)
}

/// Closes `pool` and gives its connections a moment to end their sessions, so that stopping
/// the embedded cluster next does not cut them (which each reports as a connection error).
pub async fn close_pool(pool: Pool) {
    pool.close();
    drop(pool);
    // Each dropped client's connection task sends Terminate and ends on its next poll; the
    // tasks run on the runtime's other threads, so a short sleep lets them finish.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Where the database is: a URL given by the operator, or the embedded cluster.
pub struct Database {
    pub url: String,
    pub cluster: Option<Cluster>,
}

impl Database {
    /// Uses `database_url` when set; otherwise starts (or reuses) the embedded cluster under
    /// `data_dir/pg` and makes sure mailtally's database exists in it.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        if let Some(url) = database_url {
            return Ok(Database {
                url: url.to_string(),
                cluster: None,
            });
        }
        let dir = data_dir.join("pg");
        let cluster = tokio::task::spawn_blocking(move || {
            Cluster::ensure_running(&dir, ClusterOptions::default())
        })
        .await
        .expect("cluster start does not panic")?;
        create_database_if_missing(&cluster.admin_url(), Cluster::database_name()).await?;
        Ok(Database {
            url: cluster.database_url(),
            cluster: Some(cluster),
        })
    }

    /// Stops the embedded cluster if this process started it.
    pub fn close(self) {
        if let Some(cluster) = self.cluster {
            if let Err(e) = cluster.stop_if_owner() {
                tracing::warn!(error = %e, "embedded PostgreSQL did not stop cleanly");
            } else if cluster.is_owner() {
                tracing::info!("embedded PostgreSQL stopped");
            }
        }
    }
}

/// Creates `name` on the server behind `admin_url` unless it exists.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(e) = client.batch_execute(&sql).await {
            // Another process created it between our check and our CREATE.
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(e.into());
            }
        }
    }
    drop(client);
    let _ = task.await;
    Ok(())
}
