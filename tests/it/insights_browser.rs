//! The Insights page in a real browser: headless Chromium driven by chromedriver over the
//! WebDriver HTTP API. Signs in, checks a template's figures, opens a template and a message,
//! checks the eye/cursor timeline, and saves a screenshot.

use crate::common;
use crate::insights_support;

use std::time::Duration;

use common::{Server, TestDb};
use insights_support::browser::Driver;
use insights_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_page_in_headless_chromium() {
    if !std::path::Path::new("/usr/bin/chromedriver").exists() {
        panic!("chromium-driver is not installed (see scripts/test-packages)");
    }
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let msgs = generate(9, &[0], 30);
    let client = db.client().await;
    insert(&client, &users, &msgs, &|_| true, true).await;
    aggregate(&db.url, 1000).await;
    let server = Server::start(&db.url, &[]);

    // A message whose first copy has a person's open, a click and a machine event.
    let (msg, copy) = msgs
        .iter()
        .find_map(|m| {
            let c = &m.copies[0];
            let classes = final_classes(c);
            let has = |kind: &str, human: bool| {
                c.events.iter().zip(&classes).any(|(e, cl)| {
                    e.kind == kind && matches!(cl, Some("human") | Some("proxy")) == human
                })
            };
            (has("open", true)
                && (has("click", true) || has("click", false))
                && c.events.iter().zip(&classes).any(|(e, cl)| {
                    e.kind != "accepted"
                        && cl.is_some()
                        && !matches!(cl, Some("human") | Some("proxy"))
                }))
            .then_some((m, c))
        })
        .expect("a message with open, click and machine events");

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(profile.path());
    driver.go(&server.url("/insights"));
    let token_input = driver.find("#token");
    driver.call(
        "POST",
        &driver.s(&format!("/element/{token_input}/value")),
        Some(json!({"text": users[0].token})),
    );
    driver.click("#sign-in");

    // The templates table shows the expected figures (people only, the default).
    let expected = expected_templates(&users, &msgs, 0, &|_| true);
    let want = &expected[&msg_row_key(&users, msg)];
    let row = format!(
        "tr[data-template=\"{}\"][data-scope=\"{}\"]",
        msg.template,
        scope_of(&users, msg)
    );
    assert_eq!(
        driver.text(&format!("{row} td.sent")),
        want.sent.to_string()
    );
    assert_eq!(
        driver.text(&format!("{row} td.unique-opens")),
        want.human_unique_opens.to_string()
    );
    let delivered = want.sent - want.bounced;
    let rate = format!(
        "{:.1}%",
        want.human_unique_clicks as f64 / delivered as f64 * 100.0
    );
    assert_eq!(driver.text(&format!("{row} td.click-rate")), rate);
    // The switch to all events shows raw figures.
    driver.click("#class-all");
    assert_eq!(
        driver.text(&format!("{row} td.opens")),
        want.opens.to_string()
    );

    // The template's page: chart and top links.
    driver.click(&format!("{row} a"));
    assert_eq!(driver.text("#template-key"), msg.template);
    assert!(!driver.find_all("svg.chart rect.bar-opens").is_empty());
    let links = expected_links(&users, &msgs, 0, &msg_row_key(&users, msg));
    if let Some(url) = links.keys().next() {
        assert!(driver.text("#links").contains(url.as_str()));
    }
    driver.screenshot(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("insights-template.png"),
    );

    // The message's page: eye and cursor icons, machine events greyed with their reason.
    driver.click(&format!("a[href=\"/insights/messages/{}\"]", msg.id));
    assert!(driver.text("#subject").starts_with("Hello"));
    let opens = driver.find_all("tr.event.kind-open svg.icon.eye");
    let clicks = driver.find_all("tr.event.kind-click svg.icon.cursor");
    let n = |kind: &str| {
        msg.copies
            .iter()
            .flat_map(|c| &c.events)
            .filter(|e| e.kind == kind)
            .count()
    };
    assert_eq!(opens.len(), n("open"));
    assert_eq!(clicks.len(), n("click"));
    let machine = driver.find_all("tr.event.machine");
    let classes = final_classes(copy);
    let machines_in_copy = classes
        .iter()
        .filter(|c| c.is_some() && !matches!(c, Some("human") | Some("proxy")))
        .count();
    assert!(machine.len() >= machines_in_copy && machines_in_copy > 0);
    let first_machine = &machine[0];
    let reason_cell = driver.call(
        "GET",
        &driver.s(&format!("/element/{first_machine}/text")),
        None,
    );
    let color = driver.call(
        "GET",
        &driver.s(&format!("/element/{first_machine}/css/color")),
        None,
    );
    assert_eq!(
        color.as_str(),
        Some("rgba(153, 153, 153, 1)"),
        "machine rows are grey"
    );
    assert!(!reason_cell.as_str().unwrap().is_empty());
    driver.screenshot(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("insights-message.png"),
    );
}

