//! The store: migrations (idempotent, concurrent-safe, tamper-evident) and the embedded cluster.

use crate::common;

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

/// A fresh database with every migration before `name` applied.
async fn migrated_before(name: &str) -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::new();
    let mut client = db.client().await;
    let at = MIGRATIONS.iter().position(|m| m.name == name).unwrap();
    migrate::apply(&mut client, &MIGRATIONS[..at])
        .await
        .unwrap();
    (db, client)
}

/// Template keys become per team (or per sender without one) and unsubscribes per user: the
/// migration keeps every message, names a template only in the scope that named it, leaves the
/// rollups as they were, and so the report figures of each team's template stay identical.
#[tokio::test]
async fn the_tenant_scope_migration_keeps_data_and_report_figures() {
    use mailtally::accounts::visibility::Viewer;
    use mailtally::insights::report::{self, ReportFilter, TemplateScope};

    let (_db, mut client) = migrated_before("0014_tenant_scopes.sql").await;
    // `offer` was first sent by alpha, then claimed through the API by beta (owner, name,
    // content); `solo` is known from nina's mail only; `mine` is nina's, with content.
    client
        .batch_execute(
            "INSERT INTO teams (id, name) VALUES (1, 'alpha'), (2, 'beta');
             INSERT INTO users (id, email, team_id, password_hash) VALUES
                 (1, 'ann@a.test', 1, 'x'), (2, 'bob@b.test', 2, 'x'), (3, 'nina@n.test', NULL, 'x');
             INSERT INTO templates (key, first_subject, name, subject, html, owner_id, team_id)
             VALUES ('offer', 'Alpha subject', 'Beta name', 'S', '<p>b</p>', 2, 2),
                    ('solo', 'Solo', '', NULL, NULL, NULL, NULL),
                    ('mine', 'Mine', 'Nina name', 'Nina subject', '<p>n</p>', 3, NULL);
             INSERT INTO messages (id, sender_id, team_id, visibility, template_key, subject,
                                   envelope_from, size_bytes, created_at) VALUES
                 ('00000000-0000-7000-8000-000000000001', 1, 1, 'shared', 'offer',
                  'Alpha subject', 'ann@a.test', 10, now() - interval '2 days'),
                 ('00000000-0000-7000-8000-000000000002', 2, 2, 'shared', 'offer',
                  'Beta subject', 'bob@b.test', 10, now() - interval '1 day'),
                 ('00000000-0000-7000-8000-000000000003', 3, NULL, 'shared', 'solo',
                  'Solo', 'nina@n.test', 10, now());
             INSERT INTO automations (owner_id, trigger_template, condition, window_seconds,
                                      followup_template)
             VALUES (3, 'solo', 'no_open', 60, 'mine');
             INSERT INTO insights_daily (template_key, day, sender_id, team_id, visibility, sent,
                 bounced, opens, human_opens, unique_opens, human_unique_opens, clicks,
                 human_clicks, unique_clicks, human_unique_clicks) VALUES
                 ('offer', current_date, 1, 1, 'shared', 5, 1, 4, 3, 3, 2, 2, 1, 1, 1),
                 ('offer', current_date, 2, 2, 'shared', 7, 0, 6, 6, 5, 5, 3, 3, 2, 2),
                 ('solo', current_date, 3, 0, 'shared', 2, 0, 1, 1, 1, 1, 0, 0, 0, 0);
             INSERT INTO unsubscribes (recipient) VALUES ('gone@customer.test');",
        )
        .await
        .unwrap();
    // The columns of the rollup as it was before this migration; later migrations add columns
    // (at zero for the mail of before), which are not figures this one could change.
    let rollups = "SELECT string_agg(x::text, ';' ORDER BY x::text) FROM (
                       SELECT template_key, day, sender_id, team_id, visibility, sent, bounced,
                              opens, human_opens, unique_opens, human_unique_opens, clicks,
                              human_clicks, unique_clicks, human_unique_clicks, replies,
                              unique_replies
                       FROM insights_daily) x";
    let before: String = client.query_one(rollups, &[]).await.unwrap().get(0);

    migrate::apply(&mut client, MIGRATIONS).await.unwrap();

    let after: String = client.query_one(rollups, &[]).await.unwrap().get(0);
    assert_eq!(after, before);
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM messages").await, 3);
    assert_eq!(count("SELECT count(*) FROM automations").await, 1);
    let templates: Vec<(String, i64, i64, String, Option<String>, bool)> = client
        .query(
            "SELECT key, coalesce(team_id, 0), coalesce(owner_id, 0), name, first_subject,
                    html IS NOT NULL
             FROM templates ORDER BY key, team_id, owner_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let row = |k: &str, team: i64, owner: i64, name: &str, first: &str, content: bool| {
        (
            k.to_string(),
            team,
            owner,
            name.to_string(),
            Some(first.to_string()),
            content,
        )
    };
    assert_eq!(
        templates,
        vec![
            row("mine", 0, 3, "Nina name", "Nina subject", true),
            row("offer", 1, 0, "", "Alpha subject", false),
            row("offer", 2, 2, "Beta name", "Beta subject", true),
            row("solo", 0, 3, "", "Solo", false),
        ]
    );
    // The unsubscribe recorded before stays, for everyone, as it was recorded.
    assert_eq!(
        count("SELECT count(*) FROM unsubscribes WHERE user_id IS NULL").await,
        1
    );

    // Each team's template keeps its figures and only its own name.
    let viewer = Viewer {
        user_id: 3,
        team_id: None,
    };
    let rows = report::templates(&client, viewer, &ReportFilter::default())
        .await
        .unwrap();
    let got: Vec<(String, TemplateScope, String, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.template.clone(),
                r.scope,
                r.name.clone(),
                r.figures.sent,
                r.figures.bounced,
                r.figures.human_unique_opens,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "offer".into(),
                TemplateScope::Team(2),
                "Beta name".into(),
                7,
                0,
                5
            ),
            (
                "offer".into(),
                TemplateScope::Team(1),
                String::new(),
                5,
                1,
                2
            ),
            (
                "solo".into(),
                TemplateScope::Sender(3),
                String::new(),
                2,
                0,
                1
            ),
        ]
    );
}

