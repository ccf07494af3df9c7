//! Security review, one test a finding or a claim: no open relay, senders held to their own
//! address when the setting says so, brute force on SMTP AUTH and API tokens refused per client
//! address, size limits on every HTTP route, no SQL or header injection through the API, no open
//! redirect through `/c/`, no secret in the log, TLS 1.2 and 1.3 only; no SMTP smuggling to a
//! lenient upstream, no request forgery through webhooks or IMAP mailboxes, unsubscribes,
//! template keys and admins held to their team, submissions and senders held to their byte
//! budgets, no visibility wider than written, a sign-in that refuses other sites, and
//! `/metrics` behind its token when one is set.

use crate::common;
use crate::track_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::smtp::{add_user, auth_plain, db_i64, Client};
use common::{Server, TestDb};
use mailtally::rewrite::token;

const PASSWORD: &str = "correct horse battery";

/// One HTTP/1.1 request with a body on a fresh connection: (status, headers, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    req.push_str("\r\n");
    // The server may answer and close before reading everything: write errors are fine.
    let _ = s.write_all(req.as_bytes());
    if let Some(body) = body {
        let _ = s.write_all(body);
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn json_error(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON error body: {body:?}"))
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn no_open_relay_and_senders_keep_to_their_own_address() {
    let db = TestDb::migrated();
    add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(&db.url, &[("SUBMIT_OWN_ADDRESS_ONLY", "true")]);

    // No AUTH: no transaction, whatever the sender claims to be.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO attacker.example");
    for from in ["ann@example.com", "", "postmaster@example.com"] {
        let r = c.cmd(&format!("MAIL FROM:<{from}>"));
        assert!(r.starts_with("530 5.7.0"), "{from}: {r}");
    }
    let r = c.cmd("RCPT TO:<victim@example.net>");
    assert!(r.starts_with("503") || r.starts_with("530"), "{r}");
    let r = c.cmd("DATA");
    assert!(r.starts_with("503") || r.starts_with("530"), "{r}");

    // AUTH, then someone else's address, or the null sender: refused; the own address works.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO client.example");
    let auth = c.cmd(&format!(
        "AUTH PLAIN {}",
        auth_plain("ann@example.com", PASSWORD)
    ));
    assert!(auth.starts_with("235"), "{auth}");
    for from in ["ceo@example.com", "ann@example.com.evil.test", ""] {
        let r = c.cmd(&format!("MAIL FROM:<{from}>"));
        assert!(r.starts_with("553 5.7.1"), "{from}: {r}");
    }
    let r = c.cmd("MAIL FROM:<ANN@example.com>");
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM messages"), 0);
}

#[test]
fn smtp_auth_brute_force_is_refused_per_client_address() {
    let db = TestDb::migrated();
    add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(
        &db.url,
        &[
            ("AUTH_MAX_FAILURES_PER_IP", "4"),
            ("AUTH_FAILURE_WINDOW", "300"),
            ("SMTP_MAX_AUTH_FAILURES", "3"),
        ],
    );
    let try_password = |c: &mut Client, password: &str| {
        c.cmd(&format!(
            "AUTH PLAIN {}",
            auth_plain("ann@example.com", password)
        ))
    };
    // Two sessions of two guesses each: the fourth failure from this address closes the door.
    let mut replies = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(server.smtp);
        c.cmd("EHLO guesser.example");
        for i in 0..2 {
            replies.push(try_password(&mut c, &format!("guess {i}")));
        }
    }
    assert!(
        replies[..3].iter().all(|r| r.starts_with("535 5.7.8")),
        "{replies:?}"
    );
    assert!(
        replies[3].starts_with("421 4.7.0") && replies[3].contains("try again in"),
        "{replies:?}"
    );
    // A new session from the same address: refused at AUTH, even with the right password.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO guesser.example");
    let r = try_password(&mut c, PASSWORD);
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(server
        .log_text()
        .contains("too many failures from this address"));
}

#[test]
fn api_token_brute_force_gets_429_with_retry_after() {
    let db = TestDb::migrated();
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(&db.url, &[("AUTH_MAX_FAILURES_PER_IP", "4")]);
    // No token at all is not a guess: never limited.
    for _ in 0..6 {
        assert_eq!(http(server.http, "GET", "/api/me", &[], None).0, 401);
    }
    let mut statuses = Vec::new();
    for i in 0..6 {
        let bad = format!("Bearer mt_guess{i}");
        statuses.push(
            http(
                server.http,
                "GET",
                "/api/me",
                &[("Authorization", &bad)],
                None,
            )
            .0,
        );
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
    let good = format!("Bearer {token}");
    let (status, head, body) = http(
        server.http,
        "GET",
        "/api/me",
        &[("Authorization", &good)],
        None,
    );
    assert_eq!(status, 429, "blocked for the window, good token or not");
    let retry: u64 = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or(l.strip_prefix("Retry-After: "))
        })
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    assert_eq!(json_error(&body)["error"], "too_many_requests");
    // The Insights sign-in form counts as well.
    let (status, _, _) = http(
        server.http,
        "POST",
        "/insights/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"token=mt_guess"),
    );
    assert_eq!(status, 429);
    // Tracking stays open to the same address.
    assert_eq!(http(server.http, "GET", "/o/whatever", &[], None).0, 200);
}

#[test]
fn every_route_refuses_oversized_requests_with_json() {
    let db = TestDb::migrated();
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(&db.url, &[("HTTP_MAX_BODY", "262144")]);
    let auth = format!("Bearer {token}");
    let big = vec![b'x'; 300 * 1024];
    let uuid = uuid::Uuid::new_v4().to_string();
    let archive = format!("/api/messages/{uuid}/archive");
    let routes = [
        ("POST", "/api/users"),
        ("POST", "/api/tokens"),
        ("POST", "/api/erase"),
        ("POST", archive.as_str()),
        ("POST", "/api/webhooks"),
        ("POST", "/api/templates"),
        ("PUT", "/api/templates/t"),
        ("POST", "/api/group-emails"),
        ("POST", "/api/automations"),
        ("POST", "/api/unsubscribes"),
        ("PUT", "/api/me/mailbox"),
        ("PUT", "/api/me/signature"),
        ("POST", "/insights/login"),
        ("POST", "/insights/logout"),
        ("PUT", "/api/users"),
        ("POST", "/o/x"),
        ("POST", "/nowhere"),
    ];
    for (method, path) in routes {
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        let (status, _, body) = http(server.http, method, path, &headers, Some(&big));
        assert_eq!(status, 413, "{method} {path}: {body}");
        assert_eq!(
            json_error(&body)["error"],
            "payload_too_large",
            "{method} {path}"
        );
        // The same body chunked, with no length announced.
        let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
        chunked.extend_from_slice(&big);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ];
        let (status, _, body) = http(server.http, method, path, &headers, Some(&chunked));
        // Routes that read no body answer as they would; none takes the body or fails.
        assert!(
            status == 413 || status == 404 || status == 405 || status == 303,
            "{method} {path} chunked: {status} {body}"
        );
        if status == 413 {
            assert_eq!(json_error(&body)["error"], "payload_too_large");
        }
    }
    // Under HTTP_MAX_BODY but over what a JSON route reads: 413 too, not 400.
    let json = format!("{{\"email\":\"{}@example.com\"}}", "a".repeat(100 * 1024));
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _, body) = http(
        server.http,
        "POST",
        "/api/tokens",
        &headers,
        Some(json.as_bytes()),
    );
    assert_eq!(status, 413, "{body}");
    // A long URL: 414; huge headers: refused by the HTTP parser.
    let long = format!("/api/messages?deal={}", "d".repeat(10_000));
    let (status, _, body) = http(server.http, "GET", &long, &[("Authorization", &auth)], None);
    assert_eq!(status, 414, "{body}");
    assert_eq!(json_error(&body)["error"], "uri_too_long");
    let huge = "h".repeat(20 * 1024);
    let (status, _, body) = http(server.http, "GET", "/healthz", &[("X-Huge", &huge)], None);
    assert_eq!(status, 431, "{body}");
    assert_eq!(json_error(&body)["error"], "headers_too_large");
    let (status, _, _) = http(
        server.http,
        "GET",
        "/healthz",
        &[("X-Huge", &"h".repeat(200_000))],
        None,
    );
    assert!(status == 431 || status == 400 || status == 0, "{status}");
    // Still serving.
    assert_eq!(http(server.http, "GET", "/healthz", &[], None).0, 200);
}

