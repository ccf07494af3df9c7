//! Erasure of one recipient, by command and by the admin API: copies, events and the stored
//! address are gone and the reports no longer count them.

use crate::common;

use std::time::Duration;

use common::smtp::{add_user, auth_plain, db_i64, wait_until, Client};
use common::{mailtally, Server, TestDb};

const PASSWORD: &str = "erase-password";

fn report_figure(server: &Server, token: &str, field: &str) -> i64 {
    let report: serde_json::Value = ureq::get(&server.url("/api/reports/templates?class=all"))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let rows = report["templates"]
        .as_array()
        .or(report.as_array())
        .cloned()
        .unwrap_or_default();
    rows.iter().map(|r| r[field].as_i64().unwrap_or(0)).sum()
}

#[test]
fn a_recipient_is_erased_everywhere_and_the_reports_are_corrected() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    let ann = add_user(&db.url, "ann@example.com", PASSWORD);
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO erase.test");
    assert!(c
        .cmd(&format!(
            "AUTH PLAIN {}",
            auth_plain("ann@example.com", PASSWORD)
        ))
        .starts_with("235"));
    c.cmd("MAIL FROM:<ann@example.com>");
    for r in ["x@example.net", "y@example.net", "z@example.net"] {
        assert!(c.cmd(&format!("RCPT TO:<{r}>")).starts_with("250"));
    }
    let reply = c.data(
        b"From: ann@example.com\r\nTo: x@example.net\r\nSubject: Erase me\r\nX-Mailtally-Template: gdpr\r\n\
Content-Type: text/html\r\n\r\n<html><body><a href=\"https://example.com/\">x</a></body></html>\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert!(wait_until(Duration::from_secs(20), || {
        db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'delivered'",
        ) == 3
    }));
    // Everyone opens.
    let rows = common::smtp::db_rows(&db.url, "SELECT encode(body, 'escape') FROM copies");
    for row in rows {
        let pixel = row[0]
            .split("/o/")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        ureq::get(&server.url(&format!("/o/{pixel}")))
            .call()
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(20), || report_figure(
        &server, &ann, "opens"
    ) == 3));
    assert_eq!(report_figure(&server, &ann, "sent"), 3);

    // By command, with the address written differently.
    let (ok, out, err) = mailtally(
        &["erase", "--recipient", "X@Example.NET"],
        &[("DATABASE_URL", db.url.as_str()), ("LOG_LEVEL", "warn")],
        b"",
    );
    assert!(ok, "{err}");
    assert!(out.contains("erased 1 copies"), "{out}");
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE lower(recipient) = 'x@example.net'"
        ),
        0
    );
    assert_eq!(
        db_i64(&db.url, "SELECT count(*) FROM events e LEFT JOIN copies c ON c.id = e.copy_id WHERE c.id IS NULL"),
        0,
        "no event of an erased copy is left"
    );
    assert_eq!(report_figure(&server, &ann, "sent"), 2);
    assert_eq!(report_figure(&server, &ann, "opens"), 2);

    // By the admin API; members may not.
    let refused = ureq::post(&server.url("/api/erase"))
        .set("authorization", &format!("Bearer {ann}"))
        .send_json(serde_json::json!({"recipient": "y@example.net"}));
    assert_eq!(refused.unwrap_err().into_response().unwrap().status(), 403);
    let admin = {
        let (ok, out, err) = mailtally(
            &[
                "user",
                "add",
                "--email",
                "root@example.com",
                "--password-stdin",
                "--admin",
            ],
            &[("DATABASE_URL", db.url.as_str()), ("LOG_LEVEL", "warn")],
            b"admin-password\n",
        );
        assert!(ok, "{err}");
        out.lines()
            .find_map(|l| l.strip_prefix("API token (shown once): "))
            .unwrap()
            .to_string()
    };
    let done: serde_json::Value = ureq::post(&server.url("/api/erase"))
        .set("authorization", &format!("Bearer {admin}"))
        .send_json(serde_json::json!({"recipient": "y@example.net"}))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(done["erased_copies"], 1);
    assert_eq!(report_figure(&server, &ann, "sent"), 1);
    assert_eq!(report_figure(&server, &ann, "opens"), 1);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE recipient IN ('x@example.net', 'y@example.net')"
        ),
        0
    );
}

/// Links are stored once per distinct list: two messages of one template share a row, a
/// third with its own links has its own. Erasing a message takes its list with it unless
/// another message still refers to it; erasing the last one leaves no link of them anywhere.
#[tokio::test]
async fn erased_messages_take_their_link_lists_once_nobody_shares_them() {
    use mailtally::queue::{enqueue, MessageFacts, NewCopy, NewMessage};
    let db = TestDb::migrated();
    let pool = db.pool();
    let client = db.client().await;
    let sender: i64 = client
        .query_one(
            "INSERT INTO users (email, password_hash) VALUES ('ann@a.test', 'x') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let message = |links: &[(i32, &str)], to: &str| NewMessage {
        id: uuid::Uuid::now_v7(),
        sender_id: sender,
        team_id: None,
        visibility: "team".into(),
        track: "opens,clicks".into(),
        envelope_from: "ann@a.test".into(),
        size_bytes: 10,
        facts: MessageFacts {
            template_key: "offer".into(),
            ..MessageFacts::default()
        },
        links: links.iter().map(|(i, u)| (*i, u.to_string())).collect(),
        untouched: None,
        copies: vec![NewCopy {
            id: uuid::Uuid::now_v7(),
            recipient: to.into(),
            body: b"Subject: x\r\n\r\nx\r\n".to_vec(),
            ..NewCopy::default()
        }],
    };
    let shared = [
        (0, "https://a.test/pricing"),
        (1, "https://a.test/ünï?x=1&y=2"),
    ];
    let own = [
        (0, "https://b.test/?for=carol%40c.test"),
        (3, "https://b.test/3"),
    ];
    let (m1, m2, m3) = (
        message(&shared, "bob@b.test"),
        message(&shared, "dan@d.test"),
        message(&own, "carol@c.test"),
    );
    for m in [&m1, &m2, &m3] {
        enqueue(&pool, m).await.unwrap();
    }
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM link_lists").await, 2);
    let links_of = |id: uuid::Uuid| {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT idx, url FROM links WHERE message_id = $1 ORDER BY idx",
                    &[&id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1)))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(links_of(m2.id).await, m2.links);
    assert_eq!(links_of(m3.id).await, m3.links);

    let erase = |id: uuid::Uuid| {
        let db = &db;
        async move {
            let mut c = db.client().await;
            let tx = c.transaction().await.unwrap();
            mailtally::erasure::erase_message(&tx, id).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    erase(m3.id).await;
    erase(m1.id).await;
    assert_eq!(count("SELECT count(*) FROM link_lists").await, 1);
    assert_eq!(links_of(m2.id).await, m2.links, "m2 keeps the shared list");
    assert_eq!(
        count("SELECT count(*) FROM link_lists WHERE array_to_string(urls, ' ') LIKE '%carol%'")
            .await,
        0
    );
    erase(m2.id).await;
    assert_eq!(count("SELECT count(*) FROM link_lists").await, 0);
    assert_eq!(count("SELECT count(*) FROM links").await, 0);
}
