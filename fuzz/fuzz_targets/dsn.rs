//! Bounce and complaint reading: any message from a mailbox is read without a panic, and every
//! string of a report is one line, free of control characters and within its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailtally::deliverability::read;

fuzz_target!(|data: &[u8]| {
    let Some(report) = read(data) else {
        return;
    };
    for (name, v, max) in report.strings() {
        assert!(!v.is_empty(), "{name} is empty");
        assert!(v.chars().count() <= max, "{name} is over {max}");
        assert!(
            !v.chars()
                .any(|c| c.is_control() || (c.is_whitespace() && c != ' ')),
            "{name} is not one clean line: {v:?}"
        );
    }
    for r in &report.recipients {
        assert!(r.address.contains('@'), "{:?}", r.address);
    }
});
