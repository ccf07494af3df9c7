//! The Insights views in headless Chromium at 1,366 x 768, against a running server fed by the
//! real relay: no page scrolls sideways; in people-only mode no machine count appears anywhere;
//! the click map marks each tracked link (by its place, two links to one URL apart) with its
//! share of people's clicks; the comparison draws both templates' series; a person's click on a
//! visible message shows a browser notification within 2 s, and neither a scanner's sweep nor
//! another user's private message does. Screenshots go to `target/screenshots/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::smtp::{add_user, add_user_in, db_i64, db_rows, submit_as, wait_until};
use crate::common::{Server, TestDb};
use crate::insights_support::browser::Driver;

const PASSWORD: &str = "views-password";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
/// Machine events of the dataset, in numbers found nowhere else on the pages: 947 Apple
/// Privacy Protection opens and 613 scanner clicks (all events: 949 opens, 617 clicks).
const MACHINE_NUMBERS: [&str; 4] = ["947", "949", "613", "617"];

struct World {
    db: TestDb,
    server: Server,
    ann: String,
    /// Copy id by recipient.
    copies: BTreeMap<String, String>,
    /// Each copy's tracked click URLs, in the message's order.
    links: BTreeMap<String, Vec<String>>,
}

fn html(from: &str, subject: &str, template: &str, visibility: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nSubject: {subject}\r\nX-Mailtally-Template: {template}\r\n\
X-Mailtally-Visibility: {visibility}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<html><head><title>{subject}</title></head><body><h1>{subject}</h1>\r\n\
<p><a href=\"https://example.com/offer\">See the offer</a></p>\r\n\
<p><a href=\"https://example.com/pricing\">Pricing</a></p>\r\n\
<p><img src=\"https://images.example.com/banner.png\" alt=\"banner\" width=\"200\" height=\"40\"></p>\r\n\
<p><a href=\"https://example.com/offer\">The offer again</a></p>\r\n</body></html>\r\n"
    )
    .into_bytes()
}

