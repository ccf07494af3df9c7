//! Several nodes: two relays on one database deliver each copy once. (Crash safety under
//! SIGKILL is in tests/faults/kill_loop.rs.)

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::smtp::{add_user, db_i64, db_rows, wait_until, Sink};
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
