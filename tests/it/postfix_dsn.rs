//! The bounce path with real peers end to end. mailtally relays to a Postfix of the test's own,
//! which accepts both recipients and then fails them itself: one has no mailbox in a domain it
//! delivers (5.1.1), the other is behind a relay host that refuses connections (a delay notice
//! at once). Postfix writes its DSNs into the sender's Maildir, which a real Dovecot serves and
//! mailtally watches; the copies get the events and the suppression list the hard bounce.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::smtp::{add_user, db_i64, db_rows, delivered, listening, submit_as, wait_until};
use common::{free_port, Server, TestDb};

const PASSWORD: &str = "correct horse battery";
const IMAP_PASSWORD: &str = "imap-secret-Zq8";
const MAILBOX_KEY: &str = "a-mailbox-key-for-tests-0123456789abcdef";
const ANN: &str = "ann@example.com";
/// In a domain Postfix delivers itself, without a mailbox.
const UNKNOWN: &str = "nobody@example.org";
/// Anywhere else: through the relay host, which is a closed port.
const UNREACHABLE: &str = "bob@slow.example.net";

/// A Postfix instance with its own configuration, queue and data directories, listening on a
/// loopback port. It delivers example.com and example.org itself, into Maildirs under
/// `mail_root` (ann's only), and relays everything else to a closed loopback port.
struct Postfix {
    child: Child,
    port: u16,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Postfix {
    /// None when Postfix is not installed.
    fn start(
        mail_root: &Path,
        owner: (nix::unistd::Uid, nix::unistd::Gid),
        mailboxes: &[&str],
    ) -> Option<Postfix> {
        if !Path::new("/usr/sbin/postfix").exists() || !Path::new("/etc/postfix/master.cf").exists()
        {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Postfix's daemons run as the postfix user and must reach their directories.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let config = d.join("config");
        for sub in ["config", "spool", "data"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let postfix_user = nix::unistd::User::from_name("postfix").unwrap().unwrap();
        nix::unistd::chown(&d.join("data"), Some(postfix_user.uid), None).unwrap();
        std::fs::copy("/etc/postfix/master.cf", config.join("master.cf")).unwrap();
        // A trailing slash makes the entry a Maildir, relative to virtual_mailbox_base.
        let map: String = mailboxes.iter().map(|m| format!("{m} {m}/\n")).collect();
        std::fs::write(config.join("mailboxes"), map).unwrap();
        let port = free_port();
        let closed = free_port();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/spool\n\
             data_directory = {d}/data\n\
             myhostname = postfix.test\n\
             mydestination =\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtpd_tls_security_level = none\n\
             smtp_tls_security_level = none\n\
             # Accept unknown mailboxes at RCPT and bounce them afterwards, with a DSN.\n\
             smtpd_reject_unlisted_recipient = no\n\
             virtual_mailbox_domains = example.com, example.org\n\
             virtual_mailbox_base = {mail}\n\
             virtual_mailbox_maps = texthash:{config}/mailboxes\n\
             # The Maildir belongs to the user Dovecot reads it as.\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             relayhost = [127.0.0.1]:{closed}\n\
             # A delay notice on the first failed attempt, and retries every second.\n\
             delay_warning_time = 1s\n\
             queue_run_delay = 1s\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             maillog_file = /dev/stdout\n",
            d = d.display(),
            mail = mail_root.display(),
            config = config.display(),
            uid = owner.0,
            gid = owner.1,
        );
        std::fs::write(config.join("main.cf"), main_cf).unwrap();
        let postconf = |args: &[&str]| {
            let out = Command::new("postconf")
                .arg("-c")
                .arg(&config)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "postconf {args:?}: {out:?}");
        };
        // Not the system's port 25: one free port, and no chroot (the spool is a temp dir).
        postconf(&["-M#", "smtp/inet"]);
        postconf(&["-M", &format!("{port}/inet={port} inet n - n - - smtpd")]);
        postconf(&["-F", "*/*/chroot = n"]);
        let log = std::fs::File::create(d.join("postfix.log")).unwrap();
        // In the foreground, logging to its stdout: no syslog needed.
        let child = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&config)
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let postfix = Postfix {
            child,
            port,
            config,
            dir,
        };
        assert!(
            listening(port, Duration::from_secs(15)),
            "Postfix did not start: {}",
            postfix.log()
        );
        Some(postfix)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages in a Maildir, new and seen.
fn maildir_messages(maildir: &Path) -> Vec<String> {
    ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect()
}

/// A field of `recipient`'s block in the delivery-status part of one of `messages`, unfolded.
fn dsn_field(messages: &[String], recipient: &str, field: &str) -> String {
    let final_recipient = format!("Final-Recipient: rfc822; {recipient}");
    let block = messages
        .iter()
        .flat_map(|m| m.split("\n\n"))
        .find(|b| b.contains(&final_recipient))
        .unwrap_or_else(|| panic!("no DSN names {recipient}: {messages:#?}"));
    let unfolded = block.replace("\n ", " ").replace("\n\t", " ");
    let prefix = format!("{field}: ");
    let value = unfolded
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {field} for {recipient}: {block}"));
    words(value)
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn postfix_dsns_in_the_senders_mailbox_bounce_and_defer_their_copies() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: a Postfix instance of its own needs root");
        return;
    }
    let Some(imap) = Dovecot::start(ANN, IMAP_PASSWORD, true) else {
        eprintln!("skipped: Dovecot is not installed (Debian package dovecot-imapd)");
        return;
    };
    let Some(postfix) = Postfix::start(&imap.mail_root(), imap.mail_owner, &[ANN]) else {
        eprintln!("skipped: Postfix is not installed (Debian package postfix)");
        return;
    };
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[
            (
                "UPSTREAM_URL",
                &format!("smtp://127.0.0.1:{}?tls=none", postfix.port),
            ),
            ("MAILBOX_KEY", MAILBOX_KEY),
            ("MAILBOX_POLL_EVERY", "1"),
            // Dovecot runs on loopback, without TLS.
            ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("MAILBOX_ALLOW_PLAINTEXT", "true"),
        ],
    );
    let token = add_user(&db.url, ANN, PASSWORD);
    imap.watched_by(&server, &token, ANN, IMAP_PASSWORD);
    for (n, to) in [UNKNOWN, UNREACHABLE].iter().enumerate() {
        let message = format!(
            "From: Ann <{ANN}>\r\nTo: {to}\r\nSubject: News {n}\r\nMessage-ID: <news-{n}@mail.example.com>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<p>News, <a href=\"https://example.com/n\">more</a></p>\r\n"
        );
        submit_as(server.smtp, ANN, PASSWORD, &[to], message.as_bytes());
    }
    // Postfix took both: the failures are its own, after the SMTP transaction.
    assert!(
        wait_until(Duration::from_secs(20), || delivered(&db.url) == 2),
        "{:?}\n{}\n{}",
        db_rows(
            &db.url,
            "SELECT recipient, status, coalesce(last_error, '') FROM copies"
        ),
        postfix.log(),
        server.log_text()
    );

