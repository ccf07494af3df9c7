//! `cargo bench --bench events`: the event writer's sustained rate against a plain binary COPY.
//!
//! Starts a durable (fsync on) embedded PostgreSQL in a temporary directory, creates copies,
//! then in the same run:
//! 1. the reference: one binary COPY of the same rows into a table with the same columns and no
//!    index, constraint or default, committed;
//! 2. the writer: events pushed into the writer's channel as fast as it drains (kept below a
//!    quarter of the channel, so that nothing is spooled), until every one is a row of `events`.
//!
//! Prints events/s of each and the ratio. `BENCH_EVENTS` (default 1,000,000) sets the count,
//! `BENCH_COPIES` (default 20,000) the copies they are spread over, `EVENT_BATCH_SIZE` the
//! writer's batch.

use std::time::{Duration, Instant};

use chrono::Utc;
use mailtally::classify::Class;
use mailtally::events::lane;
use mailtally::events::writer::{self, WriterConfig};
use mailtally::events::{Event, Kind, METRICS};
use mailtally::store::embedded::{Cluster, ClusterOptions};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use uuid::Uuid;

const AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                     Gecko) Chrome/120.0.0.0 Safari/537.36";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(copy_id: Uuid, i: usize) -> Event {
    let mut e = Event::new(if i % 3 == 0 { Kind::Click } else { Kind::Open }, copy_id);
    e.link_idx = (i % 3 == 0).then_some((i % 7) as i32);
    e.class = Some(Class::Human);
    e.ip = Some(std::net::IpAddr::from([10, 1, (i >> 8) as u8, i as u8]));
    e.user_agent = Some(AGENT.to_string());
    e.method = Some("GET".to_string());
    e.client = Some("Chrome".to_string());
    e.device = Some("desktop".to_string());
    e.os = Some("Windows".to_string());
    e
}

#[tokio::main]
async fn main() {
    let n = env_number("BENCH_EVENTS", 1_000_000);
    let copies = env_number("BENCH_COPIES", 20_000).max(1);
    let spool = std::path::PathBuf::from("spool");
    let batch = env_number("EVENT_BATCH_SIZE", WriterConfig::new(spool).batch_size);
    let work = tempfile::Builder::new()
        .prefix("mailtally-bench-events.")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = work.path().join("pg");
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::ensure_running(&dir, ClusterOptions { durable: true })
    })
    .await
    .unwrap()
    .expect("the embedded PostgreSQL starts (scripts/bench-packages)");
    mailtally::store::create_database_if_missing(&cluster.admin_url(), Cluster::database_name())
        .await
        .unwrap();
    let pool = mailtally::store::pool(&cluster.database_url(), 8).unwrap();
    mailtally::store::migrate(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO users (email, password_hash) VALUES ('bench@example.com', 'x');
             INSERT INTO messages (id, sender_id, visibility, template_key, envelope_from, size_bytes)
             SELECT gen_random_uuid(), (SELECT id FROM users), 'team', 'bench-' || (g % 10),
                    'bench@example.com', 1000 FROM generate_series(1, {m}) g;
             INSERT INTO copies (id, message_id, recipient, status)
             SELECT gen_random_uuid(), m.id, 'r' || g || '@example.net', 'delivered'
             FROM messages m, generate_series(1, {per}) g;
             CREATE TABLE plain_copy AS SELECT {columns} FROM events WITH NO DATA;",
            columns = lane::COLUMNS,
            m = copies.div_ceil(20),
            per = 20,
        ))
        .await
        .unwrap();
    let rows = client
        .query("SELECT id, message_id FROM copies", &[])
        .await
        .unwrap();
    let ids: Vec<(Uuid, Uuid)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let events: Vec<Event> = (0..n).map(|i| event(ids[i % ids.len()].0, i)).collect();
    let message_of: std::collections::HashMap<Uuid, Uuid> = ids.iter().copied().collect();
    println!(
        "{n} events over {} copies, writer batch {batch}, fsync on",
        ids.len()
    );

    // 1. The reference: one plain binary COPY, committed.
    let started = Instant::now();
    {
        let mut c = pool.get().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let sink = tx
            .copy_in(&format!(
                "COPY plain_copy ({}) FROM STDIN BINARY",
                lane::COLUMNS
            ))
            .await
            .unwrap();
        let w = BinaryCopyInWriter::new(sink, lane::TYPES);
        tokio::pin!(w);
        for e in &events {
            w.as_mut()
                .write(&lane::row(e, &message_of[&e.copy_id]))
                .await
                .unwrap();
        }
        w.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    let plain = n as f64 / started.elapsed().as_secs_f64();
    println!("plain binary COPY: {plain:>9.0} rows/s");

    // 2. The writer, fed as fast as it drains.
    let spool = work.path().join("spool");
    let mut config = WriterConfig::new(spool);
    config.batch_size = batch;
    let capacity = config.channel_capacity;
    let (sink, handle) = writer::start(pool.clone(), config).unwrap();
    let spooled_before = METRICS.spooled.with_label_values(&["channel_full"]).get();
    let written_before = METRICS.written.get();
    let started = Instant::now();
    for mut e in events {
        while sink.depth() > capacity / 4 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        e.occurred_at = Utc::now();
        sink.send(e);
    }
    let sent = started.elapsed();
    // `written` counts rows after their commit.
    while METRICS.written.get() - written_before < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let rate = n as f64 / took.as_secs_f64();
    handle.shutdown().await;
    let spooled = METRICS.spooled.with_label_values(&["channel_full"]).get() - spooled_before;
    println!(
        "event writer:      {rate:>9.0} events/s ({n} stored in {:.2} s, the last {:.2} s after the last was sent; {spooled} spooled)",
        took.as_secs_f64(),
        (took - sent).as_secs_f64()
    );
    println!("ratio: {:.2}x the plain COPY", rate / plain);
    drop(client);
    mailtally::store::close_pool(pool).await;
    cluster.stop().unwrap();
}
