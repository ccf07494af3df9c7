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

/// The writer keeps which message each copy belongs to in memory; a copy deleted after its
/// first events (erasure, message deletion), or one that never existed, still gets no row, on
/// both ways of writing (fresh batches and spool replays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_unknown_or_removed_copies_never_become_rows() {
    let db = TestDb::migrated();
    let client = db.client().await;
    let seeded = seed(&client, 2, 2).await;
    let (kept, erased, deleted) = (
        seeded[0].copies[0],
        seeded[0].copies[1],
        seeded[1].copies[0],
    );
    let spool_dir = tempfile::tempdir().unwrap();
    let config = WriterConfig::new(spool_dir.path().to_owned());
    let (sink, handle) = writer::start(db.pool(), config).unwrap();
    let count_of = |copy: uuid::Uuid| {
        let client = &client;
        async move {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM events WHERE copy_id = $1 AND kind IN ('open', 'click')",
                    &[&copy],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    // First events: every copy known, so the writer remembers all three.
    for copy in [kept, erased, deleted] {
        for e in events(&[copy], 5) {
            sink.send(e);
        }
    }
    wait_count(
        &client,
        "SELECT count(*) FROM events WHERE kind IN ('open', 'click')",
        15,
        Duration::from_secs(10),
    )
    .await;
    // One recipient erased, one message deleted, as the API and the command do it.
    let recipient: String = client
        .query_one("SELECT recipient FROM copies WHERE id = $1", &[&erased])
        .await
        .unwrap()
        .get(0);
    let mut conn = db.client().await;
    let tx = conn.transaction().await.unwrap();
    mailtally::erasure::erase_recipient(&tx, &recipient)
        .await
        .unwrap();
    mailtally::erasure::erase_message(&tx, seeded[1].message)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count_of(erased).await, 0);
    assert_eq!(count_of(deleted).await, 0);
    let never = uuid::Uuid::now_v7();
    for copy in [erased, deleted, never, kept] {
        for e in events(&[copy], 5) {
            sink.send(e);
        }
    }
    // The kept copy's events come last: once they are in, the others were written too.
    let mut n = 0;
    for _ in 0..200 {
        n = count_of(kept).await;
        if n == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 10, "the kept copy's events are stored");
    handle.shutdown().await;
    for copy in [erased, deleted, never] {
        assert_eq!(count_of(copy).await, 0, "no row for {copy}");
    }
}

/// A database that refuses every write for a while (a read-only standby after a failover)
/// is an outage: the events wait in the spool and are stored once it takes writes, instead of
/// being refused row by row and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_holds_events_back_and_drops_none() {
    let db = TestDb::migrated();
    let client = db.client().await;
    let seeded = seed(&client, 1, 2).await;
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
        ))
        .await
        .unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let mut config = WriterConfig::new(spool_dir.path().to_owned());
    config.batch_size = 50;
    config.retry_after = Duration::from_millis(200);
    let (sink, handle) = writer::start(db.pool(), config).unwrap();
    for e in events(&seeded[0].copies, 300) {
        sink.send(e);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" RESET default_transaction_read_only"
        ))
        .await
        .unwrap();
    let n = wait_count(
        &client,
        "SELECT count(*) FROM events",
        300,
        Duration::from_secs(20),
    )
    .await;
    handle.shutdown().await;
    assert_eq!(
        n, 300,
        "events were dropped while the database was read-only"
    );
}
