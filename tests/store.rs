//! The store: migrations (idempotent, concurrent-safe, tamper-evident) and the embedded cluster.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::TestDb;
use mailtally::store::migrate::{self, MigrateError, Migration, MIGRATIONS};
use mailtally::store::{Cluster, ClusterOptions};

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_a_second_run_is_a_no_op() {
    let db = TestDb::new();
    let pool = db.pool();
    let first = mailtally::store::migrate(&pool).await.unwrap();
    assert_eq!(
        first,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let second = mailtally::store::migrate(&pool).await.unwrap();
    assert!(second.is_empty(), "second run applied {second:?}");

    let client = db.client().await;
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM mailtally_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded as usize, MIGRATIONS.len());
    // The schema is really there: the partitioned events table and this month's partition.
    let partitions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(partitions >= 5, "{partitions} event partitions");
}

/// Not idempotent on purpose: applying it twice fails (CREATE TABLE) or counts two rows.
static COUNTING: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_a.sql",
        sql: "CREATE TABLE applied (n int); INSERT INTO applied VALUES (1); SELECT pg_sleep(0.2);",
    },
    Migration {
        version: 2,
        name: "0002_b.sql",
        sql: "INSERT INTO applied VALUES (2);",
    },
];

#[tokio::test]
async fn concurrent_runners_apply_each_migration_once() {
    let db = TestDb::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            migrate::apply(&mut client, COUNTING).await.unwrap()
        }));
    }
    let mut applied_by = Vec::new();
    for t in tasks {
        applied_by.push(t.await.unwrap());
    }
    let appliers: Vec<_> = applied_by.iter().filter(|a| !a.is_empty()).collect();
    assert_eq!(
        appliers.len(),
        1,
        "exactly one runner applies: {applied_by:?}"
    );
    assert_eq!(appliers[0], &vec![1, 2]);
    let rows: Vec<i32> = db
        .client()
        .await
        .query("SELECT n FROM applied ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![1, 2]);
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    let db = TestDb::new();
    let mut client = db.client().await;
    migrate::apply(&mut client, COUNTING).await.unwrap();
    let tampered = [
        COUNTING[0],
        Migration {
            version: 2,
            name: "0002_b.sql",
            sql: "INSERT INTO applied VALUES (3);",
        },
    ];
    let err = migrate::apply(&mut client, &tampered).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::Tampered { version: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("changed after it was applied"),
        "{err}"
    );
    // A database newer than the build is refused too.
    let err = migrate::apply(&mut client, &COUNTING[..1])
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Unknown(2)), "{err}");
}

/// A directory the `postgres` user can traverse when the tests run as root.
fn cluster_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

async fn ensure(dir: &std::path::Path, opts: ClusterOptions) -> Cluster {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || Cluster::ensure_running(&dir, opts))
        .await
        .unwrap()
        .unwrap()
}

async fn query_one_int(url: &str, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn embedded_cluster_starts_keeps_its_data_and_survives_a_stale_pid_file() {
    let home = cluster_home();
    let dir = home.path().join("pg");
    let opts = ClusterOptions { durable: false };
    let cluster = ensure(&dir, opts).await;
    assert!(cluster.is_owner());
    assert!(cluster.is_running());
    mailtally::store::create_database_if_missing(&cluster.admin_url(), "mailtally")
        .await
        .unwrap();
    let url = cluster.database_url();
    {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42);")
            .await
            .unwrap();
    }
    // Only a unix socket inside the cluster's own directory: no TCP listener.
    let conf = std::fs::read_to_string(dir.join("data/postgresql.conf")).unwrap();
    assert!(conf.contains("listen_addresses = ''"));

    // A second start while it runs reuses it and does not claim it.
    let again = ensure(&dir, opts).await;
    assert!(!again.is_owner());
    again.stop_if_owner().unwrap();
    assert!(
        cluster.is_running(),
        "a guest does not stop the owner's cluster"
    );
    drop(again);

    // Graceful stop, start again: the data is there.
    cluster.stop().unwrap();
    assert!(!cluster.is_running());
    drop(cluster);
    let restarted = ensure(&dir, opts).await;
    assert!(restarted.is_owner());
    assert_eq!(query_one_int(&url, "SELECT n::bigint FROM kept").await, 42);

    drop(restarted);
    // A crash: the postmaster is killed, its pid file stays behind.
    let pid_file = dir.join("data/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..100 {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(pid_file.exists(), "a killed postmaster leaves its pid file");
    let after_crash = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            // Orphaned backends may hold the shared memory for a moment after the kill.
            let mut last = None;
            for _ in 0..50 {
                match Cluster::ensure_running(&dir, opts) {
                    Ok(c) => return c,
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            panic!("cluster did not restart after a crash: {last:?}");
        })
        .await
        .unwrap()
    };
    assert!(after_crash.is_owner());
    assert_eq!(query_one_int(&url, "SELECT n::bigint FROM kept").await, 42);
    after_crash.stop().unwrap();
}

#[tokio::test]
async fn retention_drops_old_event_partitions_and_keeps_recent_events() {
    let db = TestDb::migrated();
    let client = db.client().await;
    client
        .execute("SELECT mailtally_ensure_event_partitions(15, 1)", &[])
        .await
        .unwrap();
    let insert = "INSERT INTO events (id, occurred_at, message_id, copy_id, kind)
                  VALUES (gen_random_uuid(), now() - make_interval(days => $1), gen_random_uuid(), gen_random_uuid(), 'open')";
    for days in [0, 20, 200, 430] {
        client.execute(insert, &[&days]).await.unwrap();
    }
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let partitions_before =
        count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass").await;

    // Off by default.
    assert!(mailtally::store::retention::drop_expired(&client, 0)
        .await
        .unwrap()
        .is_empty());
    let dropped = mailtally::store::retention::drop_expired(&client, 365)
        .await
        .unwrap();
    assert!(!dropped.is_empty());
    assert!(
        dropped.len() <= 4,
        "only partitions wholly before the horizon: {dropped:?}"
    );
    assert_eq!(
        count("SELECT count(*) FROM events").await,
        3,
        "the 430-day-old event is gone"
    );
    assert_eq!(
        count("SELECT count(*) FROM events WHERE occurred_at > now() - interval '201 days'").await,
        3
    );
    let partitions_after =
        count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass").await;
    assert_eq!(partitions_after, partitions_before - dropped.len() as i64);
}
