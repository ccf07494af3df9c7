//! Unsubscribes and the suppression list, against a running server: the one-click POST of a
//! copy's List-Unsubscribe URL unsubscribes, a GET (what link scanners do) and forged or
//! borrowed tokens do not; a suppressed address is refused over SMTP, left out of group emails
//! and follow-ups, or recorded and never sent; the list is kept, exported and erased with the
//! digest staying.

use std::time::Duration;

use crate::common;
use common::api::call;
use common::smtp::{add_user, add_user_in, db_i64, db_rows, submit_as, wait_until, Client};
use common::{Server, TestDb};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

fn message(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: ann@example.com\r\nTo: {to}\r\nSubject: {subject}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hi <a href=\"https://example.com/offer\">offer</a></p></body></html>\r\n"
    )
    .into_bytes()
}

/// The raw copy the capture sink holds for `recipient`, once it is there.
fn captured(server: &Server, db_url: &str, token: &str, recipient: &str) -> String {
    let sql = format!(
        "SELECT c.id::text FROM copies c WHERE c.recipient = '{recipient}' AND c.delivered_via = 'capture' ORDER BY c.delivered_at DESC LIMIT 1"
    );
    assert!(
        wait_until(Duration::from_secs(20), || !db_rows(db_url, &sql)
            .is_empty()),
        "no captured copy for {recipient}"
    );
    let copy = db_rows(db_url, &sql)[0][0].clone();
    ureq::get(&server.url(&format!("/api/captured/{copy}/raw")))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

fn unsubscribe_url(copy: &str) -> String {
    let line = copy
        .lines()
        .find(|l| l.starts_with("List-Unsubscribe: <"))
        .unwrap_or_else(|| panic!("no List-Unsubscribe in\n{copy}"));
    line["List-Unsubscribe: <".len()..line.len() - 1].to_string()
}

/// (status, body) of a GET or POST of `url` without credentials, as a mail client sends it.
fn hit(method: &str, url: &str, body: &str) -> (u16, String) {
    let req = ureq::request(method, url).set("content-type", "application/x-www-form-urlencoded");
    let res = if method == "POST" {
        req.send_string(body)
    } else {
        req.call()
    };
    match res {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

#[test]
fn one_click_unsubscribes_and_every_way_of_sending_respects_it() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[("SENDER_RATE_PER_MINUTE", "0")]);
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let events = |kind: &str| {
        db_i64(
            &db.url,
            &format!("SELECT count(*) FROM events WHERE kind = '{kind}'"),
        )
    };
    let suppressions = || db_i64(&db.url, "SELECT count(*) FROM suppressions");

    submit_as(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        &["bob@example.net", "carol@example.net"],
        &message("bob@example.net, carol@example.net", "Offer"),
    );
    let bob = captured(&server, &db.url, &token, "bob@example.net");
    let url = unsubscribe_url(&bob);
    assert!(url.starts_with(&server.url("/u/")), "{url}");
    assert!(bob.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));

    // What a link scanner does: fetch it. A page that asks, nothing recorded.
    let (status, page) = hit("GET", &url, "");
    assert_eq!(status, 200);
    assert!(page.contains("<form method=\"post\""), "{page}");
    // Forged, truncated and borrowed tokens: not found, nothing recorded.
    let pixel = bob.split(&server.url("/o/")).nth(1).unwrap();
    let open_token: String = pixel
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let last = url.chars().last().unwrap();
    let forged = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    for bad in [
        forged,
        url[..url.len() - 4].to_string(),
        server.url(&format!("/u/{open_token}")),
    ] {
        for method in ["GET", "POST"] {
            let (status, _) = hit(method, &bad, "List-Unsubscribe=One-Click");
            assert_eq!(status, 404, "{method} {bad}");
        }
    }
    assert_eq!((events("unsubscribe"), suppressions()), (0, 0));

    // The one-click POST of RFC 8058, twice: one event, one entry.
    for _ in 0..2 {
        let (status, page) = hit("POST", &url, "List-Unsubscribe=One-Click");
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("unsubscribed"));
    }
    assert_eq!((events("unsubscribe"), suppressions()), (1, 1));
    let entry = db_rows(
        &db.url,
        "SELECT s.reason, s.address, (s.copy_id = c.id)::text, s.detail FROM suppressions s
         JOIN copies c ON c.recipient = 'bob@example.net'",
    );
    assert_eq!(
        entry[0],
        ["unsubscribe", "bob@example.net", "true", "one-click"]
    );

    // The template's report counts the unsubscribe against what was delivered.
    let mut row = json!(null);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let (_, report) = call(
                "GET",
                &server.url("/api/reports/templates"),
                &token,
                None,
                None,
            );
            row = report["templates"][0].clone();
            row["unsubscribes"] == 1
        }),
        "{row}"
    );
    assert_eq!(
        (&row["sent"], &row["unsubscribe_rate"]),
        (&json!(2), &json!(0.5))
    );

    // SMTP: the RCPT is refused, naming why; carol still goes.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO client.example");
    assert!(c
        .cmd(&format!(
            "AUTH PLAIN {}",
            common::smtp::auth_plain("ann@example.com", PASSWORD)
        ))
        .starts_with("235"));
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    let refused = c.cmd("RCPT TO:<Bob@Example.NET>");
    assert!(
        refused.starts_with("550 5.7.1") && refused.contains("unsubscribed"),
        "{refused}"
    );
    assert!(c.cmd("RCPT TO:<carol@example.net>").starts_with("250"));
    c.cmd("QUIT");

    // Group emails: bob is left out and listed; a group of bob alone sends nothing.
    let (status, body) = call(
        "POST",
        &server.url("/api/templates"),
        &token,
        Some(&json!({"key": "news", "subject": "News", "html": "<p>News</p>"})),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let group = |recipients: serde_json::Value| {
        call(
            "POST",
            &server.url("/api/group-emails"),
            &token,
            Some(&json!({"template": "news", "recipients": recipients})),
            None,
        )
    };
    let (status, body) = group(json!([{"email": "bob@example.net"}, {"email": "dan@example.net"}]));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["copies"], 1);
    assert_eq!(
        body["suppressed"],
        json!([{"email": "bob@example.net", "reason": "unsubscribe"}])
    );
    let (status, body) = group(json!([{"email": "bob@example.net"}]));
    assert_eq!(status, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("suppression list"));
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM copies c JOIN messages m ON m.id = c.message_id
             WHERE m.template_key = 'news' AND c.recipient = 'bob@example.net'"
        ),
        0
    );

    // The list through the API, and as CSV.
    let (status, list) = call("GET", &server.url("/api/suppressions"), &token, None, None);
    assert_eq!(status, 200);
    assert_eq!(list["suppressions"][0]["address"], "bob@example.net");
    assert_eq!(list["suppressions"][0]["reason"], "unsubscribe");
    let csv = ureq::get(&server.url("/api/suppressions.csv"))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "address,reason,since,copy_id");
    assert!(
        lines[1].starts_with("bob@example.net,unsubscribe,"),
        "{csv}"
    );
    // A teammate shares the team's list; another team and a user without one have their own.
    let mate = add_user(&db.url, "amy@example.com", PASSWORD);
    let (_, shared) = call("GET", &server.url("/api/suppressions"), &mate, None, None);
    assert_eq!(shared["suppressions"], list["suppressions"]);
    let other = add_user_in(&db.url, "zoe@example.org", PASSWORD, Some("other"));
    let alone = add_user_in(&db.url, "yan@example.org", PASSWORD, None);
    for token in [&other, &alone] {
        let (_, theirs) = call("GET", &server.url("/api/suppressions"), token, None, None);
        assert_eq!(theirs["suppressions"], json!([]));
    }
    let id = list["suppressions"][0]["id"].as_i64().unwrap();
    let (status, _) = call(
        "DELETE",
        &server.url(&format!("/api/suppressions/{id}")),
        &other,
        None,
        None,
    );
    assert_eq!(status, 404, "another's entry is not theirs to remove");

    // Erasure forgets the address and keeps the digest: bob is still never mailed.
    let (ok, _, err) = common::mailtally(
        &["erase", "--recipient", "bob@example.net"],
        &[("DATABASE_URL", &db.url)],
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(
        db_rows(
            &db.url,
            "SELECT coalesce(address, 'gone'), reason FROM suppressions"
        ),
        [["gone", "unsubscribe"]]
    );
    assert!(
        common::smtp::rcpt_reply(server.smtp, "ann@example.com", PASSWORD, "bob@example.net")
            .starts_with("550 5.7.1")
    );

    // Taken off the list (kept as history), bob may be mailed again.
    let (status, _) = call(
        "DELETE",
        &server.url(&format!("/api/suppressions/{id}")),
        &token,
        None,
        None,
    );
    assert_eq!(status, 204);
    let (_, active) = call("GET", &server.url("/api/suppressions"), &token, None, None);
    assert_eq!(active["suppressions"], json!([]));
    let (_, history) = call(
        "GET",
        &server.url("/api/suppressions?history=true"),
        &token,
        None,
        None,
    );
    assert!(history["suppressions"][0]["removed_at"].is_string());
    submit_as(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        &["bob@example.net"],
        &message("bob@example.net", "Again"),
    );
}