fn world() -> World {
    let db = TestDb::migrated();
    let server = Server::start(
        &db.url,
        &[
            ("PREFETCH_WINDOW", "0"),
            ("CLICK_SCANNER_WINDOW", "0"),
            ("WEBHOOK_CLICK_HOLD", "0.5"),
        ],
    );
    let ann = add_user(&db.url, "ann@north.test", PASSWORD);
    let bob = add_user_in(&db.url, "bob@south.test", PASSWORD, Some("south"));
    let welcome = [
        "carol@example.net",
        "dave@example.net",
        "erin@example.net",
        "frank@example.net",
    ];
    submit_as(
        server.smtp,
        "ann@north.test",
        PASSWORD,
        &welcome,
        &html("ann@north.test", "Spring offer", "views-welcome", "team"),
    );
    submit_as(
        server.smtp,
        "ann@north.test",
        PASSWORD,
        &["gina@example.net"],
        &html("ann@north.test", "Summer promo", "views-promo", "team"),
    );
    submit_as(
        server.smtp,
        "bob@south.test",
        PASSWORD,
        &["hank@example.net"],
        &html(
            "bob@south.test",
            "Bob's private note",
            "views-private",
            "private",
        ),
    );
    assert!(wait_until(Duration::from_secs(30), || db_i64(
        &db.url,
        "SELECT count(*) FROM copies WHERE status = 'delivered'"
    ) == 6));
    let mut copies = BTreeMap::new();
    let mut links = BTreeMap::new();
    for row in db_rows(
        &db.url,
        "SELECT c.recipient, c.id::text, u.email FROM copies c
         JOIN messages m ON m.id = c.message_id JOIN users u ON u.id = m.sender_id",
    ) {
        let token = if row[2] == "ann@north.test" {
            &ann
        } else {
            &bob
        };
        let raw = ureq::get(&server.url(&format!("/api/captured/{}/raw", row[1])))
            .set("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let start = server.url("/c/");
        let urls: Vec<String> = raw
            .split(start.as_str())
            .skip(1)
            .map(|rest| format!("{start}{}", rest.split('"').next().unwrap()))
            .collect();
        assert_eq!(urls.len(), 3, "three tracked links in {raw}");
        links.insert(row[0].clone(), urls);
        copies.insert(row[0].clone(), row[1].clone());
    }
    // People: carol opens twice and clicks the first link once, the second twice, the third
    // (the first's URL again) once. Machines: dave's copy, 947 Apple opens, 613 scanner clicks.
    let carol = &copies["carol@example.net"];
    let dave = &copies["dave@example.net"];
    let insert = |copy: &str,
                  kind: &str,
                  class: &str,
                  link: &str,
                  n: i64,
                  start_s: i64,
                  step_ms: i64| {
        db_rows(
            &db.url,
            &format!(
                "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, link_idx, class, reason)
                 SELECT gen_random_uuid(), now() - interval '{start_s} seconds' + g * interval '{step_ms} milliseconds',
                        c.message_id, c.id, '{kind}', {link}, '{class}', NULL
                 FROM copies c, generate_series(1, {n}) g WHERE c.id = '{copy}'"
            ),
        );
    };
    insert(carol, "open", "human", "NULL", 2, 1200, 60_000);
    for (link, at) in [(0, 1000), (1, 950), (1, 900), (2, 850)] {
        insert(carol, "click", "human", &link.to_string(), 1, at, 0);
    }
    insert(dave, "open", "apple_mpp", "NULL", 947, 800, 10);
    insert(dave, "click", "scanner", "0", 613, 700, 10);
    let gina = &copies["gina@example.net"];
    insert(gina, "open", "human", "NULL", 1, 600, 0);
    assert!(
        wait_until(Duration::from_secs(60), || db_i64(
            &db.url,
            "SELECT coalesce(sum(clicks), 0) * 1000 + coalesce(sum(human_clicks), 0)
             FROM insights_daily WHERE template_key = 'views-welcome'"
        ) == 617_004
            && db_i64(
                &db.url,
                "SELECT coalesce(sum(human_opens), 0) FROM insights_daily
                 WHERE template_key = 'views-promo'"
            ) == 1),
        "the aggregation job folded the events"
    );
    World {
        db,
        server,
        ann,
        copies,
        links,
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sign_in(driver: &Driver, server: &Server, token: &str) {
    driver.go(&server.url("/insights"));
    let input = driver.find("#token");
    driver.call(
        "POST",
        &driver.s(&format!("/element/{input}/value")),
        Some(json!({"text": token})),
    );
    driver.click("#sign-in");
    driver.find("#templates");
}

fn attribute(driver: &Driver, element: &str, name: &str) -> String {
    driver
        .call(
            "GET",
            &driver.s(&format!("/element/{element}/attribute/{name}")),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn element_text(driver: &Driver, element: &str) -> String {
    driver
        .call("GET", &driver.s(&format!("/element/{element}/text")), None)
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The page fits the window, shows no machine count, and is kept as a screenshot.
fn check_page(driver: &Driver, name: &str, people_only: bool) {
    let (scroll, inner) = driver.widths();
    assert!(
        scroll <= inner,
        "{name} scrolls sideways at 1,366 px: {scroll} > {inner}"
    );
    if people_only {
        let text = driver.text("body");
        for n in MACHINE_NUMBERS {
            let found = text
                .split(|c: char| !c.is_ascii_digit())
                .any(|word| word == n);
            assert!(
                !found,
                "machine count {n} on {name} in people-only mode:\n{text}"
            );
        }
    }
    driver.screenshot(&screenshots().join(format!("insights-{name}.png")));
}

#[test]
fn views_fit_the_screen_keep_to_one_mode_and_show_the_click_map_and_comparison() {
    let w = world();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start_sized(profile.path(), 1366, 768);
    sign_in(&driver, &w.server, &w.ann);

    // Templates, people only (the default), then all events: the machines' numbers are there.
    check_page(&driver, "templates", true);
    assert!(!driver.find_all("#tiles .tile").is_empty());
    driver.click("#class-all");
    let all = driver.text("#templates");
    assert!(
        all.contains("949") && all.contains("617"),
        "all events show the machines' counts: {all}"
    );
    check_page(&driver, "templates-all-events", false);
    driver.click("#class-human");

    // The template's page, from its row.
    driver.click("tr[data-template=\"views-welcome\"] a");
    assert_eq!(driver.text("#template-key"), "views-welcome");
    assert_eq!(driver.text("#tile-open-rate .human"), "25.0%");
    assert_eq!(driver.text("#tile-open-rate .all"), "all events 50.0%");
    assert!(
        driver.find_all("svg.chart text.tick-y").len() >= 2,
        "labelled ticks"
    );
    check_page(&driver, "template", true);

    // Every message, searchable, one click from the navigation.
    driver.click("#nav-messages");
    let search = driver.find("#search");
    driver.call(
        "POST",
        &driver.s(&format!("/element/{search}/value")),
        Some(json!({"text": "erin@example"})),
    );
    driver.click("#search-go");
    driver.find("tr[data-message]");
    let rows = driver.find_all("tr[data-message]");
    assert_eq!(
        rows.len(),
        1,
        "one message has erin: {}",
        driver.text("#messages")
    );
    assert!(driver.text("#messages").contains("Spring offer"));
    assert!(!driver.text("#messages").contains("Bob's private note"));
    check_page(&driver, "messages", true);

    // The click map, one click from the template.
    driver.go(&w.server.url("/insights"));
    driver.click("tr[data-template=\"views-welcome\"] a");
    driver.click("#view-clickmap");
    driver.find("#clickmap");
    check_page(&driver, "clickmap", true);
    let sandbox = attribute(&driver, &driver.find("#clickmap"), "sandbox");
    assert!(!sandbox.contains("allow-scripts"), "sandbox={sandbox:?}");
    driver.frame(Some("#clickmap"));
    let badges = driver.find_all("span.mt-badge");
    let mut seen = BTreeMap::new();
    for b in &badges {
        seen.insert(attribute(&driver, b, "data-link"), element_text(&driver, b));
    }
    let want: BTreeMap<String, String> = [
        ("0", "25% \u{b7} 1"),
        ("1", "50% \u{b7} 2"),
        ("2", "25% \u{b7} 1"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(
        seen, want,
        "a badge on each tracked link with its share of people's clicks"
    );
    assert_eq!(driver.find_all("a[data-link]").len(), 3);
    // Nothing remote in the frame: the banner and the pixel are blank data: images.
    let sources = driver.script(
        "return Array.from(document.images).map(function (i) { return i.getAttribute('src'); });",
        json!([]),
    );
    for s in sources.as_array().unwrap() {
        assert!(s.as_str().unwrap().starts_with("data:"), "{sources}");
    }
    driver.frame(None);

    // The comparison, one click from the template: both templates' series on one chart.
    driver.go(&w.server.url("/insights"));
    driver.click("tr[data-template=\"views-welcome\"] a");
    driver.click("#view-compare");
    driver.find("#compare-templates");
    let promo = driver
        .find_all("#compare-templates input[type=checkbox]")
        .into_iter()
        .find(|e| attribute(&driver, e, "value").ends_with(":views-promo"))
        .expect("views-promo can be picked");
    driver.call(
        "POST",
        &driver.s(&format!("/element/{promo}/click")),
        Some(json!({})),
    );
    driver.click("#compare-templates button");
    driver.find("#comparison");
    let titles = |class: &str| -> Vec<String> {
        driver
            .script(
                "return Array.from(document.querySelectorAll('rect.' + arguments[0] + ' title'))
                   .map(function (t) { return t.textContent; });",
                json!([class]),
            )
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let first = titles("bar-series-0");
    let second = titles("bar-series-1");
    assert!(
        first.iter().any(|t| t.ends_with(": 2 views-welcome")),
        "{first:?}"
    );
    assert!(
        second.iter().any(|t| t.ends_with(": 1 views-promo")),
        "{second:?}"
    );
    let table = driver.text("#comparison");
    assert!(
        table.contains("views-welcome") && table.contains("views-promo"),
        "{table}"
    );
    check_page(&driver, "compare", true);

    // Two periods of one template: today against yesterday, each with its figures and series.
    let team = db_i64(
        &w.db.url,
        "SELECT team_id FROM users WHERE email = 'ann@north.test'",
    );
    let today = chrono::Utc::now().date_naive();
    let yesterday = today - chrono::Duration::days(1);
    driver.go(&w.server.url(&format!(
        "/insights/compare?t=team%3A{team}%3Aviews-welcome&from={today}&to={today}&from2={yesterday}&to2={yesterday}"
    )));
    let table = driver.text("#comparison");
    assert!(
        table.contains(&format!("views-welcome {today} to {today}"))
            && table.contains(&format!("views-welcome {yesterday} to {yesterday}")),
        "{table}"
    );
    let today_bars = titles("bar-series-0");
    assert!(
        today_bars.contains(&format!("day 1: 2 views-welcome {today} to {today}")),
        "{today_bars:?}"
    );
    check_page(&driver, "compare-periods", true);

    // A message's page fits too.
    driver.go(&w.server.url("/insights/messages"));
    driver.click("a.message");
    driver.find("#subject");
    check_page(&driver, "message", false);

    // Who engaged and one person's page, one click from the template; where people read. They fit.
    driver.go(&w.server.url("/insights"));
    driver.click("tr[data-template=\"views-welcome\"] a");
    driver.click("#view-people");
    driver.find("tr.person");
    check_page(&driver, "people", true);
    driver.click("tr.person a");
    driver.find("#recipient");
    check_page(&driver, "recipient", false);
    driver.go(&w.server.url(&format!(
        "/insights/templates/views-welcome/geography?scope=team%3A{team}"
    )));
    driver.find("#template-key");
    check_page(&driver, "geography", true);
    drop(w.db);
}

#[test]
fn a_person_s_click_notifies_within_two_seconds_and_machines_and_others_never() {
    let w = world();
    // Past the unknown-delivery window of every copy, so that a click's class is final.
    assert!(wait_until(Duration::from_secs(30), || db_i64(
        &w.db.url,
        "SELECT count(*) FROM copies WHERE delivered_at > now() - interval '11 seconds'"
    ) == 0));
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start_sized(profile.path(), 1366, 768);
    sign_in(&driver, &w.server, &w.ann);
    // Permission granted: the page's Notification records what it is asked to show.
    driver.script(
        "window.shown = [];
         window.Notification = function (title, options) {
           window.shown.push({ title: title, body: (options || {}).body });
         };
         window.Notification.permission = 'granted';
         window.Notification.requestPermission = function () { return Promise.resolve('granted'); };",
        json!([]),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        driver.script(
            "return document.getElementById('mt-feed').getAttribute('data-live');",
            json!([]),
        ) == json!("open")
    }));
    let shown = || -> Vec<Value> {
        driver
            .script("return window.shown;", json!([]))
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let click = |url: &str| {
        let status = agent
            .get(url)
            .set("user-agent", BROWSER)
            .call()
            .unwrap()
            .status();
        assert_eq!(status, 302, "{url}");
    };
    // A sweep: frank's three links at once (a gateway with a browser's agent), and a person's
    // click on bob's private message, which ann may not see.
    for url in &w.links["frank@example.net"] {
        click(url);
    }
    click(&w.links["hank@example.net"][1]);
    assert!(wait_until(Duration::from_secs(10), || db_i64(
        &w.db.url,
        &format!(
            "SELECT count(*) FROM events WHERE kind = 'click' AND copy_id IN ('{}', '{}')",
            w.copies["frank@example.net"], w.copies["hank@example.net"]
        )
    ) == 4));
    // Erin, a person, clicks ann's message.
    let started = Instant::now();
    click(&w.links["erin@example.net"][1]);
    let mut arrived = None;
    while started.elapsed() < Duration::from_secs(2) {
        if shown().iter().any(|n| {
            n["title"]
                .as_str()
                .unwrap_or("")
                .contains("erin@example.net")
        }) {
            arrived = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let arrived = arrived.unwrap_or_else(|| panic!("no notification within 2 s: {:?}", shown()));
    println!("notification after {arrived:?}");
    // Long past the sweep's and bob's holds: still nothing of theirs, and erin's once.
    std::thread::sleep(Duration::from_secs(2));
    let all = shown();
    let titles: Vec<&str> = all
        .iter()
        .map(|n| n["title"].as_str().unwrap_or(""))
        .collect();
    assert!(
        !titles
            .iter()
            .any(|t| t.contains("frank") || t.contains("hank")),
        "{titles:?}"
    );
    assert_eq!(
        titles.iter().filter(|t| t.contains("erin")).count(),
        1,
        "{titles:?}"
    );
    assert!(
        titles
            .iter()
            .any(|t| t.contains("erin@example.net clicked Spring offer")),
        "{titles:?}"
    );
    let feed = driver.text("#mt-feed");
    assert!(feed.contains("erin@example.net clicked"), "{feed}");
    driver.screenshot(&screenshots().join("insights-notification.png"));
    // The sweep was there, and is a machine's in the reports' classes.
    assert_eq!(
        db_i64(
            &w.db.url,
            &format!(
                "SELECT count(*) FROM ({}) x WHERE final_class = 'scanner'",
                mailtally::classify::hindsight::classified_events_sql(&format!(
                    "SELECT '{}'::uuid",
                    w.copies["frank@example.net"]
                ))
            )
        ),
        3
    );
}
