//! The aggregation job killed anywhere (between batches, inside one) and run again ends with the
//! same rollups as one clean run.

use crate::common;
use crate::insights_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestDb;
use insights_support::*;

/// Every row of every insights table, in a stable order, as text.
async fn snapshot(client: &tokio_postgres::Client) -> String {
    let mut out = String::new();
    for table in [
        "insights_daily",
        "insights_links",
        "insights_clients",
        "insights_crm_totals",
        "insights_copy_state",
        "insights_copy_links",
        "insights_copy_clients",
    ] {
        let rows = client
            .query(
                &format!("SELECT t::text FROM {table} t ORDER BY t::text"),
                &[],
            )
            .await
            .unwrap();
        out.push_str(&format!("-- {table}: {} rows\n", rows.len()));
        for r in rows {
            out.push_str(&r.get::<_, String>(0));
            out.push('\n');
        }
    }
    out
}

async fn setup(msgs: &[Msg]) -> TestDb {
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let client = db.client().await;
    insert(&client, &users, msgs, &|_| true, true).await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_rerun_gives_the_rollups_of_a_clean_run() {
    let msgs = generate(11, &[0, 1, 2, 3, 4], 120);
    let clean = setup(&msgs).await;
    let killed = setup(&msgs).await;

    aggregate(&clean.url, 1_000_000).await;
    let want = snapshot(&clean.client().await).await;
    assert!(want.contains("insights_daily"), "{want}");

    let client = killed.client().await;
    let mut kills = 0;
    let mut progress = Vec::new();
    let mut delay = 60u64;
    // Runs in a row that folded nothing: on a loaded machine a run may need longer than the
    // longest delay just to start, so each stalled run lets the next one live 100 ms longer.
    let mut stalled = 0u64;
    // Small batches: kills land inside batches as well as between them.
    loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailtally"))
            .args(["aggregate", "--batch-size", "9"])
            .env("DATABASE_URL", &killed.url)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Each kill also lets the next run live 10 ms longer, so that a slow machine, where a
        // run folds only a batch or two before its kill, still gets through.
        tokio::time::sleep(Duration::from_millis(delay + stalled * 100 + kills * 10)).await;
        delay = (delay * 13 / 10) % 400 + 40;
        let running = matches!(child.try_wait(), Ok(None));
        if running {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            kills += 1;
        }
        let status = child.wait().unwrap();
        progress.push(
            client
                .query_one(
                    "SELECT sum(folded_events)::bigint FROM insights_watermark",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0),
        );
        if !running {
            assert!(status.success(), "aggregate failed: {status}");
            break;
        }
        let n = progress.len();
        stalled = if n >= 2 && progress[n - 1] == progress[n - 2] {
            stalled + 1
        } else {
            0
        };
        assert!(kills < 200, "never finished: {progress:?}");
    }
    eprintln!("killed {kills} times; folded events after each run: {progress:?}");
    assert!(kills >= 3, "too few kills to mean anything: {progress:?}");
    assert!(
        progress
            .iter()
            .any(|&p| p > 0 && p < *progress.last().unwrap()),
        "no kill landed after partial progress: {progress:?}"
    );
    // A final run in-process with a different batch size changes nothing.
    assert_eq!(aggregate(&killed.url, 4).await, 0);
    let got = snapshot(&client).await;
    assert!(
        got == want,
        "rollups differ after kills:\n--- clean\n{want}\n--- killed\n{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_at_once_never_fold_an_event_twice() {
    let msgs = generate(5, &[0, 2], 60);
    let clean = setup(&msgs).await;
    let racing = setup(&msgs).await;
    aggregate(&clean.url, 1_000_000).await;
    let want = snapshot(&clean.client().await).await;

    let runs: Vec<_> = (0..3)
        .map(|_| {
            let url = racing.url.clone();
            tokio::spawn(async move { aggregate(&url, 25).await })
        })
        .collect();
    let mut total = 0;
    for r in runs {
        total += r.await.unwrap();
    }
    assert_eq!(aggregate(&racing.url, 5).await, 0);
    let events: i64 = racing
        .client()
        .await
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total as i64, events);
    assert!(snapshot(&racing.client().await).await == want);
}
