//! Delivery to a real upstream (Postfix's smtp-sink): byte-identical copies and bounces on 5xx
//! without retry. (An upstream that is down or stalls: tests/faults/upstream.rs.)

use crate::common;

use std::time::Duration;

use common::smtp::{add_user, as_dumped, db_i64, db_rows, submit_as, wait_until, Sink};
use common::{Server, TestDb};

const PASSWORD: &str = "correct horse battery";

fn submit(server: &Server, recipients: &[&str], message: &[u8]) -> String {
    submit_as(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        recipients,
        message,
    )
}

#[test]
fn smtp_sink_receives_what_was_accepted_byte_for_byte() {
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let server = Server::start(&db.url, &[("UPSTREAM_URL", &sink.url())]);
    add_user(&db.url, "ann@example.com", PASSWORD);
    let with_controls = "From: ann@example.com\r\nX-Mailtally-Template: t1\r\nSubject: Hello\r\nX-Mailtally-Track: opens\r\n\tclicks\r\nMessage-ID: <bytes@test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHéllo, world\r\n.a dot line\r\n\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>Hi <a href=\"https://example.com/x?a=1&b=2\">x</a></p>\r\n--b1--\r\n";
    submit(
        &server,
        &["bob@example.net", "carol@example.org"],
        with_controls.as_bytes(),
    );
    // smtp-sink has written its dump once the relay got its 250: once the copies are delivered.
    assert!(wait_until(Duration::from_secs(20), || {
        db_i64(
        &db.url,
        "SELECT count(*) FROM copies WHERE status = 'delivered' AND delivered_via = 'upstream' AND attempts = 1"
    ) == 2
    }));
    assert_eq!(sink.count(), 2, "{}", server.log_text());
    let expected = as_dumped(
        with_controls
            .replace("X-Mailtally-Template: t1\r\n", "")
            .replace("X-Mailtally-Track: opens\r\n\tclicks\r\n", "")
            .as_bytes(),
    );
    assert!(!expected.contains("X-Mailtally"));
    let got = sink.messages();
    assert_ne!(got[0], got[1], "each recipient's copy has its own tokens");
    for got in got {
        // The submitted message with tracked links and a pixel, nothing else.
        assert_eq!(common::untrack(&got, &server.url("")), expected);
    }
}

#[test]
fn a_permanent_refusal_bounces_with_the_upstream_text_and_is_not_retried() {
    let db = TestDb::migrated();
    let sink = Sink::start(&["-f", "RCPT", "-B", "550 5.1.1 No such user here"]);
    let server = Server::start(
        &db.url,
        &[("UPSTREAM_URL", &sink.url()), ("RETRY_SCHEDULE", "1")],
    );
    add_user(&db.url, "ann@example.com", PASSWORD);
    submit(
        &server,
        &["nobody@example.net"],
        b"Subject: bounce\r\nMessage-ID: <bounce@test>\r\n\r\nbody\r\n",
    );
    assert!(
        wait_until(Duration::from_secs(20), || db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'bounced'"
        ) == 1),
        "{:?}",
        db_rows(
            &db.url,
            "SELECT status, coalesce(last_error, '') FROM copies"
        )
    );
    std::thread::sleep(Duration::from_secs(2));
    let rows = db_rows(
        &db.url,
        "SELECT c.attempts::text, c.last_error, e.detail FROM copies c JOIN events e ON e.copy_id = c.id AND e.kind = 'bounced'",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "1", "no retry after a 5xx");
    assert!(rows[0][1].contains("No such user here"), "{rows:?}");
    assert!(rows[0][2].contains("550"), "{rows:?}");
    assert_eq!(sink.count(), 0);
    // The refused address is on the sender's suppression list: the next message to it is
    // refused at RCPT.
    assert_eq!(
        db_rows(&db.url, "SELECT address, reason FROM suppressions"),
        [["nobody@example.net", "hard_bounce"]]
    );
    let refused = common::smtp::rcpt_reply(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        "nobody@example.net",
    );
    assert!(refused.starts_with("550 5.7.1"), "{refused}");
}
