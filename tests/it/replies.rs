//! Reply detection against a real IMAP server: Dovecot, started with a throwaway
//! configuration and mailbox. A reply appended to the sender's mailbox becomes a `reply` event
//! of the copy it answers within seconds; auto-replies and bounces do not; a restart resumes
//! from the checkpoint without counting anything twice.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::api::{call, received};
use common::dovecot::Dovecot;
use common::smtp::{add_user, db_i64, db_rows, delivered, wait_until, Sink};
use common::{Server, TestDb};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";
const IMAP_PASSWORD: &str = "imap-secret-Zq8";
const MAILBOX_KEY: &str = "a-mailbox-key-for-tests-0123456789abcdef";

fn reply(from: &str, answers: &str, extra: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: ann@example.com\r\nSubject: {subject}\r\nMessage-ID: <{}@example.net>\r\n\
         In-Reply-To: {answers}\r\nReferences: {answers}\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n{extra}\r\nThanks!\r\n",
        uuid::Uuid::new_v4()
    )
}

#[test]
fn replies_in_the_senders_mailbox_become_reply_events() {
    let Some(imap) = Dovecot::start("ann@example.com", IMAP_PASSWORD, true) else {
        eprintln!("skipped: Dovecot is not installed (Debian package dovecot-imapd)");
        return;
    };
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let mut server = Server::start(
        &db.url,
        &[
            ("UPSTREAM_URL", &sink.url()),
            ("MAILBOX_KEY", MAILBOX_KEY),
            // Dovecot has IDLE: replies must show within seconds without polling.
            ("MAILBOX_POLL_EVERY", "600"),
            ("FOLLOWUP_CHECK_EVERY", "0.2"),
            ("SENDER_RATE_PER_MINUTE", "0"),
            // Dovecot runs on loopback, without TLS.
            ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("MAILBOX_ALLOW_PLAINTEXT", "true"),
        ],
    );
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let api = |s: &Server, p: &str| s.url(p);

    for key in ["intro", "nudge"] {
        let t =
            json!({"key": key, "subject": "Intro", "html": "<p>Hello {{first_name|there}}</p>"});
        assert_eq!(
            call(
                "POST",
                &api(&server, "/api/templates"),
                &token,
                Some(&t),
                None
            )
            .0,
            201
        );
    }
    let rule = json!({"trigger_template": "intro", "condition": "no_reply", "within_hours": 1,
                      "followup_template": "nudge"});
    assert_eq!(
        call(
            "POST",
            &api(&server, "/api/automations"),
            &token,
            Some(&rule),
            None
        )
        .0,
        201
    );
    let people = ["bob@example.net", "carol@example.net", "dave@example.net"];
    let recipients: Vec<_> = people.iter().map(|p| json!({"email": p})).collect();
    let (status, sent) = call(
        "POST",
        &api(&server, "/api/group-emails"),
        &token,
        Some(&json!({"template": "intro", "recipients": recipients})),
        None,
    );
    assert_eq!(status, 202, "{sent}");
    assert!(wait_until(Duration::from_secs(30), || delivered(&db.url) == 3));
    let mut message_id = std::collections::BTreeMap::new();
    for dump in sink.messages() {
        let r = received(&dump);
        message_id.insert(r.to[0].clone(), format!("<{}>", r.message_id.unwrap()));
    }
    assert!(wait_until(Duration::from_secs(10), || db_i64(
        &db.url,
        "SELECT count(*) FROM followups WHERE status = 'pending'"
    ) == 3));

    let mailbox = json!({"host": "127.0.0.1", "port": imap.port, "security": "none",
                         "username": "ann@example.com", "password": IMAP_PASSWORD});
    let (status, shown) = call(
        "PUT",
        &api(&server, "/api/me/mailbox"),
        &token,
        Some(&mailbox),
        None,
    );
    assert_eq!(status, 200, "{shown}");
    assert!(!shown.to_string().contains(IMAP_PASSWORD), "{shown}");
    let stored = db_rows(
        &db.url,
        "SELECT encode(password_sealed, 'escape') FROM mailboxes",
    );
    assert!(
        !stored[0][0].contains(IMAP_PASSWORD),
        "the password is sealed at rest"
    );

    let bob = &message_id["bob@example.net"];
    imap.append(
        "ann@example.com",
        IMAP_PASSWORD,
        &reply("Bob <bob@example.net>", bob, "", "Re: Intro"),
    );
    let replies = || db_i64(&db.url, "SELECT count(*) FROM events WHERE kind = 'reply'");
    assert!(
        wait_until(Duration::from_secs(15), || replies() == 1),
        "{:?}\n{}",
        db_rows(&db.url, "SELECT last_uid::text, coalesce(last_error, ''), coalesce(lease_owner, ''), coalesce(last_sync_at::text, '') FROM mailboxes"),
        ureq::get(&server.url("/metrics")).call().unwrap().into_string().unwrap().lines().filter(|l| l.contains("mailbox")).collect::<Vec<_>>().join("\n")
    );
    let bob_copy = db_rows(
        &db.url,
        "SELECT c.recipient FROM events e JOIN copies c ON c.id = e.copy_id WHERE e.kind = 'reply'",
    );
    assert_eq!(bob_copy[0][0], "bob@example.net");
    // The reply cancelled bob's pending follow-up.
    assert!(wait_until(Duration::from_secs(5), || {
        db_i64(
        &db.url,
        "SELECT count(*) FROM followups WHERE recipient = 'bob@example.net' AND status = 'cancelled' AND reason = 'replied'"
    ) == 1
    }));

    // An out-of-office and a bounce: read, not counted.
    let carol = &message_id["carol@example.net"];
    let dave = &message_id["dave@example.net"];
    imap.append(
        "ann@example.com",
        IMAP_PASSWORD,
        &reply(
            "carol@example.net",
            carol,
            "Auto-Submitted: auto-replied\r\n",
            "Automatic reply: Intro",
        ),
    );
    imap.append(
        "ann@example.com",
        IMAP_PASSWORD,
        &reply(
            "MAILER-DAEMON@mx.example.net",
            dave,
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
            "Undelivered Mail Returned to Sender",
        ),
    );
    assert!(
        wait_until(Duration::from_secs(15), || db_i64(
            &db.url,
            "SELECT last_uid FROM mailboxes"
        ) == 3),
        "{}",
        server.log_text()
    );
    assert_eq!(replies(), 1, "auto-replies and bounces are not replies");

    // Down for a while: a reply arrives meanwhile; the restart reads from the checkpoint.
    server.stop();
    imap.append(
        "ann@example.com",
        IMAP_PASSWORD,
        &reply("carol@example.net", carol, "", "Re: Intro"),
    );
    server.restart();
    assert!(
        wait_until(Duration::from_secs(15), || replies() == 2),
        "{}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(replies(), 2, "nothing counted twice after the restart");
    assert_eq!(db_i64(&db.url, "SELECT last_uid FROM mailboxes"), 4);

    // Reports and the timeline.
    let (ok, out) = (
        common::mailtally(&["aggregate"], &[("DATABASE_URL", &db.url)], b"").0,
        (),
    );
    assert!(ok, "{out:?}");
    let (status, report) = call(
        "GET",
        &api(&server, "/api/reports/templates"),
        &token,
        None,
        None,
    );
    assert_eq!(status, 200);
    let intro = report["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template"] == "intro")
        .unwrap()
        .clone();
    assert_eq!(intro["replies"], 2, "{intro}");
    assert_eq!(intro["unique_replies"], 2);
    assert!(
        (intro["reply_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{intro}"
    );
    let id = sent["message_id"].as_str().unwrap();
    let (status, detail) = call(
        "GET",
        &api(&server, &format!("/api/messages/{id}")),
        &token,
        None,
        None,
    );
    assert_eq!(status, 200);
    assert!(
        detail.to_string().contains("\"kind\":\"reply\""),
        "{detail}"
    );
    let page = ureq::get(&api(&server, &format!("/insights/messages/{id}")))
        .set("Cookie", &format!("mailtally_token={token}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(page.contains("kind-reply"), "the timeline shows replies");
}

#[test]
fn a_server_without_idle_is_polled() {
    let Some(imap) = Dovecot::start("ann@example.com", IMAP_PASSWORD, false) else {
        eprintln!("skipped: Dovecot is not installed (Debian package dovecot-imapd)");
        return;
    };
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[
            ("MAILBOX_KEY", MAILBOX_KEY),
            ("MAILBOX_POLL_EVERY", "1"),
            ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("MAILBOX_ALLOW_PLAINTEXT", "true"),
        ],
    );
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let req =
        json!({"subject": "Hi", "html": "<p>Hi</p>", "recipients": [{"email": "bob@example.net"}]});
    let (status, body) = call(
        "POST",
        &server.url("/api/group-emails"),
        &token,
        Some(&req),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let sent = db_rows(&db.url, "SELECT header_message_id FROM copies");
    imap.watched_by(&server, &token, "ann@example.com", IMAP_PASSWORD);
    imap.append(
        "ann@example.com",
        IMAP_PASSWORD,
        &reply("bob@example.net", &sent[0][0], "", "Re: Hi"),
    );
    assert!(
        wait_until(Duration::from_secs(15), || db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'reply'"
        ) == 1),
        "{}",
        server.log_text()
    );

    // Wrong credentials are reported, not retried silently.
    let wrong = json!({"host": "127.0.0.1", "port": imap.port, "security": "none",
                       "username": "ann@example.com", "password": "wrong"});
    assert_eq!(
        call(
            "PUT",
            &server.url("/api/me/mailbox"),
            &token,
            Some(&wrong),
            None
        )
        .0,
        200
    );
    assert!(wait_until(Duration::from_secs(15), || {
        let (_, status) = call("GET", &server.url("/api/me/mailbox"), &token, None, None);
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("login"))
    }));
    assert!(
        !server.log_text().contains("wrong\""),
        "no password in the log"
    );
}

/// ann's Dovecot mailbox (with IDLE), a server that may watch it, and ann's API token; `None`
/// (with a message) without Dovecot.
fn reports_world() -> Option<(Dovecot, TestDb, Server, String)> {
    let Some(imap) = Dovecot::start("ann@example.com", IMAP_PASSWORD, true) else {
        eprintln!("skipped: Dovecot is not installed (Debian package dovecot-imapd)");
        return None;
    };
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[
            ("MAILBOX_KEY", MAILBOX_KEY),
            ("MAILBOX_POLL_EVERY", "600"),
            ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("MAILBOX_ALLOW_PLAINTEXT", "true"),
        ],
    );
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    Some((imap, db, server, token))
}

/// Bounces and complaints appended to the sender's real mailbox (DSNs as Postfix writes them,
/// a Yahoo feedback report, an auto-reply): each becomes an event of the copy it names, a hard
/// bounce and a complaint put the address on the suppression list, the same report read twice
/// counts once, and an auto-reply is none of these.
#[test]
fn bounces_and_complaints_in_the_mailbox_become_events_and_suppressions() {
    let Some((imap, db, server, token)) = reports_world() else {
        return;
    };
    // The originals the samples return, sent by ann over SMTP.
    for (to, mid) in [
        (
            "nobody@example.org",
            "<0195f7a2-3b1c-7d4e-8f90-a1b2c3d4e5f6@mail.example.com>",
        ),
        ("bob@slow.example.net", "<q1-2026@mail.example.com>"),
        ("heidi@yahoo.com", "<news-0323@mail.example.com>"),
    ] {
        let message = format!(
            "From: ann@example.com\r\nTo: {to}\r\nSubject: News\r\nMessage-ID: {mid}\r\nContent-Type: text/html\r\n\r\n<p>News</p>\r\n"
        );
        common::smtp::submit_as(
            server.smtp,
            "ann@example.com",
            PASSWORD,
            &[to],
            message.as_bytes(),
        );
    }
    imap.watched_by(&server, &token, "ann@example.com", IMAP_PASSWORD);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/deliverability_samples");
    let sample = |name: &str| std::fs::read_to_string(samples.join(name)).unwrap();
    for name in [
        "postfix-hard.eml",
        "postfix-delayed.eml",
        "arf-yahoo.eml",
        "auto-reply.eml",
        "postfix-hard.eml",
    ] {
        imap.append("ann@example.com", IMAP_PASSWORD, &sample(name));
    }
    let reported = "SELECT c.recipient, e.kind, coalesce(e.reason, ''), coalesce(e.detail, '')
                    FROM events e JOIN copies c ON c.id = e.copy_id
                    WHERE e.kind IN ('bounced', 'deferred', 'complaint') ORDER BY c.recipient";
    assert!(
        wait_until(Duration::from_secs(20), || db_rows(&db.url, reported).len()
            == 3
            && db_i64(&db.url, "SELECT last_uid FROM mailboxes") == 5),
        "{:?}\n{}",
        db_rows(&db.url, reported),
        server.log_text()
    );
    let rows = db_rows(&db.url, reported);
    assert_eq!(rows[0][..3], ["bob@slow.example.net", "deferred", "soft"]);
    assert!(rows[0][3].starts_with("4.4.1"), "{:?}", rows[0]);
    assert_eq!(rows[1][..3], ["heidi@yahoo.com", "complaint", "abuse"]);
    assert_eq!(rows[2][..3], ["nobody@example.org", "bounced", "hard"]);
    assert!(rows[2][3].starts_with("5.1.1"), "{:?}", rows[2]);
    assert_eq!(
        db_rows(
            &db.url,
            "SELECT address, reason FROM suppressions ORDER BY address"
        ),
        [
            ["heidi@yahoo.com", "complaint"],
            ["nobody@example.org", "hard_bounce"]
        ]
    );
    assert_eq!(
        db_i64(&db.url, "SELECT count(*) FROM events WHERE kind = 'reply'"),
        0
    );
    // The report counts them, split, and they add up with the events.
    let mut row = json!(null);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let (_, report) = call(
                "GET",
                &server.url("/api/reports/templates?class=all"),
                &token,
                None,
                None,
            );
            row = report["templates"][0].clone();
            row["complaints"] == 1 && row["bounced"] == 1
        }),
        "{row}"
    );
    assert_eq!(
        (
            &row["sent"],
            &row["delivered"],
            &row["hard_bounced"],
            &row["soft_bounced"],
            &row["complaints"],
            &row["unsubscribes"]
        ),
        (
            &json!(3),
            &json!(2),
            &json!(1),
            &json!(0),
            &json!(1),
            &json!(0)
        ),
        "{row}"
    );
    assert_eq!(row["complaint_rate"], json!(0.5));
    // The hard-bounced address is refused from now on.
    let refused = common::smtp::rcpt_reply(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        "nobody@example.org",
    );
    assert!(
        refused.starts_with("550 5.7.1") && refused.contains("bounced permanently"),
        "{refused}"
    );
}

