//! The tracking endpoints against a running `mailtally serve` and a real PostgreSQL.

use crate::common;
use crate::track_support;

use std::time::Duration;

use common::{Server, TestDb};
use mailtally::rewrite::token::{self, TokenKeys};
use track_support::*;
use uuid::Uuid;

const OUTLOOK: &str = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)";
const GMAIL: &str =
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_redirect_exactly_pixels_are_transparent_and_events_land() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    let client = db.client().await;
    let seeded = seed(&client, 2, 2).await;
    let addr = server.http;

    // Invalid tokens first: if any of them were recorded, the exact count below would fail.
    let copy = seeded[0].copies[0];
    let good_click = token::click_token(&keys(), copy, 1, LINKS[1]);
    let good_open = token::open_token(&keys(), copy);
    let mut tampered = good_click.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let foreign = TokenKeys::new(b"another installation's secret", &[]);
    let bad_clicks = [
        tampered.clone(),
        good_click[..good_click.len() - 3].to_string(),
        good_click[..20].to_string(),
        token::click_token(&foreign, copy, 1, "https://evil.example/"),
        "not-a-token".to_string(),
        "%FF%01".to_string(),
        good_open.clone(), // an open token is not a link
    ];
    // A NUL byte in the target is refused in front of every route (400), never redirected.
    let r = raw(addr, "GET", "/c/%FF%00", &[]).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.header("location").is_none());
    for t in &bad_clicks {
        for method in ["GET", "HEAD"] {
            let r = raw(addr, method, &format!("/c/{t}"), &[]).unwrap();
            assert_eq!(r.status, 404, "{method} /c/{t}");
            assert!(r.header("location").is_none(), "no redirect for {t}");
            if method == "GET" {
                assert!(String::from_utf8_lossy(&r.body).contains("Link not found"));
                assert!(r
                    .header_str("content-type")
                    .unwrap()
                    .starts_with("text/html"));
            }
        }
    }
    let mut tampered_open = good_open.clone().into_bytes();
    tampered_open[5] = if tampered_open[5] == b'x' { b'y' } else { b'x' };
    let bad_opens = [
        String::from_utf8(tampered_open).unwrap(),
        good_open[..good_open.len() - 1].to_string(),
        token::open_token(&foreign, copy),
        good_click.clone(), // a click token is not a pixel
        "x".to_string(),
    ];
    for t in &bad_opens {
        let r = raw(addr, "GET", &format!("/o/{t}"), &[]).unwrap();
        assert_pixel(&r);
    }

    // Every link of every copy, byte for byte.
    let mut expected = 0i64;
    for m in &seeded {
        for &copy in &m.copies {
            for (i, url) in LINKS.iter().enumerate() {
                let r = raw(
                    addr,
                    "GET",
                    &click_path(copy, i),
                    &[("User-Agent", OUTLOOK)],
                )
                .unwrap();
                assert_eq!(r.status, 302);
                assert_eq!(r.header("location"), Some(url.as_bytes()), "link {i}");
                expected += 1;
            }
            let r = raw(addr, "GET", &open_path(copy), &[("User-Agent", OUTLOOK)]).unwrap();
            assert_pixel(&r);
            expected += 1;
        }
    }
    // HEAD: same status and headers, no body; recorded as a scanner.
    let r = raw(addr, "HEAD", &open_path(copy), &[("User-Agent", OUTLOOK)]).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = raw(addr, "HEAD", &click_path(copy, 2), &[]).unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(LINKS[2].as_bytes()));
    // A Gmail proxy fetch.
    let r = raw(addr, "GET", &open_path(copy), &[("User-Agent", GMAIL)]).unwrap();
    assert_pixel(&r);
    expected += 3;

    let n = wait_count(
        &client,
        "SELECT count(*) FROM events",
        expected,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(n, expected);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, expected, "invalid tokens recorded nothing");

    // Each row has the right message, copy, kind and link.
    for m in &seeded {
        for &c in &m.copies {
            let rows = client
                .query(
                    "SELECT link_idx FROM events WHERE copy_id = $1 AND message_id = $2
                     AND kind = 'click' AND method = 'GET' ORDER BY link_idx",
                    &[&c, &m.message],
                )
                .await
                .unwrap();
            let links: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(links, (0..LINKS.len() as i32).collect::<Vec<_>>());
        }
    }
    let row = client
        .query_one(
            "SELECT class, reason, host(ip), user_agent, client, device, os, method
             FROM events WHERE kind = 'open' AND user_agent = $1 AND copy_id = $2 AND method = 'GET'",
            &[&OUTLOOK, &seeded[1].copies[1]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("human"));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("no machine evidence")
    );
    assert_eq!(row.get::<_, String>(2), "127.0.0.1");
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("Outlook"));
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("desktop"));
    assert_eq!(
        row.get::<_, Option<String>>(6).as_deref(),
        Some("Windows 10")
    );
    let classes = client
        .query(
            "SELECT method, class, kind FROM events WHERE copy_id = $1 AND (method = 'HEAD' OR class = 'proxy') ORDER BY kind, method",
            &[&copy],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = classes
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("HEAD".into(), "scanner".into(), "click".into()),
            ("GET".into(), "proxy".into(), "open".into()),
            ("HEAD".into(), "scanner".into(), "open".into()),
        ]
    );

    // The metrics of the stage are listed.
    let metrics = raw(addr, "GET", "/metrics", &[]).unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for name in [
        "mailtally_track_requests_total{first_sight_class=\"human\",kind=\"click\"}",
        "mailtally_track_invalid_tokens_total{kind=\"click\"}",
        "mailtally_event_channel_depth",
        "mailtally_event_batch_size_bucket",
        "mailtally_event_flush_duration_seconds_bucket",
        "mailtally_events_spooled_total{cause=\"database_down\"}",
        "mailtally_events_replayed_total",
        "mailtally_event_spool_bytes",
        "mailtally_events_written_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(text.contains("mailtally_track_invalid_tokens_total{kind=\"click\"} 14"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let db = TestDb::migrated();
    let client = db.client().await;
    let seeded = seed(&client, 1, 2).await;
    let (untrusted_copy, trusted_copy) = (seeded[0].copies[0], seeded[0].copies[1]);
    let xff = [("X-Forwarded-For", "203.0.113.9, 198.51.100.77, 10.0.0.5")];

    // The peer (127.0.0.1) is not a trusted proxy: the header is the client's word, ignored.
    let plain = Server::start(&db.url, &[]);
    let r = raw(plain.http, "GET", &open_path(untrusted_copy), &xff).unwrap();
    assert_pixel(&r);
    // Behind trusted proxies (loopback and 10/8): the right-most untrusted hop, anonymised.
    let proxied = Server::start(
        &db.url,
        &[
            ("TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8"),
            ("ANONYMIZE_IP", "true"),
        ],
    );
    let r = raw(proxied.http, "GET", &open_path(trusted_copy), &xff).unwrap();
    assert_pixel(&r);

    wait_count(
        &client,
        "SELECT count(*) FROM events",
        2,
        Duration::from_secs(10),
    )
    .await;
    let ip = |copy: Uuid| {
        let client = &client;
        async move {
            client
                .query_one("SELECT host(ip) FROM events WHERE copy_id = $1", &[&copy])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(ip(untrusted_copy).await, "127.0.0.1");
    assert_eq!(ip(trusted_copy).await, "198.51.100.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_rules_use_delivery_times_polled_from_the_database() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    let client = db.client().await;
    let seeded = seed(&client, 1, 1).await;
    let message = seeded[0].message;
    // Two fresh copies: one delivered just now, one not delivered yet (its next attempt is
    // an hour away, so the delivery workers leave it alone).
    let (delivered, queued) = (Uuid::now_v7(), Uuid::now_v7());
    client
        .execute(
            "INSERT INTO copies (id, message_id, recipient, status, delivered_at, next_attempt_at)
             VALUES ($1, $3, 'a@example.net', 'delivered', now(), now()),
                    ($2, $3, 'b@example.net', 'deferred', NULL, now() + interval '1 hour')",
            &[&delivered, &queued, &message],
        )
        .await
        .unwrap();
    // The delivery cache polls once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for copy in [delivered, queued] {
        assert_pixel(
            &raw(
                server.http,
                "GET",
                &open_path(copy),
                &[("User-Agent", OUTLOOK)],
            )
            .unwrap(),
        );
    }
    let r = raw(
        server.http,
        "GET",
        &click_path(delivered, 0),
        &[("User-Agent", OUTLOOK)],
    )
    .unwrap();
    assert_eq!(r.status, 302);
    wait_count(
        &client,
        "SELECT count(*) FROM events",
        3,
        Duration::from_secs(10),
    )
    .await;
    let rows = client
        .query(
            "SELECT copy_id, kind, class, reason FROM events ORDER BY copy_id = $1 DESC, kind",
            &[&delivered],
        )
        .await
        .unwrap();
    let got: Vec<(Uuid, String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                delivered,
                "click".into(),
                Some("scanner".into()),
                Some("click within seconds of delivery".into())
            ),
            (
                delivered,
                "open".into(),
                Some("prefetch".into()),
                Some("open within seconds of delivery".into())
            ),
            (
                queued,
                "open".into(),
                None,
                Some("delivery_time_unknown".into())
            ),
        ]
    );
}
