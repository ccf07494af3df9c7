//! Arbitrary bytes as a message: prepare + render must not panic, untouched means unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtally::rewrite::{prepare, RewriteSettings, TokenKeys};

fuzz_target!(|data: &[u8]| {
    let settings = RewriteSettings::new("https://t.example.com");
    let keys = TokenKeys::new(b"fuzz", &[]);
    let p = prepare(data, &settings);
    let out = p.render(&keys, uuid::Uuid::from_u128(1), "r@example.com");
    if p.untouched.is_some() && p.slots() == 0 {
        assert!(out.len() <= data.len());
    }
});
