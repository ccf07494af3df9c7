//! Crash safety and several nodes: a relay killed with SIGKILL in the middle of a load delivers
//! every message it answered 250 to once restarted; two relays on one database deliver each
//! copy once.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::smtp::{add_user, auth_plain, db_i64, db_rows, wait_until, Client, Sink};
use common::{Server, TestDb};

const PASSWORD: &str = "correct horse battery";

/// Message-ID -> how many times the sink received it.
fn received_ids(sink: &Sink) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for message in sink.messages() {
        if let Some(id) = message.lines().find_map(|l| l.strip_prefix("Message-ID: ")) {
            *ids.entry(id.trim().to_string()).or_insert(0) += 1;
        }
    }
    ids
}

/// Sends `count` messages on one session; records the Message-IDs answered 250. Stops at the
/// first failure (the relay was killed).
fn client(server: std::net::SocketAddr, n: usize, count: usize, accepted: Arc<Mutex<Vec<String>>>) {
    let result = std::panic::catch_unwind(move || {
        let mut c = Client::connect(server);
        c.cmd("EHLO load.example");
        let auth = c.cmd(&format!(
            "AUTH PLAIN {}",
            auth_plain("ann@example.com", PASSWORD)
        ));
        assert!(auth.starts_with("235"), "{auth}");
        for i in 0..count {
            let id = format!("<c{n}-{i}@crash.test>");
            if !c.cmd("MAIL FROM:<ann@example.com>").starts_with("250") {
                return;
            }
            if !c.cmd("RCPT TO:<bob@example.net>").starts_with("250") {
                return;
            }
            let message = format!("Message-ID: {id}\r\nSubject: load {n}\r\n\r\nmessage {i}\r\n");
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
fn every_message_answered_250_is_delivered_after_a_kill_9() {
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let mut server = Server::start(&db.url, &[("UPSTREAM_URL", &sink.url())]);
    add_user(&db.url, "ann@example.com", PASSWORD);

    let accepted = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..10)
        .map(|n| {
            let (smtp, accepted) = (server.smtp, accepted.clone());
            std::thread::spawn(move || client(smtp, n, 50, accepted))
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || accepted.lock().unwrap().len()
            >= 200),
        "{}",
        server.log_text()
    );
    server.kill();
    for c in clients {
        let _ = c.join();
    }
    let accepted = accepted.lock().unwrap().clone();
    let delivered_before_restart = received_ids(&sink).len();
    server.restart();

    let delivered_all = wait_until(Duration::from_secs(60), || {
        let ids = received_ids(&sink);
        accepted.iter().all(|id| ids.contains_key(id))
    });
    let ids = received_ids(&sink);
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !ids.contains_key(*id))
        .collect();
    assert!(delivered_all, "accepted but never delivered: {missing:?}");
    // Committed but not yet answered when the kill came: delivered too, never lost.
    let committed = db_i64(&db.url, "SELECT count(*) FROM messages") as usize;
    assert!(committed >= accepted.len());
    assert!(wait_until(Duration::from_secs(30), || ids.len()
        >= committed
        || received_ids(&sink).len() >= committed));
    let twice = ids.values().filter(|n| **n > 1).count();
    println!(
        "kill -9: {} answered 250, {} committed, {} delivered before the kill, {} delivered more than once",
        accepted.len(),
        committed,
        delivered_before_restart,
        twice
    );
    assert_eq!(
        db_i64(&db.url, "SELECT count(*) FROM copies WHERE status <> 'delivered'"),
        0,
        "{:?}",
        db_rows(&db.url, "SELECT status, attempts::text, coalesce(last_error, '') FROM copies WHERE status <> 'delivered'")
    );
}

#[test]
fn two_nodes_on_one_database_deliver_each_copy_once() {
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    add_user(&db.url, "ann@example.com", PASSWORD);
    let settings = [
        ("UPSTREAM_URL", sink.url()),
        ("DELIVERY_WORKERS", "8".to_string()),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Server::start(&db.url, &settings);
    let b = Server::start(&db.url, &settings);

    // 1000 copies queued at once (as another node would have), found by both nodes' polling.
    db_rows(
        &db.url,
        "INSERT INTO templates (key) VALUES ('bulk');
         INSERT INTO messages (id, sender_id, visibility, template_key, envelope_from, size_bytes)
             SELECT gen_random_uuid(), id, 'team', 'bulk', email, 60 FROM users
             WHERE email = 'ann@example.com';
         INSERT INTO copies (id, message_id, recipient, body)
             SELECT gen_random_uuid(), m.id, 'r' || i || '@example.net',
                    convert_to('Message-ID: <bulk-' || i || '@test>' || chr(13) || chr(10)
                        || 'Subject: bulk' || chr(13) || chr(10) || chr(13) || chr(10)
                        || 'body' || chr(13) || chr(10), 'UTF8')
             FROM messages m, generate_series(1, 1000) i;",
    );
    assert!(
        wait_until(Duration::from_secs(60), || db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'delivered'"
        ) == 1000),
        "{:?}",
        db_rows(
            &db.url,
            "SELECT status, count(*)::text FROM copies GROUP BY 1"
        )
    );
    assert!(wait_until(Duration::from_secs(10), || sink.count() >= 1000));
    std::thread::sleep(Duration::from_millis(500));
    let ids = received_ids(&sink);
    let twice = ids.values().filter(|n| **n > 1).count();
    assert_eq!(ids.len(), 1000);
    assert_eq!(twice, 0, "copies delivered twice");
    assert_eq!(sink.count(), 1000);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'delivered'"
        ),
        1000
    );
    let delivered_by = |server: &Server| -> i64 {
        let metrics = ureq::get(&server.url("/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("mailtally_delivery_attempts_total{result=\"delivered\"} ")
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (by_a, by_b) = (delivered_by(&a), delivered_by(&b));
    println!("two nodes: {by_a} + {by_b} copies delivered");
    assert_eq!(by_a + by_b, 1000);
    assert!(
        by_a > 0 && by_b > 0,
        "both nodes took part: {by_a} + {by_b}"
    );
}