/// Links become one row per distinct list: the migration stores a list shared by several
/// messages once, `links` reads as before for every message, and folding the same events
/// again after it gives the same per-link report figures as before it.
#[tokio::test]
async fn the_link_list_migration_keeps_every_link_and_report_figure() {
    let (db, mut client) = migrated_before("0022_link_lists.sql").await;
    // The job of this build folds into tables of later migrations, which do not depend on
    // this one: every migration but this one is there when it folds before it.
    let all_but_links: Vec<_> = MIGRATIONS
        .iter()
        // 0024 and 0028 redefine a function of 0022: they come after it.
        .filter(|m| {
            !matches!(
                m.name,
                "0022_link_lists.sql"
                    | "0024_link_list_digest_inline.sql"
                    | "0028_link_list_digest_stable.sql"
            )
        })
        .copied()
        .collect();
    migrate::apply(&mut client, &all_but_links).await.unwrap();
    // m1 and m2: one template, the same two links; m3 another list (with a gap in its
    // indexes, as a text link not tracked leaves); m4 none.
    client
        .batch_execute(
            "INSERT INTO users (id, email, password_hash) VALUES (1, 'ann@a.test', 'x');
             INSERT INTO messages (id, sender_id, visibility, template_key, envelope_from,
                                   size_bytes)
             SELECT ('00000000-0000-7000-8000-00000000000' || m)::uuid, 1, 'team',
                    CASE WHEN m < 3 THEN 'offer' ELSE 'other' END, 'ann@a.test', 10
             FROM generate_series(1, 4) m;
             INSERT INTO links (message_id, idx, url) VALUES
                 ('00000000-0000-7000-8000-000000000001', 0, 'https://a.test/pricing?x=1&y=2'),
                 ('00000000-0000-7000-8000-000000000001', 1, 'https://a.test/ünï'),
                 ('00000000-0000-7000-8000-000000000002', 0, 'https://a.test/pricing?x=1&y=2'),
                 ('00000000-0000-7000-8000-000000000002', 1, 'https://a.test/ünï'),
                 ('00000000-0000-7000-8000-000000000003', 0, 'https://b.test/'),
                 ('00000000-0000-7000-8000-000000000003', 2, 'https://b.test/two');
             INSERT INTO copies (id, message_id, recipient, status, delivered_at)
             SELECT ('00000000-0000-7000-9000-0000000000' || m || c)::uuid,
                    ('00000000-0000-7000-8000-00000000000' || m)::uuid,
                    'r' || c || '@x.test', 'delivered', now() - interval '1 hour'
             FROM generate_series(1, 4) m, generate_series(1, 3) c;
             INSERT INTO events (id, occurred_at, message_id, copy_id, kind, link_idx, class,
                                 user_agent)
             SELECT gen_random_uuid(), now() - interval '30 minutes' + k * interval '1 minute',
                    c.message_id, c.id, 'click', k % 3, 'human', 'Mozilla/5.0'
             FROM copies c, generate_series(0, 4) k
             WHERE c.message_id <> '00000000-0000-7000-8000-000000000004';",
        )
        .await
        .unwrap();
    let links = "SELECT string_agg(x::text, ';' ORDER BY x::text) FROM (
                     SELECT message_id, idx, url FROM links) x";
    let rollup = "SELECT string_agg(x::text, ';' ORDER BY x::text) FROM (
                      SELECT template_key, day, sender_id, team_id, visibility, url, clicks,
                             human_clicks, unique_clicks, human_unique_clicks
                      FROM insights_links) x";
    crate::insights_support::aggregate(&db.url, 1000).await;
    let links_before: String = client.query_one(links, &[]).await.unwrap().get(0);
    let rollup_before: String = client.query_one(rollup, &[]).await.unwrap().get(0);
    assert!(rollup_before.contains("pricing"), "{rollup_before}");

    migrate::apply(&mut client, MIGRATIONS).await.unwrap();

    let links_after: String = client.query_one(links, &[]).await.unwrap().get(0);
    assert_eq!(links_after, links_before);
    let lists: i64 = client
        .query_one("SELECT count(*) FROM link_lists", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lists, 2, "m1 and m2 share one list; m4 has none");
    // The rollups as they were, and as a fold of the same events computes them now.
    let rollup_after: String = client.query_one(rollup, &[]).await.unwrap().get(0);
    assert_eq!(rollup_after, rollup_before);
    client
        .batch_execute(
            "TRUNCATE insights_copy_state, insights_copy_links, insights_copy_clients,
                      insights_daily, insights_links, insights_clients;
             UPDATE insights_watermark SET txid = 0, seq = 0, folded_events = 0;",
        )
        .await
        .unwrap();
    crate::insights_support::aggregate(&db.url, 1000).await;
    let refolded: String = client.query_one(rollup, &[]).await.unwrap().get(0);
    assert_eq!(refolded, rollup_before);
}

