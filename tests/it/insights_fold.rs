//! The incremental fold equals a recompute from scratch: for random event streams folded in
//! random batches, with events arriving out of order and erasures in between; for two `serve`
//! nodes folding at once; for a `serve` killed while it folds and started again.

use crate::common;
use crate::insights_support;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Server, TestDb};
use insights_support::*;
use uuid::Uuid;

/// Tables of the fold with the columns of which one non-zero makes a row count (rollup rows
/// whose counts all went back to zero are the same as no row); `None`: every row counts.
const TABLES: &[(&str, Option<&str>)] = &[
    ("insights_daily", Some("sent, bounced, opens, human_opens, unique_opens, human_unique_opens, clicks, human_clicks, unique_clicks, human_unique_clicks, replies, unique_replies, soft_bounced, complaints, unsubscribes")),
    ("insights_totals", Some("sent, bounced, opens, human_opens, unique_opens, human_unique_opens, clicks, human_clicks, unique_clicks, human_unique_clicks, replies, unique_replies, soft_bounced, complaints, unsubscribes")),
    ("insights_links", Some("clicks, human_clicks, unique_clicks, human_unique_clicks")),
    ("insights_links_totals", Some("clicks, human_clicks, unique_clicks, human_unique_clicks")),
    ("insights_clients", Some("opens, human_opens, unique_opens, human_unique_opens")),
    ("insights_clients_totals", Some("opens, human_opens, unique_opens, human_unique_opens")),
    ("insights_crm_totals", Some("sent, bounced, opens, human_opens, unique_opens, human_unique_opens, clicks, human_clicks, unique_clicks, human_unique_clicks, replies, unique_replies, soft_bounced, complaints, unsubscribes")),
    ("insights_copy_state", None),
    ("insights_copy_links", None),
    ("insights_copy_clients", None),
    ("insights_copy_fold", None),
];

