//! Webhooks and the live event stream against a running mailtally, a real PostgreSQL and real
//! HTTP receivers started by the tests.

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, TestDb};
use mailtally::accounts::{self, Role};
use mailtally::notify::signing;
use uuid::Uuid;

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A real HTTP server on a free port that records every request and answers 500 to the first
/// `fail_first` of them, 200 afterwards.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let n = {
                    let mut seen = record.lock().unwrap();
                    seen.push(Received { headers, body });
                    seen.len()
                };
                let status = if n <= fail_first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, seen }
    }

    fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    fn types(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .received()
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    }
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct World {
    db: TestDb,
    server: Server,
    /// email -> (user id, API token)
    users: HashMap<&'static str, (i64, String)>,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Users: ann and amy in team "north", bob in team "south".
fn world() -> World {
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[
            ("WEBHOOK_CLICK_HOLD", "1.5"),
            ("WEBHOOK_RETRY_SCHEDULE", "0.3"),
            ("WEBHOOK_DISABLE_AFTER", "4"),
            // The receivers run on loopback.
            ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ],
    );
    let mut users = HashMap::new();
    rt().block_on(async {
        let pool = db.pool();
        let mut client = pool.get().await.unwrap();
        for (email, team) in [
            ("ann@north.test", "north"),
            ("amy@north.test", "north"),
            ("bob@south.test", "south"),
        ] {
            let new =
                accounts::add_user(&mut client, email, "password-123", Some(team), Role::Member)
                    .await
                    .unwrap();
            users.insert(email, (new.user.id, new.api_token));
        }
    });
    World { db, server, users }
}

impl World {
    fn token(&self, email: &str) -> &str {
        &self.users[email].1
    }

    fn endpoint(
        &self,
        owner: &str,
        url: &str,
        types: &[&str],
        scope: &str,
        machine: bool,
    ) -> String {
        let resp: serde_json::Value = ureq::post(&self.server.url("/api/webhooks"))
            .set("authorization", &format!("Bearer {}", self.token(owner)))
            .send_json(serde_json::json!({
                "url": url, "event_types": types, "scope": scope, "include_machine": machine
            }))
            .unwrap_or_else(|e| panic!("create endpoint: {e}\n{}", self.server.log_text()))
            .into_json()
            .unwrap();
        resp["secret"].as_str().unwrap().to_string()
    }

    /// A message of `sender` with one copy; returns (message id, copy id).
    fn message(&self, sender: &str, visibility: &str, template: &str) -> (Uuid, Uuid) {
        let (message, copy) = (Uuid::now_v7(), Uuid::now_v7());
        let sender_id = self.users[sender].0;
        rt().block_on(async {
            let c = self.db.client().await;
            c.execute("INSERT INTO templates (key) VALUES ($1) ON CONFLICT DO NOTHING", &[&template]).await.unwrap();
            c.execute(
                "INSERT INTO messages (id, sender_id, team_id, visibility, template_key, subject, envelope_from, size_bytes)
                 SELECT $1, u.id, u.team_id, $3, $4, 'Proposal', u.email, 100 FROM users u WHERE u.id = $2",
                &[&message, &sender_id, &visibility, &template],
            )
            .await
            .unwrap();
            c.execute(
                "INSERT INTO copies (id, message_id, recipient, status) VALUES ($1, $2, 'prospect@example.com', 'delivered')",
                &[&copy, &message],
            )
            .await
            .unwrap();
            crate::common::set_links(&c, message, &["https://example.com/offer?a=1&b=2"]).await;
        });
        (message, copy)
    }

    /// Records an event as the tracking and delivery stages would.
    fn event(
        &self,
        message: Uuid,
        copy: Uuid,
        kind: &str,
        class: Option<&str>,
        link: Option<i32>,
    ) -> Uuid {
        let id = Uuid::now_v7();
        rt().block_on(async {
            self.db
                .client()
                .await
                .execute(
                    "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, class, reason, link_idx, client)
                     VALUES ($1, clock_timestamp(), $2, $3, $4, $5::text, CASE WHEN $5::text IS NULL THEN NULL ELSE 'test' END, $6, 'Thunderbird')",
                    &[&id, &message, &copy, &kind, &class, &link],
                )
                .await
                .unwrap();
        });
        id
    }

