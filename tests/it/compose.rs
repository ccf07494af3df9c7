//! Templates, group emails and `X-Mailtally-Group: separate`, end to end: the API composes one
//! copy per recipient, the relay's queue delivers them to a real smtp-sink, and each copy is
//! checked as the recipient gets it.

use crate::common;

use std::time::Duration;

use common::api::{call, received, Received};
use common::smtp::{add_user, db_i64, db_rows, delivered, submit_as, wait_until, Sink};
use common::{Server, TestDb};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn recipients(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut fields = json!({"company": format!("Co {i}")});
            if i % 5 != 0 {
                fields["first_name"] = json!(format!("Name{i}"));
            }
            json!({"email": format!("r{i}@example.net"), "name": format!("R {i}"), "fields": fields})
        })
        .collect()
}

#[test]
fn a_group_email_gives_each_recipient_their_own_copy_once() {
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let server = Server::start(
        &db.url,
        &[
            ("UPSTREAM_URL", &sink.url()),
            ("SENDER_RATE_PER_MINUTE", "0"),
        ],
    );
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let api = |p: &str| server.url(p);

    let (status, body) = call(
        "PUT",
        &api("/api/me/signature"),
        &token,
        Some(&json!({
        "html": "<p class=\"sig\">Ann, ACME</p>", "text": "Ann, ACME"})),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let template = json!({
        "key": "intro", "name": "Intro",
        "subject": "An offer for {{company}}",
        "html": "<html><body><p>Hi {{first_name|there}},</p><p>see <a href=\"https://example.com/offer\">the offer</a></p></body></html>",
        "text": "Hi {{first_name|there}}, see https://example.com/offer",
    });
    let (status, body) = call(
        "POST",
        &api("/api/templates"),
        &token,
        Some(&template),
        None,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key"], "intro");
    let (status, _) = call(
        "POST",
        &api("/api/templates"),
        &token,
        Some(&template),
        None,
    );
    assert_eq!(status, 409, "a key is created once");
    // Real templates are often far larger than a small JSON limit.
    let big =
        json!({"key": "big", "subject": "Big", "html": format!("<p>{}</p>", "x".repeat(300_000))});
    let (status, body) = call("POST", &api("/api/templates"), &token, Some(&big), None);
    assert_eq!(status, 201, "{body}");
    call("DELETE", &api("/api/templates/big"), &token, None, None);
    let (status, list) = call("GET", &api("/api/templates"), &token, None, None);
    assert_eq!(status, 200);
    assert_eq!(list["templates"].as_array().unwrap().len(), 1);

    let request = json!({"template": "intro", "recipients": recipients(50), "deal": "d-7"});
    let (status, first) = call(
        "POST",
        &api("/api/group-emails"),
        &token,
        Some(&request),
        Some("k-1"),
    );
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["copies"], 50);

    assert!(
        wait_until(Duration::from_secs(60), || delivered(&db.url) == 50),
        "50 copies delivered: {} so far\n{}",
        sink.count(),
        server.log_text()
    );
    let mut seen_to = std::collections::BTreeSet::new();
    let mut pixels = std::collections::BTreeSet::new();
    for dump in sink.messages() {
        let Received {
            subject,
            html,
            text,
            to,
            ..
        } = received(&dump);
        assert_eq!(to.len(), 1, "To names one recipient: {to:?}");
        let i: usize = to[0]
            .trim_start_matches('r')
            .split('@')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(seen_to.insert(i));
        assert_eq!(subject, format!("An offer for Co {i}"));
        let name = if i % 5 == 0 {
            "there".to_string()
        } else {
            format!("Name{i}")
        };
        assert!(html.contains(&format!("<p>Hi {name},</p>")), "{html}");
        assert!(text.starts_with(&format!("Hi {name}, see ")), "{text}");
        let sig = html
            .find("<p class=\"sig\">Ann, ACME</p>")
            .expect("the signature");
        assert!(
            sig > html.find("the offer").unwrap() && sig < html.find("</body>").unwrap(),
            "{html}"
        );
        assert!(
            text.trim_end().ends_with("-- \r\nAnn, ACME")
                || text.trim_end().ends_with("-- \nAnn, ACME"),
            "{text:?}"
        );
        assert!(
            !html.contains("https://example.com/offer\""),
            "the link is tracked"
        );
        assert!(!dump.contains("X-Mailtally"), "control headers never leave");
        let pixel = html
            .split("/o/")
            .nth(1)
            .expect("a pixel")
            .split('"')
            .next()
            .unwrap()
            .to_string();
        assert!(pixels.insert(pixel), "each copy has its own tokens");
    }
    assert_eq!(seen_to.len(), 50);
    assert_eq!(
        db_i64(&db.url, "SELECT count(*) FROM messages"),
        1,
        "one message in reports"
    );
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(DISTINCT header_message_id) FROM copies"
        ),
        50,
        "each copy has its own Message-ID"
    );

    // The same request again: the first answer, nothing sent.
    let (status, again) = call(
        "POST",
        &api("/api/group-emails"),
        &token,
        Some(&request),
        Some("k-1"),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);
    // The same key with another request is refused.
    let other = json!({"template": "intro", "recipients": recipients(2)});
    let (status, body) = call(
        "POST",
        &api("/api/group-emails"),
        &token,
        Some(&other),
        Some("k-1"),
    );
    assert_eq!(status, 422, "{body}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM copies"), 50);
    assert_eq!(sink.count(), 50);
}