#[test]
fn no_sql_injection_through_any_query_parameter() {
    let db = TestDb::migrated();
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(&db.url, &[("AUTH_MAX_FAILURES_PER_IP", "0")]);
    let auth = format!("Bearer {token}");
    let users_before = db_i64(&db.url, "SELECT count(*) FROM users");
    let payloads = [
        "'",
        "''",
        "\"",
        "'; DROP TABLE users; --",
        "1 OR 1=1",
        "' OR '1'='1",
        "1; SELECT pg_sleep(10)",
        "\\",
        "%",
        "_",
        "ünïcödé ✓ 𝔘",
        "a\0b",
        "\0",
        "-1",
        "99999999999999999999999",
        "2024-13-45",
        "$1",
        "'::text",
    ];
    let lists = [
        (
            "/api/messages",
            &[
                "deal",
                "lead",
                "project",
                "recipient",
                "template",
                "archived",
                "limit",
                "offset",
            ][..],
        ),
        (
            "/api/reports/templates",
            &[
                "from", "to", "sender", "team", "deal", "lead", "project", "class",
            ][..],
        ),
        (
            "/api/reports/templates/welcome",
            &[
                "from", "to", "sender", "team", "deal", "lead", "project", "class",
            ][..],
        ),
        ("/api/captured", &["limit"][..]),
        ("/api/webhooks", &["x"][..]),
        ("/insights", &["class", "from", "to"][..]),
        ("/insights/templates/welcome", &["class"][..]),
    ];
    let mut requests = 0;
    for (path, params) in lists {
        for param in params {
            for p in payloads {
                let url = format!("{path}?{param}={}", encode(p));
                let cookie = format!("mailtally_token={token}");
                let (status, _, body) = http(
                    server.http,
                    "GET",
                    &url,
                    &[("Authorization", &auth), ("Cookie", &cookie)],
                    None,
                );
                requests += 1;
                assert!(
                    status == 200 || status == 400 || status == 404 || status == 422,
                    "{url}: {status} {body}"
                );
                if path.starts_with("/api/") && status != 200 {
                    json_error(&body);
                }
            }
        }
    }
    // Path parameters too.
    for p in payloads {
        for path in [
            "/api/messages/",
            "/api/reports/templates/",
            "/api/captured/",
            "/api/webhooks/",
            "/insights/templates/",
            "/insights/messages/",
        ] {
            let url = format!("{path}{}", encode(p));
            let (status, _, body) = http(
                server.http,
                "GET",
                &url,
                &[
                    ("Authorization", &auth),
                    ("Cookie", &format!("mailtally_token={token}")),
                ],
                None,
            );
            requests += 1;
            assert!(status < 500, "{url}: {status} {body}");
        }
    }
    println!("{requests} injection requests, none answered 5xx");
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM users"), users_before);
    assert_eq!(
        db_i64(&db.url, "SELECT count(*) FROM api_tokens"),
        users_before
    );
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn no_header_injection_through_api_inputs_or_signed_links() {
    let db = TestDb::migrated();
    let admin_token = add_admin(&db.url);
    let server = Server::start(&db.url, &[]);
    let auth = format!("Bearer {admin_token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let cases: [(&str, serde_json::Value); 4] = [
        (
            "/api/users",
            serde_json::json!({"email": "x@example.com\r\nBcc: victim@example.net", "password": "long enough pw"}),
        ),
        (
            "/api/users",
            serde_json::json!({"email": "x\n@example.com", "password": "long enough pw"}),
        ),
        (
            "/api/webhooks",
            serde_json::json!({"url": "https://hook.example/\r\nX-Injected: 1", "event_types": ["open"]}),
        ),
        (
            "/api/erase",
            serde_json::json!({"recipient": "a@b.c\r\nX-Injected: 1"}),
        ),
    ];
    for (path, body) in cases {
        let (status, head, body) = http(
            server.http,
            "POST",
            path,
            &headers,
            Some(body.to_string().as_bytes()),
        );
        assert!(!head.to_ascii_lowercase().contains("x-injected"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("bcc:"), "{head}");
        if path != "/api/erase" {
            assert!(status == 400 || status == 422, "{path}: {status} {body}");
        } else {
            // Erasing an unknown address erases nothing; nothing is echoed into headers.
            assert!(status < 500, "{status} {body}");
        }
    }
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM users WHERE email ~ '[\\r\\n]'"
        ),
        0
    );
    // A signed link whose URL holds a line break is not followed: no header is made from it.
    let keys = track_support::keys();
    let copy = uuid::Uuid::now_v7();
    for url in [
        "https://example.com/\r\nSet-Cookie: a=b",
        "https://example.com/\nLocation: https://evil.example/",
    ] {
        let t = token::click_token(&keys, copy, 0, url);
        let (status, head, _) = http(server.http, "GET", &format!("/c/{t}"), &[], None);
        assert_eq!(status, 404, "{head}");
        assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("location"), "{head}");
    }
}

/// An admin user; returns its API token.
fn add_admin(db_url: &str) -> String {
    let url = db_url.to_string();
    std::thread::spawn(move || {
        common::block_on(async {
            let pool = mailtally::store::pool(&url, 1).unwrap();
            let mut client = pool.get().await.unwrap();
            mailtally::accounts::add_user(
                &mut client,
                "root@example.com",
                "admin password",
                None,
                mailtally::accounts::Role::Admin,
            )
            .await
            .unwrap()
            .api_token
        })
    })
    .join()
    .unwrap()
}

#[test]
fn click_links_redirect_only_to_the_signed_url() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    let keys = track_support::keys();
    let copy = uuid::Uuid::now_v7();
    let good = token::click_token(&keys, copy, 0, "https://example.com/offer");
    let location = |path: &str| -> (u16, Option<String>) {
        let (status, head, _) = http(server.http, "GET", path, &[], None);
        let loc = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("location:")
                .then(|| l[9..].trim().to_string())
        });
        (status, loc)
    };
    assert_eq!(
        location(&format!("/c/{good}")),
        (302, Some("https://example.com/offer".to_string()))
    );
    // Extra query or path around a good token: still only the signed URL, or nothing.
    for path in [
        format!("/c/{good}?url=https://evil.example/"),
        format!("/c/{good}?next=//evil.example"),
    ] {
        let (status, loc) = location(&path);
        assert!(
            loc.is_none() || loc.as_deref() == Some("https://example.com/offer"),
            "{path}: {status} {loc:?}"
        );
    }
    // A tampered token, a token of another secret, and no token at all: 404, no Location.
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let foreign = token::click_token(
        &mailtally::rewrite::TokenKeys::new(b"another secret entirely", &[]),
        copy,
        0,
        "https://evil.example/",
    );
    let evil = [
        format!("/c/{tampered}"),
        format!("/c/{foreign}"),
        "/c//evil.example".to_string(),
        "/c/%2F%2Fevil.example".to_string(),
        "/c/https://evil.example/".to_string(),
        "/c/https:%2F%2Fevil.example".to_string(),
        "/c/..%2F..%2Fevil".to_string(),
        "/c/".to_string(),
        "/c/?url=https://evil.example/".to_string(),
        format!("/c/{}", &good[..good.len() - 1]),
        format!("/c/{good}A"),
    ];
    for path in evil {
        let (status, loc) = location(&path);
        assert!(loc.is_none(), "{path}: {status} {loc:?}");
        assert_eq!(status, 404, "{path}");
    }
    // The Insights sign-in redirects only to its own page.
    let (status, head, _) = http(
        server.http,
        "POST",
        "/insights/logout?next=https://evil.example/",
        &[],
        Some(b""),
    );
    assert_eq!(status, 303);
    assert!(head.contains("ocation: /insights"), "{head}");
}