/// Every bounce and complaint shape of the samples (Postfix, Exchange 2003 and Office 365,
/// Gmail, qmail, Exim, one with the whole original attached, one with only its headers, ARF
/// and JMRP reports) is recognised, matched to the copy it returns and classified once it is in
/// the sender's real mailbox; the messages that are none of these (an auto-reply, a reply that
/// quotes a bounce, a newsletter, a read receipt, a forwarded bounce) change nothing.
#[test]
fn every_report_shape_is_matched_to_its_copy_and_nothing_else_is() {
    use std::collections::BTreeMap;
    let Some((imap, db, server, token)) = reports_world() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/deliverability_samples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // What each sample says, by the reader itself: the originals to send, and what to expect.
    let mut expected = BTreeMap::new();
    let mut sent = std::collections::BTreeSet::new();
    let mut negatives = 0;
    for name in &names {
        let raw = std::fs::read(dir.join(name)).unwrap();
        let Some(report) = mailtally::deliverability::read(&raw) else {
            negatives += 1;
            continue;
        };
        let Some(mid) = report.original_message_id.clone() else {
            continue;
        };
        for r in &report.recipients {
            let recipient = r.address.to_lowercase();
            if sent.insert((recipient.clone(), mid.clone())) {
                let message = format!(
                    "From: ann@example.com\r\nTo: {recipient}\r\nSubject: {name}\r\nMessage-ID: {mid}\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>\r\n"
                );
                common::smtp::submit_as(
                    server.smtp,
                    "ann@example.com",
                    PASSWORD,
                    &[&recipient],
                    message.as_bytes(),
                );
            }
            let kind = match (r.kind, r.action.as_deref()) {
                (mailtally::deliverability::Kind::Complaint, _) => "complaint",
                (mailtally::deliverability::Kind::SoftBounce, Some("delayed")) => "deferred",
                _ => "bounced",
            };
            expected.insert((recipient, name.clone()), kind);
        }
    }
    assert!(expected.len() >= 8, "{expected:?}");
    assert!(
        negatives >= 4,
        "the samples hold messages that are not reports"
    );
    imap.watched_by(&server, &token, "ann@example.com", IMAP_PASSWORD);
    for name in &names {
        let raw = std::fs::read_to_string(dir.join(name)).unwrap();
        imap.append("ann@example.com", IMAP_PASSWORD, &raw);
    }
    let total = names.len() as i64;
    assert!(
        wait_until(Duration::from_secs(30), || db_i64(
            &db.url,
            "SELECT coalesce(max(last_uid), 0) FROM mailboxes"
        ) == total),
        "{}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    // Each report's events, by recipient and the subject its original was sent with.
    let rows = db_rows(
        &db.url,
        "SELECT c.recipient, m.subject, e.kind FROM events e JOIN copies c ON c.id = e.copy_id
         JOIN messages m ON m.id = e.message_id
         WHERE e.kind IN ('bounced', 'deferred', 'complaint') ORDER BY 1, 2, 3",
    );
    // A bounce read from prose is marked with its shape.
    let qmail = db_rows(
        &db.url,
        "SELECT e.detail FROM events e JOIN copies c ON c.id = e.copy_id
         WHERE c.recipient = 'dave@old-isp.example' AND e.kind = 'bounced'",
    );
    assert!(qmail[0][0].ends_with("(qmail)"), "{qmail:?}");
    let mut got: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in &rows {
        got.entry((r[0].clone(), r[1].clone()))
            .or_default()
            .push(r[2].clone());
    }
    // A copy sent once for several samples (the same original returned twice) gets each
    // sample's event; every expected event is there, and nothing else.
    for ((recipient, name), kind) in &expected {
        let any = got
            .iter()
            .filter(|((r, _), _)| r == recipient)
            .any(|(_, kinds)| kinds.iter().any(|k| k == kind));
        assert!(
            any,
            "{name}: no {kind} event of {recipient}'s copy in {got:?}"
        );
    }
    let recipients: std::collections::BTreeSet<&String> = expected.keys().map(|(r, _)| r).collect();
    for (recipient, _) in got.keys() {
        assert!(
            recipients.contains(recipient),
            "an event of {recipient}, whom no report names: {got:?}"
        );
    }
    // The reply that quotes a bounce answers one of the originals: a reply, not a bounce; the
    // auto-reply is neither.
    assert_eq!(
        db_rows(&db.url, "SELECT detail FROM events WHERE kind = 'reply'"),
        [["ken@example.net"]]
    );
}
