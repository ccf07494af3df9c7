//! Helpers of the tracking tests: seeded messages and copies, tokens, a raw HTTP client that
//! shows header bytes exactly as sent, and waiting for events to land.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mailtally::rewrite::token::{self, TokenKeys};
use uuid::Uuid;

/// The secret `tests/common` gives every server.
pub const SECRET: &[u8] = b"test-secret-0123456789abcdef";

pub fn keys() -> TokenKeys {
    TokenKeys::new(SECRET, &[])
}

/// The links of every seeded message: query strings, unicode, decoded `&amp;`.
pub const LINKS: &[&str] = &[
    "https://example.com/",
    "https://example.com/pricing?plan=pro&period=year&ref=mail%20x",
    "https://exämple.com/ünïcödé/straße?q=ñandú&price=€5#teil-2",
    "https://shop.example/p?id=7&utm_source=mail&utm_medium=email",
    "http://example.org/a%2Fb;p=1?x=[y]&z='w'&e=\"q\"",
];

/// One seeded message with its copies.
pub struct Seeded {
    pub message: Uuid,
    pub copies: Vec<Uuid>,
}

/// Inserts a user, a template, `messages` messages with `copies` copies each (delivered an hour
/// ago) and their links.
pub async fn seed(client: &tokio_postgres::Client, messages: usize, copies: usize) -> Vec<Seeded> {
    let user: i64 = client
        .query_one(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
            &[&format!("sender-{}@example.com", Uuid::new_v4().simple())],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "INSERT INTO templates (key) VALUES ('welcome') ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..messages {
        let message = Uuid::now_v7();
        client
            .execute(
                "INSERT INTO messages (id, sender_id, visibility, template_key, envelope_from, size_bytes)
                 VALUES ($1, $2, 'team', 'welcome', 'sender@example.com', 1000)",
                &[&message, &user],
            )
            .await
            .unwrap();
        crate::common::set_links(client, message, LINKS).await;
        let mut ids = Vec::new();
        for c in 0..copies {
            // Made two hours ago, like its delivery an hour ago: the timing rules do not apply.
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - 7200;
            let copy = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, c as u32));
            client
                .execute(
                    "INSERT INTO copies (id, message_id, recipient, status, delivered_at)
                     VALUES ($1, $2, $3, 'delivered', now() - interval '1 hour')",
                    &[&copy, &message, &format!("r{c}@example.net")],
                )
                .await
                .unwrap();
            ids.push(copy);
        }
        out.push(Seeded {
            message,
            copies: ids,
        });
    }
    out
}

pub fn open_path(copy: Uuid) -> String {
    format!("/o/{}", token::open_token(&keys(), copy))
}

pub fn click_path(copy: Uuid, link: usize) -> String {
    format!(
        "/c/{}",
        token::click_token(&keys(), copy, link as u32, LINKS[link])
    )
}

/// A response as bytes on the wire.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// One HTTP/1.1 request on a fresh connection; headers are sent as given.
pub fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Raw> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = &buf[..end];
    let mut lines = head.split(|b| *b == b'\n');
    let status_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut hs = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            let mut value = &line[colon + 1..];
            while value.first() == Some(&b' ') {
                value = &value[1..];
            }
            hs.push((name, value.to_vec()));
        }
    }
    Ok(Raw {
        status,
        headers: hs,
        body: buf[end + 4..].to_vec(),
    })
}

/// The pixel checks: 200, GIF headers, a 1x1 fully transparent image.
pub fn assert_pixel(r: &Raw) {
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(&b"image/gif"[..]));
    assert_eq!(
        r.header("cache-control"),
        Some(&b"no-store, no-cache, must-revalidate, private"[..])
    );
    assert_eq!(r.header("pragma"), Some(&b"no-cache"[..]));
    let len: usize = r.header_str("content-length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len());
    let img = image::load_from_memory_with_format(&r.body, image::ImageFormat::Gif)
        .expect("the pixel decodes")
        .to_rgba8();
    assert_eq!(img.dimensions(), (1, 1));
    assert_eq!(img.get_pixel(0, 0)[3], 0, "fully transparent");
}

/// Waits until `sql` (a count) reaches `want`; returns the last count.
pub async fn wait_count(
    client: &tokio_postgres::Client,
    sql: &str,
    want: i64,
    within: Duration,
) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let n: i64 = match client.query_one(sql, &[]).await {
            Ok(row) => row.get(0),
            Err(_) => -1,
        };
        if n >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` events over `copies`, opens and clicks alternating, as the spool tests write them.
pub fn events(copies: &[uuid::Uuid], n: usize) -> Vec<mailtally::events::Event> {
    use mailtally::events::{Event, Kind};
    (0..n)
        .map(|i| {
            let mut e = Event::new(
                if i % 2 == 0 { Kind::Open } else { Kind::Click },
                copies[i % copies.len()],
            );
            e.link_idx = (i % 2 == 1).then_some((i % 5) as i32);
            e.ip = Some("192.0.2.1".parse().unwrap());
            e.user_agent = Some("spooled".into());
            e
        })
        .collect()
}