#[test]
fn merge_values_cannot_inject_and_missing_fields_send_nothing() {
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let server = Server::start(&db.url, &[("UPSTREAM_URL", &sink.url())]);
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let url = server.url("/api/group-emails");
    let inline = |recipients: Value| {
        json!({
            "subject": "Hello {{name}}",
            "html": "<p title=\"{{name}}\">Dear {{name}}, {{note|no note}}</p>",
            "template_key": "inline",
            "recipients": recipients,
        })
    };

    // A line break in a subject field: refused before anything is queued.
    for bad in ["Bob\r\nBcc: victim@example.org", "Bob\nX-Evil: 1", "Bob\rX"] {
        let req = inline(json!([
            {"email": "ok@example.net", "fields": {"name": "Ok"}},
            {"email": "bob@example.net", "fields": {"name": bad}},
        ]));
        let (status, body) = call("POST", &url, &token, Some(&req), None);
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("bob@example.net"),
            "{body}"
        );
    }
    // A field without a default that one recipient lacks.
    let req = inline(json!([
        {"email": "ok@example.net", "fields": {"name": "Ok"}},
        {"email": "nameless@example.net"},
    ]));
    let (status, body) = call("POST", &url, &token, Some(&req), None);
    assert_eq!(status, 422);
    assert!(
        body["message"].as_str().unwrap().contains("`name`"),
        "{body}"
    );
    // Header values of the request itself.
    let mut req = inline(json!([{"email": "ok@example.net", "fields": {"name": "Ok"}}]));
    req["deal"] = json!("d\r\nBcc: x@example.org");
    assert_eq!(call("POST", &url, &token, Some(&req), None).0, 422);
    let req = inline(
        json!([{"email": "not an address\r\nBcc: x@example.org", "fields": {"name": "Ok"}}]),
    );
    assert_eq!(call("POST", &url, &token, Some(&req), None).0, 422);
    assert_eq!(
        db_i64(&db.url, "SELECT count(*) FROM copies"),
        0,
        "nothing was queued"
    );

    // HTML in a value is escaped, in text and in attributes.
    let script = "<script>alert(\"x\")</script>";
    let req = inline(json!([{"email": "eve@example.net", "fields": {"name": script}}]));
    let (status, body) = call("POST", &url, &token, Some(&req), None);
    assert_eq!(status, 202, "{body}");
    assert!(wait_until(Duration::from_secs(20), || delivered(&db.url) == 1));
    let dump = &sink.messages()[0];
    let Received { subject, html, .. } = received(dump);
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("Dear &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;, no note"),
        "{html}"
    );
    assert_eq!(
        subject,
        format!("Hello {script}"),
        "a subject is text, not HTML"
    );
    assert!(!dump.contains("\nBcc:"));
}

