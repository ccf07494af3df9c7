//! The upstream away, and an upstream that takes the whole message after DATA and then never
//! answers: the copy is deferred (after UPSTREAM_TIMEOUT), retried and delivered.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::smtp::{add_user, db_i64, db_rows, submit_as, wait_until, Sink};
use crate::common::{free_port, Server, TestDb};

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
fn copies_are_deferred_while_the_upstream_is_down_and_delivered_when_it_is_back() {
    let db = TestDb::migrated();
    let port = free_port();
    let server = Server::start(
        &db.url,
        &[
            ("UPSTREAM_URL", &format!("smtp://127.0.0.1:{port}?tls=none")),
            ("RETRY_SCHEDULE", "1"),
        ],
    );
    add_user(&db.url, "ann@example.com", PASSWORD);
    submit(
        &server,
        &["bob@example.net"],
        b"Subject: later\r\nMessage-ID: <later@test>\r\n\r\nbody\r\n",
    );
    assert!(
        wait_until(Duration::from_secs(20), || db_i64(
            &db.url,
            // A claim counts the attempt before its outcome is recorded: wait for the second
            // deferral's event, not only for the second claim.
            "SELECT count(*) FROM copies WHERE status = 'deferred' AND attempts >= 2
             AND (SELECT count(*) FROM events WHERE kind = 'deferred') >= 2"
        ) == 1),
        "{:?}",
        db_rows(
            &db.url,
            "SELECT status, attempts::text, coalesce(last_error, '') FROM copies"
        )
    );
    assert!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'deferred'"
        ) >= 2
    );
    let sink = Sink::start_on(port, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'delivered'"
        ) == 1),
        "{}",
        server.log_text()
    );
    assert_eq!(sink.count(), 1);
    assert_eq!(
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind = 'delivered'"
        ),
        1
    );
}

/// A minimal SMTP server: its first `stalls` connections go silent once DATA is sent in full;
/// later ones take the message and answer 250. Returns the messages taken.
fn stalling_upstream(
    listener: TcpListener,
    stalls: usize,
) -> (Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (t, n) = (taken.clone(), connections.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let number = n.fetch_add(1, Ordering::SeqCst);
            let t = t.clone();
            std::thread::spawn(move || {
                let _ = session(stream, number < stalls, &t);
            });
        }
    });
    (taken, connections)
}

fn session(stream: TcpStream, stall: bool, taken: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    w.write_all(b"220 stall.test ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            w.write_all(b"250-stall.test\r\n250 8BITMIME\r\n")?;
        } else if cmd.starts_with("DATA") {
            w.write_all(b"354 go ahead\r\n")?;
            let mut message = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                message.push_str(&line);
            }
            if stall {
                // Took it all, says nothing, holds the connection until the client gives up.
                let _ = r.read_line(&mut line);
                return Ok(());
            }
            taken.lock().unwrap().push(message);
            w.write_all(b"250 2.0.0 queued\r\n")?;
        } else if cmd.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n")?;
        }
    }
}

#[test]
fn an_upstream_that_stalls_mid_data_is_a_deferral_then_a_delivery() {
    let db = TestDb::migrated();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (taken, connections) = stalling_upstream(listener, 1);
    let server = Server::start(
        &db.url,
        &[
            ("UPSTREAM_URL", &format!("smtp://127.0.0.1:{port}?tls=none")),
            ("UPSTREAM_TIMEOUT", "2"),
            ("RETRY_SCHEDULE", "1"),
        ],
    );
    add_user(&db.url, "ann@example.com", PASSWORD);
    submit(
        &server,
        &["bob@example.net"],
        b"Subject: stall\r\nMessage-ID: <stall@test>\r\n\r\nbody\r\n",
    );
    assert!(
        wait_until(Duration::from_secs(30), || db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'delivered'"
        ) == 1),
        "{:?}\n{}",
        db_rows(
            &db.url,
            "SELECT status, attempts::text, coalesce(last_error, '') FROM copies"
        ),
        server.log_text()
    );
    let deferred = db_rows(
        &db.url,
        "SELECT coalesce(detail::text, '') FROM events WHERE kind = 'deferred'",
    );
    assert_eq!(deferred.len(), 1, "one deferral: {deferred:?}");
    assert_eq!(
        taken.lock().unwrap().len(),
        1,
        "delivered once after the stall"
    );
    assert!(taken.lock().unwrap()[0].contains("Message-ID: <stall@test>"));
    println!(
        "stalled upstream: deferred once ({:?}), delivered on connection {} of {}",
        deferred[0],
        connections.load(Ordering::SeqCst),
        connections.load(Ordering::SeqCst)
    );
}
