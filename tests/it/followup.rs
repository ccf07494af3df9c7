//! Follow-up automations against two nodes sharing one database: a recipient who did not open
//! gets the follow-up once, threaded; a person's open stops it, a machine's does not; an
//! unsubscribe cancels it.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::api::{call, received};
use common::smtp::{add_user, db_i64, db_rows, delivered, wait_until, Sink};
use common::{Server, TestDb};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";
const THUNDERBIRD: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0";

#[test]
fn silent_recipients_get_one_threaded_follow_up() {
    let db = TestDb::migrated();
    let sink = Sink::start(&[]);
    let settings = [
        ("UPSTREAM_URL", sink.url()),
        ("FOLLOWUP_CHECK_EVERY", "0.2".to_string()),
        ("SENDER_RATE_PER_MINUTE", "0".to_string()),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Server::start(&db.url, &settings);
    let b = Server::start(&db.url, &settings);
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let api = |p: &str| a.url(p);

    for (key, subject, html) in [
        (
            "intro",
            "Intro for {{company}}",
            "<p>Hello {{first_name|there}}</p>",
        ),
        (
            "nudge",
            "unused: a follow-up answers the thread",
            "<p>Any thoughts, {{first_name|there}}?</p>",
        ),
    ] {
        let t = json!({"key": key, "subject": subject, "html": html});
        assert_eq!(
            call("POST", &api("/api/templates"), &token, Some(&t), None).0,
            201
        );
    }
    // The window leaves room for a loaded machine between the open (after the 5 s prefetch
    // window) and the decision.
    let rule = json!({"trigger_template": "intro", "condition": "no_open", "within_seconds": 16,
                      "followup_template": "nudge"});
    let (status, body) = call("POST", &api("/api/automations"), &token, Some(&rule), None);
    assert_eq!(status, 201, "{body}");
    let bad = json!({"trigger_template": "intro", "condition": "no_idea", "within_seconds": 8,
                     "followup_template": "nudge"});
    assert_eq!(
        call("POST", &api("/api/automations"), &token, Some(&bad), None).0,
        422
    );

    let people = ["silent", "reader", "machine", "leaver"];
    let recipients: Vec<_> = people
        .iter()
        .map(|p| {
            json!({"email": format!("{p}@example.net"),
                        "fields": {"company": format!("{p} Inc"), "first_name": p}})
        })
        .collect();
    let req = json!({"template": "intro", "recipients": recipients});
    let (status, body) = call(
        "POST",
        &b.url("/api/group-emails"),
        &token,
        Some(&req),
        None,
    );
    assert_eq!(status, 202, "{body}");
    assert!(wait_until(Duration::from_secs(30), || delivered(&db.url) == 4));

    // Each copy's pixel, by recipient, and the Message-ID it went out with.
    let mut pixel = BTreeMap::new();
    let mut sent_id = BTreeMap::new();
    for dump in sink.messages() {
        let r = received(&dump);
        let url = r
            .html
            .split("src=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        pixel.insert(r.to[0].clone(), url);
        sent_id.insert(r.to[0].clone(), r.message_id.unwrap());
    }
    // A link scanner fetches at once (HEAD): a machine, which must not stop the follow-up.
    let head = ureq::head(&pixel["machine@example.net"]).call().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        call(
            "POST",
            &api("/api/unsubscribes"),
            &token,
            Some(&json!({"recipient": "Leaver@example.net"})),
            None
        )
        .0,
        200
    );
    // A person opens a while after delivery (not a prefetch).
    std::thread::sleep(Duration::from_millis(5600));
    let open = ureq::get(&pixel["reader@example.net"])
        .set("User-Agent", THUNDERBIRD)
        .call()
        .unwrap();
    assert_eq!(open.status(), 200);

    assert!(
        wait_until(Duration::from_secs(30), || db_i64(
            &db.url,
            "SELECT count(*) FROM followups WHERE status <> 'pending'"
        ) == 4),
        "{}",
        a.log_text()
    );
    let decided: BTreeMap<String, String> = db_rows(
        &db.url,
        "SELECT recipient, status || ':' || coalesce(reason, '') FROM followups",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    assert_eq!(decided["silent@example.net"], "sent:");
    assert_eq!(decided["machine@example.net"], "sent:");
    assert_eq!(decided["reader@example.net"], "skipped:opened");
    assert_eq!(decided["leaver@example.net"], "cancelled:unsubscribed");

    assert!(wait_until(Duration::from_secs(20), || delivered(&db.url) == 6));
    // More scheduler ticks on both nodes change nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 6, "each follow-up is sent once");
    let mut followed = Vec::new();
    for dump in sink.messages() {
        let r = received(&dump);
        if !r.subject.starts_with("Re: ") {
            continue;
        }
        let to = r.to[0].clone();
        let who = to.split('@').next().unwrap();
        assert_eq!(r.subject, format!("Re: Intro for {who} Inc"));
        assert_eq!(
            r.in_reply_to.as_deref(),
            Some(sent_id[&to].as_str()),
            "threaded"
        );
        assert_eq!(r.references.as_deref(), Some(sent_id[&to].as_str()));
        assert!(
            r.html.contains(&format!("Any thoughts, {who}?")),
            "{}",
            r.html
        );
        followed.push(to);
    }
    followed.sort();
    assert_eq!(followed, ["machine@example.net", "silent@example.net"]);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM messages WHERE template_key = 'nudge'"
        ),
        2
    );

    // Erasing a recipient removes their follow-ups and their unsubscribe record with the rest.
    let (ok, out, err) = common::mailtally(
        &["erase", "--recipient", "LEAVER@example.net"],
        &[("DATABASE_URL", &db.url)],
        b"",
    );
    assert!(ok, "{out}{err}");
    for table in ["followups", "unsubscribes", "copies"] {
        let sql =
            format!("SELECT count(*) FROM {table} WHERE lower(recipient) = 'leaver@example.net'");
        assert_eq!(db_i64(&db.url, &sql), 0, "{table}");
    }
}

#[test]
fn follow_ups_land_at_the_hour_of_the_recipients_day() {
    let db = TestDb::migrated();
    let at = |base: &str, tz: &str, hour: i32| {
        db_rows(
            &db.url,
            &format!(
                "SELECT to_char(mailtally_at_hour('{base}'::timestamptz, '{tz}', {hour}) AT TIME ZONE 'UTC',
                                'YYYY-MM-DD HH24:MI')"
            ),
        )[0][0]
            .clone()
    };
    // 05:30 in New York: 09:00 the same day.
    assert_eq!(
        at("2026-11-27 10:30Z", "America/New_York", 9),
        "2026-11-27 14:00"
    );
    // 11:30 in Berlin: 09:00 the next day.
    assert_eq!(
        at("2026-11-27 10:30Z", "Europe/Berlin", 9),
        "2026-11-28 08:00"
    );
    // Across the spring change of clocks: 09:00 CEST is 07:00 UTC.
    assert_eq!(
        at("2026-03-28 12:00Z", "Europe/Berlin", 9),
        "2026-03-29 07:00"
    );
    // An unknown zone counts as UTC; exactly on the hour is now.
    assert_eq!(
        at("2026-11-27 10:30Z", "Mars/Olympus", 9),
        "2026-11-28 09:00"
    );
    assert_eq!(at("2026-11-27 09:00Z", "", 9), "2026-11-27 09:00");
}
