//! Fault injection: what mailtally survives, each fault in its own module, each bounded in time.
//!
//! - `kill_loop`: the relay killed with SIGKILL at a random moment, round after round, under
//!   concurrent clients; every message answered 250 is delivered after the restart;
//! - `pg_restart`: PostgreSQL stopped and started under relay load: 451 meanwhile, no loss;
//! - `upstream`: the upstream away, and an upstream that stalls in the middle of DATA;
//! - `track_outage`: PostgreSQL down for 30 s under tracking load: every request answered, no
//!   event lost, also across a graceful stop;
//! - `spool`: a torn last spool record and a full disk.
//!
//! `MAILTALLY_SOAK=1` makes the loops longer (more rounds, longer outages).

use crate::common;

mod kill_loop;
mod pg_restart;
mod spool;
mod track_outage;
mod upstream;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::smtp::Sink;
use mailtally::store::{Cluster, ClusterOptions};

/// Whether the long versions were asked for.
pub fn soak() -> bool {
    std::env::var("MAILTALLY_SOAK").is_ok_and(|v| v == "1" || v == "true")
}

/// Message-ID -> how many times the sink received it.
pub fn received_ids(sink: &Sink) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for message in sink.messages() {
        if let Some(id) = message.lines().find_map(|l| l.strip_prefix("Message-ID: ")) {
            *ids.entry(id.trim().to_string()).or_insert(0) += 1;
        }
    }
    ids
}

/// A PostgreSQL cluster of the test's own, which it may stop and start: stopping the shared
/// test cluster would break the other tests. Stopped when dropped.
pub struct Private {
    cluster: Option<Cluster>,
    pub dir: PathBuf,
    _root: tempfile::TempDir,
}

impl Private {
    pub async fn start() -> Private {
        let root = tempfile::tempdir().unwrap();
        // The cluster runs as `postgres` when tests run as root: it must reach its directory.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = root.path().join("pg");
        let cluster = Cluster::ensure_running(&dir, ClusterOptions { durable: false }).unwrap();
        mailtally::store::create_database_if_missing(
            &cluster.admin_url(),
            Cluster::database_name(),
        )
        .await
        .unwrap();
        Private {
            cluster: Some(cluster),
            dir,
            _root: root,
        }
    }

    pub fn get(&self) -> &Cluster {
        self.cluster.as_ref().unwrap()
    }

    pub fn url(&self) -> String {
        self.get().database_url()
    }

    pub fn stop(&self) {
        self.get().stop().unwrap();
    }

    /// Starts the stopped cluster again (a new handle, so that it owns the server again).
    pub fn restart(&mut self) {
        self.cluster = None;
        self.cluster = Some(start_at(&self.dir));
    }
}

fn start_at(dir: &Path) -> Cluster {
    Cluster::ensure_running(dir, ClusterOptions { durable: false }).unwrap()
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Some(c) = self.cluster.take() {
            let _ = c.stop();
        }
    }
}
