//! Security review, one test a finding or a claim: no open relay, senders held to their own
//! address when the setting says so, brute force on SMTP AUTH and API tokens refused per client
//! address, size limits on every HTTP route, no SQL or header injection through the API, no open
//! redirect through `/c/`, no secret in the log, TLS 1.2 and 1.3 only.

mod common;
mod track_support;

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
            mailtally::api::accounts::add_user(
                &mut client,
                "root@example.com",
                "admin password",
                None,
                mailtally::api::accounts::Role::Admin,
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
    for value in ["privat", "private;", "everyone"] {
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
    for table in ["messages", "copies", "events", "links", "sender_usage"] {
        assert_eq!(
            db_i64(&db.url, &format!("SELECT count(*) FROM {table}")),
            0,
            "{table}"
        );
    }
}
