//! PostgreSQL down for 30 s (5 minutes with MAILTALLY_SOAK=1) under tracking load: every
//! request is answered at once and no event is lost, nor on a graceful stop of mailtally during
//! an outage. Runs on a private cluster: the shared test cluster must stay up for other tests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Private;
use crate::common::Server;
use crate::track_support::*;
use uuid::Uuid;

const AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0";

/// One request of the mix, checked; `i` picks the kind, method, copy and link.
fn request(addr: std::net::SocketAddr, copies: &[Uuid], i: usize) -> Result<(), String> {
    let copy = copies[i % copies.len()];
    let method = if i % 10 == 9 { "HEAD" } else { "GET" };
    if i % 2 == 0 {
        let r = raw(addr, method, &open_path(copy), &[("User-Agent", AGENT)])
            .map_err(|e| e.to_string())?;
        if r.status != 200 || r.header("content-type") != Some(&b"image/gif"[..]) {
            return Err(format!("open answered {}", r.status));
        }
        if method == "GET" {
            assert_pixel(&r);
        }
    } else {
        let link = (i / 2) % LINKS.len();
        let r = raw(
            addr,
            method,
            &click_path(copy, link),
            &[("User-Agent", AGENT)],
        )
        .map_err(|e| e.to_string())?;
        if r.status != 302 || r.header("location") != Some(LINKS[link].as_bytes()) {
            return Err(format!("click answered {}", r.status));
        }
    }
    Ok(())
}

/// Requests begun (`sent`) and answered correctly (`answered`), read while a run goes on.
#[derive(Clone, Default)]
struct Counts {
    sent: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

/// Sends requests `range` from `threads` threads; returns how many were answered correctly.
/// With `tolerate_failures`, stops early (without failing) once a request fails.
fn send(
    addr: std::net::SocketAddr,
    copies: &[Uuid],
    range: std::ops::Range<usize>,
    threads: usize,
    counts: Counts,
    tolerate_failures: bool,
) -> usize {
    let next = Arc::new(AtomicUsize::new(range.start));
    let Counts { sent, answered } = counts;
    let failed = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (next, answered, failed, sent) =
                (next.clone(), answered.clone(), failed.clone(), sent.clone());
            let range = range.clone();
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= range.end || failed.load(Ordering::SeqCst) {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                let started = Instant::now();
                match request(addr, copies, i) {
                    Ok(()) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                        assert!(
                            started.elapsed() < Duration::from_secs(2),
                            "request {i} took {:?}",
                            started.elapsed()
                        );
                    }
                    Err(e) if tolerate_failures => {
                        let _ = e;
                        failed.store(true, Ordering::SeqCst);
                    }
                    Err(e) => panic!("request {i}: {e}"),
                }
            });
        }
    });
    answered.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_lost_during_a_database_outage_or_a_stop() {
    let mut cluster = Private::start().await;
    let url = cluster.url();
    let mut server = Server::start(&url, &[]);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let seeded = seed(&client, 2, 3).await;
    drop(client);
    let copies: Vec<Uuid> = seeded.iter().flat_map(|m| m.copies.clone()).collect();
    let addr = server.http;

    // Outage of 30 s: every request is still answered, at once.
    cluster.stop();
    let outage = Duration::from_secs(if super::soak() { 300 } else { 30 });
    let started = Instant::now();
    let mut total = 0;
    while started.elapsed() < outage {
        let answered = send(
            addr,
            &copies,
            total..total + 2000,
            4,
            Counts::default(),
            false,
        );
        assert_eq!(answered, 2000);
        total += 2000;
        // Paced: the point is the length of the outage, not the request rate.
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "tracking outage: {total} requests answered in {:?} without PostgreSQL",
        started.elapsed()
    );
    cluster.restart();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let count = "SELECT count(*) FROM events WHERE kind IN ('open', 'click')";
    let n = wait_count(&client, count, total as i64, Duration::from_secs(60)).await;
    assert_eq!(
        n,
        total as i64,
        "every event of the outage stored\n{}",
        server.log_text()
    );
    let head: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE method = 'HEAD' AND class = 'scanner'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(head, total as i64 / 10);
    drop(client);

    // Another outage, and a SIGTERM of mailtally in the middle of the traffic.
    cluster.stop();
    let counts2 = Counts::default();
    let answered2 = std::thread::scope(|s| {
        let sender = {
            let counts2 = counts2.clone();
            let copies = &copies;
            s.spawn(move || send(addr, copies, total..total + 100_000, 4, counts2, true))
        };
        // Waits for answers, not for requests begun: up to `threads` are in flight at any time.
        let waiting = Instant::now();
        while counts2.answered.load(Ordering::SeqCst) < 500 {
            assert!(waiting.elapsed() < Duration::from_secs(30), "no answers");
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = server.stop();
        assert!(status.success(), "graceful stop: {status}");
        sender.join().unwrap()
    });
    assert!(answered2 >= 500, "answered {answered2}");
    cluster.restart();
    server.restart();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let want = total as i64 + answered2 as i64;
    let n = wait_count(&client, count, want, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n_after: i64 = client.query_one(count, &[]).await.unwrap().get(0);
    // Every answered request is stored; at most the few in flight when the listener closed
    // were stored without their answer reaching the client.
    assert!(
        n >= want,
        "stored {n}, answered {want}\n{}",
        server.log_text()
    );
    assert!(
        n_after <= total as i64 + counts2.sent.load(Ordering::SeqCst) as i64,
        "no duplicates"
    );
    let distinct: i64 = client
        .query_one("SELECT count(DISTINCT id) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let all: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, all);
    assert!(!server.log_text().contains("panicked"));
    assert!(server.log_text().contains("replayed"));
    drop(server);
}