    /// A live stream connection of `email` (the page's cookie or a bearer token), open once its
    /// first comment has arrived; yields each line received.
    fn stream(&self, email: &str, cookie: bool) -> std::sync::mpsc::Receiver<String> {
        let mut stream = std::net::TcpStream::connect(self.server.http).unwrap();
        let auth = if cookie {
            format!("cookie: mailtally_token={}", self.token(email))
        } else {
            format!("authorization: Bearer {}", self.token(email))
        };
        write!(
            stream,
            "GET /api/events/stream HTTP/1.1\r\nhost: x\r\n{auth}\r\naccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut reader = BufReader::new(stream);
        // A read timeout keeps what it read of a line, so the line lives across the loop.
        let mut line = String::new();
        std::thread::spawn(move || loop {
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.send(std::mem::take(&mut line)).is_err() {
                        return;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        });
        // Wait for the stream's first comment: the subscription is live.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("stream opens");
            if line.starts_with(": mailtally event stream") {
                break;
            }
            assert!(Instant::now() < deadline);
        }
        rx
    }

    fn outbox(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        rt().block_on(async { self.db.client().await.query(sql, &[]).await.unwrap() })
    }
}

#[test]
fn webhooks_are_signed_retried_filtered_and_respect_visibility() {
    let w = world();
    // ann: her own messages, human events only; a flaky receiver for deliveries.
    let ann = Receiver::start(0);
    let ann_secret = w.endpoint(
        "ann@north.test",
        &ann.url,
        &["open.first", "open", "click"],
        "user",
        false,
    );
    let flaky = Receiver::start(2);
    let flaky_secret = w.endpoint("ann@north.test", &flaky.url, &["delivered"], "user", false);
    // ann again, with machine events.
    let machine = Receiver::start(0);
    w.endpoint("ann@north.test", &machine.url, &["open"], "user", true);
    // amy: her team's messages (what she may see of them); bob: his team's.
    let amy = Receiver::start(0);
    w.endpoint("amy@north.test", &amy.url, &["open"], "team", true);
    let bob = Receiver::start(0);
    w.endpoint(
        "bob@south.test",
        &bob.url,
        &["open.first", "open", "click", "delivered", "bounced"],
        "team",
        true,
    );

    let (private_msg, private_copy) = w.message("ann@north.test", "private", "proposal");
    let (team_msg, team_copy) = w.message("ann@north.test", "team", "proposal");

    let delivered = w.event(private_msg, private_copy, "delivered", None, None);
    let mpp_open = w.event(private_msg, private_copy, "open", Some("apple_mpp"), None);
    let human_open = w.event(private_msg, private_copy, "open", Some("human"), None);
    w.event(private_msg, private_copy, "open", Some("human"), None);
    let click = w.event(private_msg, private_copy, "click", Some("human"), Some(0));
    w.event(team_msg, team_copy, "open", Some("human"), None);

    // The flaky receiver fails twice, then accepts: three attempts of one notification.
    wait_until(
        "the flaky receiver's third attempt",
        Duration::from_secs(15),
        || flaky.received().len() >= 3,
    );
    let attempts = flaky.received();
    assert_eq!(attempts.len(), 3);
    let ids: Vec<&String> = attempts.iter().map(|r| &r.headers["webhook-id"]).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "retries keep the webhook-id: {ids:?}"
    );
    for r in &attempts {
        let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
        assert!(signing::verify(
            &flaky_secret,
            &r.headers["webhook-id"],
            ts,
            &r.body,
            &r.headers["webhook-signature"]
        ));
        assert_eq!(r.json()["data"]["event_id"], delivered.to_string());
    }
    wait_until(
        "the outbox row to end delivered",
        Duration::from_secs(5),
        || {
            w.outbox("SELECT 1 FROM webhook_outbox WHERE event_type = 'delivered' AND status = 'delivered' AND attempts = 3")
            .len()
            == 1
        },
    );