#[test]
fn suppressed_recipients_can_be_recorded_and_follow_ups_skip_them() {
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[
            ("SUPPRESSED_RECIPIENTS", "record"),
            ("FOLLOWUP_CHECK_EVERY", "0.2"),
            ("SENDER_RATE_PER_MINUTE", "0"),
        ],
    );
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let (status, body) = call(
        "POST",
        &server.url("/api/suppressions"),
        &token,
        Some(&json!({"address": "Bob@Example.net", "note": "asked by phone"})),
        None,
    );
    assert_eq!((status, &body["added"]), (201, &json!(true)), "{body}");
    let (status, _) = call(
        "POST",
        &server.url("/api/suppressions"),
        &token,
        Some(&json!({"address": "not an address"})),
        None,
    );
    assert_eq!(status, 422);

    // Recorded, not refused: bob's copy is `suppressed`, never delivered, not counted as sent.
    submit_as(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        &["bob@example.net", "carol@example.net"],
        &message("bob@example.net, carol@example.net", "Offer"),
    );
    assert!(wait_until(Duration::from_secs(20), || db_i64(
        &db.url,
        "SELECT count(*) FROM copies WHERE delivered_via = 'capture'"
    ) == 1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        db_rows(
            &db.url,
            "SELECT recipient, status FROM copies ORDER BY recipient"
        ),
        [
            ["bob@example.net", "suppressed"],
            ["carol@example.net", "delivered"]
        ]
    );
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events e JOIN copies c ON c.id = e.copy_id
             WHERE c.recipient = 'bob@example.net'"
        ),
        0,
        "no accepted event: a suppressed copy is not sent"
    );

    // A follow-up that comes due for an address suppressed since is cancelled, not sent.
    for (key, html) in [("intro", "<p>Hello</p>"), ("nudge", "<p>Any thoughts?</p>")] {
        let t = json!({"key": key, "subject": key, "html": html});
        assert_eq!(
            call(
                "POST",
                &server.url("/api/templates"),
                &token,
                Some(&t),
                None
            )
            .0,
            201
        );
    }
    let rule = json!({"trigger_template": "intro", "condition": "no_open", "within_seconds": 2,
                      "followup_template": "nudge"});
    let (status, body) = call(
        "POST",
        &server.url("/api/automations"),
        &token,
        Some(&rule),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        "POST",
        &server.url("/api/group-emails"),
        &token,
        Some(
            &json!({"template": "intro", "recipients": [{"email": "dan@example.net"}, {"email": "eve@example.net"}]}),
        ),
        None,
    );
    assert_eq!(status, 202, "{body}");
    assert!(wait_until(Duration::from_secs(20), || db_i64(
        &db.url,
        "SELECT count(*) FROM followups WHERE status = 'pending'"
    ) == 2));
    let (status, _) = call(
        "POST",
        &server.url("/api/suppressions"),
        &token,
        Some(&json!({"address": "dan@example.net"})),
        None,
    );
    assert_eq!(status, 201);
    assert!(
        wait_until(Duration::from_secs(30), || db_i64(
            &db.url,
            "SELECT count(*) FROM followups WHERE status <> 'pending'"
        ) == 2),
        "{:?}",
        db_rows(&db.url, "SELECT recipient, status, reason FROM followups")
    );
    assert_eq!(
        db_rows(
            &db.url,
            "SELECT recipient, status, coalesce(reason, '') FROM followups ORDER BY recipient"
        ),
        [
            ["dan@example.net", "cancelled", "suppressed"],
            ["eve@example.net", "sent", ""]
        ]
    );
}
