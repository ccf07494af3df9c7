//! `cargo bench --bench rewrite`: the HTML rewrite against the tokenizer alone and lol_html.

use std::cell::Cell;
use std::time::{Duration, Instant};

use html5ever::buffer_queue::BufferQueue;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use mailtally::rewrite::{prepare, RewriteSettings, TokenKeys};
use uuid::Uuid;

struct Noop(Cell<usize>);
impl TokenSink for Noop {
    type Handle = ();
    fn process_token(&self, t: Token, _: u64) -> TokenSinkResult<()> {
        if matches!(t, Token::TagToken(_)) {
            self.0.set(self.0.get() + 1);
        }
        TokenSinkResult::Continue
    }
}

fn time(bytes: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(2) {
        f();
        n += 1;
    }
    (bytes * n) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/html");
    let mut html = String::new();
    match std::fs::read_dir(dir) {
        Ok(d) => {
            let mut files: Vec<_> = d.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                html.push_str(&String::from_utf8_lossy(
                    &std::fs::read(f).unwrap_or_default(),
                ));
            }
        }
        Err(_) => {
            println!("corpus not found at {dir}; using a generated page");
            for i in 0..2000 {
                html.push_str(&format!("<tr><td style=\"padding:0\"><a href=\"https://x.test/{i}\">link {i}</a></td></tr>\n"));
            }
        }
    }
    let mut msg = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    msg.extend_from_slice(html.as_bytes());
    let n = html.len();
    let settings = RewriteSettings::new("https://t.example.com");
    let keys = TokenKeys::new(b"bench secret", &[]);
    println!("input: {:.1} MB of HTML", n as f64 / 1e6);

    // `REWRITE_PROFILE=tokenizer|full [REWRITE_PROFILE_RUNS=n] cargo bench --bench rewrite`
    // runs one row a fixed number of times and no timing loop: a driver for callgrind/perf.
    if let Ok(which) = std::env::var("REWRITE_PROFILE") {
        let runs: usize = std::env::var("REWRITE_PROFILE_RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        for _ in 0..runs {
            match which.as_str() {
                "tokenizer" => {
                    let q = BufferQueue::default();
                    q.push_back(StrTendril::from_slice(&html));
                    let t = Tokenizer::new(Noop(Cell::new(0)), TokenizerOpts::default());
                    let _ = t.feed(&q);
                    t.end();
                }
                _ => {
                    let p = prepare(&msg, &settings);
                    std::hint::black_box(p.render(&keys, Uuid::now_v7(), "b@example.net"));
                }
            }
        }
        println!("profiled {which} x{runs}");
        return;
    }

    let tok = time(n, || {
        let q = BufferQueue::default();
        q.push_back(StrTendril::from_slice(&html));
        let t = Tokenizer::new(Noop(Cell::new(0)), TokenizerOpts::default());
        let _ = t.feed(&q);
        t.end();
    });
    let full = time(msg.len(), || {
        let p = prepare(&msg, &settings);
        std::hint::black_box(p.render(&keys, Uuid::now_v7(), "b@example.net"));
    });
    let lol = time(n, || {
        let settings = lol_html::RewriteStrSettings::new()
            .append_element_content_handler(lol_html::element!("a[href], area[href]", |el| {
                if let Some(h) = el.get_attribute("href") {
                    if h.starts_with("http") {
                        el.set_attribute(
                            "href",
                            "https://t.example.com/c/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                        )?;
                    }
                }
                Ok(())
            }))
            .append_element_content_handler(lol_html::element!("body", |el| {
                el.append(
                    "<img src=\"https://t.example.com/o/AAAA\" width=\"1\" height=\"1\" alt=\"\">",
                    lol_html::html_content::ContentType::Html,
                );
                Ok(())
            }));
        let out = lol_html::rewrite_str(&html, settings);
        std::hint::black_box(out.ok());
    });
    let p = prepare(&msg, &settings);
    let copy = time(msg.len(), || {
        std::hint::black_box(p.render(&keys, Uuid::now_v7(), "b@example.net"));
    });
    // Per-copy cost of a base64 part: the same HTML, base64-encoded.
    let mut b64msg = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    {
        use base64::Engine;
        let e = base64::engine::general_purpose::STANDARD.encode(html.as_bytes());
        for l in e.as_bytes().chunks(76) {
            b64msg.extend_from_slice(l);
            b64msg.extend_from_slice(b"\r\n");
        }
    }
    let pb = prepare(&b64msg, &settings);
    let copy_b64 = time(b64msg.len(), || {
        std::hint::black_box(pb.render(&keys, Uuid::now_v7(), "b@example.net"));
    });
    println!("links per copy: {}", p.links.len());
    println!(
        "{:<44} {:>10.1} MB/s  1.00x",
        "html5ever tokenizer, no-op sink", tok
    );
    println!(
        "{:<44} {:>10.1} MB/s  {:.2}x",
        "mailtally prepare + first copy",
        full,
        full / tok
    );
    println!(
        "{:<44} {:>10.1} MB/s  {:.2}x",
        "lol_html same rewrite (reference)",
        lol,
        lol / tok
    );
    println!(
        "{:<44} {:>10.1} MB/s  {:.2}x",
        "each extra copy (render), 8bit part",
        copy,
        copy / tok
    );
    println!(
        "{:<44} {:>10.1} MB/s  {:.2}x",
        "each extra copy (render), base64 part",
        copy_b64,
        copy_b64 / tok
    );
}
