//! Arbitrary bytes as the HTML part of a message: every link span must hold its raw value,
//! and the scan that skips unread markup must find exactly what the full tokenization finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtally::rewrite::{html, prepare, RewriteSettings, TokenKeys};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let scan = html::scan(&text);
    assert_eq!(scan, html::scan_reference(&text));
    for l in &scan.links {
        assert!(text.get(l.span.clone()).is_some());
    }
    assert!(scan.pixel_at <= text.len());
    let mut msg = b"From: a@b.c\r\nTo: d@e.f\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n".to_vec();
    msg.extend_from_slice(data);
    let p = prepare(&msg, &RewriteSettings::new("https://t.example.com"));
    let _ = p.render(&TokenKeys::new(b"fuzz", &[]), uuid::Uuid::from_u128(1), "r");
});
