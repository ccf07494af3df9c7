//! The whole loop on one machine: real HTML mail submitted over SMTP, rewritten, queued,
//! delivered to the capture sink, then its pixel and every tracked link fetched over HTTP, and
//! the events found in PostgreSQL with the right copy and link.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::smtp::{add_user, submit_as, wait_until};
use common::{Server, TestDb};
use mailtally::rewrite::{verify, TokenKeys, Verified};

const PASSWORD: &str = "e2e-password-1";
const THUNDERBIRD: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.1";

fn corpus_html() -> Option<Vec<std::path::PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/html");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    Some(files)
}

fn submit(server: &Server, from: &str, to: &[&str], message: &[u8]) {
    submit_as(server.smtp, from, PASSWORD, to, message);
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build()
}

/// Every tracked link of `copy`: (token, what it verifies to).
fn tracked_links(copy: &str, public: &str, keys: &TokenKeys) -> Vec<(String, u32, String)> {
    let prefix = format!("{public}/c/");
    copy.match_indices(&prefix)
        .map(|(i, _)| {
            let after = &copy[i + prefix.len()..];
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(after.len());
            let token = after[..len].to_string();
            match verify(keys, &token) {
                Ok(Verified::Click { link, url, .. }) => (token, link, url),
                other => panic!("tracked link does not verify: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn corpus_mail_through_the_relay_redirects_every_link_and_records_every_event() {
    let Some(files) = corpus_html() else {
        eprintln!("skipped: ../shared/corpus is absent");
        return;
    };
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    let keys = TokenKeys::new(common::TEST_TRACKING_SECRET.as_bytes(), &[]);
    let public = server.url("");

    // A spread of the corpus: every eighth file, as a message to two recipients.
    let chosen: Vec<_> = files.iter().step_by(8).take(6).collect();
    for (i, path) in chosen.iter().enumerate() {
        let html = std::fs::read(path).unwrap();
        let mut message = format!(
            "From: ann@example.com\r\nTo: a@example.net, b@example.net\r\nSubject: Corpus {i}\r\n\
             X-Mailtally-Template: corpus-{i}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        )
        .into_bytes();
        message.extend_from_slice(&html);
        submit(
            &server,
            "ann@example.com",
            &["a@example.net", "b@example.net"],
            &message,
        );
    }
    let copies_expected = chosen.len() * 2;
    assert!(wait_until(Duration::from_secs(30), || {
        common::smtp::db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'delivered'",
        ) == copies_expected as i64
    }));

    let http = agent();
    let list: serde_json::Value = http
        .get(&server.url("/api/captured"))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let captured = list["captured"].as_array().unwrap();
    assert_eq!(captured.len(), copies_expected);

    let mut clicks = 0;
    let mut opens = 0;
    // template -> (copies, opens, clicks, copies clicked), from what this test does.
    let mut did: std::collections::BTreeMap<String, (i64, i64, i64, i64)> = Default::default();
    for c in captured {
        let copy_id = c["copy_id"].as_str().unwrap();
        let template = common::smtp::db_rows(
            &db.url,
            &format!("SELECT m.template_key FROM messages m JOIN copies c ON c.message_id = m.id WHERE c.id = '{copy_id}'"),
        )[0][0]
            .clone();
        let raw = http
            .get(&server.url(&format!("/api/captured/{copy_id}/raw")))
            .set("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        assert!(
            !raw.contains("X-Mailtally-"),
            "control headers never leave the relay"
        );
        // The pixel: a 1x1 fully transparent image.
        let pixel = raw
            .split(&format!("{public}/o/"))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a pixel in every HTML copy");
        let resp = http
            .get(&format!("{public}/o/{pixel}"))
            .set("user-agent", THUNDERBIRD)
            .call()
            .unwrap();
        assert_eq!(resp.header("content-type"), Some("image/gif"));
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
        let img = image::load_from_memory(&bytes).unwrap().to_rgba8();
        assert_eq!(img.dimensions(), (1, 1));
        assert_eq!(img.get_pixel(0, 0)[3], 0, "fully transparent");
        opens += 1;

        // Every tracked link redirects to the URL stored for its index, byte for byte.
        let links = tracked_links(&raw, &public, &keys);
        let entry = did.entry(template).or_default();
        entry.0 += 1;
        entry.1 += 1;
        entry.2 += links.len() as i64;
        entry.3 += i64::from(!links.is_empty());
        for (token, index, url) in &links {
            let stored = common::smtp::db_rows(
                &db.url,
                &format!(
                    "SELECT l.url FROM links l JOIN copies c ON c.message_id = l.message_id
                      WHERE c.id = '{copy_id}' AND l.idx = {index}"
                ),
            );
            assert_eq!(stored.len(), 1, "link {index} of {copy_id} stored");
            assert_eq!(&stored[0][0], url);
            let resp = http
                .get(&format!("{public}/c/{token}"))
                .set("user-agent", THUNDERBIRD)
                .call()
                .unwrap();
            assert_eq!(resp.status(), 302);
            assert_eq!(
                resp.header("location"),
                Some(url.as_str()),
                "redirect is the signed URL"
            );
            clicks += 1;
        }
    }
    assert!(clicks > 0, "the chosen corpus files have tracked links");

    // Every request became an event of the right copy, with the right link index.
    assert!(wait_until(Duration::from_secs(20), || {
        common::smtp::db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind IN ('open', 'click')",
        ) == (opens + clicks) as i64
    }));
    let mismatched = common::smtp::db_i64(
        &db.url,
        "SELECT count(*) FROM events e JOIN copies c ON c.id = e.copy_id
          WHERE e.kind = 'click' AND (e.message_id <> c.message_id
             OR NOT EXISTS (SELECT 1 FROM links l WHERE l.message_id = e.message_id AND l.idx = e.link_idx))",
    );
    assert_eq!(mismatched, 0);
    let per_copy_opens = common::smtp::db_i64(
        &db.url,
        "SELECT count(DISTINCT copy_id) FROM events WHERE kind = 'open'",
    );
    assert_eq!(per_copy_opens as usize, copies_expected);

    // The report, once the aggregation job has folded everything: every figure of every
    // template equals what this test did. Opens and clicks this soon after delivery are
    // machines (prefetch, scanner), so the human figures come from the classes stored.
    let expected_clicks: i64 = did.values().map(|d| d.2).sum();
    let mut report = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            report = http
                .get(&server.url("/api/reports/templates?class=all"))
                .set("authorization", &format!("Bearer {token}"))
                .call()
                .unwrap()
                .into_json()
                .unwrap();
            let rows = report["templates"]
                .as_array()
                .or(report.as_array())
                .cloned()
                .unwrap_or_default();
            rows.iter()
                .map(|r| r["clicks"].as_i64().unwrap_or(0))
                .sum::<i64>()
                == expected_clicks
                && rows
                    .iter()
                    .map(|r| r["opens"].as_i64().unwrap_or(0))
                    .sum::<i64>()
                    == opens as i64
        }),
        "report never caught up: {report}"
    );
    let rows = report["templates"]
        .as_array()
        .or(report.as_array())
        .cloned()
        .unwrap();
    assert_eq!(rows.len(), did.len());
    for row in &rows {
        let key = row["template"]
            .as_str()
            .or(row["key"].as_str())
            .or(row["template_key"].as_str())
            .unwrap();
        let (copies, opened, clicked, clickers) = did[key];
        let human = |kind: &str| {
            common::smtp::db_i64(
                &db.url,
                &format!(
                    "SELECT count(DISTINCT e.copy_id) FROM events e JOIN messages m ON m.id = e.message_id
                      WHERE m.template_key = '{key}' AND e.kind = '{kind}' AND e.class IN ('human', 'proxy')"
                ),
            )
        };
        let rate = |a: i64, b: i64| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
        assert_eq!(row["sent"], copies, "{row}");
        assert_eq!(row["delivered"], copies, "{row}");
        assert_eq!(row["bounced"], 0, "{row}");
        assert_eq!(row["opens"], opened, "{row}");
        assert_eq!(row["unique_opens"], copies, "{row}");
        assert_eq!(row["clicks"], clicked, "{row}");
        assert_eq!(row["unique_clicks"], clickers, "{row}");
        assert_eq!(row["human_unique_opens"], human("open"), "{row}");
        assert_eq!(row["human_unique_clicks"], human("click"), "{row}");
        assert_eq!(
            row["open_rate"].as_f64(),
            Some(rate(copies, copies)),
            "{row}"
        );
        if clickers > 0 {
            assert_eq!(
                row["click_rate"].as_f64(),
                Some(rate(clickers, copies)),
                "{row}"
            );
            assert_eq!(
                row["click_to_open"].as_f64(),
                Some(rate(clickers, copies)),
                "{row}"
            );
        }
        assert_eq!(row["bounce_rate"].as_f64(), Some(0.0), "{row}");
    }
}
