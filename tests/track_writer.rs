//! The batch writer and the spool against a real PostgreSQL: replay lands each event once,
//! a torn tail is skipped, a full channel loses nothing.

mod common;
mod track_support;

use std::time::Duration;

use common::TestDb;
use mailtally::events::spool::{self, Spool};
use mailtally::events::writer::{self, WriterConfig};
use mailtally::events::{Event, Kind};
use track_support::*;

fn events(copies: &[uuid::Uuid], n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(
                if i % 2 == 0 { Kind::Open } else { Kind::Click },
                copies[i % copies.len()],
            );
            e.link_idx = (i % 2 == 1).then_some((i % 5) as i32);
            e.ip = Some("192.0.2.1".parse().unwrap());
            e.user_agent = Some("spooled".into());
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_replay_is_idempotent_and_skips_a_torn_tail() {
    let db = TestDb::migrated();
    let client = db.client().await;
    let seeded = seed(&client, 1, 3).await;
    let spool_dir = tempfile::tempdir().unwrap();
    let evs = events(&seeded[0].copies, 500);

    // A spool left by a crashed run: two appends, then a torn record.
    let segment = {
        let mut spool = Spool::open(spool_dir.path()).unwrap();
        spool.append(&evs[..200]).unwrap();
        spool.append(&evs[200..]).unwrap();
        spool.seal().unwrap().remove(0)
    };
    let mut torn = Vec::new();
    spool::encode_record(&evs[0], &mut torn).unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&segment, &bytes).unwrap();
    let copy_of_segment = bytes.clone();

    let count = "SELECT count(*) FROM events";
    let mut config = WriterConfig::new(spool_dir.path().to_owned());
    config.batch_size = 64;
    let (_sink, handle) = writer::start(db.pool(), config.clone()).unwrap();
    assert_eq!(
        wait_count(&client, count, 500, Duration::from_secs(10)).await,
        500
    );
    handle.shutdown().await;
    assert!(Spool::open(spool_dir.path()).unwrap().is_empty());

    // The same segment replayed again (a crash between commit and removal): still 500.
    std::fs::write(
        spool_dir.path().join("events-0000000000000042.spool"),
        &copy_of_segment,
    )
    .unwrap();
    let (_sink, handle) = writer::start(db.pool(), config).unwrap();
    for _ in 0..100 {
        if Spool::open(spool_dir.path()).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown().await;
    assert!(Spool::open(spool_dir.path()).unwrap().is_empty());
    let n: i64 = client.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(n, 500);
    let msg: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE message_id = $1",
            &[&seeded[0].message],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(msg, 500, "message_id resolved from copies");
}

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
