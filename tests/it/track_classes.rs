//! Classes in the metrics: the tracker's counter says the class at first sight, the aggregation's
//! counter the final class the reports count. A scanner's sweep tells them apart.

use crate::common;

use std::time::Duration;

use common::smtp::{add_user, submit_as, wait_until};
use common::{Server, TestDb};

const PASSWORD: &str = "classes-password";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// The value of one series in a Prometheus text exposition, 0 when absent.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metrics(server: &Server) -> String {
    ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

#[test]
fn a_sweep_is_human_at_first_sight_and_scanner_in_the_final_class_counter() {
    let db = TestDb::migrated();
    // No click-after-delivery window: the three clicks are people at first sight, and only the
    // sweep rule of the aggregation makes them a scanner.
    let server = Server::start(&db.url, &[("CLICK_SCANNER_WINDOW", "0")]);
    let token = add_user(&db.url, "ann@example.com", PASSWORD);
    submit_as(
        server.smtp,
        "ann@example.com",
        PASSWORD,
        &["bob@example.net"],
        b"From: ann@example.com\r\nTo: bob@example.net\r\nSubject: Sweep\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n\
<html><body><a href=\"https://example.com/a\">a</a> <a href=\"https://example.com/b\">b</a> \
<a href=\"https://example.com/c\">c</a></body></html>\r\n",
    );
    let captured = || -> serde_json::Value {
        ureq::get(&server.url("/api/captured"))
            .set("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    };
    assert!(wait_until(Duration::from_secs(20), || captured()
        ["captured"]
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    let copy_id = captured()["captured"][0]["copy_id"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = ureq::get(&server.url(&format!("/api/captured/{copy_id}/raw")))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let prefix = server.url("/c/");
    let links: Vec<String> = raw
        .split(prefix.as_str())
        .skip(1)
        .map(|rest| format!("{prefix}{}", rest.split('"').next().unwrap()))
        .collect();
    assert_eq!(links.len(), 3, "{raw}");

    // Let the tracker's delivery cache see the delivery (it polls every second), so that the
    // clicks are judged with the delivery time known.
    std::thread::sleep(Duration::from_secs(2));
    let before = metrics(&server);
    let no_redirects = ureq::AgentBuilder::new().redirects(0).build();
    for link in &links {
        let resp = no_redirects
            .get(link)
            .set("user-agent", CHROME)
            .call()
            .unwrap();
        assert_eq!(resp.status(), 302);
    }

    let first_sight = "mailtally_track_requests_total{first_sight_class=\"human\",kind=\"click\"}";
    let final_scanner =
        "mailtally_aggregation_events_by_final_class_total{final_class=\"scanner\",kind=\"click\"}";
    let final_human =
        "mailtally_aggregation_events_by_final_class_total{final_class=\"human\",kind=\"click\"}";
    assert_eq!(series(&before, first_sight), 0.0, "{before}");
    // Every series exists before its first event.
    assert!(before.contains(final_scanner), "{before}");
    assert!(before.contains(final_human), "{before}");

    // The aggregation job inside `serve` folds the clicks.
    let mut after = String::new();
    let folded = wait_until(Duration::from_secs(30), || {
        after = metrics(&server);
        series(&after, final_scanner) >= 3.0
    });
    assert!(folded, "the sweep was not folded as scanner:\n{after}");
    assert_eq!(series(&after, first_sight), 3.0, "{after}");
    assert_eq!(series(&after, final_scanner), 3.0, "{after}");
    assert_eq!(series(&after, final_human), 0.0, "{after}");

    // And the reports count what the final-class counter says.
    let report: serde_json::Value = ureq::get(&server.url("/api/reports/templates"))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let text = report.to_string();
    assert!(text.contains("\"clicks\":3"), "{text}");
    assert!(text.contains("\"human_clicks\":0"), "{text}");
}