    let reported = "SELECT c.recipient, e.kind, coalesce(e.reason, ''), coalesce(e.detail, '')
                    FROM events e JOIN copies c ON c.id = e.copy_id
                    WHERE e.kind IN ('bounced', 'deferred', 'complaint') ORDER BY c.recipient";
    assert!(
        wait_until(Duration::from_secs(30), || db_rows(&db.url, reported).len()
            >= 2
            && db_i64(&db.url, "SELECT last_uid FROM mailboxes") == 2),
        "{:?}\n{:?}\n{}\n{}",
        db_rows(&db.url, reported),
        db_rows(
            &db.url,
            "SELECT last_uid::text, coalesce(last_error, '') FROM mailboxes"
        ),
        postfix.log(),
        server.log_text()
    );
    // What Postfix wrote, read from the Maildir it delivered to.
    let dsns = maildir_messages(&imap.mail_root().join(ANN));
    let hard_status = dsn_field(&dsns, UNKNOWN, "Status");
    let soft_status = dsn_field(&dsns, UNREACHABLE, "Status");
    assert_eq!(dsn_field(&dsns, UNKNOWN, "Action"), "failed");
    assert_eq!(dsn_field(&dsns, UNREACHABLE, "Action"), "delayed");
    assert!(hard_status.starts_with("5."), "{hard_status}");
    assert!(soft_status.starts_with("4."), "{soft_status}");

    let rows = db_rows(&db.url, reported);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][..3], [UNREACHABLE, "deferred", "soft"]);
    assert_eq!(rows[1][..3], [UNKNOWN, "bounced", "hard"]);
    for (row, recipient, status) in [
        (&rows[0], UNREACHABLE, &soft_status),
        (&rows[1], UNKNOWN, &hard_status),
    ] {
        let detail = words(&row[3]);
        assert!(
            detail.starts_with(&format!("{status} ")),
            "{detail} / {status}"
        );
        // The remote server's words, as Postfix put them in Diagnostic-Code.
        let diagnostic = dsn_field(&dsns, recipient, "Diagnostic-Code");
        let text = diagnostic
            .split_once("; ")
            .map_or(diagnostic.as_str(), |(_, t)| t);
        assert!(detail.contains(text), "{detail} / {diagnostic}");
    }
    assert_eq!(
        db_rows(&db.url, "SELECT address, reason FROM suppressions"),
        [[UNKNOWN, "hard_bounce"]]
    );
    // Notices are not replies.
    assert_eq!(
        db_i64(&db.url, "SELECT count(*) FROM events WHERE kind = 'reply'"),
        0
    );

    // The hard-bounced address is refused from now on; the delayed one is not.
    let mut c = common::smtp::Client::connect(server.smtp);
    c.cmd("EHLO client.example");
    c.cmd(&format!(
        "AUTH PLAIN {}",
        common::smtp::auth_plain(ANN, PASSWORD)
    ));
    c.cmd(&format!("MAIL FROM:<{ANN}>"));
    let refused = c.cmd(&format!("RCPT TO:<{UNKNOWN}>"));
    assert!(refused.starts_with("550 5.7.1"), "{refused}");
    let accepted = c.cmd(&format!("RCPT TO:<{UNREACHABLE}>"));
    assert!(accepted.starts_with("250"), "{accepted}");
    c.cmd("QUIT");
}
