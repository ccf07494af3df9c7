//! SMTP peers for the relay and delivery tests: a Postfix `smtp-sink` upstream that dumps each
//! message to a directory, a raw SMTP client, users, and blocking database queries.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{block_on, free_port, read_reply};

/// A Postfix `smtp-sink` on a loopback port, writing each message to its own file.
pub struct Sink {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Sink {
    pub fn start(extra: &[&str]) -> Sink {
        Sink::start_on(free_port(), extra)
    }

    /// `extra`: smtp-sink options, e.g. `["-f", "RCPT", "-B", "550 5.1.1 No such user"]`.
    pub fn start_on(port: u16, extra: &[&str]) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let template = format!("{}/%Y%m%d%H%M%S.", dir.path().display());
        let mut cmd = Command::new("smtp-sink");
        if nix::unistd::geteuid().is_root() {
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .args(extra)
            .args([
                "-d",
                &template,
                "-m",
                "1000",
                &format!("127.0.0.1:{port}"),
                "256",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink runs (Debian package postfix)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sink { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Each message received so far, as smtp-sink wrote it: its own headers removed, line ends
    /// LF (smtp-sink converts CRLF), the trailing empty line it appends removed.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned();
            out.push(strip_sink_headers(&text));
        }
        out
    }

    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path()).unwrap().count()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn strip_sink_headers(dump: &str) -> String {
    // smtp-sink's own headers end with its three-line Received header.
    let mut lines = dump.split_inclusive('\n');
    let mut rest_at = 0;
    let mut received_seen = false;
    let mut continuation_lines = 0;
    for line in lines.by_ref() {
        rest_at += line.len();
        if line.starts_with("Received: ") {
            received_seen = true;
            continue;
        }
        if received_seen && line.starts_with('\t') {
            continuation_lines += 1;
            if continuation_lines == 2 {
                break;
            }
        }
    }
    let body = &dump[rest_at..];
    body.strip_suffix('\n').unwrap_or(body).to_string()
}

/// `raw` as smtp-sink dumps it: LF line ends.
pub fn as_dumped(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).replace("\r\n", "\n")
}

/// Copies delivered so far. smtp-sink has written a copy's file once the relay recorded it
/// delivered (it answers 250 after writing), so this is what to wait on before reading files.
pub fn delivered(db_url: &str) -> i64 {
    db_i64(
        db_url,
        "SELECT count(*) FROM copies WHERE status = 'delivered'",
    )
}

/// Creates a user in the team `sales`; returns the API token.
pub fn add_user(db_url: &str, email: &str, password: &str) -> String {
    add_user_in(db_url, email, password, Some("sales"))
}

/// A member of `team` (`None`: no team); returns their API token.
pub fn add_user_in(db_url: &str, email: &str, password: &str, team: Option<&str>) -> String {
    let (url, email, password) = (db_url.to_string(), email.to_string(), password.to_string());
    let team = team.map(str::to_string);
    std::thread::spawn(move || {
        block_on(async {
            let pool = mailtally::store::pool(&url, 1).unwrap();
            let mut client = pool.get().await.unwrap();
            mailtally::accounts::add_user(
                &mut client,
                &email,
                &password,
                team.as_deref(),
                mailtally::accounts::Role::Member,
            )
            .await
            .unwrap()
            .api_token
        })
    })
    .join()
    .unwrap()
}

/// Runs a query returning one bigint (count(*) and the like).
pub fn db_i64(db_url: &str, sql: &str) -> i64 {
    db_rows(db_url, sql)
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs a query; every column is cast to text by the caller (`::text`).
pub fn db_rows(db_url: &str, sql: &str) -> Vec<Vec<String>> {
    let (url, sql) = (db_url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let messages = client.simple_query(&sql).await.unwrap();
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).unwrap_or("").to_string())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
    })
    .join()
    .unwrap()
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until something accepts connections on loopback `port`; returns whether it did.
pub fn listening(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// A plain-text SMTP client speaking one command at a time.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Client {
    /// Connects and reads the greeting.
    pub fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.read();
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }

    pub fn read(&mut self) -> String {
        read_reply(&mut self.reader)
    }

    /// Sends raw bytes (no line end added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Sends one command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read()
    }

    /// Sends a message after DATA (dot-stuffing it) and returns the final reply.
    pub fn data(&mut self, message: &[u8]) -> String {
        let reply = self.cmd("DATA");
        assert!(reply.starts_with("354"), "{reply}");
        let text = String::from_utf8_lossy(message).replace("\r\n.", "\r\n..");
        let mut body = text.into_bytes();
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        self.send_raw(&body);
        self.read()
    }
}

/// Submits one message with AUTH PLAIN as `user`; asserts every step; returns the final reply.
pub fn submit_as(
    smtp: std::net::SocketAddr,
    user: &str,
    password: &str,
    recipients: &[&str],
    message: &[u8],
) -> String {
    let mut c = Client::connect(smtp);
    c.cmd("EHLO client.example");
    let auth = c.cmd(&format!("AUTH PLAIN {}", auth_plain(user, password)));
    assert!(auth.starts_with("235"), "{auth}");
    let from = c.cmd(&format!("MAIL FROM:<{user}>"));
    assert!(from.starts_with("250"), "{from}");
    for r in recipients {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        assert!(reply.starts_with("250"), "{reply}");
    }
    let reply = c.data(message);
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    c.cmd("QUIT");
    reply
}

/// Base64 of AUTH PLAIN's `\0user\0password`.
/// The reply an authenticated `user`'s `RCPT TO:<rcpt>` gets (the transaction then quits).
pub fn rcpt_reply(smtp: std::net::SocketAddr, user: &str, password: &str, rcpt: &str) -> String {
    let mut c = Client::connect(smtp);
    c.cmd("EHLO client.example");
    let auth = c.cmd(&format!("AUTH PLAIN {}", auth_plain(user, password)));
    assert!(auth.starts_with("235"), "{auth}");
    let from = c.cmd(&format!("MAIL FROM:<{user}>"));
    assert!(from.starts_with("250"), "{from}");
    let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    c.cmd("QUIT");
    reply
}

pub fn auth_plain(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

pub fn python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn exists(path: &str) -> bool {
    Path::new(path).exists()
}
