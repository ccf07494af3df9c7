//! The operator's view: on a freshly started server and after a run that exercises every stage,
//! `/metrics` passes `promtool check metrics` and every metric the Grafana dashboards and the
//! alert rules use has its series; the alert rules pass `promtool check rules`; the dashboards
//! keep one unit per series, a stable uid, and an instance filter on every query.
//!
//! The dashboard JSON is checked by the structural rules here, not against Grafana's own schema:
//! the packages that carry that schema (grafana-foundation-sdk, @grafana/schema) are builders
//! and type definitions, not validators that run without a Grafana server.

use crate::common;

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

/// The sample names `/metrics` exposes (not only declared by `# HELP`).
fn exposed_names(metrics: &str) -> Vec<String> {
    let mut names: Vec<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The dashboards and the alert rules: (path, text).
fn dashboard_files() -> Vec<(std::path::PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_metric_the_dashboards_and_alerts_use_has_series_on_a_fresh_server() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[]);
    // Before any traffic: a rate() over a series that does not exist yet is "No data", and an
    // alert on it never fires.
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let exposed = exposed_names(&metrics);
    let mut missing = Vec::new();
    for (path, text) in dashboard_files() {
        for name in names_used(&text) {
            if !exposed.contains(&name) {
                missing.push(format!(
                    "{}: {name}",
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exposed before the first event: {missing:#?}"
    );
    // Every reason and result, not only the first one seen.
    for series in [
        "mailtally_smtp_messages_rejected_total{reason=\"size\"} 0",
        "mailtally_smtp_messages_rejected_total{reason=\"shutdown\"} 0",
        "mailtally_webhook_delivery_attempts_total{result=\"gave_up\"} 0",
        "mailtally_delivery_latency_seconds_count{via=\"capture\"} 0",
        "mailtally_delivery_latency_seconds_count{via=\"upstream\"} 0",
        "mailtally_http_request_duration_seconds_count{route=\"click\",status=\"5xx\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == series), "missing {series}");
    }
}

/// The unit of what a query returns, from the metric's own unit suffix.
fn unit_of(expr: &str) -> &'static str {
    let names = names_used(expr);
    // One count over another (a complaint rate): a fraction, shown as a percentage.
    let counts_only = names.iter().all(|n| {
        !["_bytes", "_seconds", "_sum", "_count", "_bucket"]
            .iter()
            .any(|s| n.ends_with(s))
    });
    if expr.contains(" / ") && names.len() >= 2 && counts_only {
        return "percentunit";
    }
    let name = names.into_iter().next().unwrap_or_default();
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(&name);
    if base.ends_with("_bytes") {
        "bytes"
    } else if base.ends_with("_seconds") {
        "s"
    } else {
        // Counts, rates of counts, and rate() of a `_seconds_total` (CPU cores).
        "count"
    }
}

#[test]
fn dashboards_keep_one_unit_per_series_a_stable_uid_and_an_instance_filter() {
    let mut panels_checked = 0;
    for (path, text) in dashboard_files() {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let file = path.display();
        let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(dash["title"].is_string(), "{file}: title");
        let uid = dash["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty()
                && uid.len() <= 40
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{file}: a stable uid (at most 40 of [A-Za-z0-9_-]), not {uid:?}"
        );
        // A declared input must be used; this dashboard picks its data source by variable.
        for input in dash["__inputs"].as_array().into_iter().flatten() {
            let name = input["name"].as_str().unwrap();
            assert!(
                text.contains(&format!("${{{name}}}")),
                "{file}: __inputs declares {name}, which nothing uses"
            );
        }
        let variables: Vec<&str> = dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for needed in ["datasource", "instance"] {
            assert!(
                variables.contains(&needed),
                "{file}: template variable ${needed}"
            );
        }
        for panel in dash["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap_or("?");
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: panel {title}"
            );
            let default_unit = panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or("");
            let overrides = panel["fieldConfig"]["overrides"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let override_unit = |legend: &str| {
                overrides.iter().find_map(|o| {
                    (o["matcher"]["id"] == "byName" && o["matcher"]["options"] == legend)
                        .then(|| o["properties"].as_array())
                        .flatten()
                        .and_then(|props| props.iter().find(|p| p["id"] == "unit"))
                        .and_then(|p| p["value"].as_str())
                })
            };
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let legend = target["legendFormat"].as_str().unwrap_or("");
                // Every selector of every query is filtered by $instance.
                let selectors = expr.matches("mailtally_").count();
                let filtered = expr.matches("instance=~\"$instance\"").count();
                assert_eq!(
                    selectors, filtered,
                    "{file}: panel {title}: {expr} is not filtered by $instance"
                );
                let unit = override_unit(legend).unwrap_or(default_unit);
                let ok = match unit_of(expr) {
                    "count" => matches!(unit, "short" | "none"),
                    expected => unit == expected,
                };
                assert!(
                    ok,
                    "{file}: panel {title}: series {legend:?} ({expr}) is shown in {unit:?}, \
                     not in {}",
                    unit_of(expr)
                );
            }
            panels_checked += 1;
        }
    }
    assert!(panels_checked >= 10, "only {panels_checked} panels checked");
}
