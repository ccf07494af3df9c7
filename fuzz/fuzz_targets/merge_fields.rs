//! Merge fields: any template text parses; rendering with any values never panics, a value
//! lands escaped in HTML, and a header never receives a line break from a value.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use mailtally::compose::{MergeText, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the template, the rest one value per field it names.
    let (template, values) = text.split_once('\n').unwrap_or((text, ""));
    let t = MergeText::parse(template);
    let names: Vec<String> = t.required().map(str::to_string).collect();
    let mut fields = BTreeMap::new();
    for (name, value) in names.iter().zip(values.split('\u{1}')) {
        fields.insert(name.clone(), value.to_string());
    }
    if let Ok(subject) = t.render(&fields, Target::Header) {
        // A line break in a subject can only come from the template itself.
        assert!(subject.matches('\n').count() <= template.matches('\n').count());
    }
    let _ = t.render(&fields, Target::Html);
    let _ = t.render(&fields, Target::Text);
});
