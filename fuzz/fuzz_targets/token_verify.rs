//! Token decoding: any string must be rejected or verified, never panic; a verified click token
//! must re-sign to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtally::rewrite::token::unsubscribe_token;
use mailtally::rewrite::{click_token, open_token, verify, TokenKeys, Verified};

fuzz_target!(|data: &[u8]| {
    let keys = TokenKeys::new(b"fuzz-secret", &[b"old-secret".to_vec()]);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match verify(&keys, text) {
        Ok(Verified::Click { copy, link, url }) => {
            assert!(verify(&keys, &click_token(&keys, copy, link, &url)).is_ok());
        }
        Ok(Verified::Open { copy }) => {
            assert!(verify(&keys, &open_token(&keys, copy)).is_ok());
        }
        Ok(Verified::Unsubscribe { copy }) => {
            assert!(verify(&keys, &unsubscribe_token(&keys, copy)).is_ok());
        }
        Err(_) => {}
    }
});
