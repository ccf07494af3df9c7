//! Reply detection: any header block from a mailbox is classified without a panic, and every
//! Message-ID it names is one `<...>` token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtally::replies::detect::{classify, Verdict};

fuzz_target!(|data: &[u8]| {
    if let Verdict::Reply { answers, .. } = classify(data) {
        for id in answers {
            assert!(id.starts_with('<') && id.ends_with('>') && id.len() > 2);
        }
    }
});
