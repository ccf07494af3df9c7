//! Applies the numbered migrations of `sql/`, embedded in the binary at build time.
//!
//! A session-level advisory lock makes concurrent starts safe: the first process applies each
//! pending migration in its own transaction, the others wait and then find nothing to do. Each
//! applied file's SHA-256 is kept; a file changed after it was applied stops startup, because the
//! database no longer matches what the code believes it is.

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_postgres::Client;

/// Embeds `sql/<name>` (paths relative to this file, so that the build follows the checkout).
macro_rules! migration {
    ($version:expr, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../sql/", $name)),
        }
    };
}

/// One numbered file of `sql/`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every file of `sql/`, in order. A test checks that this list and the directory agree.
pub static MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_init.sql"),
    migration!(2, "0002_delivery_leases.sql"),
    migration!(4, "0004_insights.sql"),
    migration!(6, "0006_copies_delivered_idx.sql"),
    migration!(10, "0010_notify.sql"),
    migration!(11, "0011_compose.sql"),
    migration!(12, "0012_followups.sql"),
    migration!(13, "0013_replies.sql"),
    migration!(14, "0014_tenant_scopes.sql"),
    migration!(15, "0015_sender_budget.sql"),
    migration!(16, "0016_mailbox_failures.sql"),
    migration!(17, "0017_deliverability.sql"),
    migration!(18, "0018_event_writes.sql"),
    migration!(22, "0022_link_lists.sql"),
    migration!(23, "0023_insights_fold.sql"),
    migration!(24, "0024_link_list_digest_inline.sql"),
    migration!(25, "0025_insights_fold_parts.sql"),
    migration!(26, "0026_insights_crm_totals.sql"),
    migration!(27, "0027_insights_rollup_fillfactor.sql"),
    migration!(28, "0028_link_list_digest_stable.sql"),
];

/// Arbitrary constant naming mailtally's migration lock among advisory locks.
const LOCK_KEY: i64 = 0x6d61_696c_7461_6c6c; // "mailtall"

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("migration {version} ({name}) was changed after it was applied: the database has checksum {applied}, this build has {built}; restore the file or migrate the database by hand")]
    Tampered {
        version: i32,
        name: String,
        applied: String,
        built: String,
    },
    #[error("the database has migration {0}, which this build of mailtally does not know; run a newer mailtally")]
    Unknown(i32),
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("database error while migrating: {0}")]
    Db(#[from] tokio_postgres::Error),
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Applies what is pending of `migrations`; returns the versions this call applied.
pub async fn apply(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply_locked(client, migrations).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, MigrateError> {
    // Checked first: `CREATE TABLE IF NOT EXISTS` on an existing table sends a NOTICE, which
    // tokio-postgres logs at INFO on every start.
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('mailtally_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS mailtally_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
    }
    let rows = client
        .query(
            "SELECT version, name, checksum FROM mailtally_migrations ORDER BY version",
            &[],
        )
        .await?;
    let mut done = std::collections::HashSet::new();
    for row in rows {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let applied: String = row.get(2);
        match migrations.iter().find(|m| m.version == version) {
            None => return Err(MigrateError::Unknown(version)),
            Some(m) => {
                let built = checksum(m.sql);
                if built != applied {
                    return Err(MigrateError::Tampered {
                        version,
                        name,
                        applied,
                        built,
                    });
                }
            }
        }
        done.insert(version);
    }
    let mut applied = Vec::new();
    for m in migrations.iter().filter(|m| !done.contains(&m.version)) {
        let tx = client.transaction().await?;
        let failed = |source| MigrateError::Failed {
            version: m.version,
            name: m.name,
            source,
        };
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO mailtally_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_sql_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(listed, files, "add each new sql/ file to MIGRATIONS");
        for m in MIGRATIONS {
            let number: i32 = m.name.split('_').next().unwrap().parse().unwrap();
            assert_eq!(number, m.version, "{} has version {}", m.name, m.version);
        }
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
