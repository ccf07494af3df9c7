//! Stable stand-in for the fuzz targets: many mutated corpus inputs through prepare + render.
//! (The cargo-fuzz targets in `fuzz/` need nightly.)

use crate::rewrite_support;

use mailtally::rewrite::{html, prepare};
use rewrite_support::*;

/// Small deterministic generator (xorshift), so that failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"<",
    b">",
    b"\"",
    b"'",
    b"=",
    b"&amp;",
    b"&",
    b"<a href=",
    b"</a>",
    b"<!--[if mso]>",
    b"<![endif]-->",
    b"<style>",
    b"</body>",
    b"\r\n",
    b"\n",
    b"\0",
    b"=\r\n",
    b"=3D",
    b"--",
    b"\r\n--b\r\n",
    b"Content-Type: text/html; charset=utf-16\r\n",
    b"\xff\xfe",
    b"\xe9",
    b"Content-Transfer-Encoding: base64\r\n",
    b"boundary=",
    b"<v:roundrect href=\"",
    b"<!---->",
    b"--!>",
    b"<!-->",
    b"<![CDATA[",
    b"<!DOCTYPE html>",
    b"<?xml?>",
    b"</",
    b"/>",
    b"<meta charset=",
    b"<title>",
    b"</title>",
    b"<script>",
    b"</script>",
    b"<img alt=",
    b"<area href=",
    b"<td style=\"",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(4) {
            0 if !v.is_empty() => {
                let end = (at + rng.below(64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            1 => {
                let s = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, s.iter().copied());
            }
            2 if at < v.len() => v[at] = rng.next() as u8,
            _ => {
                let n = rng.below(32);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
        }
    }
    v
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut seeds: Vec<Vec<u8>> =
        vec![wrap_html(b"<body><a href=\"https://x.test/\">x</a></body>")];
    if let Some(dir) = corpus() {
        for sub in ["mime", "html"] {
            let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.sort();
            for f in files.iter().step_by(3) {
                let raw = std::fs::read(f).unwrap();
                seeds.push(if sub == "html" { wrap_html(&raw) } else { raw });
            }
        }
    }
    let iterations: usize = std::env::var("REWRITE_RANDOM_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let keys = keys();
    let settings = settings();
    for i in 0..iterations {
        let seed = &seeds[rng.below(seeds.len())];
        let input = if i % 10 == 0 {
            (0..rng.below(600)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, seed)
        };
        let p = prepare(&input, &settings);
        let out = p.render(&keys, uuid::Uuid::from_u128(i as u128), "r@example.com");
        // A message that was not rewritten only ever loses control header lines (its bare
        // line ends become CRLF, and no bare one is ever left).
        assert!(mailtally::rewrite::crlf::is_normal(&out));
        if p.slots() == 0 && p.untouched.is_some() {
            assert!(out.len() <= mailtally::rewrite::crlf::normalise(&input).len());
        }
        let text = String::from_utf8_lossy(&input);
        let scan = html::scan(&text);
        assert_eq!(
            scan,
            html::scan_reference(&text),
            "skipping changed the scan of input {i}"
        );
        for l in &scan.links {
            assert!(
                text.get(l.span.clone()).is_some(),
                "span off a char boundary"
            );
        }
    }
}
