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