/// A sender's own first test: they open and click their message seconds after delivery. The
/// message's page names the rule of each greyed-out event and says which window the events fell
/// in, with the windows of the settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_page_names_the_rules_and_the_windows_met() {
    use common::smtp::{add_user, db_i64, db_rows, submit_as, wait_until};
    if !std::path::Path::new("/usr/bin/chromedriver").exists() {
        panic!("chromium-driver is not installed (see scripts/test-packages)");
    }
    const PASSWORD: &str = "windows-password";
    const GMAIL: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    let db = TestDb::migrated();
    // Wide windows, so that a slow machine still opens and clicks inside them.
    let server = Server::start(
        &db.url,
        &[("PREFETCH_WINDOW", "30"), ("CLICK_SCANNER_WINDOW", "40")],
    );
    let url = db.url.clone();
    let token = tokio::task::spawn_blocking(move || add_user(&url, "ann@example.com", PASSWORD))
        .await
        .unwrap();
    let (smtp, public) = (server.smtp, server.url(""));
    let (url, api_token) = (db.url.clone(), token.clone());
    let message_id = tokio::task::spawn_blocking(move || {
        submit_as(
            smtp,
            "ann@example.com",
            PASSWORD,
            &["bob@example.net"],
            b"From: ann@example.com\r\nTo: bob@example.net\r\nSubject: First test\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n\
<html><body><p>Hi</p><a href=\"https://example.com/offer\">offer</a></body></html>\r\n",
        );
        assert!(wait_until(Duration::from_secs(20), || db_i64(
            &url,
            "SELECT count(*) FROM copies WHERE status = 'delivered'"
        ) == 1));
        let copy = db_rows(&url, "SELECT id::text, message_id::text FROM copies");
        let raw = ureq::get(&format!("{public}/api/captured/{}/raw", copy[0][0]))
            .set("authorization", &format!("Bearer {api_token}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let tracked = |prefix: &str| {
            let start = format!("{public}{prefix}");
            let rest = raw.split(start.as_str()).nth(1).expect("a tracked URL");
            format!("{start}{}", rest.split('"').next().unwrap())
        };
        let (pixel, link) = (tracked("/o/"), tracked("/c/"));
        // The tracker's delivery cache polls every second: let it see the delivery.
        std::thread::sleep(Duration::from_secs(2));
        let agent = ureq::AgentBuilder::new().redirects(0).build();
        for (url, user_agent) in [
            (&pixel, "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0"),
            (&pixel, GMAIL),
            (&link, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
        ] {
            let status = agent.get(url).set("user-agent", user_agent).call().unwrap().status();
            assert!(status == 200 || status == 302, "{url}: {status}");
        }
        assert!(wait_until(Duration::from_secs(15), || db_i64(
            &url,
            "SELECT count(*) FROM events WHERE kind IN ('open', 'click')"
        ) == 3));
        copy[0][1].clone()
    })
    .await
    .unwrap();

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(profile.path());
    driver.go(&server.url("/insights"));
    let token_input = driver.find("#token");
    driver.call(
        "POST",
        &driver.s(&format!("/element/{token_input}/value")),
        Some(json!({"text": token})),
    );
    driver.click("#sign-in");
    driver.find("#templates");
    driver.go(&server.url(&format!("/insights/messages/{message_id}")));
    assert_eq!(driver.text("#subject"), "First test");

    let notice = driver.text("#window-notice");
    for part in [
        "1 open came within 30 s of delivery and counts as prefetch (the prefetch window, setting PREFETCH_WINDOW)",
        "1 click came within 40 s of delivery and counts as scanner (the click-after-delivery window, setting CLICK_SCANNER_WINDOW)",
        "open the message or click a link later to see a human event",
        "Who opened and clicked",
    ] {
        assert!(notice.contains(part), "{part:?} not in the notice: {notice}");
    }
    // Greyed-out machines name their rule; the Gmail proxy's open is a person's, named too.
    assert_eq!(
        driver.text("tr.event.machine.kind-open td.rule"),
        "prefetch window"
    );
    assert_eq!(
        driver.text("tr.event.machine.kind-click td.rule"),
        "click-after-delivery window"
    );
    assert_eq!(
        driver.text("tr.event.human.kind-open td.rule"),
        "image proxy"
    );
    assert_eq!(driver.text("tr.event.human.kind-open td.cls"), "proxy");
    for row in driver.find_all("tr.event.machine") {
        let color = driver.call("GET", &driver.s(&format!("/element/{row}/css/color")), None);
        assert_eq!(
            color.as_str(),
            Some("rgba(153, 153, 153, 1)"),
            "machine rows are grey"
        );
    }
    assert_eq!(driver.find_all("tr.event.machine").len(), 2);
    driver.screenshot(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("insights-message-windows.png"),
    );
}

/// The README's rules (who counts as a person and why) as a reader sees them: the section
/// rendered from the README's Markdown (Python-Markdown, as a Git host would) in headless
/// Chromium, every rule, window and setting on the rendered page, and a screenshot kept.
#[test]
fn readme_rules_render_in_headless_chromium() {
    if !std::path::Path::new("/usr/bin/chromedriver").exists() {
        panic!("chromium-driver is not installed (see scripts/test-packages)");
    }
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let start = readme
        .find("## Who opened and clicked")
        .expect("the rules section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map(|i| start + 3 + i)
        .unwrap_or(readme.len());
    let section = &readme[start..end];
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let markdown = tmp.join("readme-rules.md");
    let html = tmp.join("readme-rules.html");
    std::fs::write(&markdown, section).unwrap();
    // Debian's Python, which has the package scripts/test-packages installs.
    let run = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import markdown, sys\n\
         body = markdown.markdown(open(sys.argv[1], encoding='utf-8').read(), extensions=['tables'])\n\
         style = 'body{font-family:sans-serif;max-width:1200px;margin:1em auto}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px;vertical-align:top}'\n\
         open(sys.argv[2], 'w', encoding='utf-8').write('<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>' + style + '</style></head><body>' + body + '</body></html>')\n",
        )
        .arg(&markdown)
        .arg(&html)
        .output()
        .expect("/usr/bin/python3 runs");
    let (ok, out) = (
        run.status.success(),
        String::from_utf8_lossy(&run.stderr).to_string(),
    );
    assert!(
        ok,
        "python3-markdown renders the README (see scripts/test-packages): {out}"
    );
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(profile.path());
    driver.call(
        "POST",
        &driver.s("/url"),
        Some(json!({"url": format!("file://{}", html.display())})),
    );
    let text = driver.text("body");
    for rule in [
        "HEAD request",
        "image proxy",
        "scanner agent",
        "crawler agent",
        "no user agent",
        "bare agent",
        "Apple address range",
        "APPLE_MPP_CIDRS",
        "prefetch window",
        "PREFETCH_WINDOW",
        "click-after-delivery window",
        "CLICK_SCANNER_WINDOW",
        "sweep",
        "3 or more clicks of the same copy within 5 seconds",
        "unknown-delivery window",
        "Why image proxy opens count as people",
    ] {
        assert!(
            text.contains(rule),
            "the rendered README lacks {rule:?}:\n{text}"
        );
    }
    // Both rule lists are tables a reader sees as tables, not pipes.
    assert_eq!(driver.find_all("table").len(), 2, "{}", driver.source());
    assert!(!text.contains("|---|"));
    let png = tmp.join("readme-rules.png");
    driver.screenshot(&png);
    let image = image::open(&png).unwrap().to_rgb8();
    let dark = image
        .pixels()
        .filter(|p| p.0.iter().all(|c| *c < 100))
        .count();
    assert!(
        dark > 10_000,
        "the screenshot shows the text ({dark} dark pixels)"
    );
}