#[test]
fn separate_group_over_smtp_addresses_each_copy_alone_at_the_senders_pace() {
    const RATE_PER_MINUTE: u32 = 120;
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let server = Server::start(
        &db.url,
        &[
            ("UPSTREAM_URL", &sink.url()),
            ("SENDER_RATE_PER_MINUTE", &RATE_PER_MINUTE.to_string()),
        ],
    );
    add_user(&db.url, "ann@example.com", PASSWORD);
    let rcpts = [
        "a@example.net",
        "b@example.net",
        "c@example.org",
        "d@example.org",
    ];
    let message = "From: ann@example.com\r\nTo: a@example.net, b@example.net\r\nCc: c@example.org,\r\n d@example.org\r\nX-Mailtally-Group: separate\r\nSubject: News\r\nContent-Type: text/html\r\n\r\n<p>News <a href=\"https://example.com/n\">n</a></p>\r\n";
    submit_as(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        &rcpts,
        message.as_bytes(),
    );
    assert!(
        wait_until(Duration::from_secs(30), || delivered(&db.url) == 4),
        "{}",
        server.log_text()
    );
    let mut got = Vec::new();
    for dump in sink.messages() {
        assert!(!dump.contains("\nCc:"), "{dump}");
        assert!(!dump.contains("X-Mailtally"));
        let to = received(&dump).to;
        assert_eq!(to.len(), 1, "{dump}");
        got.push(to[0].clone());
    }
    got.sort();
    assert_eq!(got, rcpts);
    // At the sender's rate the copies got slots `gap` apart, and none was started before
    // its slot. A claim sets `next_attempt_at` to the claim time plus the lease, so
    // a delivered copy's start is `next_attempt_at - LEASE`; the sender's next free slot is
    // the end of the copies' slots. (`delivered_at` is when the upstream said 250, which the
    // first copy's connect makes late, so it cannot show the pace.)
    let lease = mailtally::deliver::LEASE.as_secs_f64();
    let gap = 60.0 / f64::from(RATE_PER_MINUTE);
    let all_slots = gap * rcpts.len() as f64;
    let rows = db_rows(
        &db.url,
        &format!(
            "SELECT extract(epoch FROM c.next_attempt_at - make_interval(secs => {lease})
                                   - (p.next_slot - make_interval(secs => {all_slots})))::text
             FROM copies c, sender_pacing p ORDER BY 1"
        ),
    );
    let started: Vec<f64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(started.len(), rcpts.len());
    // Sorted starts against sorted slots: the k-th start is no earlier than the k-th slot
    // whichever copy had which slot, and each start came within a few seconds.
    for (i, s) in started.iter().enumerate() {
        let slot = gap * i as f64;
        assert!(
            *s >= slot && *s < slot + 5.0,
            "copy {i} started at {s} s, slot at {slot} s: {started:?}"
        );
    }
}

#[test]
fn a_group_email_with_send_at_waits_for_its_time() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[("SENDER_RATE_PER_MINUTE", "60")]);
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let at = chrono::Utc::now() + chrono::Duration::hours(2);
    let req = json!({"subject": "Later", "html": "<p>later</p>", "send_at": at.to_rfc3339(),
                     "recipients": [{"email": "a@example.net"}, {"email": "b@example.net"}]});
    let (status, body) = call(
        "POST",
        &server.url("/api/group-emails"),
        &token,
        Some(&req),
        None,
    );
    assert_eq!(status, 202, "{body}");
    // Spread from its own time at the sender's pace (60 a minute), and not before.
    let due = db_rows(
        &db.url,
        "SELECT extract(epoch FROM next_attempt_at)::text FROM copies ORDER BY next_attempt_at",
    );
    let due: Vec<f64> = due.iter().map(|r| r[0].parse().unwrap()).collect();
    let at = at.timestamp_micros() as f64 / 1e6;
    assert!(
        (due[0] - at).abs() < 0.001 && (due[1] - at - 1.0).abs() < 0.001,
        "{due:?} {at}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(delivered(&db.url), 0);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM sender_pacing WHERE next_slot > now() + interval '1 hour'"
        ),
        0,
        "a scheduled send does not hold back what is sent now"
    );
}
