//! The operator's view: after a run that exercises every stage, `/metrics` passes
//! `promtool check metrics`, every metric the Grafana dashboards and the alert rules use exists,
//! and the alert rules pass `promtool check rules`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::smtp::{add_user, auth_plain, db_i64, wait_until, Client};
use common::{Server, TestDb};

const PASSWORD: &str = "metrics-password";

fn promtool() -> &'static str {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is missing: install the Debian package `prometheus` (scripts/test does)"
    );
    "promtool"
}

/// Every `mailtally_*` name in a dashboard or rules file.
fn names_used(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("mailtally_") {
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..len].to_string());
        rest = &tail[len..];
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_the_dashboards_use_exists_after_a_run_and_promtool_accepts_them() {
    let promtool = promtool();
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[
            ("RETRY_SCHEDULE", "1"),
            ("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ],
    );
    let token = add_user(&db.url, "ann@example.com", PASSWORD);

    // Exercise every stage: submission (and a refusal), rewrite, delivery, tracking, events,
    // aggregation, webhooks.
    let mut c = Client::connect(server.smtp);
    c.cmd("EHLO metrics.test");
    assert!(c.cmd("MAIL FROM:<ann@example.com>").starts_with("530"));
    assert!(c
        .cmd(&format!(
            "AUTH PLAIN {}",
            auth_plain("ann@example.com", PASSWORD)
        ))
        .starts_with("235"));
    c.cmd("MAIL FROM:<ann@example.com>");
    c.cmd("RCPT TO:<bob@example.net>");
    let reply = c.data(
        b"From: ann@example.com\r\nTo: bob@example.net\r\nSubject: Metrics\r\nContent-Type: text/html\r\n\r\n\
<html><body><a href=\"https://example.com/\">x</a></body></html>\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
    let hook: serde_json::Value = ureq::post(&server.url("/api/webhooks"))
        .set("authorization", &format!("Bearer {token}"))
        .send_json(serde_json::json!({"url": "http://127.0.0.1:9/", "event_types": ["delivered"]}))
        .unwrap()
        .into_json()
        .unwrap();
    assert!(hook["id"].is_number());
    assert!(wait_until(Duration::from_secs(20), || {
        db_i64(
            &db.url,
            "SELECT count(*) FROM copies WHERE status = 'delivered'",
        ) == 1
    }));
    let raw: serde_json::Value = ureq::get(&server.url("/api/captured"))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let copy_id = raw["captured"][0]["copy_id"].as_str().unwrap().to_string();
    let body = ureq::get(&server.url(&format!("/api/captured/{copy_id}/raw")))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let public = server.url("");
    for prefix in ["/o/", "/c/"] {
        let token = body
            .split(&format!("{public}{prefix}"))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap();
        let agent = ureq::AgentBuilder::new().redirects(0).build();
        let _ = agent
            .get(&format!("{public}{prefix}{token}"))
            .set("user-agent", "Thunderbird/128.0")
            .call();
    }
    let _ = ureq::get(&format!("{public}/o/not-a-token")).call();
    assert!(wait_until(Duration::from_secs(15), || {
        db_i64(
            &db.url,
            "SELECT count(*) FROM events WHERE kind IN ('open', 'click')",
        ) == 2
    }));
    // Give the aggregation job and the webhook dispatcher a round.
    std::thread::sleep(Duration::from_secs(3));

    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    drop(check.stdin.take());
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let exposed: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.extension().is_some_and(|e| e == "json") {
            let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(dash["title"].is_string());
            assert!(
                text.contains("${datasource}"),
                "{} uses the datasource variable",
                path.display()
            );
        }
        for name in names_used(&text) {
            assert!(
                exposed.contains(&name.as_str()),
                "{} uses {name}, which /metrics does not expose",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} metric uses found");

    let rules = Command::new(promtool)
        .args(["check", "rules"])
        .arg(dir.join("alerts.yml"))
        .output()
        .unwrap();
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );
}
