//! The event spool on disk: a torn last record (a crash in the middle of an append) is skipped
//! and the rest replayed once; a full disk is a clear error, never a crash, and the writer goes
//! on once there is room again.

use std::time::Duration;

use crate::common::TestDb;
use crate::track_support::*;
use mailtally::events::spool::{self, Spool};
use mailtally::events::writer::{self, WriterConfig};

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

/// A small tmpfs mounted for the test, unmounted when dropped; None (and why) where mounting is
/// not possible (not root, no mount namespace rights).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_the_writer_goes_on() {
    let disk = match SmallDisk::mount("64k") {
        Ok(d) => d,
        Err(e) => {
            println!("SKIPPED: cannot mount a small tmpfs for the full-disk test: {e}");
            return;
        }
    };
    let copies: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    let evs = events(&copies, 100);
    // The spool itself: appends until the disk is full, then a typed error naming the file.
    let mut spool = Spool::open(disk.dir.path()).unwrap();
    let mut appended = 0;
    let error = loop {
        match spool.append(&evs) {
            Ok(_) => appended += evs.len(),
            Err(e) => break e,
        }
        assert!(appended < 100_000, "a 64k disk cannot take this much");
    };
    let text = error.to_string();
    println!("full disk after {appended} events: {text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        text.contains(&disk.dir.path().display().to_string()),
        "{text}"
    );
    drop(spool);

    // The writer with PostgreSQL unreachable and the spool full: it says the events are lost,
    // keeps running, and stores what comes once PostgreSQL is there again.
    let db = TestDb::migrated();
    let client = db.client().await;
    let seeded = seed(&client, 1, 3).await;
    let nowhere = mailtally::store::pool("postgresql://nobody@127.0.0.1:1/none", 2).unwrap();
    let mut config = WriterConfig::new(disk.dir.path().to_owned());
    config.batch_size = 16;
    let (sink, handle) = writer::start(nowhere, config).unwrap();
    for e in events(&seeded[0].copies, 200) {
        sink.send(e);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle.shutdown().await;

    // Room again (the full segments replayed into PostgreSQL): what was spooled lands.
    let mut config = WriterConfig::new(disk.dir.path().to_owned());
    config.batch_size = 64;
    let spooled_before = Spool::open(disk.dir.path()).unwrap().bytes();
    let (sink, handle) = writer::start(db.pool(), config).unwrap();
    for e in events(&seeded[0].copies, 10) {
        sink.send(e);
    }
    let n = wait_count(
        &client,
        "SELECT count(*) FROM events",
        10,
        Duration::from_secs(20),
    )
    .await;
    handle.shutdown().await;
    assert!(n >= 10, "stored {n}");
    println!(
        "writer on a full disk: {spooled_before} spooled bytes replayed, {n} events stored after"
    );
    assert!(Spool::open(disk.dir.path()).unwrap().is_empty());
}

/// While PostgreSQL stays away, each retry of a replay fails: the segment is kept as it is and
/// nothing of it is spooled again, so that an outage never grows the spool by a batch a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_fails_keeps_its_segment_and_spools_nothing_again() {
    let copies: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    let evs = events(&copies, 300);
    let spool_dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(spool_dir.path()).unwrap();
        spool.append(&evs).unwrap();
        spool.seal().unwrap();
    }
    let before = Spool::open(spool_dir.path()).unwrap().bytes();
    // Nothing listens on this port: every write fails as an outage.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = mailtally::store::pool(
        &format!("postgres://mailtally@127.0.0.1:{port}/none?connect_timeout=1"),
        4,
    )
    .unwrap();
    let mut config = WriterConfig::new(spool_dir.path().to_owned());
    config.batch_size = 50;
    config.retry_after = Duration::from_millis(100);
    let (_sink, handle) = writer::start(pool, config).unwrap();
    // Some twenty retries of the replay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle.shutdown().await;
    let after = Spool::open(spool_dir.path()).unwrap();
    assert_eq!(
        after.bytes(),
        before,
        "the spool grew while PostgreSQL was away"
    );
}

/// A shutdown during a long replay (a large spool left by an outage, replayed at start) stops
/// between batches and leaves the rest in the spool, where before it waited for the whole
/// spool to be written; the next start replays the rest, and every event lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_replay_stops_it_and_keeps_the_rest() {
    let db = TestDb::migrated();
    let client = db.client().await;
    let seeded = seed(&client, 1, 3).await;
    let spool_dir = tempfile::tempdir().unwrap();
    let total = 20_000;
    {
        let mut spool = Spool::open(spool_dir.path()).unwrap();
        spool.append(&events(&seeded[0].copies, total)).unwrap();
        spool.seal().unwrap();
    }
    let count = "SELECT count(*) FROM events";
    let mut config = WriterConfig::new(spool_dir.path().to_owned());
    // One transaction an event: the whole replay takes many seconds.
    config.batch_size = 1;
    let (_sink, handle) = writer::start(db.pool(), config.clone()).unwrap();
    assert!(wait_count(&client, count, 1, Duration::from_secs(10)).await >= 1);
    handle.shutdown().await;
    let stored: i64 = client.query_one(count, &[]).await.unwrap().get(0);
    assert!(
        stored < total as i64,
        "the shutdown waited for the whole replay ({stored} events stored)"
    );
    assert!(!Spool::open(spool_dir.path()).unwrap().is_empty());

    config.batch_size = 1000;
    let (_sink, handle) = writer::start(db.pool(), config).unwrap();
    wait_count(&client, count, total as i64, Duration::from_secs(30)).await;
    for _ in 0..100 {
        if Spool::open(spool_dir.path()).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown().await;
    let stored: i64 = client.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(stored, total as i64);
    assert!(Spool::open(spool_dir.path()).unwrap().is_empty());
}