/// The fold's parts start where the single watermark was, and a node of an older version, which
/// folds the row with id 1, finds none (it would fold every copy again, past both parts).
#[tokio::test]
async fn the_fold_parts_migration_keeps_the_watermark_and_retires_the_old_row() {
    let (_db, mut client) = migrated_before("0025_insights_fold_parts.sql").await;
    client
        .batch_execute(
            "UPDATE insights_watermark SET txid = 123, seq = 456, folded_events = 789
             WHERE id = 1",
        )
        .await
        .unwrap();
    migrate::apply(&mut client, MIGRATIONS).await.unwrap();
    let rows: Vec<(i16, i64, i64, i64)> = client
        .query(
            "SELECT id, txid, seq, folded_events FROM insights_watermark ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let first = mailtally::insights::aggregate::FIRST_PART;
    assert_eq!(rows, vec![(first, 123, 456, 789), (first + 1, 123, 456, 0)]);
    let old = client
        .query_opt(
            "SELECT txid, seq FROM insights_watermark WHERE id = 1 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .unwrap();
    assert!(
        old.is_none(),
        "an older node must find no watermark to fold"
    );
}

/// The CRM rollup migration: copy states get their message's deal, lead and project, the rollup
/// starts from what the states hold (a refold of the same events gives the same rows), and the
/// part rows move, so that a node of the version before, which folds rows 2 and 3, folds nothing.
#[tokio::test]
async fn the_crm_rollup_migration_fills_the_rollup_and_retires_the_part_rows() {
    let (db, mut client) = migrated_before("0026_insights_crm_totals.sql").await;
    // m1: deal d1, lead l1, project p1; m2: deal d1, project p2; m3: none. Two copies each, one
    // open each, with the states the fold of the version before wrote for them.
    client
        .batch_execute(
            "INSERT INTO users (id, email, password_hash) VALUES (1, 'ann@a.test', 'x');
             INSERT INTO messages (id, sender_id, visibility, template_key, envelope_from,
                                   size_bytes, deal, lead, project)
             VALUES ('00000000-0000-7000-8000-000000000001', 1, 'team', 'offer', 'a@a.test', 10,
                     'd1', 'l1', 'p1'),
                    ('00000000-0000-7000-8000-000000000002', 1, 'team', 'offer', 'a@a.test', 10,
                     'd1', NULL, 'p2'),
                    ('00000000-0000-7000-8000-000000000003', 1, 'team', 'offer', 'a@a.test', 10,
                     NULL, NULL, NULL);
             INSERT INTO copies (id, message_id, recipient, status)
             SELECT ('00000000-0000-7000-9000-0000000000' || m || c)::uuid,
                    ('00000000-0000-7000-8000-00000000000' || m)::uuid, 'r' || c || '@x.test',
                    'delivered'
             FROM generate_series(1, 3) m, generate_series(1, 2) c;
             INSERT INTO events (id, occurred_at, message_id, copy_id, kind, class)
             SELECT gen_random_uuid(), '2026-11-30 10:00Z', message_id, id, 'open', 'human'
             FROM copies;
             INSERT INTO insights_copy_state
             SELECT c.id, c.message_id, 'offer', 1, 0, 'team',
                    (m.created_at AT TIME ZONE 'UTC')::date, false, NULL, 1, 1, 0, 0,
                    '2026-11-30 10:00Z', '2026-11-30 10:00Z', NULL, NULL, '2026-11-30 10:00Z',
                    0, false, false, false
             FROM copies c JOIN messages m ON m.id = c.message_id;
             INSERT INTO insights_copy_fold SELECT id, '[]' FROM copies;
             UPDATE insights_watermark
             SET txid = (SELECT max(txid) FROM events), seq = (SELECT max(seq) FROM events);",
        )
        .await
        .unwrap();
    let mark: (i64, i64) = {
        let r = client
            .query_one("SELECT txid, seq FROM insights_watermark WHERE id = 2", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    migrate::apply(&mut client, MIGRATIONS).await.unwrap();

    let parts: Vec<(i16, i64, i64)> = client
        .query(
            "SELECT id, txid, seq FROM insights_watermark ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let first = mailtally::insights::aggregate::FIRST_PART;
    assert_eq!(
        parts,
        vec![(first, mark.0, mark.1), (first + 1, mark.0, mark.1)]
    );
    assert!(first > 3, "the rows of the version before must be gone");
    let deals: i64 = client
        .query_one(
            "SELECT count(*) FROM insights_copy_state WHERE deal = 'd1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deals, 4);
    let totals = "SELECT string_agg(x::text, ';' ORDER BY x::text) FROM (
                      SELECT * FROM insights_crm_totals) x";
    let migrated: String = client.query_one(totals, &[]).await.unwrap().get(0);
    let counts: Vec<(String, String, i64, i64)> = client
        .query(
            "SELECT facet, value, sent, human_unique_opens FROM insights_crm_totals
             ORDER BY facet, value",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let row = |f: &str, v: &str, n| (f.to_string(), v.to_string(), n, n);
    assert_eq!(
        counts,
        vec![
            row("deal", "d1", 4),
            row("lead", "l1", 2),
            row("project", "p1", 2),
            row("project", "p2", 2)
        ]
    );

    // This build's fold of the same events gives the same rollup.
    client
        .batch_execute(
            "TRUNCATE insights_copy_state, insights_copy_links, insights_copy_clients,
                      insights_copy_fold, insights_daily, insights_totals, insights_links,
                      insights_links_totals, insights_clients, insights_clients_totals,
                      insights_crm_totals;
             UPDATE insights_watermark SET txid = 0, seq = 0, folded_events = 0;",
        )
        .await
        .unwrap();
    crate::insights_support::aggregate(&db.url, 1000).await;
    let refolded: String = client.query_one(totals, &[]).await.unwrap().get(0);
    assert_eq!(refolded, migrated);
}

/// A batch of the version before locks its watermark row and then reads the copy states; the
/// migration must wait for it instead of closing a deadlock with it (taking the copy states
/// first and the watermark table after).
#[tokio::test]
async fn the_crm_rollup_migration_waits_for_a_batch_of_the_version_before() {
    let (db, mut client) = migrated_before("0026_insights_crm_totals.sql").await;
    let mut old = db.client().await;
    let batch = old.transaction().await.unwrap();
    batch
        .query_one(
            "SELECT txid FROM insights_watermark WHERE id = 2 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .unwrap();
    let migration =
        tokio::spawn(async move { migrate::apply(&mut client, MIGRATIONS).await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The old batch goes on to the copy states, and commits.
    batch
        .query_one("SELECT count(*) FROM insights_copy_state", &[])
        .await
        .expect("the old batch reads the copy states");
    batch.commit().await.unwrap();
    migration
        .await
        .unwrap()
        .expect("the migration completes after the old batch");
}

/// The fold moves nearly every rollup row in every batch. Each batch's update of a row must stay
/// on the row's page (a HOT update, whose version before is pruned in place on a later visit),
/// or every batch appends a new copy of the table for the reports to scan until a vacuum comes.
#[tokio::test]
async fn a_batch_that_moves_every_rollup_row_updates_each_on_its_page() {
    let db = TestDb::migrated();
    let mut client = db.client().await;
    let keys = "template_key, day, sender_id, team_id, visibility";
    let counts = "sent, bounced, opens, human_opens, unique_opens, human_unique_opens, clicks, \
                  human_clicks, unique_clicks, human_unique_clicks";
    client
        .batch_execute(&format!(
            "INSERT INTO insights_daily ({keys}, {counts})
             SELECT 'template-' || (i % 40), DATE '2026-01-01' + i / 40, 1, 0, 'private',
                    1, 0, 0, 0, 0, 0, 0, 0, 0, 0
             FROM generate_series(0, 3999) i"
        ))
        .await
        .unwrap();
    // The fold's form of a rollup update (`add_to_rollup`), in one transaction as a batch is;
    // the transaction's own statistics say how many updates stayed on their page.
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "INSERT INTO insights_daily AS r ({keys}, {counts})
         SELECT {keys}, {counts} FROM insights_daily ORDER BY {keys}
         ON CONFLICT ({keys}) DO UPDATE SET sent = r.sent + EXCLUDED.sent"
    ))
    .await
    .unwrap();
    let row = tx
        .query_one(
            "SELECT pg_stat_get_xact_tuples_updated('insights_daily'::regclass),
                    pg_stat_get_xact_tuples_hot_updated('insights_daily'::regclass),
                    (SELECT sum(sent)::bigint FROM insights_daily)",
            &[],
        )
        .await
        .unwrap();
    let (updated, on_page, sent): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    tx.commit().await.unwrap();
    assert_eq!((updated, sent), (4000, 8000));
    assert!(
        on_page * 10 >= updated * 9,
        "{on_page} of {updated} updates stayed on their page"
    );
}

/// Every enqueue with links computes its list's digest: as an expression of the statement, not
/// as a call that parses and plans the function's body again each time.
#[tokio::test]
async fn the_link_list_digest_is_inlined_into_the_statements_that_use_it() {
    let db = TestDb::migrated();
    let client = db.client().await;
    // A generic plan keeps what is not inlined as a call (a custom plan would fold it into a
    // constant, computing it through the function executor while planning).
    client
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE digest (integer[], text[]) AS SELECT mailtally_link_list_digest($1, $2)",
        )
        .await
        .unwrap();
    let plan: String = client
        .query(
            "EXPLAIN (VERBOSE, COSTS OFF) EXECUTE digest ('{0,1}', '{https://a.test/,https://b.test/}')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !plan.contains("mailtally_link_list_digest") && plan.contains("json_build_array"),
        "the digest is called, not inlined:\n{plan}"
    );
    // Still the one definition of a list's address (0022's form).
    let same: bool = client
        .query_one(
            "SELECT mailtally_link_list_digest('{0,1}', '{https://a.test/,https://b.test/}')
                  = sha256(convert_to('[[0,1], [\"https://a.test/\",\"https://b.test/\"]]', 'UTF8'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same);
}
