//! Arbitrary bytes as a message: prepare + render must not panic, untouched means unchanged
//! apart from line ends, and no bare CR or LF comes out.
//! The settings vary with the input's length, so that every input stays a whole message and
//! the fuzzer still reaches text-link tracking on and off and DKIM signing of each copy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtally::rewrite::{prepare, DkimSettings, RewriteSettings, TokenKeys};

const ED25519_KEY: &str = include_str!("../../tests/it/rewrite_support/dkim_ed25519_key.pem");

fuzz_target!(|data: &[u8]| {
    let mut settings = RewriteSettings::new("https://t.example.com");
    settings.track_text_links = data.len() % 2 == 0;
    if data.len() % 4 >= 2 {
        settings.dkim = Some(DkimSettings {
            selector: "s".into(),
            domain: "example.com".into(),
            key_pem: ED25519_KEY.into(),
        });
    }
    let keys = TokenKeys::new(b"fuzz", &[]);
    let p = prepare(data, &settings);
    let out = p.render(&keys, uuid::Uuid::from_u128(1), "r@example.com");
    // No bare CR or LF ever leaves (SMTP smuggling); bare ones become CRLF, hence the
    // normalised length.
    assert!(mailtally::rewrite::crlf::is_normal(&out));
    if p.untouched.is_some() && p.slots() == 0 {
        // The relay's own DKIM signature is the one field a copy may gain: a message whose
        // header block was read is signed even when a body part could not be.
        let ours = if settings.dkim.is_some() && out.starts_with(b"DKIM-Signature:") {
            out.windows(2)
                .position(|w| w[0] == b'\n' && !matches!(w[1], b' ' | b'\t'))
                .map_or(out.len(), |p| p + 1)
        } else {
            0
        };
        assert!(out.len() - ours <= mailtally::rewrite::crlf::normalise(data).len());
    }
});
