//! The relay killed with SIGKILL at a random moment of each round while concurrent clients
//! submit; after each restart every message answered 250 is delivered, and every message
//! committed too (answered or not). Duplicates (a copy sent again after a kill that came between
//! the upstream's 250 and the record of it) are counted and reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::received_ids;
use crate::common::smtp::{add_user, auth_plain, db_i64, db_rows, wait_until, Client, Sink};
use crate::common::{Server, TestDb};

const PASSWORD: &str = "correct horse battery";
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 50;

/// Sends `count` messages on one session; records the Message-IDs answered 250. Stops at the
/// first failure (the relay was killed).
fn client(
    server: std::net::SocketAddr,
    tag: String,
    count: usize,
    accepted: Arc<Mutex<Vec<String>>>,
) {
    let result = std::panic::catch_unwind(move || {
        let mut c = Client::connect(server);
        c.cmd("EHLO load.example");
        let auth = c.cmd(&format!(
            "AUTH PLAIN {}",
            auth_plain("ann@example.com", PASSWORD)
        ));
        assert!(auth.starts_with("235"), "{auth}");
        for i in 0..count {
            let id = format!("<{tag}-{i}@crash.test>");
            if !c.cmd("MAIL FROM:<ann@example.com>").starts_with("250") {
                return;
            }
            if !c.cmd("RCPT TO:<bob@example.net>").starts_with("250") {
                return;
            }
            let message = format!("Message-ID: {id}\r\nSubject: load {tag}\r\n\r\nmessage {i}\r\n");
            // Not Client::data: a reply cut short by the kill must not panic.
            if !c.cmd("DATA").starts_with("354") {
                return;
            }
            c.send_raw(format!("{message}.\r\n").as_bytes());
            if c.read().starts_with("250 ") {
                accepted.lock().unwrap().push(id);
            } else {
                return;
            }
        }
    });
    // A panic here is the connection dying under the kill: expected.
    let _ = result;
}

#[test]
fn every_message_answered_250_is_delivered_across_kill_9_rounds() {
    use rand::Rng;
    let rounds = if super::soak() { 20 } else { 5 };
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let mut server = Server::start(&db.url, &[("UPSTREAM_URL", &sink.url())]);
    add_user(&db.url, "ann@example.com", PASSWORD);
    let mut all_accepted = Vec::new();
    let mut rng = rand::thread_rng();
    for round in 0..rounds {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (smtp, accepted) = (server.smtp, accepted.clone());
                let tag = format!("r{round}c{n}");
                std::thread::spawn(move || client(smtp, tag, PER_CLIENT, accepted))
            })
            .collect();
        // The kill comes once a random share of the round's 400 messages is answered.
        let kill_after = rng.gen_range(20..(CLIENTS * PER_CLIENT - 20));
        assert!(
            wait_until(Duration::from_secs(60), || accepted.lock().unwrap().len()
                >= kill_after),
            "{}",
            server.log_text()
        );
        server.kill();
        for c in clients {
            let _ = c.join();
        }
        let accepted = accepted.lock().unwrap().clone();
        server.restart();
        all_accepted.extend(accepted.iter().cloned());
        let delivered_all = wait_until(Duration::from_secs(60), || {
            let ids = received_ids(&sink);
            all_accepted.iter().all(|id| ids.contains_key(id))
        });
        let ids = received_ids(&sink);
        let missing: Vec<_> = all_accepted
            .iter()
            .filter(|id| !ids.contains_key(*id))
            .collect();
        assert!(
            delivered_all,
            "round {round}: accepted but never delivered: {missing:?}"
        );
        // Committed but not yet answered when the kill came: delivered too, never lost.
        let committed = db_i64(&db.url, "SELECT count(*) FROM messages") as usize;
        assert!(committed >= all_accepted.len());
        assert!(wait_until(Duration::from_secs(30), || received_ids(&sink)
            .len()
            >= committed));
        let ids = received_ids(&sink);
        let twice = ids.values().filter(|n| **n > 1).count();
        println!(
            "kill -9 round {round}: killed after {kill_after}; {} answered 250 this round; \
             {} committed, {} delivered in all; {} delivered more than once",
            accepted.len(),
            committed,
            ids.len(),
            twice
        );
    }
    assert!(wait_until(Duration::from_secs(30), || db_i64(
        &db.url,
        "SELECT count(*) FROM copies WHERE status <> 'delivered'"
    ) == 0),
        "{:?}",
        db_rows(&db.url, "SELECT status, attempts::text, coalesce(last_error, '') FROM copies WHERE status <> 'delivered'")
    );
}