    // ann's human endpoint: for the private message open.first once (the human open, not the
    // MPP fetch), two opens and the click; for the team message open.first and open.
    wait_until("ann's notifications", Duration::from_secs(10), || {
        ann.received().len() >= 6
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        ann.types(),
        vec!["click", "open", "open", "open", "open.first", "open.first"]
    );
    for r in ann.received() {
        let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
        assert!(
            signing::verify(
                &ann_secret,
                &r.headers["webhook-id"],
                ts,
                &r.body,
                &r.headers["webhook-signature"]
            ),
            "signature verifies with the Standard Webhooks algorithm"
        );
        let body = r.json();
        assert_eq!(body["data"]["recipient"], "prospect@example.com");
        assert_eq!(body["data"]["template"], "proposal");
        if body["type"] == "open.first" && body["data"]["message_id"] == private_msg.to_string() {
            assert_eq!(body["data"]["event_id"], human_open.to_string());
        }
        if body["type"] == "click" {
            assert_eq!(body["data"]["event_id"], click.to_string());
            assert_eq!(
                body["data"]["link"]["url"],
                "https://example.com/offer?a=1&b=2"
            );
        }
        assert_ne!(
            body["data"]["event_id"],
            mpp_open.to_string(),
            "no machine event without asking"
        );
    }
    // The machine endpoint gets the MPP open too: 3 opens of the private message + 1 of the team one.
    wait_until("machine endpoint", Duration::from_secs(5), || {
        machine.received().len() >= 4
    });
    assert!(machine
        .received()
        .iter()
        .any(|r| r.json()["data"]["event_id"] == mpp_open.to_string()));

    // amy sees ann's team message, never her private one; bob sees nothing of ann's.
    wait_until("amy's team notification", Duration::from_secs(5), || {
        !amy.received().is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(amy
        .received()
        .iter()
        .all(|r| r.json()["data"]["message_id"] == team_msg.to_string()));
    assert_eq!(amy.received().len(), 1);
    assert!(bob.received().is_empty(), "bob got {:?}", bob.types());

    // The deliveries are visible through the API.
    let list: serde_json::Value = ureq::get(&w.server.url("/api/webhooks"))
        .set(
            "authorization",
            &format!("Bearer {}", w.token("ann@north.test")),
        )
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let other: serde_json::Value = ureq::get(&w.server.url("/api/webhooks"))
        .set(
            "authorization",
            &format!("Bearer {}", w.token("bob@south.test")),
        )
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(
        other.as_array().unwrap().len(),
        1,
        "bob lists only his own endpoint"
    );
    assert_eq!(
        ureq::get(&w.server.url("/api/webhooks"))
            .call()
            .unwrap_err()
            .kind(),
        ureq::ErrorKind::HTTP
    );
}

#[test]
fn a_scanner_sweep_within_the_hold_fires_no_click_notification() {
    let w = world();
    let ann = Receiver::start(0);
    w.endpoint("ann@north.test", &ann.url, &["click"], "user", false);
    let (msg, copy) = w.message("ann@north.test", "private", "sweep");
    // A security gateway follows every link of the copy within a second, each looking human
    // at ingest; the hold lets the sweep be seen first.
    for _ in 0..3 {
        w.event(msg, copy, "click", Some("human"), Some(0));
    }
    let (msg2, copy2) = w.message("ann@north.test", "private", "sweep");
    let lone = w.event(msg2, copy2, "click", Some("human"), Some(0));
    wait_until("the lone click", Duration::from_secs(10), || {
        !ann.received().is_empty()
    });
    wait_until(
        "the sweep's outbox rows to be decided",
        Duration::from_secs(10),
        || {
            w.outbox("SELECT 1 FROM webhook_outbox WHERE status = 'pending'")
                .is_empty()
        },
    );
    let got = ann.received();
    assert_eq!(got.len(), 1, "only the lone click: {:?}", ann.types());
    assert_eq!(got[0].json()["data"]["event_id"], lone.to_string());
    assert_eq!(
        w.outbox("SELECT 1 FROM webhook_outbox WHERE status = 'dropped'")
            .len(),
        3
    );
}

#[test]
fn the_event_stream_delivers_an_open_to_the_sender_within_a_second_and_nothing_to_others() {
    let w = world();
    // ann as the Insights page connects (its cookie), bob as an API client (a bearer token).
    let ann = w.stream("ann@north.test", true);
    let bob = w.stream("bob@south.test", false);
    // The page loads the notice's script, which the page's CSP allows.
    let page = ureq::get(&w.server.url("/insights"))
        .set(
            "cookie",
            &format!("mailtally_token={}", w.token("ann@north.test")),
        )
        .call()
        .unwrap();
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    assert!(page.into_string().unwrap().contains("/insights/live.js"));
    let js = ureq::get(&w.server.url("/insights/live.js"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(js.contains("EventSource('/api/events/stream')") && js.contains("textContent"));
    let (msg, copy) = w.message("ann@north.test", "private", "live");
    // The second runs from the event's commit (the writer's), not from the test's connecting.
    let open = w.event(msg, copy, "open", Some("human"), None);
    let started = Instant::now();
    // The page's stream also carries notices (`event: notice`); the open is the plain event.
    let mut named = false;
    let data = loop {
        let line = ann
            .recv_timeout(Duration::from_secs(1).saturating_sub(started.elapsed()))
            .expect("the open reaches the sender within a second");
        if line.starts_with("event: notice") {
            named = true;
        } else if let Some(data) = line.strip_prefix("data: ") {
            if !std::mem::take(&mut named) {
                break data.to_string();
            }
        }
    };
    let event: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(event["id"], open.to_string());
    assert_eq!(event["kind"], "open");
    assert!(event.get("sender_id").is_none());
    std::thread::sleep(Duration::from_millis(1000));
    let leaked: Vec<String> = bob.try_iter().filter(|l| l.starts_with("data:")).collect();
    assert!(leaked.is_empty(), "bob saw {leaked:?}");
}

#[test]
fn an_endpoint_that_keeps_failing_is_disabled_and_says_why() {
    let w = world();
    let broken = Receiver::start(usize::MAX);
    w.endpoint("ann@north.test", &broken.url, &["open"], "user", false);
    let (msg, copy) = w.message("ann@north.test", "private", "broken");
    w.event(msg, copy, "open", Some("human"), None);
    w.event(msg, copy, "open", Some("human"), None);
    wait_until(
        "the endpoint to be disabled",
        Duration::from_secs(15),
        || {
            !w.outbox("SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NOT NULL")
                .is_empty()
        },
    );
    let attempts = broken.received().len();
    assert!(attempts >= 4, "{attempts} attempts before disabling");
    let list: serde_json::Value = ureq::get(&w.server.url("/api/webhooks"))
        .set(
            "authorization",
            &format!("Bearer {}", w.token("ann@north.test")),
        )
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(list[0]["disabled_at"].is_string(), "{list}");
    assert!(
        list[0]["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("in a row"),
        "{list}"
    );
    // Nothing more is sent to a disabled endpoint.
    std::thread::sleep(Duration::from_millis(1500));
    let after = broken.received().len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(broken.received().len(), after);
}

/// The one visibility rule holds on every surface: for each user, the messages seen through
/// the message list, each message's detail, the template report, a team webhook and the live
/// stream are exactly the ones the rule allows: one's own, one's team's `team` and `shared`
/// mail, and every team's `shared` mail. Captured copies are the raw mail with each
/// recipient's signed links, which would let a reader record opens and clicks as that
/// recipient: they are the sender's own only, a subset of what the rule shows.
#[test]
fn each_user_sees_the_same_messages_through_every_surface() {
    use std::collections::BTreeSet;
    let w = world();
    let (ann, amy, bob) = ("ann@north.test", "amy@north.test", "bob@south.test");
    let receivers: HashMap<&str, Receiver> = [ann, amy, bob]
        .into_iter()
        .map(|u| {
            let r = Receiver::start(0);
            w.endpoint(u, &r.url, &["open"], "team", false);
            (u, r)
        })
        .collect();
    let streams: HashMap<&str, _> = [ann, amy, bob]
        .into_iter()
        .map(|u| (u, w.stream(u, false)))
        .collect();
    let sent = [
        (ann, "private"),
        (ann, "team"),
        (ann, "shared"),
        (amy, "private"),
        (bob, "team"),
        (bob, "shared"),
    ];
    let mut messages = Vec::new();
    for (sender, visibility) in sent {
        let template = format!("surface-{}-{visibility}", &sender[..3]);
        let (message, copy) = w.message(sender, visibility, &template);
        w.event(message, copy, "open", Some("human"), None);
        messages.push((message, template, sender, visibility));
    }
    rt().block_on(async {
        w.db.client()
            .await
            .execute(
                "UPDATE copies SET delivered_via = 'capture', delivered_at = now(), body = 'x'",
                &[],
            )
            .await
            .unwrap();
    });
    let team = |u: &str| u.split('@').nth(1).unwrap().to_string();
    let expected = |viewer: &str| -> BTreeSet<String> {
        messages
            .iter()
            .filter(|(_, _, sender, visibility)| {
                *sender == viewer
                    || *visibility == "shared"
                    || (*visibility == "team" && team(sender) == team(viewer))
            })
            .map(|(m, ..)| m.to_string())
            .collect()
    };
    let template_of: HashMap<String, String> = messages
        .iter()
        .map(|(m, t, ..)| (t.clone(), m.to_string()))
        .collect();
    let get = |url: &str, token: &str| -> (u16, serde_json::Value) {
        match ureq::get(url)
            .set("authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
            Err(e) => panic!("{url}: {e}"),
        }
    };
    for viewer in [ann, amy, bob] {
        let want = expected(viewer);
        let token = w.token(viewer);
        let (_, list) = get(&w.server.url("/api/messages?limit=100"), token);
        let listed: BTreeSet<String> = list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, want, "message list of {viewer}");
        let detailed: BTreeSet<String> = messages
            .iter()
            .map(|(m, ..)| m.to_string())
            .filter(|m| get(&w.server.url(&format!("/api/messages/{m}")), token).0 == 200)
            .collect();
        assert_eq!(detailed, want, "message detail of {viewer}");
        let (_, captured) = get(&w.server.url("/api/captured"), token);
        let captured: BTreeSet<String> = captured["captured"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message_id"].as_str().unwrap().to_string())
            .collect();
        let own: BTreeSet<String> = messages
            .iter()
            .filter(|(_, _, sender, _)| *sender == viewer)
            .map(|(m, ..)| m.to_string())
            .collect();
        assert_eq!(captured, own, "captured copies of {viewer}");
        assert!(captured.is_subset(&want));
        // The report reads rollups, which the aggregation job of `serve` fills.
        let mut reported = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let (_, report) = get(&w.server.url("/api/reports/templates?class=all"), token);
            reported = report["templates"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| template_of.get(r["template"].as_str().unwrap()).cloned())
                .collect();
            if reported.len() >= want.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(reported, want, "template report of {viewer}");
        let mut hooked = BTreeSet::new();
        wait_until("each webhook", Duration::from_secs(20), || {
            hooked = receivers[viewer]
                .received()
                .iter()
                .map(|r| r.json()["data"]["message_id"].as_str().unwrap().to_string())
                .collect();
            hooked.len() >= want.len()
        });
        assert_eq!(hooked, want, "team webhook of {viewer}");
    }
    // Every webhook has had its events: the stream, fed by the same producer, has had them too.
    std::thread::sleep(Duration::from_millis(500));
    for viewer in [ann, amy, bob] {
        let streamed: BTreeSet<String> = streams[viewer]
            .try_iter()
            .filter_map(|l| {
                let data = l.strip_prefix("data: ")?;
                let e: serde_json::Value = serde_json::from_str(data.trim()).ok()?;
                Some(e["message_id"].as_str()?.to_string())
            })
            .collect();
        assert_eq!(streamed, expected(viewer), "live stream of {viewer}");
    }
}