#[test]
fn secrets_never_reach_the_log() {
    let db = TestDb::migrated();
    let password = "pw-Secret-7f3a9c21";
    let token = add_user(&db.url, "ann@example.com", password);
    let sink = common::smtp::Sink::start(&[]);
    let upstream = format!(
        "smtp://relayuser:Upstream-Secret-41bd@127.0.0.1:{}?tls=none",
        sink.port
    );
    let tracking = "Tracking-Secret-0c1e5d77aa";
    let server = Server::start(
        &db.url,
        &[
            ("UPSTREAM_URL", &upstream),
            ("TRACKING_SECRET", tracking),
            ("LOG_FORMAT", "json"),
        ],
    );
    // Good and bad AUTH, a message, good and bad API tokens, a bad token in the stream query.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO client.example");
    let bad = c.cmd(&format!(
        "AUTH PLAIN {}",
        auth_plain("ann@example.com", "Wrong-Secret-99e1")
    ));
    assert!(bad.starts_with("535"), "{bad}");
    let good = c.cmd(&format!(
        "AUTH PLAIN {}",
        auth_plain("ann@example.com", password)
    ));
    assert!(good.starts_with("235"), "{good}");
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
    let r = c.data(b"Subject: s\r\n\r\n<a href=\"https://example.com/\">x</a>\r\n");
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    let auth = format!("Bearer {token}");
    assert_eq!(
        http(
            server.http,
            "GET",
            "/api/me",
            &[("Authorization", &auth)],
            None
        )
        .0,
        200
    );
    http(
        server.http,
        "GET",
        "/api/me",
        &[("Authorization", "Bearer mt_Bad-Token-Secret-5a")],
        None,
    );
    http(
        server.http,
        "GET",
        "/api/events/stream?token=mt_Query-Token-Secret-6b",
        &[],
        None,
    );
    // The delivery ran (or failed, either way it logged about the upstream).
    common::smtp::wait_until(Duration::from_secs(20), || sink.count() >= 1);
    let log = server.log_text();
    assert!(log.len() > 200, "the log has content");
    for secret in [
        password,
        "Wrong-Secret-99e1",
        &token,
        "Bad-Token-Secret-5a",
        "Query-Token-Secret-6b",
        "Upstream-Secret-41bd",
        tracking,
        &auth_plain("ann@example.com", password),
    ] {
        assert!(
            !log.contains(secret),
            "secret {secret:?} in the log:\n{log}"
        );
    }
}

/// `openssl s_client -starttls smtp` with one protocol version; whether the handshake worked.
fn handshake(smtp: SocketAddr, version: &str) -> (bool, String) {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        smtp.to_string(),
        "-starttls".into(),
        "smtp".into(),
        format!("-{version}"),
    ];
    if version == "tls1" || version == "tls1_1" {
        // Let the client offer the old versions, so that the refusal is the server's.
        args.push("-cipher".into());
        args.push("DEFAULT@SECLEVEL=0".into());
    }
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            let _ = child.stdin.take().unwrap().write_all(b"QUIT\r\n");
            child.wait_with_output()
        })
        .expect("openssl runs (Debian package openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

#[test]
fn starttls_accepts_tls_1_2_and_1_3_only() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    for (version, want) in [
        ("tls1", false),
        ("tls1_1", false),
        ("tls1_2", true),
        ("tls1_3", true),
    ] {
        let (ok, text) = handshake(server.smtp, version);
        assert_eq!(ok, want, "{version}:\n{text}");
    }
}

/// A user of `team` (none: no team) with `role`; (id, API token).
fn add_team_user(
    db_url: &str,
    email: &str,
    team: Option<&str>,
    role: mailtally::accounts::Role,
) -> (i64, String) {
    let (url, email, team) = (
        db_url.to_string(),
        email.to_string(),
        team.map(str::to_string),
    );
    std::thread::spawn(move || {
        common::block_on(async {
            let pool = mailtally::store::pool(&url, 1).unwrap();
            let mut client = pool.get().await.unwrap();
            let new =
                mailtally::accounts::add_user(&mut client, &email, PASSWORD, team.as_deref(), role)
                    .await
                    .unwrap();
            (new.user.id, new.api_token)
        })
    })
    .join()
    .unwrap()
}

/// A JSON API call: (status, body).
fn api(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string());
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, _, text) = http(
        server.http,
        method,
        path,
        &headers,
        body.as_deref().map(str::as_bytes),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// One message submitted over SMTP as `from` (password [`PASSWORD`]); its id.
fn submit(server: &Server, db_url: &str, from: &str, to: &str, headers: &str) -> String {
    let before = db_i64(db_url, "SELECT count(*) FROM messages");
    let message = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: Offer\r\n{headers}\
         Content-Type: text/html\r\n\r\n<p><a href=\"https://example.com/offer\">offer</a></p>\r\n"
    );
    common::smtp::submit_as(server.smtp, from, PASSWORD, &[to], message.as_bytes());
    assert_eq!(db_i64(db_url, "SELECT count(*) FROM messages"), before + 1);
    db_rows(
        db_url,
        &format!(
            "SELECT m.id::text FROM messages m JOIN users u ON u.id = m.sender_id
             WHERE u.email = '{from}' ORDER BY m.created_at DESC LIMIT 1"
        ),
    )[0][0]
        .clone()
}

use common::smtp::db_rows;
use mailtally::accounts::Role;

