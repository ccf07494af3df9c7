//! Shared checks for the rewrite tests: every property is checked on the delivered bytes.
#![allow(dead_code)]

use mail_parser::{MessageParser, MimeHeaders, PartType};
use mailtally::escape;
use mailtally::rewrite::html::pixel_html;
use mailtally::rewrite::token::{open_token, verify, Verified};
use mailtally::rewrite::{Prepared, RewriteSettings, TokenKeys};
use uuid::Uuid;

pub const PUBLIC: &str = "https://t.mailtally.test";

pub fn corpus() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus"));
    if p.is_dir() {
        Some(p)
    } else {
        println!("corpus not found at {}: skipped", p.display());
        None
    }
}

pub fn keys() -> TokenKeys {
    TokenKeys::new(b"test secret", &[])
}

pub fn settings() -> RewriteSettings {
    RewriteSettings::new(PUBLIC)
}

pub fn wrap_html(html: &[u8]) -> Vec<u8> {
    let mut m = b"From: Sales <sales@example.com>\nTo: Jane Doe <jane@example.net>\nSubject: Your order 1234\nMIME-Version: 1.0\nX-Mailtally-Template: corpus\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n".to_vec();
    m.extend_from_slice(html);
    m
}

/// Undo the rewrite in a decoded text: drop the pixel, put each link's original back.
fn restore(text: &str, p: &Prepared, copy: Uuid, keys: &TokenKeys, strip_pixel: bool) -> String {
    let mut t = text.to_owned();
    if strip_pixel {
        let pixel = pixel_html(&escape::html(&format!(
            "{PUBLIC}/o/{}",
            open_token(keys, copy)
        )));
        t = t.replacen(&pixel, "", 1);
    }
    let prefix = format!("{PUBLIC}/c/");
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(i) = rest.find(&prefix) {
        out.push_str(&rest[..i]);
        let after = &rest[i + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        match verify(keys, &after[..end]) {
            Ok(Verified::Click { link, url, copy: c }) => {
                assert_eq!(c, copy);
                let l = &p.links[link as usize];
                assert_eq!(l.url, url, "token decodes to its URL");
                out.push_str(&l.raw);
            }
            other => panic!("token does not verify: {other:?}"),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Checks (a), (b) and (c) of one message; returns the number of tracked links.
pub fn check_message(name: &str, raw: &[u8]) -> usize {
    let keys = keys();
    let p = mailtally::rewrite::prepare(raw, &settings());
    let copy = Uuid::now_v7();
    let out = p.render(&keys, copy, "jane@example.net");
    // Every bare CR and LF goes out as CRLF (SMTP smuggling); apart from that, what the copy
    // is compared with is the message as it came.
    assert!(
        mailtally::rewrite::crlf::is_normal(&out),
        "{name}: a bare CR or LF left"
    );
    let normal = mailtally::rewrite::crlf::normalise(raw);
    let raw = &*normal;
    // Control headers never leave.
    let head_end = out
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| out.windows(4).position(|w| w == b"\r\n\r\n"))
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
    if p.untouched.is_none() {
        assert!(
            !head.contains("\nx-mailtally-"),
            "{name}: control header left"
        );
    }
    let Some(before) = MessageParser::default().parse(raw) else {
        assert_eq!(out, raw, "{name}: unparseable input must go out as it came");
        return 0;
    };
    let after = MessageParser::default()
        .parse(&out)
        .unwrap_or_else(|| panic!("{name}: output does not parse"));
    assert_eq!(
        before.parts.len(),
        after.parts.len(),
        "{name}: part structure changed"
    );
    let rewritten: Vec<_> = p.parts.iter().filter(|r| r.skipped.is_none()).collect();
    for (i, (a, b)) in before.parts.iter().zip(after.parts.iter()).enumerate() {
        let report = rewritten.iter().find(|r| r.part == i);
        match (report, &a.body, &b.body) {
            (Some(r), PartType::Html(x), PartType::Html(y))
            | (Some(r), PartType::Text(x), PartType::Text(y)) => {
                if r.converted {
                    // Converted to UTF-8: meta labels change too; check the tokens only.
                    restore(y, &p, copy, &keys, r.html);
                    continue;
                }
                let back = restore(y, &p, copy, &keys, r.html && p.controls.track.opens());
                if back != **x {
                    let d = back
                        .bytes()
                        .zip(x.bytes())
                        .position(|(a, b)| a != b)
                        .unwrap_or(back.len().min(x.len()));
                    let ctx = |s: &str| {
                        String::from_utf8_lossy(
                            &s.as_bytes()[d.saturating_sub(60)..(d + 60).min(s.len())],
                        )
                        .into_owned()
                    };
                    panic!(
                        "{name}: part {i} does not map back to the original at {d}:\n got {:?}\nwant {:?}",
                        ctx(&back),
                        ctx(x)
                    );
                }
            }
            (Some(_), _, _) => panic!("{name}: part {i} changed type"),
            (None, _, _) => {
                assert_eq!(
                    a.contents(),
                    b.contents(),
                    "{name}: part {i} ({:?}) changed",
                    a.content_type().map(|c| c.ctype().to_owned())
                );
            }
        }
    }
    // (b) every link the policy tracks is tracked, in each rewritten HTML part.
    let policy_count: usize = rewritten
        .iter()
        .filter(|r| r.html)
        .map(|r| {
            let text = match &before.parts[r.part].body {
                PartType::Html(t) => t.to_string(),
                _ => String::new(),
            };
            expected_links(&text, &before)
        })
        .sum();
    let html_links = p.links.len()
        - rewritten
            .iter()
            .filter(|r| !r.html)
            .map(|r| count_text_links(&after.parts[r.part]))
            .sum::<usize>();
    if rewritten.iter().all(|r| !r.converted) {
        assert_eq!(
            html_links, policy_count,
            "{name}: tracked links differ from policy"
        );
    }
    p.links.len()
}

fn count_text_links(part: &mail_parser::MessagePart) -> usize {
    match &part.body {
        PartType::Text(t) => t.matches(&format!("{PUBLIC}/c/")).count(),
        _ => 0,
    }
}

fn expected_links(html: &str, msg: &mail_parser::Message) -> usize {
    let lu = msg
        .header_raw("List-Unsubscribe")
        .map(|s| s.trim().to_owned());
    let policy = mailtally::rewrite::policy::LinkPolicy::new(PUBLIC, lu.as_deref());
    let scan = mailtally::rewrite::html::scan(html);
    scan.links
        .iter()
        .filter(|l| policy.decide(&l.url, &l.text, l.opted_out).is_ok())
        .count()
}
