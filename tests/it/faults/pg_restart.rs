//! PostgreSQL stopped and started again under relay load: while it is down, sessions get 451
//! (or 454 at AUTH) and nothing is answered 250; every message answered 250, before, during or
//! after, is delivered once it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{received_ids, Private};
use crate::common::smtp::{add_user, auth_plain, wait_until, Client, Sink};
use crate::common::Server;

const PASSWORD: &str = "correct horse battery";

#[derive(Default)]
struct Tally {
    accepted: Vec<String>,
    /// Reply codes other than 2xx/3xx, with how often each came.
    refusals: std::collections::BTreeMap<String, usize>,
}

/// Submits messages until `stop`, reconnecting after refusals and broken connections.
fn client(smtp: std::net::SocketAddr, n: usize, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut c = Client::connect(smtp);
            c.cmd("EHLO load.example");
            let auth = c.cmd(&format!(
                "AUTH PLAIN {}",
                auth_plain("ann@example.com", PASSWORD)
            ));
            if !auth.starts_with("235") {
                return Err(auth);
            }
            loop {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                i += 1;
                let id = format!("<pg{n}-{i}@restart.test>");
                for cmd in ["MAIL FROM:<ann@example.com>", "RCPT TO:<bob@example.net>"] {
                    let r = c.cmd(cmd);
                    if !r.starts_with('2') {
                        c.cmd("RSET");
                        return Err(r);
                    }
                }
                let r =
                    c.data(format!("Message-ID: {id}\r\nSubject: pg\r\n\r\nbody\r\n").as_bytes());
                if r.starts_with("250 ") {
                    tally.lock().unwrap().accepted.push(id);
                } else {
                    return Err(r);
                }
            }
        }));
        match result {
            Ok(Ok(())) => return,
            Ok(Err(reply)) => {
                let code = reply.get(..9).unwrap_or(&reply).trim().to_string();
                *tally.lock().unwrap().refusals.entry(code).or_default() += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            // The connection broke: try again.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_451_while_postgresql_is_down_and_nothing_acknowledged_is_lost() {
    let mut cluster = Private::start().await;
    let url = cluster.url();
    let sink = Sink::start(&[]);
    let server = Server::start(
        &url,
        &[("UPSTREAM_URL", &sink.url()), ("RETRY_SCHEDULE", "1")],
    );
    add_user(&url, "ann@example.com", PASSWORD);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let (stop, tally, smtp) = (stop.clone(), tally.clone(), server.smtp);
            std::thread::spawn(move || client(smtp, n, stop, tally))
        })
        .collect();
    let before = |n: usize| {
        wait_until(Duration::from_secs(30), || {
            tally.lock().unwrap().accepted.len() >= n
        })
    };
    assert!(before(100), "{}", server.log_text());
    let down_for = Duration::from_secs(if super::soak() { 60 } else { 8 });
    cluster.stop();
    let down_at = tally.lock().unwrap().accepted.len();
    let stopped = Instant::now();
    // Give in-flight commits a moment, then nothing more may be answered 250 while it is down.
    std::thread::sleep(Duration::from_secs(2));
    let settled = tally.lock().unwrap().accepted.len();
    std::thread::sleep(down_for.saturating_sub(stopped.elapsed()));
    let during = tally.lock().unwrap().accepted.len() - settled;
    cluster.restart();
    let up_at = tally.lock().unwrap().accepted.len();
    assert!(
        before(up_at + 100),
        "the relay takes mail again\n{}",
        server.log_text()
    );
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    assert_eq!(during, 0, "nothing answered 250 while PostgreSQL was down");
    let temp_failures: usize = tally
        .refusals
        .iter()
        .filter(|(code, _)| {
            code.starts_with("451") || code.starts_with("454") || code.starts_with("421")
        })
        .map(|(_, n)| n)
        .sum();
    assert!(
        temp_failures > 0,
        "sessions were told to retry: {:?}",
        tally.refusals
    );
    assert!(
        tally.refusals.keys().all(|c| c.starts_with('4')),
        "only temporary refusals: {:?}",
        tally.refusals
    );
    let all_delivered = wait_until(Duration::from_secs(60), || {
        let ids = received_ids(&sink);
        tally.accepted.iter().all(|id| ids.contains_key(id))
    });
    let ids = received_ids(&sink);
    let missing: Vec<_> = tally
        .accepted
        .iter()
        .filter(|id| !ids.contains_key(*id))
        .collect();
    assert!(all_delivered, "accepted, never delivered: {missing:?}");
    println!(
        "PostgreSQL restart: {} answered 250 ({} before the stop, {} after it came back), \
         refusals while down {:?}, {} delivered, {} more than once",
        tally.accepted.len(),
        down_at,
        tally.accepted.len() - up_at,
        tally.refusals,
        ids.len(),
        ids.values().filter(|n| **n > 1).count()
    );
    assert!(!server.log_text().contains("panicked"));
}