/// Every row of every table of the fold that counts, in a stable order, as text.
async fn snapshot(client: &impl tokio_postgres::GenericClient) -> String {
    let mut out = String::new();
    for (table, counts) in TABLES {
        let filter = match counts {
            Some(cols) => format!(
                "WHERE {}",
                cols.split(',')
                    .map(|c| format!("{} <> 0", c.trim()))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            ),
            None => String::new(),
        };
        let rows = client
            .query(
                &format!("SELECT t::text FROM {table} t {filter} ORDER BY t::text"),
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

/// What a recompute from scratch gives: in one transaction that is rolled back, forgets every
/// state and rollup and recomputes every copy from all its events with the SQL rules (the path an
/// erasure takes), not with the incremental fold under test.
async fn recompute_from_scratch(url: &str) -> String {
    let mut client = connect(url).await;
    let tx = client.transaction().await.unwrap();
    let copies: Vec<Uuid> = tx
        .query("SELECT DISTINCT copy_id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Waits for a running batch (every watermark row), then marks the copies.
    mailtally::insights::aggregate::mark_for_forgetting(&tx, &copies, None)
        .await
        .unwrap();
    tx.batch_execute(
        "TRUNCATE insights_daily, insights_totals, insights_links, insights_links_totals,
             insights_clients, insights_clients_totals, insights_crm_totals, insights_copy_state,
             insights_copy_links, insights_copy_clients, insights_copy_fold;",
    )
    .await
    .unwrap();
    mailtally::insights::aggregate::forget_marked(&tx)
        .await
        .unwrap();
    let out = snapshot(&tx).await;
    tx.rollback().await.unwrap();
    out
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// One event to write, with its message and copy.
#[derive(Debug, Clone)]
struct Pending {
    message: Uuid,
    copy: Uuid,
    recipient: String,
    ev: Ev,
}

fn seed() -> u64 {
    let seed = std::env::var("FOLD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
    eprintln!("seed {seed} (FOLD_SEED={seed} repeats this run)");
    seed
}

fn event(kind: &'static str, at: DateTime<Utc>) -> Ev {
    Ev {
        id: Uuid::now_v7(),
        kind,
        at,
        class: None,
        reason: None,
        link_idx: None,
        client: None,
        device: None,
    }
}

/// The generated dataset with more of what hindsight and the fold must get right: click runs
/// with random gaps around the sweep window (some at the same instant), clicks and opens near
/// delivery whose delivery time was unknown, replies, complaints, unsubscribes, soft and hard
/// bounces.
fn dataset(r: &mut Rng, messages: usize) -> Vec<Msg> {
    let mut msgs = generate(r.next(1 << 40), &[0, 1, 2, 4], messages);
    for m in &mut msgs {
        let links = m.links.len() as u64;
        for c in &mut m.copies {
            let delivered = c
                .events
                .iter()
                .find(|e| e.kind == "delivered")
                .map(|e| e.at)
                .unwrap_or(m.created_at);
            let mut t = delivered + chrono::Duration::seconds(r.next(600) as i64 - 20);
            for _ in 0..r.next(7) {
                t += chrono::Duration::milliseconds(
                    [0, 300, 1500, 2500, 4999, 5000, 5001, 7000][r.next(8) as usize],
                );
                let mut e = event("click", t);
                e.class = Some(["human", "human", "proxy", "scanner"][r.next(4) as usize]);
                e.link_idx = Some(r.next(links + 1) as i32 - (r.next(5) == 0) as i32);
                if e.link_idx == Some(-1) {
                    e.link_idx = None;
                }
                if r.next(4) == 0 {
                    e.reason = Some("delivery_time_unknown".into());
                }
                c.events.push(e);
            }
            for _ in 0..r.next(3) {
                let mut e = event(
                    "open",
                    delivered + chrono::Duration::seconds(r.next(30) as i64 - 12),
                );
                e.class = Some(["human", "apple_mpp", "proxy"][r.next(3) as usize]);
                e.reason = Some("delivery_time_unknown: cache".into());
                e.client = Some("Apple Mail");
                c.events.push(e);
            }
            let later = delivered + chrono::Duration::seconds(3600 + r.next(3600) as i64);
            match r.next(8) {
                0 | 1 => c.events.push(event("reply", later)),
                2 => c.events.push(event("complaint", later)),
                3 => c.events.push(event("unsubscribe", later)),
                4 => {
                    let mut e = event("bounced", later);
                    e.reason = Some(["soft", "hard"][r.next(2) as usize].into());
                    c.events.push(e);
                }
                _ => {}
            }
        }
    }
    msgs
}

/// The events of `msgs` in the order they are written: by time, with some of them held back
/// and written later (out of order), a few of them much later.
fn arrival_order(r: &mut Rng, msgs: &[Msg]) -> Vec<Pending> {
    let mut all: Vec<Pending> = msgs
        .iter()
        .flat_map(|m| {
            m.copies.iter().flat_map(move |c| {
                c.events.iter().map(move |e| Pending {
                    message: m.id,
                    copy: c.id,
                    recipient: c.recipient.clone(),
                    ev: e.clone(),
                })
            })
        })
        .collect();
    all.sort_by_key(|p| p.ev.at);
    let n = all.len();
    for i in 0..n {
        match r.next(10) {
            0 => {
                let j = (i + 1 + r.next(12) as usize).min(n - 1);
                all.swap(i, j);
            }
            1 if r.next(4) == 0 => {
                let j = (i + r.next(n as u64) as usize).min(n - 1);
                all.swap(i, j);
            }
            _ => {}
        }
    }
    all
}

/// Writes `events` in one transaction, one multi-row insert.
async fn write_events(client: &mut tokio_postgres::Client, events: &[Pending]) {
    let col = |f: &dyn Fn(&Pending) -> Option<String>| -> Vec<Option<String>> {
        events.iter().map(f).collect()
    };
    let ids: Vec<Uuid> = events.iter().map(|p| p.ev.id).collect();
    let ats: Vec<DateTime<Utc>> = events.iter().map(|p| p.ev.at).collect();
    let messages: Vec<Uuid> = events.iter().map(|p| p.message).collect();
    let copies: Vec<Uuid> = events.iter().map(|p| p.copy).collect();
    let kinds = col(&|p| Some(p.ev.kind.to_string()));
    let links: Vec<Option<i32>> = events.iter().map(|p| p.ev.link_idx).collect();
    let classes = col(&|p| p.ev.class.map(str::to_string));
    let reasons = col(&|p| p.ev.reason.clone());
    let clients = col(&|p| p.ev.client.map(str::to_string));
    let devices = col(&|p| p.ev.device.map(str::to_string));
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, link_idx,
         class, reason, client, device)
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[],
                              $6::int[], $7::text[], $8::text[], $9::text[], $10::text[])",
        &[
            &ids, &ats, &messages, &copies, &kinds, &links, &classes, &reasons, &clients, &devices,
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_fold_equals_a_recompute_from_scratch() {
    let seed = seed();
    let mut r = Rng::new(seed);
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let mut client = db.client().await;
    let msgs = dataset(&mut r, 50);
    insert(&client, &users, &msgs, &|_| false, true).await;
    let mut pending = arrival_order(&mut r, &msgs);
    let total = pending.len();
    let mut erased = 0;
    while !pending.is_empty() {
        let n = (1 + r.next(40) as usize).min(pending.len());
        let chunk: Vec<Pending> = pending.drain(..n).collect();
        write_events(&mut client, &chunk).await;
        match r.next(3) {
            0 => {}
            1 => {
                aggregate(&db.url, 1 + r.next(60) as i64).await;
            }
            _ => {
                // Both parts at once, as in `serve`.
                aggregate_parallel(&db.url, 1 + r.next(60) as i64).await;
            }
        }
        if r.next(25) == 0 {
            // An erasure between folds: a recipient or a message, with every event of theirs
            // still to come.
            let tx = client.transaction().await.unwrap();
            let victim = &chunk[r.next(chunk.len() as u64) as usize];
            if r.next(2) == 0 {
                mailtally::erasure::erase_recipient(&tx, &victim.recipient)
                    .await
                    .unwrap();
                let gone = victim.recipient.to_lowercase();
                pending.retain(|p| p.recipient.to_lowercase() != gone);
            } else {
                mailtally::erasure::erase_message(&tx, victim.message)
                    .await
                    .unwrap();
                let gone = victim.message;
                pending.retain(|p| p.message != gone);
            }
            tx.commit().await.unwrap();
            erased += 1;
        }
    }
    aggregate(&db.url, 1 + r.next(60) as i64).await;
    let (copies, kept): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM insights_copy_state),
                        (SELECT count(*) FROM events)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let metrics = &mailtally::insights::metrics::METRICS;
    let (moved, recomputes) = (metrics.folded_copies.get(), metrics.recomputed_copies.get());
    eprintln!(
        "{total} events generated, {kept} kept, {copies} copies, {erased} erasures; \
         copy states moved {moved} times, {recomputes} of them by a recompute"
    );
    assert!(
        recomputes > 0 && moved - recomputes >= copies as u64,
        "both ways of folding must be exercised, the incremental one at least once a copy"
    );
    let parts_used: i64 = client
        .query_one(
            "SELECT count(*) FROM insights_watermark WHERE folded_events > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        parts_used,
        i64::from(mailtally::insights::aggregate::PARTS),
        "every part of the copies is folded"
    );
    // The watermark rows, the parts the SQL gives copies and the Rust constants agree.
    let (rows, ids, copy_parts): (i64, String, String) = {
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM insights_watermark),
                        (SELECT string_agg(id::text, ',' ORDER BY id) FROM insights_watermark),
                        (SELECT string_agg(p::text, ',' ORDER BY p) FROM
                            (SELECT DISTINCT mailtally_fold_part(id) AS p FROM copies) x)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let first = mailtally::insights::aggregate::FIRST_PART;
    let want: Vec<String> = (first..first + mailtally::insights::aggregate::PARTS)
        .map(|p| p.to_string())
        .collect();
    assert_eq!(rows, i64::from(mailtally::insights::aggregate::PARTS));
    assert_eq!(ids, want.join(","));
    assert_eq!(copy_parts, want.join(","));
    let incremental = snapshot(&client).await;
    assert!(copies > 50, "too few copies to mean anything");
    let scratch = recompute_from_scratch(&db.url).await;
    assert!(
        incremental == scratch,
        "seed {seed}: the incremental fold differs from a recompute:\n{}",
        diff(&scratch, &incremental)
    );
}

/// The lines only in `want` (-) and only in `got` (+).
fn diff(want: &str, got: &str) -> String {
    let want_lines: std::collections::BTreeSet<&str> = want.lines().collect();
    let got_lines: std::collections::BTreeSet<&str> = got.lines().collect();
    let mut out = String::new();
    for l in want_lines.difference(&got_lines) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in got_lines.difference(&want_lines) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}

/// Events folded, summed over the parts, and events stored.
async fn folded_and_events(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT sum(folded_events)::bigint FROM insights_watermark),
                    (SELECT count(*) FROM events)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits until the watermark has folded every event written so far.
async fn wait_caught_up(client: &tokio_postgres::Client, servers: &[&Server]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (folded, events) = folded_and_events(client).await;
        if folded >= events {
            assert_eq!(folded, events, "an event was folded twice");
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = servers.iter().map(|s| s.log_text()).collect();
            panic!(
                "not caught up ({folded} of {events}):\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_nodes_folding_at_once_give_the_rollups_of_one() {
    let seed = seed();
    let mut r = Rng::new(seed);
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let mut client = db.client().await;
    let msgs = dataset(&mut r, 600);
    insert(&client, &users, &msgs, &|_| false, true).await;
    let mut pending = arrival_order(&mut r, &msgs);
    // A backlog that both nodes start folding at once, then events while both run.
    let backlog: Vec<Pending> = pending.drain(..pending.len() / 2).collect();
    write_events(&mut client, &backlog).await;
    let url = db.url.clone();
    let starting = std::thread::spawn(move || Server::start(&url, &[]));
    let b = Server::start(&db.url, &[]);
    let a = starting.join().unwrap();
    while !pending.is_empty() {
        let n = (1 + r.next(2000) as usize).min(pending.len());
        let chunk: Vec<Pending> = pending.drain(..n).collect();
        write_events(&mut client, &chunk).await;
        tokio::time::sleep(Duration::from_millis(r.next(300))).await;
    }
    wait_caught_up(&client, &[&a, &b]).await;
    drop((a, b));
    let both = snapshot(&client).await;
    let one = recompute_from_scratch(&db.url).await;
    assert!(
        both == one,
        "seed {seed}: two nodes differ from one fold:\n{}",
        diff(&one, &both)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_killed_while_folding_and_restarted_gives_the_rollups_of_one_run() {
    let seed = seed();
    let mut r = Rng::new(seed);
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let mut client = db.client().await;
    let msgs = dataset(&mut r, 600);
    insert(&client, &users, &msgs, &|_| false, true).await;
    let mut pending = arrival_order(&mut r, &msgs);
    let mut server = Server::start(&db.url, &[]);
    server.kill();
    let mut kills = 0;
    let mut short = 0;
    while !pending.is_empty() {
        // Written while the node is down: a backlog it starts folding as soon as it is up,
        // then killed after a random while, before, inside or after its batches.
        let n = (1 + r.next(4000) as usize).min(pending.len());
        let chunk: Vec<Pending> = pending.drain(..n).collect();
        write_events(&mut client, &chunk).await;
        server.restart();
        tokio::time::sleep(Duration::from_millis(r.next(800))).await;
        server.kill();
        kills += 1;
        let row = client
            .query_one(
                "SELECT (SELECT sum(folded_events) FROM insights_watermark) < (SELECT count(*) FROM events)",
                &[],
            )
            .await
            .unwrap();
        short += row.get::<_, bool>(0) as u32;
    }
    server.restart();
    wait_caught_up(&client, &[&server]).await;
    drop(server);
    eprintln!("killed {kills} times, {short} of them before the job had caught up");
    assert!(short > 0, "no kill landed before the job caught up");
    let killed = snapshot(&client).await;
    let one = recompute_from_scratch(&db.url).await;
    assert!(
        killed == one,
        "seed {seed}: killed and restarted differs from one fold:\n{}",
        diff(&one, &killed)
    );
}

/// A waiting run (`mailtally aggregate`) that finds one part held by another node waits for it,
/// and ends only when every event committed before it started is folded, in every part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_waits_for_a_part_another_node_holds() {
    let mut r = Rng::new(seed());
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let mut client = db.client().await;
    let msgs = dataset(&mut r, 10);
    insert(&client, &users, &msgs, &|_| false, true).await;
    let pending = arrival_order(&mut r, &msgs);
    write_events(&mut client, &pending).await;

    // Another node's batch holds the second part.
    let mut other = connect(&db.url).await;
    let held = other.transaction().await.unwrap();
    let part = mailtally::insights::aggregate::FIRST_PART + 1;
    held.execute(
        "SELECT 1 FROM insights_watermark WHERE id = $1 FOR UPDATE",
        &[&part],
    )
    .await
    .unwrap();
    let url = db.url.clone();
    let run = tokio::spawn(async move { aggregate(&url, 50).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!run.is_finished(), "the run ended with a part not folded");
    held.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends once the part is free")
        .unwrap();
    let (folded, events) = folded_and_events(&client).await;
    assert_eq!(folded, events, "every event is folded when the run ends");
}
