//! The rewrite over real mail: every HTML template wrapped in a message, every MIME message.

use crate::rewrite_support;

use rewrite_support::*;

#[test]
fn html_corpus() {
    let Some(dir) = corpus() else { return };
    let mut files: Vec<_> = std::fs::read_dir(dir.join("html"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let (mut n, mut links, mut vml) = (0, 0, 0);
    for f in files {
        let html = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let msg = wrap_html(&html);
        links += check_message(&name, &msg);
        let p = mailtally::rewrite::prepare(&msg, &settings());
        assert!(
            p.untouched.is_none(),
            "{name}: {:?} {:?}",
            p.untouched,
            p.parts
        );
        vml += p.links.iter().filter(|l| l.vml).count();
        n += 1;
    }
    println!("{n} HTML files, {links} links tracked, {vml} of them VML");
    assert!(
        n == 0 || vml > 0,
        "the corpus has VML buttons; none tracked"
    );
}

#[test]
fn mime_corpus() {
    let Some(dir) = corpus() else { return };
    let mut files: Vec<_> = std::fs::read_dir(dir.join("mime"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut untouched = std::collections::BTreeMap::new();
    let mut skipped = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        check_message(&name, &raw);
        let p = mailtally::rewrite::prepare(&raw, &settings());
        if let Some(u) = p.untouched {
            *untouched.entry((u.as_str(), u.cause())).or_insert(0) += 1;
        }
        for r in p.parts.iter().filter(|r| r.skipped.is_some()) {
            skipped.push(format!(
                "{name} part {}: {}",
                r.part,
                r.skipped.as_ref().unwrap()
            ));
        }
    }
    println!("{} messages; untouched: {untouched:?}", files.len());
    println!("parts left as they were:\n  {}", skipped.join("\n  "));
}

/// `REWRITE_SHOW=path cargo test --test it rewrite_corpus::show -- --ignored --nocapture`
#[test]
#[ignore]
fn show() {
    let Ok(path) = std::env::var("REWRITE_SHOW") else {
        return;
    };
    let raw = std::fs::read(path).unwrap();
    let p = mailtally::rewrite::prepare(&raw, &settings());
    println!("{p:?}");
    let out = p.render(&keys(), uuid::Uuid::now_v7(), "x@y");
    println!("{}", String::from_utf8_lossy(&out));
}