#[test]
fn unsubscribes_cancel_only_follow_ups_of_the_callers_own_team() {
    let db = TestDb::migrated();
    let (ann, ann_token) = add_team_user(&db.url, "ann@alpha.test", Some("alpha"), Role::Member);
    let (_, bob_token) = add_team_user(&db.url, "bob@beta.test", Some("beta"), Role::Member);
    let server = Server::start(&db.url, &[]);
    // Ann mails a customer, shared (every user sees it, Bob too); an automation of hers has a
    // follow-up pending for them. Seeing the mail does not make it Bob's to act on.
    let message = submit(
        &server,
        &db.url,
        "ann@alpha.test",
        "ceo@customer.test",
        "X-Mailtally-Visibility: shared\r\nX-Mailtally-Template: pitch\r\n",
    );
    db_rows(
        &db.url,
        &format!(
            "INSERT INTO automations (owner_id, trigger_template, condition, window_seconds,
                 followup_template)
             VALUES ({ann}, 'pitch', 'no_open', 3600, 'pitch');
             INSERT INTO followups (automation_id, copy_id, recipient, due_at)
             SELECT a.id, c.id, c.recipient, now() + interval '1 hour'
             FROM automations a, copies c WHERE c.message_id = '{message}'"
        ),
    );
    let pending = || {
        db_i64(
            &db.url,
            "SELECT count(*) FROM followups WHERE status = 'pending'",
        )
    };
    assert_eq!(pending(), 1);

    // Bob (another team) unsubscribes that address and one nobody mailed: the same answer,
    // and Ann's follow-up stays.
    let (status, known) = api(
        &server,
        "POST",
        "/api/unsubscribes",
        &bob_token,
        Some(serde_json::json!({"recipient": "CEO@customer.test"})),
    );
    assert_eq!(status, 200, "{known}");
    let (status, unknown) = api(
        &server,
        "POST",
        "/api/unsubscribes",
        &bob_token,
        Some(serde_json::json!({"recipient": "nobody@customer.test"})),
    );
    assert_eq!(status, 200, "{unknown}");
    assert_eq!(known["cancelled_followups"], 0, "{known}");
    assert_eq!(known["cancelled_followups"], unknown["cancelled_followups"]);
    assert_eq!(pending(), 1, "another team cancelled Ann's follow-up");
    // Nor does Bob's record stop it when it comes due.
    let copy = db_rows(
        &db.url,
        &format!("SELECT id::text FROM copies WHERE message_id = '{message}'"),
    )[0][0]
        .clone();
    let stops = |recipient: &str| {
        db_rows(
            &db.url,
            &format!(
                "SELECT {}::text",
                mailtally::followup::rules::unsubscribed_sql(
                    &format!("'{copy}'::uuid"),
                    &format!("'{recipient}'")
                )
            ),
        )[0][0]
            == "true"
    };
    assert!(!stops("ceo@customer.test"));

    // Ann's own unsubscribe cancels it, and stops it at its time.
    let (status, body) = api(
        &server,
        "POST",
        "/api/unsubscribes",
        &ann_token,
        Some(serde_json::json!({"recipient": "ceo@customer.test"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancelled_followups"], 1, "{body}");
    assert_eq!(pending(), 0);
    assert!(stops("CEO@customer.test"));
}

#[test]
fn template_keys_belong_to_a_team_and_cannot_be_claimed_or_probed() {
    let db = TestDb::migrated();
    let (_, ann_token) = add_team_user(&db.url, "ann@alpha.test", Some("alpha"), Role::Member);
    let (_, bob_token) = add_team_user(&db.url, "bob@beta.test", Some("beta"), Role::Member);
    let server = Server::start(&db.url, &[]);
    // Alpha mails with the key over SMTP (shared, so that Bob sees its report row).
    submit(
        &server,
        &db.url,
        "ann@alpha.test",
        "lead@customer.test",
        "X-Mailtally-Template: offer-q3\r\nX-Mailtally-Visibility: shared\r\n",
    );
    let template = |name: &str, key: &str| serde_json::json!({"key": key, "name": name, "subject": "Hi", "html": "<p>Hi</p>"});
    // Bob's team stores content under the same key: its own template, not alpha's.
    let (status, body) = api(
        &server,
        "POST",
        "/api/templates",
        &bob_token,
        Some(template("Beta's offer", "offer-q3")),
    );
    assert_eq!(status, 201, "{body}");
    // Alpha is not locked out of its own key...
    let (status, body) = api(
        &server,
        "POST",
        "/api/templates",
        &ann_token,
        Some(template("Alpha's offer", "offer-q3")),
    );
    assert_eq!(status, 201, "alpha locked out of its key: {body}");
    // ...and a key only another team uses is not revealed by a 409.
    let (status, body) = api(
        &server,
        "POST",
        "/api/templates",
        &bob_token,
        Some(template("Beta only", "beta-secret")),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(
        &server,
        "POST",
        "/api/templates",
        &ann_token,
        Some(template("Alpha too", "beta-secret")),
    );
    assert_eq!(status, 201, "a 409 tells another team uses the key: {body}");
    let (_, mine) = api(
        &server,
        "GET",
        "/api/templates/beta-secret",
        &bob_token,
        None,
    );
    assert_eq!(mine["name"], "Beta only", "{mine}");

    // The report row of alpha's mail carries alpha's name for it, for alpha and for Bob.
    let (ok, _, err) = common::mailtally(&["aggregate"], &[("DATABASE_URL", &db.url)], b"");
    assert!(ok, "{err}");
    for token in [&ann_token, &bob_token] {
        let (status, report) = api(&server, "GET", "/api/reports/templates", token, None);
        assert_eq!(status, 200, "{report}");
        let rows = report["templates"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{report}");
        assert_eq!(rows[0]["template"], "offer-q3");
        assert_eq!(rows[0]["name"], "Alpha's offer", "{report}");
        let scope = rows[0]["scope"].as_str().unwrap().to_string();
        assert!(scope.starts_with("team:"), "{scope}");
        let (status, detail) = api(
            &server,
            "GET",
            &format!("/api/reports/templates/offer-q3?scope={scope}"),
            token,
            None,
        );
        assert_eq!(
            (status, detail["sent"].as_i64()),
            (200, Some(1)),
            "{detail}"
        );
    }
    // Beta sent nothing with the key: its scope has no report.
    let (status, _) = api(
        &server,
        "GET",
        "/api/reports/templates/offer-q3?scope=sender:999",
        &bob_token,
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn admins_act_on_their_own_team_only() {
    let db = TestDb::migrated();
    let (_, root) = add_team_user(&db.url, "root@alpha.test", Some("alpha"), Role::Admin);
    add_team_user(&db.url, "bob@beta.test", Some("beta"), Role::Member);
    add_team_user(&db.url, "ann@alpha.test", Some("alpha"), Role::Member);
    let server = Server::start(&db.url, &[]);
    let beta_msg = submit(
        &server,
        &db.url,
        "bob@beta.test",
        "client@customer.test",
        "X-Mailtally-Visibility: shared\r\n",
    );
    let alpha_msg = submit(
        &server,
        &db.url,
        "ann@alpha.test",
        "lead@customer.test",
        "X-Mailtally-Visibility: team\r\n",
    );

    // Another team's message: the admin sees it (shared) but may not change it.
    let archive = format!("/api/messages/{beta_msg}/archive");
    assert_eq!(api(&server, "POST", &archive, &root, None).0, 403);
    let delete = format!("/api/messages/{beta_msg}");
    assert_eq!(api(&server, "DELETE", &delete, &root, None).0, 403);
    assert_eq!(
        db_i64(
            &db.url,
            &format!(
                "SELECT count(*) FROM messages WHERE id = '{beta_msg}' AND archived_at IS NULL"
            )
        ),
        1
    );
    // Their own team's: yes.
    let archive = format!("/api/messages/{alpha_msg}/archive");
    assert_eq!(api(&server, "POST", &archive, &root, None).0, 200);

    // No user in another team (who would read its team mail); one in their own.
    let (status, body) = api(
        &server,
        "POST",
        "/api/users",
        &root,
        Some(serde_json::json!({"email": "mole@beta.test", "team": "beta"})),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM users WHERE email = 'mole@beta.test'"
        ),
        0
    );
    let (status, body) = api(
        &server,
        "POST",
        "/api/users",
        &root,
        Some(serde_json::json!({"email": "new@alpha.test"})),
    );
    assert_eq!(status, 201, "{body}");
    let alpha_id = db_i64(&db.url, "SELECT id FROM teams WHERE name = 'alpha'");
    assert_eq!(body["team_id"], alpha_id, "{body}");

    // Erasure is the operator action that spans teams (data subject requests).
    let (status, body) = api(
        &server,
        "POST",
        "/api/erase",
        &root,
        Some(serde_json::json!({"recipient": "client@customer.test"})),
    );
    assert_eq!(
        (status, body["erased_copies"].as_i64()),
        (200, Some(1)),
        "{body}"
    );
}

#[test]
fn insights_sign_in_refuses_other_sites_and_counts_bad_cookies() {
    let db = TestDb::migrated();
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(
        &db.url,
        &[
            ("PUBLIC_URL", "https://track.mailtally.test"),
            ("AUTH_MAX_FAILURES_PER_IP", "3"),
        ],
    );
    let form = format!("token={token}");
    let login = |headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        http(
            server.http,
            "POST",
            "/insights/login",
            &h,
            Some(form.as_bytes()),
        )
    };
    // Cross-site posts sign no browser in (login CSRF), nor out.
    for headers in [
        vec![("Origin", "https://evil.example")],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        let (status, head, _) = login(&headers);
        assert_eq!(status, 403, "{headers:?}: {head}");
        assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    }
    let (status, head, _) = http(
        server.http,
        "POST",
        "/insights/logout",
        &[("Origin", "https://evil.example")],
        Some(b""),
    );
    assert_eq!(status, 403, "{head}");
    // Reached under the listener's own address (no proxy in front): the same site.
    let own = format!("http://{}", server.http);
    let (status, head, _) = login(&[("Origin", &own), ("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(status, 303, "{head}");
    // From the site itself: signed in, with a Secure cookie since PUBLIC_URL is https.
    let (status, head, _) = login(&[
        ("Origin", "https://track.mailtally.test"),
        ("Sec-Fetch-Site", "same-origin"),
    ]);
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Pages say nosniff and keep their URLs from other sites.
    let (status, head, _) = http(server.http, "GET", "/insights", &[], None);
    assert_eq!(status, 200);
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("x-content-type-options: nosniff"), "{head}");
    assert!(lower.contains("referrer-policy: same-origin"), "{head}");
    // Guessing through the cookie counts like bad API tokens: 401s, then 429.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let cookie = format!("mailtally_token=mt_guess{i}");
        let path = if i % 2 == 0 {
            "/insights"
        } else {
            "/insights/templates/x"
        };
        statuses.push(http(server.http, "GET", path, &[("Cookie", &cookie)], None).0);
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
}

#[test]
fn metrics_need_the_bearer_token_when_one_is_set() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[("METRICS_TOKEN", "scrape-Secret-93c1")]);
    let (status, head, body) = http(server.http, "GET", "/metrics", &[], None);
    assert_eq!(status, 401, "{head}");
    assert_eq!(json_error(&body)["error"], "unauthorized");
    assert!(!body.contains("mailtally_"), "{body}");
    let (status, _, _) = http(
        server.http,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer scrape-Secret-93c")],
        None,
    );
    assert_eq!(status, 401);
    let (status, _, body) = http(
        server.http,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer scrape-Secret-93c1")],
        None,
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("mailtally_"),
        "{}",
        &body[..body.len().min(300)]
    );
}

/// Server-side request forgery: webhooks and IMAP mailboxes reach only what a user may name.
/// Refused by default: loopback, private, carrier-grade NAT, link-local, unique-local,
/// unspecified, multicast, broadcast, documentation and reserved addresses, in every spelling,
/// checked again on the address connected to. `OUTBOUND_ALLOWED_NETWORKS` opens networks.
mod outbound {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::common::api::call;
    use super::common::smtp::{add_user, db_i64, wait_until};
    use super::common::{Server, TestDb};
    use super::PASSWORD;

    const MAILBOX_KEY: &str = "a-mailbox-key-for-tests-0123456789abcdef";
    /// What the fake peers say; it must never come back through the API.
    const BANNER: &str = "internal-banner-7f3a9c";

    /// A TCP peer on loopback that records when each connection came and answers with
    /// `answer` (given each line the client sends, or `None` on connect).
    struct Peer {
        port: u16,
        connections: Arc<Mutex<Vec<Instant>>>,
    }

    impl Peer {
        fn start(answer: fn(Option<&str>) -> Option<String>) -> Peer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(Mutex::new(Vec::new()));
            let seen = connections.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    seen.lock().unwrap().push(Instant::now());
                    std::thread::spawn(move || {
                        stream
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        if let Some(first) = answer(None) {
                            let _ = stream.write_all(first.as_bytes());
                        }
                        let mut reader = BufReader::new(stream.try_clone().unwrap());
                        let mut line = String::new();
                        while reader.read_line(&mut line).unwrap_or(0) > 0 {
                            match answer(Some(&line)) {
                                Some(reply) => {
                                    if stream.write_all(reply.as_bytes()).is_err() {
                                        break;
                                    }
                                }
                                None => break,
                            }
                            line.clear();
                        }
                    });
                }
            });
            Peer { port, connections }
        }

        fn count(&self) -> usize {
            self.connections.lock().unwrap().len()
        }

        fn times(&self) -> Vec<Instant> {
            self.connections.lock().unwrap().clone()
        }
    }

    /// An IMAP server that greets with the banner and answers every command NO, banner included.
    fn imap_saying_no(line: Option<&str>) -> Option<String> {
        match line {
            None => Some(format!("* OK {BANNER} IMAP ready\r\n")),
            Some(l) => {
                let tag = l.split(' ').next().unwrap_or("*");
                Some(format!("{tag} NO {BANNER} says no\r\n"))
            }
        }
    }

    /// A peer that is not an IMAP server: it says goodbye and hangs up.
    fn imap_saying_bye(line: Option<&str>) -> Option<String> {
        match line {
            None => Some(format!("* BYE {BANNER}\r\n")),
            Some(_) => None,
        }
    }

    /// A peer that is not an HTTP server.
    fn not_http(line: Option<&str>) -> Option<String> {
        match line {
            None => Some(format!("SSH-2.0-OpenSSH_9.2 {BANNER}\r\n")),
            Some(_) => None,
        }
    }

    /// An HTTP server whose error status carries the banner as its reason phrase.
    fn http_error(line: Option<&str>) -> Option<String> {
        match line {
            Some("\r\n") => Some(format!(
                "HTTP/1.1 502 {BANNER}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BANNER}",
                BANNER.len()
            )),
            _ => Some(String::new()),
        }
    }

    fn register(server: &Server, token: &str, url: &str) -> (u16, Value) {
        call(
            "POST",
            &server.url("/api/webhooks"),
            token,
            Some(&json!({"url": url, "event_types": ["delivered"]})),
            None,
        )
    }

    /// One group email from the token's user: a `delivered` event once the capture sink has it.
    fn send_one(server: &Server, token: &str) {
        let req = json!({"subject": "Hi", "html": "<p>Hi</p>",
                         "recipients": [{"email": "bob@example.net"}]});
        let (status, body) = call(
            "POST",
            &server.url("/api/group-emails"),
            token,
            Some(&req),
            None,
        );
        assert_eq!(status, 202, "{body}");
    }

    fn deliveries(server: &Server, token: &str) -> Vec<Value> {
        let (status, hooks) = call("GET", &server.url("/api/webhooks"), token, None, None);
        assert_eq!(status, 200, "{hooks}");
        let mut all = Vec::new();
        for hook in hooks.as_array().unwrap() {
            let id = hook["id"].as_i64().unwrap();
            let (status, list) = call(
                "GET",
                &server.url(&format!("/api/webhooks/{id}/deliveries")),
                token,
                None,
                None,
            );
            assert_eq!(status, 200, "{list}");
            all.extend(list.as_array().unwrap().iter().cloned());
        }
        all
    }

    fn mailbox(server: &Server, token: &str) -> Value {
        let (status, body) = call("GET", &server.url("/api/me/mailbox"), token, None, None);
        assert_eq!(status, 200, "{body}");
        body
    }

    fn put_mailbox(
        server: &Server,
        token: &str,
        host: &str,
        port: u16,
        security: &str,
    ) -> (u16, Value) {
        let body = json!({"host": host, "port": port, "security": security,
                          "username": "ann@example.com", "password": "imap-password-1"});
        call(
            "PUT",
            &server.url("/api/me/mailbox"),
            token,
            Some(&body),
            None,
        )
    }

    #[test]
    fn webhooks_to_internal_targets_are_refused_at_registration() {
        let db = TestDb::migrated();
        let token = add_user(&db.url, "ann@example.com", PASSWORD);
        let server = Server::start(&db.url, &[]);
        let refused = [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://localhost:5432/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://0.0.0.0:8080/",
            "http://0/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://100.64.0.1/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://192.0.2.1/",
            "https://[2001:db8::1]/",
            "https://240.0.0.1/",
        ];
        for url in refused {
            let (status, body) = register(&server, &token, url);
            assert_eq!(status, 422, "{url}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("address not allowed")
                    && message.contains("OUTBOUND_ALLOWED_NETWORKS"),
                "{url}: {body}"
            );
        }
        assert_eq!(db_i64(&db.url, "SELECT count(*) FROM webhook_endpoints"), 0);
        // A public address is a receiver like any other.
        let (status, body) = register(&server, &token, "https://93.184.216.34/hook");
        assert_eq!(status, 201, "{body}");
    }

    #[test]
    fn deliveries_check_the_address_they_connect_to_not_the_one_registered() {
        let receiver = Peer::start(http_error);
        let db = TestDb::migrated();
        let token = add_user(&db.url, "ann@example.com", PASSWORD);
        // Registered while loopback was allowed: the names and addresses passed then.
        let mut server = Server::start(
            &db.url,
            &[
                ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128"),
                ("WEBHOOK_RETRY_SCHEDULE", "0.5"),
            ],
        );
        for url in [
            format!("http://localhost:{}/hook", receiver.port),
            format!("http://127.0.0.1:{}/hook", receiver.port),
        ] {
            let (status, body) = register(&server, &token, &url);
            assert_eq!(status, 201, "{url}: {body}");
        }
        // Now the name resolves to what is refused (as after a DNS change).
        server.stop();
        server.env.retain(|(k, _)| k != "OUTBOUND_ALLOWED_NETWORKS");
        server.restart();
        send_one(&server, &token);
        assert!(
            wait_until(Duration::from_secs(30), || {
                let d = deliveries(&server, &token);
                d.len() == 2
                    && d.iter().all(|r| {
                        r["attempts"].as_i64().unwrap_or(0) >= 2
                            && r["last_error"]
                                == "address not allowed: the host is a loopback address"
                    })
            }),
            "{:?}\n{}",
            deliveries(&server, &token),
            server.log_text()
        );
        assert_eq!(receiver.count(), 0, "the receiver got no connection");
    }

    #[test]
    fn errors_name_the_failure_class_not_the_peers_bytes() {
        let not_http_peer = Peer::start(not_http);
        let http_peer = Peer::start(http_error);
        let imap_peer = Peer::start(imap_saying_no);
        let db = TestDb::migrated();
        let token = add_user(&db.url, "ann@example.com", PASSWORD);
        let server = Server::start(
            &db.url,
            &[
                ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
                ("MAILBOX_KEY", MAILBOX_KEY),
                ("MAILBOX_ALLOW_PLAINTEXT", "true"),
                ("WEBHOOK_RETRY_SCHEDULE", "0.5"),
            ],
        );
        for peer in [&not_http_peer, &http_peer] {
            let url = format!("http://127.0.0.1:{}/hook", peer.port);
            assert_eq!(register(&server, &token, &url).0, 201);
        }
        send_one(&server, &token);
        let (status, body) = put_mailbox(&server, &token, "127.0.0.1", imap_peer.port, "none");
        assert_eq!(status, 200, "{body}");

        assert!(
            wait_until(Duration::from_secs(30), || {
                let d = deliveries(&server, &token);
                let mut errors: Vec<String> = d
                    .iter()
                    .filter(|r| r["attempts"].as_i64().unwrap_or(0) >= 2)
                    .filter_map(|r| r["last_error"].as_str().map(str::to_string))
                    .collect();
                errors.sort();
                errors == ["HTTP status 502", "no valid HTTP response"]
            }),
            "{:?}",
            deliveries(&server, &token)
        );
        assert!(
            wait_until(Duration::from_secs(20), || mailbox(&server, &token)
                ["state"]
                == "failed"),
            "{}",
            mailbox(&server, &token)
        );
        let shown = mailbox(&server, &token);
        assert_eq!(
            shown["last_error"], "IMAP: login rejected by the server",
            "{shown}"
        );
        // A rejected login is not retried: it could lock the account at the provider.
        assert_eq!(imap_peer.count(), 1);
        assert!(not_http_peer.count() >= 2 && http_peer.count() >= 2);

        let (_, hooks) = call("GET", &server.url("/api/webhooks"), &token, None, None);
        let everything = format!("{hooks} {:?} {shown}", deliveries(&server, &token));
        assert!(!everything.contains(BANNER), "{everything}");
    }

    #[test]
    fn mailboxes_on_internal_hosts_or_in_plaintext_are_refused() {
        let imap_peer = Peer::start(imap_saying_no);
        let db = TestDb::migrated();
        let token = add_user(&db.url, "ann@example.com", PASSWORD);
        let server = Server::start(&db.url, &[("MAILBOX_KEY", MAILBOX_KEY)]);
        for host in [
            "127.0.0.1",
            "localhost",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0.0.0.0",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "10.0.0.1",
            "192.168.0.10",
            "100.64.1.1",
            "fd00::25",
        ] {
            let (status, body) = put_mailbox(&server, &token, host, imap_peer.port, "tls");
            assert_eq!(status, 422, "{host}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.contains("address not allowed"), "{host}: {body}");
        }
        // Plain IMAP sends the password in clear: refused without the setting, wherever it goes.
        let (status, body) = put_mailbox(&server, &token, "93.184.216.34", 143, "none");
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("MAILBOX_ALLOW_PLAINTEXT"),
            "{body}"
        );
        let (status, _) = call("GET", &server.url("/api/me/mailbox"), &token, None, None);
        assert_eq!(status, 404, "nothing was stored");

        // Mailboxes stored before (by an earlier version, or while a setting allowed them) are
        // checked when the watcher connects: none of them reaches the peer.
        let bob = add_user(&db.url, "bob@example.com", PASSWORD);
        let sealed = mailtally::replies::Sealer::new(MAILBOX_KEY).seal("imap-password-1");
        super::common::block_on(async {
            let c = db.client().await;
            for (email, security) in [("ann@example.com", "none"), ("bob@example.com", "starttls")]
            {
                c.execute(
                    "INSERT INTO mailboxes (user_id, host, port, security, username, password_sealed)
                     SELECT id, '127.0.0.1', $2, $3, email, $4 FROM users WHERE email = $1",
                    &[&email, &i32::from(imap_peer.port), &security, &sealed],
                )
                .await
                .unwrap();
            }
        });
        assert!(
            wait_until(Duration::from_secs(20), || {
                mailbox(&server, &token)["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("MAILBOX_ALLOW_PLAINTEXT"))
                    && mailbox(&server, &bob)["last_error"]
                        .as_str()
                        .is_some_and(|e| {
                            e.contains("address not allowed: the host is a loopback address")
                        })
            }),
            "{} {}",
            mailbox(&server, &token),
            mailbox(&server, &bob)
        );
        assert_eq!(
            mailbox(&server, &token)["state"],
            "failed",
            "plaintext is not retried"
        );
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(imap_peer.count(), 0, "the peer got no connection");
    }

    #[test]
    fn imap_reconnects_back_off_and_stop_after_the_limit() {
        let peer = Peer::start(imap_saying_bye);
        let db = TestDb::migrated();
        let token = add_user(&db.url, "ann@example.com", PASSWORD);
        let server = Server::start(
            &db.url,
            &[
                ("MAILBOX_KEY", MAILBOX_KEY),
                ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
                ("MAILBOX_ALLOW_PLAINTEXT", "true"),
                ("MAILBOX_MAX_FAILURES", "3"),
            ],
        );
        let (status, body) = put_mailbox(&server, &token, "127.0.0.1", peer.port, "none");
        assert_eq!(status, 200, "{body}");
        assert!(
            wait_until(Duration::from_secs(40), || mailbox(&server, &token)
                ["state"]
                == "failed"),
            "{} {}",
            mailbox(&server, &token),
            server.log_text()
        );
        let shown = mailbox(&server, &token);
        assert_eq!(shown["failures"], 3, "{shown}");
        assert_eq!(
            shown["last_error"], "IMAP: the server refused the session in its greeting",
            "{shown}"
        );
        assert!(!shown.to_string().contains(BANNER), "{shown}");
        // Waits of 2 s, then 4 s, between the attempts.
        let times = peer.times();
        assert_eq!(times.len(), 3, "{times:?}");
        let (first, second) = (times[1] - times[0], times[2] - times[1]);
        assert!(first >= Duration::from_millis(1900), "{first:?}");
        assert!(second >= Duration::from_millis(3900), "{second:?}");
        // Given up: no more attempts.
        std::thread::sleep(Duration::from_secs(10));
        assert_eq!(peer.count(), 3);
        // A new PUT starts it again, with its failures forgotten.
        let (status, body) = put_mailbox(&server, &token, "127.0.0.1", peer.port, "none");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "active", "{body}");
        assert!(wait_until(Duration::from_secs(10), || peer.count() == 4));
    }
}

/// An upstream that ends DATA on any line holding only a dot, whatever ends the lines around it
/// (CRLF, bare LF or bare CR: the lenient parsers of the SMTP smuggling class), and writes each
/// transaction it accepts as one JSON line: `{"from", "rcpts", "data"}` (data as Latin-1).
const LENIENT_UPSTREAM: &str = r#"
import json, re, socket, sys, threading
port, record = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
END = re.compile(rb'(\r\n|\n|\r)\.(\r\n|\n|\r)')
def serve(conn):
    conn.sendall(b'220 lenient ESMTP\r\n')
    buf, tx, in_data = b'', None, False
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk
        while True:
            if in_data:
                m = END.search(b'\n' + buf)
                if not m:
                    break
                data, buf = buf[:max(m.start() - 1, 0)], buf[m.end() - 1:]
                with lock, open(record, 'a') as out:
                    out.write(json.dumps({'from': tx['from'], 'rcpts': tx['rcpts'],
                                          'data': data.decode('latin-1')}) + '\n')
                tx, in_data = None, False
                conn.sendall(b'250 2.0.0 queued\r\n')
                continue
            m = re.search(rb'\r\n|\n|\r', buf)
            if not m:
                break
            line, buf = buf[:m.start()].decode('latin-1'), buf[m.end():]
            verb = line[:4].upper()
            if not line.strip():
                continue
            if verb in ('EHLO', 'HELO'):
                conn.sendall(b'250 lenient\r\n')
            elif verb == 'MAIL':
                tx = {'from': line[10:], 'rcpts': []}
                conn.sendall(b'250 2.1.0 ok\r\n')
            elif verb == 'RCPT':
                if tx is not None:
                    tx['rcpts'].append(line[8:])
                conn.sendall(b'250 2.1.5 ok\r\n')
            elif verb == 'DATA':
                in_data = tx is not None
                conn.sendall(b'354 go ahead\r\n' if in_data else b'503 no MAIL\r\n')
            elif verb == 'QUIT':
                conn.sendall(b'221 bye\r\n')
                conn.close()
                return
            else:
                if verb == 'RSET':
                    tx = None
                conn.sendall(b'250 ok\r\n')
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', port))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

struct LenientUpstream {
    child: std::process::Child,
    port: u16,
    record: tempfile::NamedTempFile,
}

impl LenientUpstream {
    fn start() -> LenientUpstream {
        let port = common::free_port();
        let record = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("python3")
            .arg("-c")
            .arg(LENIENT_UPSTREAM)
            .arg(port.to_string())
            .arg(record.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs");
        assert!(
            common::smtp::wait_until(Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "the lenient upstream did not start"
        );
        LenientUpstream {
            child,
            port,
            record,
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    fn transactions(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.record.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for LenientUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An authenticated session as `user`, ready for MAIL FROM.
fn signed_in(smtp: SocketAddr, user: &str) -> Client {
    let mut c = Client::connect(smtp);
    c.cmd("EHLO client.example");
    let auth = c.cmd(&format!("AUTH PLAIN {}", auth_plain(user, PASSWORD)));
    assert!(auth.starts_with("235"), "{auth}");
    c
}

#[test]
fn smuggled_transactions_never_reach_a_lenient_upstream() {
    let db = TestDb::migrated();
    add_user(&db.url, "ann@example.com", PASSWORD);
    let upstream = LenientUpstream::start();
    let server = Server::start(&db.url, &[("UPSTREAM_URL", &upstream.url())]);
    let hidden = "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<hidden@victim.example>\r\nDATA\r\n\
                  Subject: hidden\r\n\r\nnot tracked, not recorded\r\n";
    // Every lenient end of DATA, and the CRLF-dot forms a receiver un-stuffs.
    let sequences: [&[u8]; 8] = [
        b"\n.\r\n", b"\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\n.\r", b"\r.\n",
    ];
    let message = |seq: &[u8]| {
        let mut m =
            b"From: ann@example.com\r\nTo: bob@example.net\r\nSubject: offer\r\n\r\nHello".to_vec();
        m.extend_from_slice(seq);
        m.extend_from_slice(hidden.as_bytes());
        m
    };
    for seq in sequences {
        let mut c = signed_in(server.smtp, "ann@example.com");
        assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let mut body = message(seq);
        body.extend_from_slice(b"\r\n.\r\n");
        c.send_raw(&body);
        let r = c.read();
        assert!(r.starts_with("250 2.0.0"), "{seq:?}: {r}");
    }
    // BDAT, with a CR ending one chunk and its LF starting the next.
    {
        let whole = message(b"\n.\r\n");
        let at = whole.windows(2).position(|w| w == b".\r").unwrap() + 2;
        let (first, second) = whole.split_at(at);
        let mut c = signed_in(server.smtp, "ann@example.com");
        assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
        c.send_raw(format!("BDAT {}\r\n", first.len()).as_bytes());
        c.send_raw(first);
        assert!(c.read().starts_with("250"));
        c.send_raw(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
        c.send_raw(second);
        let r = c.read();
        assert!(r.starts_with("250 2.0.0"), "BDAT: {r}");
    }
    let submitted = sequences.len() + 1;
    let settled = common::smtp::wait_until(Duration::from_secs(60), || {
        db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status IN ('delivered', 'bounced')",
        ) == submitted as i64
    });
    std::thread::sleep(Duration::from_millis(300));
    let txs = upstream.transactions();
    for t in &txs {
        assert_eq!(t["rcpts"], serde_json::json!(["<bob@example.net>"]), "{t}");
        assert_eq!(t["from"], "<ann@example.com>", "{t}");
    }
    assert_eq!(
        txs.len(),
        submitted,
        "one transaction per message: {txs:#?}"
    );
    assert!(settled, "every copy delivered");
    assert_eq!(common::smtp::delivered(&db.url), submitted as i64);
    // Nothing is lost: the would-be hidden transaction is text of the one message, every line
    // ending in CRLF, a dot line stuffed.
    for t in &txs {
        let data = t["data"].as_str().unwrap();
        assert!(data.contains("RCPT TO:<hidden@victim.example>"), "{data:?}");
        let bare = data.replace("\r\n", "").contains(['\r', '\n']);
        assert!(!bare, "a bare line end went upstream: {data:?}");
    }
}

#[test]
fn an_unknown_smtp_visibility_is_refused_naming_the_header() {
    let db = TestDb::migrated();
    add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(&db.url, &[]);
    for value in ["privat", "private;", "everyone", "", "  "] {
        let mut c = signed_in(server.smtp, "ann@example.com");
        assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
        let r = c.data(
            format!("From: ann@example.com\r\nX-Mailtally-Visibility: {value}\r\nSubject: s\r\n\r\nhi\r\n")
                .as_bytes(),
        );
        assert!(r.starts_with("554 5.6.0"), "{value}: {r}");
        assert!(r.contains("X-Mailtally-Visibility"), "{r}");
        // The session goes on: the next message is a new transaction.
        assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    }
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM messages"), 0);
    let mut c = signed_in(server.smtp, "ann@example.com");
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
    let r = c.data(
        b"From: ann@example.com\r\nX-Mailtally-Visibility:  Private \r\nSubject: s\r\n\r\nhi\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let rows = common::smtp::db_rows(&db.url, "SELECT visibility FROM messages");
    assert_eq!(rows, vec![vec!["private".to_string()]]);
}

/// Retry-After of a raw HTTP head.
fn retry_after(head: &str) -> Option<u64> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

#[test]
fn group_emails_and_smtp_are_bounded_per_submission_and_per_sender_hour() {
    let db = TestDb::migrated();
    let ann = add_user(&db.url, "ann@example.com", PASSWORD);
    add_user(&db.url, "bob@example.com", PASSWORD);
    let server = Server::start(
        &db.url,
        &[
            ("SUBMISSION_MAX_BYTES", "1000000"),
            ("SENDER_MAX_BYTES_PER_HOUR", "600000"),
        ],
    );
    let queued = || {
        (
            db_i64(&db.url, "SELECT count(*) FROM messages"),
            db_i64(&db.url, "SELECT count(*) FROM copies"),
        )
    };
    let auth = format!("Bearer {ann}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let group = |html: &str, n: usize| {
        let recipients: Vec<_> = (0..n)
            .map(|i| serde_json::json!({"email": format!("r{i}@example.net")}))
            .collect();
        serde_json::json!({"subject": "Offer", "html": html, "recipients": recipients}).to_string()
    };

    // The reported amplification: 150 KB of HTML to 1000 recipients in one small request.
    let big = "<p>0123456789 abcdefghij</p>\n".repeat(150_000 / 28);
    let body = group(&big, 1000);
    assert!(body.len() < 1_048_576);
    let (status, _, reply) = http(
        server.http,
        "POST",
        "/api/group-emails",
        &headers,
        Some(body.as_bytes()),
    );
    assert_eq!(status, 413, "{reply}");
    assert_eq!(json_error(&reply)["error"], "submission_too_large");
    assert_eq!(queued(), (0, 0), "nothing queued");

    // SMTP: a message whose size times its recipients is over the bound.
    let mut c = signed_in(server.smtp, "bob@example.com");
    assert!(c.cmd("MAIL FROM:<bob@example.com>").starts_with("250"));
    for i in 0..4 {
        assert!(c
            .cmd(&format!("RCPT TO:<r{i}@example.net>"))
            .starts_with("250"));
    }
    let text = "0123456789 abcdefghij klmnopqrst uvwxyz\r\n".repeat(300_000 / 41);
    let r = c.data(format!("From: bob@example.com\r\nSubject: s\r\n\r\n{text}").as_bytes());
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert_eq!(queued(), (0, 0), "nothing queued");

    // The hourly budget: one group email fits, the second does not, and neither does SMTP mail
    // of the same sender; a 429 says when to come back.
    let html = "<p>0123456789 abcdefghij</p>\n".repeat(100_000 / 28);
    let body = group(&html, 4);
    let (status, _, reply) = http(
        server.http,
        "POST",
        "/api/group-emails",
        &headers,
        Some(body.as_bytes()),
    );
    assert_eq!(status, 202, "{reply}");
    assert_eq!(queued(), (1, 4));
    let (status, head, reply) = http(
        server.http,
        "POST",
        "/api/group-emails",
        &headers,
        Some(body.as_bytes()),
    );
    assert_eq!(status, 429, "{reply}");
    assert_eq!(json_error(&reply)["error"], "sending_budget_used_up");
    let retry = retry_after(&head).expect("Retry-After");
    assert!((1..=3660).contains(&retry), "{retry}");
    assert_eq!(queued(), (1, 4), "nothing more queued");

    let mut c = signed_in(server.smtp, "ann@example.com");
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@example.net>").starts_with("250"));
    let text = "0123456789 abcdefghij klmnopqrst uvwxyz\r\n".repeat(250_000 / 41);
    let r = c.data(format!("From: ann@example.com\r\nSubject: s\r\n\r\n{text}").as_bytes());
    assert!(r.starts_with("451 4.7.0"), "{r}");
    assert_eq!(queued(), (1, 4), "nothing more queued");
    // What still fits goes: the budget refuses only what is over it.
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@example.net>").starts_with("250"));
    let r = c.data(b"From: ann@example.com\r\nSubject: small\r\n\r\nhi\r\n");
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(queued(), (2, 5));
}

#[test]
fn a_group_email_is_written_in_chunks_and_a_late_chunk_over_the_bound_queues_nothing() {
    let group = |n: usize| {
        let recipients: Vec<_> = (0..n)
            .map(|i| serde_json::json!({"email": format!("r{i}@example.net"), "fields": {"n": i}}))
            .collect();
        serde_json::json!({
            "subject": "Offer {{n}}",
            "html": "<p>Hi {{n}}</p><a href=\"https://shop.example/{{n}}\">shop</a>",
            "recipients": recipients,
        })
    };
    // Several chunks of copies: every recipient once, every copy listed, paced one after the
    // other across the chunks.
    let db = TestDb::migrated();
    let ann = add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(&db.url, &[("SENDER_RATE_PER_MINUTE", "60")]);
    let (status, answer) = common::api::call(
        "POST",
        &server.url("/api/group-emails"),
        &ann,
        Some(&group(250)),
        None,
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["copies"], 250);
    assert_eq!(answer["recipients"].as_array().unwrap().len(), 250);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(DISTINCT lower(recipient)) FROM copies"
        ),
        250
    );
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'accepted'"
        ),
        250
    );
    // One a second: the last copy goes about 249 s from now, not 99 s (each chunk restarting).
    let last = db_i64(
        &db.url,
        "SELECT extract(epoch FROM max(next_attempt_at) - now())::int8 FROM copies
         WHERE status = 'queued' AND lease_until IS NULL",
    );
    assert!((240..=250).contains(&last), "paced across chunks: {last}");
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM messages"), 1);
    assert!(db_i64(&db.url, "SELECT size_bytes FROM messages") > 0);

    // The merged fields fit the bound, the copies (headers, MIME, tracking) do not: refused
    // once a later chunk is over it, and what earlier chunks wrote is rolled back.
    let db = TestDb::migrated();
    let ann = add_user(&db.url, "ann@example.com", PASSWORD);
    let server = Server::start(&db.url, &[("SUBMISSION_MAX_BYTES", "100000")]);
    let (status, answer) = common::api::call(
        "POST",
        &server.url("/api/group-emails"),
        &ann,
        Some(&group(250)),
        None,
    );
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "submission_too_large");
    for table in ["messages", "copies", "events", "links", "sender_budget"] {
        assert_eq!(
            db_i64(&db.url, &format!("SELECT count(*) FROM {table}")),
            0,
            "{table}"
        );
    }
}

/// Charges of one sender that meet at once are held to the hourly budget together, not each
/// against the same reading of the hour: many SMTP sessions or group-email requests in flight
/// at one moment must not multiply SENDER_MAX_BYTES_PER_HOUR. Here every charge arrives while
/// the sender's row is busy, so each one has started before any of them is counted.
#[test]
fn charges_that_meet_at_once_stay_within_the_hourly_budget() {
    let db = TestDb::migrated();
    add_user(&db.url, "ann@example.com", PASSWORD);
    let ann = db_i64(
        &db.url,
        "SELECT id FROM users WHERE email = 'ann@example.com'",
    );
    let url = db.url.clone();
    let passed = common::block_on(async move {
        let pool = mailtally::store::pool(&url, 12).unwrap();
        let mut holder = pool.get().await.unwrap();
        holder
            .execute(
                "INSERT INTO sender_budget (sender_id, used_bytes, at) VALUES ($1, 0, now())",
                &[&ann],
            )
            .await
            .unwrap();
        let busy = holder.transaction().await.unwrap();
        busy.execute(
            "SELECT 1 FROM sender_budget WHERE sender_id = $1 FOR UPDATE",
            &[&ann],
        )
        .await
        .unwrap();
        let charges: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    mailtally::queue::budget::charge(&pool, ann, 400, 1000).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        busy.commit().await.unwrap();
        let mut passed = 0;
        for c in charges {
            if c.await.unwrap().is_ok() {
                passed += 1;
            }
        }
        passed
    });
    let counted = db_i64(
        &db.url,
        "SELECT coalesce(round(sum(used_bytes)), 0)::int8 FROM sender_budget",
    );
    assert_eq!(
        (passed, counted),
        (2, 800),
        "8 charges of 400 bytes against 1000 an hour: {passed} passed, {counted} counted"
    );
}
