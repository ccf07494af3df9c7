//! The SMTP submission server with real clients: swaks, Python's smtplib and lettre submit with
//! STARTTLS + AUTH; the policy refusals (530, 535, 538, 552, 452) and the protocol edges.

use crate::common;

use std::time::Duration;

use common::smtp::{self, add_user, auth_plain, db_i64, db_rows, wait_until, Client};
use common::{Server, TestDb};

const PASSWORD: &str = "correct horse battery";

fn message(id: &str, extra_headers: &str) -> String {
    format!(
        "From: ann@example.com\r\nTo: bob@example.net\r\nSubject: Quarterly offer\r\nMessage-ID: <{id}@test>\r\n{extra_headers}Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hi <a href=\"https://example.com/\">there</a></p>\r\n.leading dot\r\n</body></html>\r\n"
    )
}

#[test]
fn swaks_smtplib_and_lettre_submit_with_starttls_and_auth() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let smtp = server.smtp;

    // swaks: STARTTLS + AUTH PLAIN, with control headers that must not reach the copy.
    let raw = message("swaks", "X-Mailtally-Template: q3-offer\r\nX-Mailtally-Visibility: private\r\nX-Mailtally-Deal: D-42\r\n");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &raw).unwrap();
    let out = std::process::Command::new("swaks")
        .args([
            "--server",
            &smtp.ip().to_string(),
            "--port",
            &smtp.port().to_string(),
        ])
        .args(["--tls", "--auth", "PLAIN", "--auth-user", "ann@example.com"])
        .args(["--auth-password", PASSWORD, "--from", "ann@example.com"])
        .args(["--to", "bob@example.net,carol@example.org", "--data"])
        .arg(file.path())
        .output()
        .expect("swaks runs");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );

    // Python smtplib: STARTTLS + AUTH LOGIN.
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=20)
s.ehlo(); s.starttls(context=ctx); s.ehlo()
s.login(sys.argv[3], sys.argv[4])
msg = sys.argv[5].encode()
s.sendmail(sys.argv[3], ["dave@example.com"], msg)
s.quit()
print("sent")
"#;
    let (ok, output) = smtp::python(
        script,
        &[
            &smtp.ip().to_string(),
            &smtp.port().to_string(),
            "ann@example.com",
            PASSWORD,
            &message("smtplib", ""),
        ],
    );
    assert!(ok, "{output}");

    // lettre as a client: STARTTLS required, AUTH PLAIN.
    let lettre_raw = message("lettre", "X-Mailtally-Template: lettre-key\r\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Tls, TlsParameters};
        use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
        let tls = TlsParameters::builder("localhost".into())
            .dangerous_accept_invalid_certs(true)
            .build_rustls()
            .unwrap();
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.ip().to_string())
                .port(smtp.port())
                .tls(Tls::Required(tls))
                .credentials(Credentials::new("ann@example.com".into(), PASSWORD.into()))
                .build();
        let envelope = lettre::address::Envelope::new(
            Some("ann@example.com".parse().unwrap()),
            vec!["erin@example.com".parse().unwrap()],
        )
        .unwrap();
        transport
            .send_raw(&envelope, lettre_raw.as_bytes())
            .await
            .expect("lettre submits");
    });

    // Four copies, all delivered to the capture sink.
    assert!(
        wait_until(Duration::from_secs(20), || db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'delivered' AND delivered_via = 'capture'"
        ) == 4),
        "copies: {:?}\n{}",
        db_rows(&db.url, "SELECT recipient, status, last_error FROM copies"),
        server.log_text()
    );
    let facts = db_rows(
        &db.url,
        "SELECT m.template_key, m.visibility, coalesce(m.deal, ''), m.subject, u.email
         FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.header_message_id = '<swaks@test>'",
    );
    assert_eq!(
        facts,
        vec![vec![
            "q3-offer".to_string(),
            "private".into(),
            "D-42".into(),
            "Quarterly offer".into(),
            "ann@example.com".into()
        ]]
    );
    let keys = db_rows(
        &db.url,
        "SELECT template_key, visibility FROM messages ORDER BY header_message_id",
    );
    assert_eq!(keys[0], vec!["lettre-key".to_string(), "team".into()]);
    assert_eq!(keys[1], vec!["quarterly offer".to_string(), "team".into()]);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'accepted'"
        ),
        4
    );
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'delivered'"
        ),
        4
    );

    // The capture API: only the caller's copies, raw source without the control headers.
    let list: serde_json::Value = ureq::get(&server.url("/api/captured"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let captured = list["captured"].as_array().unwrap();
    assert_eq!(captured.len(), 4, "{list}");
    let swaks_copy = captured
        .iter()
        .find(|c| c["recipient"] == "carol@example.org")
        .unwrap();
    let copy_id = swaks_copy["copy_id"].as_str().unwrap();
    let resp = ureq::get(&server.url(&format!("/api/captured/{copy_id}/raw")))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(resp.content_type(), "message/rfc822");
    let body = resp.into_string().unwrap();
    assert!(
        body.contains(&format!("{}/c/", server.url(""))),
        "the link is tracked: {body}"
    );
    assert!(
        body.contains(&format!("{}/o/", server.url(""))),
        "the pixel is in: {body}"
    );
    // swaks ends what it sends with one more line end.
    assert_eq!(
        common::untrack(&body, &server.url("")),
        format!("{}\r\n", message("swaks", "")),
        "control headers stripped; apart from the tracked link and the pixel nothing changed"
    );

    let other = add_user(&db.url, "mallory@example.com", PASSWORD);
    let theirs: serde_json::Value = ureq::get(&server.url("/api/captured"))
        .set("Authorization", &format!("Bearer {other}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(theirs["captured"].as_array().unwrap().len(), 0);
    let denied = ureq::get(&server.url(&format!("/api/captured/{copy_id}/raw")))
        .set("Authorization", &format!("Bearer {other}"))
        .call();
    assert!(matches!(denied, Err(ureq::Error::Status(404, _))));
    assert!(matches!(
        ureq::get(&server.url("/api/captured")).call(),
        Err(ureq::Error::Status(401, _))
    ));

    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for name in [
        "mailtally_smtp_sessions_total",
        "mailtally_smtp_messages_accepted_total 3",
        "mailtally_delivery_attempts_total{result=\"delivered\"} 4",
        "mailtally_delivery_latency_seconds_bucket",
        "mailtally_queue_depth_copies",
        "mailtally_smtp_received_bytes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}

#[test]
fn refusals_follow_the_rfcs() {
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[("MAX_MESSAGE_SIZE", "10000"), ("MAX_RECIPIENTS", "100")],
    );
    add_user(&db.url, "ann@example.com", PASSWORD);

    // Without AUTH: MAIL and RCPT are refused with 530.
    let mut c = Client::connect(server.smtp);
    let ehlo = c.cmd("EHLO client.example");
    assert!(
        ehlo.contains("250-PIPELINING") && ehlo.contains("CHUNKING"),
        "{ehlo}"
    );
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN"),
        "loopback may AUTH in clear: {ehlo}"
    );
    assert!(c
        .cmd("MAIL FROM:<ann@example.com>")
        .starts_with("530 5.7.0"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("530 5.7.0"));
    assert!(c.cmd("DATA").starts_with("530 5.7.0"));
    assert!(c.cmd("VRFY bob").starts_with("252"));
    assert!(c.cmd("EXPN list").starts_with("502"));
    assert!(c.cmd("HELP").starts_with("214"));
    assert!(c.cmd("NOOP").starts_with("250"));
    assert!(c.cmd("FOO bar").starts_with("500 5.5.2"));
    assert!(c.cmd("MAIL FROM:ann").starts_with("501"));

    // Wrong password: 535; the right one: 235.
    let wrong = auth_plain("ann@example.com", "wrong password");
    assert!(c
        .cmd(&format!("AUTH PLAIN {wrong}"))
        .starts_with("535 5.7.8"));
    assert!(c.cmd("AUTH PLAIN").starts_with("334"));
    assert!(c.cmd("*").starts_with("501"));
    let right = auth_plain("ann@example.com", PASSWORD);
    assert!(c
        .cmd(&format!("AUTH PLAIN {right}"))
        .starts_with("235 2.7.0"));
    assert!(c.cmd("AUTH PLAIN x").starts_with("503"));

    // Sequence errors.
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    assert!(c
        .cmd("MAIL FROM:<ann@example.com>")
        .starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("554 5.5.1"));
    assert!(c.cmd("RCPT TO:<postmaster>").starts_with("501 5.1.3"));

    // 100 recipients are fine, the 101st gets 452.
    for i in 0..100 {
        let r = c.cmd(&format!("RCPT TO:<r{i}@example.net>"));
        assert!(r.starts_with("250 2.1.5"), "{i}: {r}");
    }
    assert!(c.cmd("RCPT TO:<r100@example.net>").starts_with("452 4.5.3"));
    assert!(c.cmd("RSET").starts_with("250"));

    // Oversized: SIZE declared up front, then a body too large while receiving: 552.
    assert!(c
        .cmd("MAIL FROM:<ann@example.com> SIZE=20000")
        .starts_with("552 5.3.4"));
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
    let big = format!(
        "Subject: big\r\n\r\n{}\r\n",
        "x".repeat(78).repeat(200).as_str()
    );
    let reply = c.data(big.as_bytes());
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM messages"), 0);

    // PIPELINING: a whole transaction in one write, the replies in order.
    c.send_raw(b"MAIL FROM:<ann@example.com>\r\nRCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n");
    assert!(c.read().starts_with("250 2.1.0"));
    assert!(c.read().starts_with("250 2.1.5"));
    assert!(c.read().starts_with("250 2.1.5"));
    assert!(c.read().starts_with("354"));
    c.send_raw(b"Subject: piped\r\n\r\nhello\r\n..dot\r\n.\r\n");
    let queued = c.read();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");

    // BDAT (CHUNKING) in two chunks.
    assert!(c
        .cmd("MAIL FROM:<ann@example.com> BODY=8BITMIME")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
    c.send_raw(b"BDAT 22\r\nSubject: chunked\r\n\r\nhe");
    assert!(c.read().starts_with("250 2.0.0 22 octets"));
    c.send_raw(b"BDAT 5 LAST\r\nllo\r\n");
    assert!(c.read().starts_with("250 2.0.0 Ok: queued as "));
    assert!(c.cmd("QUIT").starts_with("221"));

    let bodies = db_rows(
        &db.url,
        "SELECT encode(body, 'escape') FROM copies c JOIN messages m ON m.id = c.message_id ORDER BY m.created_at, c.recipient",
    );
    assert_eq!(bodies.len(), 3);
    let public = server.url("");
    assert_eq!(
        common::untrack(&bodies[0][0], &public),
        "Subject: piped\r\n\r\nhello\r\n.dot\r\n"
    );
    assert_eq!(
        common::untrack(&bodies[2][0], &public),
        "Subject: chunked\r\n\r\nhello\r\n"
    );

    // STARTTLS followed by injected commands in the same packet: refused, connection closed.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO client.example");
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<ann@example.com>\r\n");
    assert!(c.read().starts_with("554 5.5.1"));

    // Too many AUTH failures close the session.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO client.example");
    assert!(c.cmd(&format!("AUTH PLAIN {wrong}")).starts_with("535"));
    assert!(c.cmd(&format!("AUTH PLAIN {wrong}")).starts_with("535"));
    assert!(c
        .cmd(&format!("AUTH PLAIN {wrong}"))
        .starts_with("421 4.7.0"));
}

#[test]
fn trusted_networks_need_a_known_sender_and_clear_auth_needs_tls_elsewhere() {
    let db = TestDb::migrated();
    add_user(&db.url, "app@example.com", PASSWORD);
    let server = Server::start(
        &db.url,
        &[
            ("ALLOW_PLAIN_AUTH_ON_LOOPBACK", "false"),
            ("SUBMIT_TRUSTED_NETWORKS", "127.0.0.1/32"),
        ],
    );
    let mut c = Client::connect(server.smtp);
    let ehlo = c.cmd("EHLO app.example");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let auth = c.cmd(&format!(
        "AUTH PLAIN {}",
        auth_plain("app@example.com", PASSWORD)
    ));
    assert!(auth.starts_with("538 5.7.11"), "{auth}");
    assert!(c
        .cmd("MAIL FROM:<stranger@example.com>")
        .starts_with("550 5.7.1"));
    assert!(c.cmd("MAIL FROM:<App@Example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
    assert!(c
        .data(b"Subject: from the app\r\n\r\nhi\r\n")
        .starts_with("250 2.0.0"));
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM messages m JOIN users u ON u.id = m.sender_id WHERE u.email = 'app@example.com'"
        ),
        1
    );

    // The database refuses the message: 451 4.3.0, never 250, and nothing half-stored.
    db_rows(
        &db.url,
        "ALTER TABLE copies ADD CONSTRAINT refuse_all CHECK (false) NOT VALID",
    );
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
    let reply = c.data(b"Subject: refused\r\n\r\nhi\r\n");
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM messages"), 1);
}

#[test]
fn open_sessions_get_421_on_shutdown() {
    let db = TestDb::migrated();
    let mut server = Server::start(&db.url, &[]);
    let mut c = Client::connect(server.smtp);
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    let status = server.stop();
    assert!(status.success(), "{}", server.log_text());
    let reply = c.read();
    assert!(reply.starts_with("421 4.3.2"), "{reply:?}");
}

/// The first non-loopback address of this machine, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
}

#[test]
fn a_non_loopback_listener_wants_tls_before_auth_and_limits_sessions_and_idling() {
    let Some(ip) = non_loopback_address() else {
        eprintln!("no non-loopback address: skipped");
        return;
    };
    let db = TestDb::migrated();
    add_user(&db.url, "ann@example.com", PASSWORD);
    let listen = std::net::SocketAddr::new(ip, common::free_port());
    let _server = Server::start(
        &db.url,
        &[
            ("SMTP_LISTEN", &listen.to_string()),
            ("MAX_SMTP_SESSIONS", "1"),
            ("SMTP_IDLE_TIMEOUT", "2"),
        ],
    );
    let mut c = Client::connect(listen);
    let ehlo = c.cmd("EHLO client.example");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let auth = c.cmd(&format!(
        "AUTH PLAIN {}",
        auth_plain("ann@example.com", PASSWORD)
    ));
    assert!(auth.starts_with("538 5.7.11"), "{auth}");
    assert!(c
        .cmd("MAIL FROM:<ann@example.com>")
        .starts_with("530 5.7.0"));

    // One session at a time: the second connection is told to come back later.
    let second = std::net::TcpStream::connect(listen).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = std::io::BufReader::new(second);
    assert!(common::read_reply(&mut reader).starts_with("421 4.3.2"));

    // An idle session is closed after SMTP_IDLE_TIMEOUT.
    let idle = c.read();
    assert!(idle.starts_with("421 4.4.2"), "{idle:?}");
    drop(c);

    // After STARTTLS, AUTH PLAIN works on the same listener (smtplib).
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=20)
s.ehlo(); s.starttls(context=ctx); s.ehlo()
assert "auth" in s.esmtp_features, s.esmtp_features
s.login(sys.argv[3], sys.argv[4])
s.quit()
print("ok")
"#;
    let mut done = (false, String::new());
    // The refused second connection frees its slot asynchronously; retry briefly.
    for _ in 0..20 {
        done = smtp::python(
            script,
            &[
                &ip.to_string(),
                &listen.port().to_string(),
                "ann@example.com",
                PASSWORD,
            ],
        );
        if done.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(done.0, "{}", done.1);
}

/// One value of a Prometheus sample in `/metrics` text (`name` with its labels, if any).
fn metric(server: &Server, name: &str) -> f64 {
    let text = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {name}"))
}

/// Sessions whose messages share one group commit are answered each for its own message: the
/// one whose insert fails gets 451 and leaves nothing behind, the others get 250 and are stored.
#[test]
fn a_group_commit_answers_each_session_for_its_own_message() {
    const SESSIONS: usize = 12;
    const REFUSED: usize = 5;
    let db = TestDb::migrated();
    // A failure of one message's statement alone, as a constraint or a full disk would give.
    db_rows(
        &db.url,
        "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.subject = 'refuse me' THEN RAISE EXCEPTION 'refused for the test'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_marked BEFORE INSERT ON messages
             FOR EACH ROW EXECUTE FUNCTION refuse_marked();
         SELECT 1",
    );
    // A window wide enough that every session's message joins the first one's group.
    let server = Server::start(
        &db.url,
        &[("QUEUE_COMMIT_WINDOW", "2"), ("QUEUE_COMMITTERS", "1")],
    );
    add_user(&db.url, "ann@example.com", PASSWORD);
    let smtp = server.smtp;
    let ready = std::sync::Arc::new(std::sync::Barrier::new(SESSIONS));
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(smtp);
                c.cmd("EHLO client.example");
                let auth = c.cmd(&format!("AUTH PLAIN {}", auth_plain("ann@example.com", PASSWORD)));
                assert!(auth.starts_with("235"), "{auth}");
                assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("250"));
                assert!(c.cmd(&format!("RCPT TO:<r{i}@example.net>")).starts_with("250"));
                assert!(c.cmd("DATA").starts_with("354"));
                let subject = if i == REFUSED { "refuse me".to_string() } else { format!("offer {i}") };
                let body = format!(
                    "From: ann@example.com\r\nTo: r{i}@example.net\r\nSubject: {subject}\r\n\
                     Content-Type: text/html\r\n\r\n<p><a href=\"https://example.com/{i}\">go</a></p>\r\n"
                );
                c.send_raw(body.as_bytes());
                // Every message ends at once, so that they meet in one group.
                ready.wait();
                c.send_raw(b".\r\n");
                let reply = c.read();
                c.cmd("QUIT");
                reply
            })
        })
        .collect();
    let replies: Vec<String> = sessions.into_iter().map(|t| t.join().unwrap()).collect();

    for (i, reply) in replies.iter().enumerate() {
        if i == REFUSED {
            assert!(reply.starts_with("451 4.3.0"), "session {i}: {reply}");
        } else {
            assert!(reply.starts_with("250 2.0.0"), "session {i}: {reply}");
        }
    }
    let stored = (SESSIONS - 1) as i64;
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM messages"), stored);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM messages WHERE subject LIKE 'offer %'"
        ),
        stored
    );
    assert_eq!(db_i64(&db.url, "SELECT count(*) FROM copies"), stored);
    assert_eq!(
        db_i64(
            &db.url,
            &format!("SELECT count(*) FROM copies WHERE recipient = 'r{REFUSED}@example.net'")
        ),
        0
    );
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'accepted'"
        ),
        stored
    );
    // They were one group, written again message by message once the refused insert failed.
    assert_eq!(metric(&server, "mailtally_queue_commit_groups_total"), 1.0);
    assert_eq!(
        metric(&server, "mailtally_queue_commit_retried_groups_total"),
        1.0
    );
}
