//! The batch writer against a real PostgreSQL: a full channel loses nothing. (Spool replay, a
//! torn tail and a full disk: tests/faults/spool.rs.)

use crate::common;
use crate::track_support;

use std::time::Duration;

use common::TestDb;
use mailtally::events::writer::{self, WriterConfig};
use track_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_spools_and_loses_nothing() {
    let db = TestDb::migrated();
    let client = db.client().await;
    let seeded = seed(&client, 1, 2).await;
    let spool_dir = tempfile::tempdir().unwrap();
    let mut config = WriterConfig::new(spool_dir.path().to_owned());
    config.channel_capacity = 8;
    config.batch_size = 8;
    let (sink, handle) = writer::start(db.pool(), config).unwrap();
    for e in events(&seeded[0].copies, 3000) {
        sink.send(e);
    }
    let n = wait_count(
        &client,
        "SELECT count(*) FROM events",
        3000,
        Duration::from_secs(20),
    )
    .await;
    handle.shutdown().await;
    assert_eq!(n, 3000);
}
