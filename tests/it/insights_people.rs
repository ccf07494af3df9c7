//! Who engaged, exports and geography, over HTTP against a running server: the people lists and
//! a recipient's timeline equal what the events say (people and machines apart) for every kind
//! of user; a 200,000-row CSV export streams within a bounded memory and parses back to the
//! figures of the JSON report; countries come from a GeoIP database the test writes, for
//! people's events only.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::common;
use crate::insights_support::*;
use common::{Server, TestDb};

/// What a people row should hold for one recipient.
#[derive(Debug, Default, Clone, PartialEq)]
struct Want {
    copies: i64,
    opens: i64,
    clicks: i64,
    replies: i64,
    machine_opens: i64,
    machine_clicks: i64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    /// (kind, class) -> machine events
    machines: BTreeMap<(String, String), i64>,
    score: f64,
}

fn is_human(class: Option<&str>, kind: &str) -> bool {
    kind == "reply" || matches!(class, Some("human") | Some("proxy"))
}

/// The people rows of the copies `keep` selects, computed from the dataset: counted events
/// of `kinds`, people only or all, clicks on `url` only when given.
fn expected_people(
    msgs: &[Msg],
    keep: &dyn Fn(&Msg) -> bool,
    all: bool,
    kinds: &[&str],
    url: Option<&str>,
) -> BTreeMap<String, Want> {
    let now = Utc::now();
    let mut copies: BTreeMap<String, i64> = BTreeMap::new();
    let mut out: BTreeMap<String, Want> = BTreeMap::new();
    for m in msgs.iter().filter(|m| keep(m)) {
        for c in &m.copies {
            let who = c.recipient.to_lowercase();
            *copies.entry(who.clone()).or_default() += 1;
            let classes = final_classes(c);
            for (i, e) in c.events.iter().enumerate() {
                if !kinds.contains(&e.kind) {
                    continue;
                }
                if let Some(u) = url {
                    if e.kind != "click" || m.links[e.link_idx.unwrap_or(0) as usize] != u {
                        continue;
                    }
                }
                let human = is_human(classes[i], e.kind);
                let w = out.entry(who.clone()).or_default();
                match (e.kind, human) {
                    ("open", true) => w.opens += 1,
                    ("click", true) => w.clicks += 1,
                    ("reply", _) => w.replies += 1,
                    ("open", false) => w.machine_opens += 1,
                    _ => w.machine_clicks += 1,
                }
                if !human {
                    *w.machines
                        .entry((e.kind.to_string(), classes[i].unwrap_or("").to_string()))
                        .or_default() += 1;
                }
                if human || all {
                    w.first = Some(w.first.map_or(e.at, |f| f.min(e.at)));
                    w.last = Some(w.last.map_or(e.at, |l| l.max(e.at)));
                }
                if human {
                    let weight = match e.kind {
                        "open" => 1.0,
                        "click" => 3.0,
                        _ => 5.0,
                    };
                    let age = (now - e.at).num_milliseconds().max(0) as f64 / 86_400_000.0;
                    w.score += weight * 0.5f64.powf(age / 14.0);
                }
            }
        }
    }
    out.retain(|_, w| w.opens + w.clicks + w.replies > 0 || (all && w.first.is_some()));
    for (who, w) in out.iter_mut() {
        w.copies = copies[who];
    }
    out
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
}

/// PostgreSQL keeps microseconds: times agree within one.
fn same_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= Duration::microseconds(1),
        (None, None) => true,
        _ => false,
    }
}

/// Asserts that a people list equals the expected rows, in every figure.
fn assert_people(list: &Value, want: &BTreeMap<String, Want>, all: bool, what: &str) {
    let rows = list["people"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {list}"));
    let got: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["recipient"].as_str().unwrap())
        .collect();
    let wanted: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(got, wanted, "{what}: who is listed");
    let mut scores: Vec<f64> = Vec::new();
    for r in rows {
        let who = r["recipient"].as_str().unwrap();
        let w = &want[who];
        let ctx = format!("{what}: {who}: {r}");
        assert_eq!(r["copies"], w.copies, "{ctx}");
        assert_eq!(r["opens"], w.opens, "{ctx}");
        assert_eq!(r["clicks"], w.clicks, "{ctx}");
        assert_eq!(r["replies"], w.replies, "{ctx}");
        assert!(same_time(time(&r["first_at"]), w.first), "first: {ctx}");
        assert!(same_time(time(&r["last_at"]), w.last), "last: {ctx}");
        let score = r["score"].as_f64().unwrap();
        assert!(
            (score - w.score).abs() < 0.02,
            "score {} ~ {}: {ctx}",
            score,
            w.score
        );
        scores.push(score);
        if all {
            assert_eq!(r["machine_opens"], w.machine_opens, "{ctx}");
            assert_eq!(r["machine_clicks"], w.machine_clicks, "{ctx}");
            let mut machines: BTreeMap<(String, String), i64> = BTreeMap::new();
            for m in r["machines"].as_array().unwrap() {
                assert!(
                    m["class"] == "apple_mpp"
                        || m["reason"].as_str().is_some_and(|s| !s.is_empty()),
                    "a machine's reason: {ctx}"
                );
                *machines
                    .entry((
                        m["kind"].as_str().unwrap().to_string(),
                        m["class"].as_str().unwrap_or("").to_string(),
                    ))
                    .or_default() += m["events"].as_i64().unwrap();
            }
            assert_eq!(machines, w.machines, "{ctx}");
        } else {
            for k in ["machine_opens", "machine_clicks", "machines"] {
                assert!(
                    r.get(k).is_none(),
                    "no machine figures in people-only mode: {ctx}"
                );
            }
        }
    }
    assert!(
        scores.windows(2).all(|s| s[0] >= s[1]),
        "{what}: highest score first: {scores:?}"
    );
}

/// A reply to the first delivered copy of every third message, an hour after delivery.
fn add_replies(msgs: &mut [Msg]) {
    for m in msgs.iter_mut().step_by(3) {
        if let Some(c) = m.copies.iter_mut().find(|c| c.status == "delivered") {
            let at = c.events[1].at + Duration::hours(1);
            c.events.push(Ev {
                id: uuid::Uuid::now_v7(),
                kind: "reply",
                at,
                class: None,
                reason: None,
                link_idx: None,
                client: None,
                device: None,
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_lists_and_timelines_match_the_events_for_every_viewer() {
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let mut msgs = generate(24, &[0, 1, 2, 4], 14);
    add_replies(&mut msgs);
    let client = db.client().await;
    insert(&client, &users, &msgs, &|_| true, true).await;
    aggregate(&db.url, 1000).await;
    let server = Server::start(&db.url, &[]);
    let any = ["open", "click", "reply"];
    let mut hidden_seen = 0;
    // Each recipient's timeline export (the page's button) and what the JSON timeline says.
    let mut timeline_csvs: Vec<String> = Vec::new();
    type Tally = BTreeMap<(String, String, String, String), usize>;
    let mut timeline_wants: Vec<(String, Tally)> = Vec::new();

    for viewer in 0..users.len() {
        let u = &users[viewer];
        let token = Some(u.token.as_str());
        let (_, report) = get(&server.url("/api/reports/templates?class=all"), token);
        let mut listed_people = 0;
        for row in report["templates"].as_array().unwrap() {
            let key = row["template"].as_str().unwrap();
            let scope = row["scope"].as_str().unwrap();
            let row_key = report_row_key(row);
            let in_row = |m: &Msg| sees(&users, viewer, m) && msg_row_key(&users, m) == row_key;
            let base = format!(
                "/api/reports/templates/{}/people?scope={}",
                url(key),
                url(scope)
            );
            for (class, all) in [("human", false), ("all", true)] {
                let (status, list) = get(&server.url(&format!("{base}&class={class}")), token);
                assert_eq!(status, 200, "{list}");
                let want = expected_people(&msgs, &in_row, all, &any, None);
                listed_people += want.len();
                assert_people(&list, &want, all, &format!("{} {row_key} {class}", u.email));
            }
            for kind in ["open", "click", "reply"] {
                let (_, list) = get(&server.url(&format!("{base}&kind={kind}")), token);
                let want = expected_people(&msgs, &in_row, false, &[kind], None);
                assert_people(
                    &list,
                    &want,
                    false,
                    &format!("{} {row_key} {kind}", u.email),
                );
            }
            // Per link: who clicked each link of the template's report.
            let (_, detail) = get(
                &server.url(&format!(
                    "/api/reports/templates/{}?scope={}&class=all",
                    url(key),
                    url(scope)
                )),
                token,
            );
            for l in detail["top_links"].as_array().unwrap() {
                let link = l["url"].as_str().unwrap();
                let (_, list) = get(
                    &server.url(&format!("{base}&class=all&kind=click&url={}", url(link))),
                    token,
                );
                let want = expected_people(&msgs, &in_row, true, &["click"], Some(link));
                assert_people(&list, &want, true, &format!("{row_key} link {link}"));
            }
            // The page lists the same people and links to each one.
            let (status, html) = page(
                &server.url(&format!(
                    "/insights/templates/{}/people?scope={}",
                    url(key),
                    url(scope)
                )),
                token,
            );
            assert_eq!(status, 200);
            for who in expected_people(&msgs, &in_row, false, &any, None).keys() {
                assert!(
                    html.contains(&format!("/insights/people/{}", url(who))),
                    "{who} on the people page"
                );
            }
        }
        assert!(listed_people > 0, "{} sees people", u.email);

        for m in &msgs {
            let visible = sees(&users, viewer, m);
            hidden_seen += !visible as usize;
            let (status, list) = get(
                &server.url(&format!("/api/messages/{}/people?class=all", m.id)),
                token,
            );
            let (page_status, _) = page(
                &server.url(&format!("/insights/messages/{}/people", m.id)),
                token,
            );
            if !visible {
                assert_eq!((status, page_status), (404, 404), "{} on {}", u.email, m.id);
                continue;
            }
            assert_eq!((status, page_status), (200, 200));
            let want = expected_people(&msgs, &|x: &Msg| x.id == m.id, true, &any, None);
            assert_people(&list, &want, true, &format!("message {}", m.id));
        }

        // Each recipient: exactly the visible copies, and every event of them, classified.
        let recipients: BTreeSet<String> = msgs
            .iter()
            .flat_map(|m| m.copies.iter().map(|c| c.recipient.to_lowercase()))
            .collect();
        for who in &recipients {
            let copies: Vec<(&Msg, &Copy)> = msgs
                .iter()
                .filter(|m| sees(&users, viewer, m))
                .flat_map(|m| m.copies.iter().map(move |c| (m, c)))
                .filter(|(_, c)| c.recipient.to_lowercase() == *who)
                .collect();
            let (status, person) = get(
                &server.url(&format!(
                    "/api/people/{}?class=all",
                    url(&who.to_uppercase())
                )),
                token,
            );
            let (page_status, html) = page(
                &server.url(&format!("/insights/people/{}", url(who))),
                token,
            );
            if copies.is_empty() {
                assert_eq!((status, page_status), (404, 404), "{} on {who}", u.email);
                assert!(!html.contains(who.as_str()));
                continue;
            }
            assert_eq!((status, page_status), (200, 200), "{person}");
            let got: BTreeSet<String> = person["copies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["copy_id"].as_str().unwrap().to_string())
                .collect();
            let want: BTreeSet<String> = copies.iter().map(|(_, c)| c.id.to_string()).collect();
            assert_eq!(got, want, "{} sees these copies of {who}", u.email);
            let mut want_events: BTreeMap<String, (String, Option<&str>, Option<bool>)> =
                BTreeMap::new();
            for (_, c) in &copies {
                let classes = final_classes(c);
                for (i, e) in c.events.iter().enumerate() {
                    let human = matches!(e.kind, "open" | "click" | "reply")
                        .then(|| is_human(classes[i], e.kind));
                    want_events.insert(e.id.to_string(), (e.kind.to_string(), classes[i], human));
                }
            }
            let timeline = person["timeline"].as_array().unwrap();
            let got_events: BTreeMap<String, (String, Option<&str>, Option<bool>)> = timeline
                .iter()
                .map(|e| {
                    (
                        e["id"].as_str().unwrap().to_string(),
                        (
                            e["kind"].as_str().unwrap().to_string(),
                            e["class"].as_str(),
                            e["human"].as_bool(),
                        ),
                    )
                })
                .collect();
            assert_eq!(got_events, want_events, "{} on {who}'s timeline", u.email);
            let times: Vec<DateTime<Utc>> =
                timeline.iter().filter_map(|e| time(&e["at"])).collect();
            assert!(times.windows(2).all(|t| t[0] <= t[1]), "oldest first");
            let keep = |m: &Msg| sees(&users, viewer, m);
            let want = expected_people(&msgs, &keep, true, &any, None);
            let mine: BTreeMap<String, Want> = want.into_iter().filter(|(k, _)| k == who).collect();
            if !mine.is_empty() {
                let list = serde_json::json!({"people": [person["engagement"].clone()]});
                assert_people(&list, &mine, true, &format!("{who}'s engagement"));
            }
            for (m, _) in &copies {
                assert!(html.contains(&format!("/insights/messages/{}", m.id)));
            }
            timeline_csvs.push(download(&server, &href(&html, "export-timeline"), &u.token));
            let mut tally = Tally::new();
            for e in timeline {
                let key = ["copy_id", "kind", "class", "human"].map(|k| as_field(&e[k]));
                *tally.entry(key.into()).or_default() += 1;
            }
            timeline_wants.push((format!("{} on {who}", u.email), tally));
        }
    }
    assert!(hidden_seen > 0, "some viewer is refused some message");
    let parsed = parse_csv(&timeline_csvs);
    assert!(!parsed.is_empty());
    for ((what, want), rows) in timeline_wants.iter().zip(&parsed) {
        let mut got = Tally::new();
        for r in rows {
            let key = ["copy_id", "kind", "class", "human"].map(|k| r[k].clone());
            *got.entry(key.into()).or_default() += 1;
        }
        assert_eq!(&got, want, "the timeline CSV of {what}");
    }

    // From the template report, one click away.
    let (_, html) = page(
        &server.url(&format!("/insights/templates/{}", url(&msgs[0].template))),
        Some(&users[msgs[0].sender].token),
    );
    assert!(html.contains("id=\"view-people\""), "{html}");
    assert!(html.contains("id=\"export-people\""));
    // The report's parts as the page's buttons download them, in the page's mode (people),
    // parse back to the JSON report's.
    let owner = &users[msgs[0].sender].token;
    let parts = ["export-daily", "export-links", "export-clients"];
    let bodies: Vec<String> = parts
        .iter()
        .map(|id| download(&server, &href(&html, id), owner))
        .collect();
    let (status, detail) = get(
        &server.url(&format!(
            "/api/reports/templates/{}?class=human",
            url(&msgs[0].template)
        )),
        Some(owner),
    );
    assert_eq!(status, 200, "{detail}");
    let parsed = parse_csv(&bodies);
    for (part, json, rows, columns) in [
        (
            "daily",
            &detail["daily"],
            &parsed[0],
            &[
                "day",
                "sent",
                "delivered",
                "opens",
                "human_unique_opens",
                "clicks",
                "human_clicks",
                "replies",
                "open_rate",
                "click_to_open",
                "bounce_rate",
            ][..],
        ),
        (
            "links",
            &detail["top_links"],
            &parsed[1],
            &[
                "url",
                "clicks",
                "human_clicks",
                "unique_clicks",
                "human_unique_clicks",
            ][..],
        ),
        (
            "clients",
            &detail["clients"],
            &parsed[2],
            &[
                "client",
                "device",
                "opens",
                "human_opens",
                "unique_opens",
                "human_unique_opens",
            ][..],
        ),
    ] {
        let json = json.as_array().unwrap();
        assert!(!json.is_empty(), "{part}: {detail}");
        assert_eq!(rows.len(), json.len(), "{part}: {rows:?}");
        for (row, want) in rows.iter().zip(json) {
            for c in columns {
                let got = &row[*c];
                match &want[*c] {
                    // Rates are written with six decimals.
                    Value::Number(n) if n.is_f64() => {
                        let g: f64 = got.parse().unwrap();
                        assert!(
                            (g - n.as_f64().unwrap()).abs() < 1e-6,
                            "{part} {c}: {got} vs {n}"
                        );
                    }
                    v => assert_eq!(got, &as_field(v), "{part} {c}"),
                }
            }
        }
    }
    // Without a GeoIP database, its exports say so.
    let (status, body) = get(
        &server.url(&format!(
            "/api/exports/templates/{}/geography",
            url(&msgs[0].template)
        )),
        Some(owner),
    );
    assert_eq!(status, 409, "{body}");
    let (status, body) = get(
        &server.url("/api/people/nobody%40example.org"),
        Some(&users[0].token),
    );
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = get(
        &server.url(&format!(
            "/api/reports/templates/{}/people?kind=nope",
            url(&msgs[0].template)
        )),
        Some(&users[msgs[0].sender].token),
    );
    assert_eq!(status, 400);
}

fn url(s: &str) -> String {
    mailtally::http::ui::url_part(s)
}

/// The `href` of the element with `id` in a page, its `&amp;`s undone.
fn href(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} on the page"));
    let rest = &html[at..];
    let start = rest.find("href=\"").expect("an href") + 6;
    let end = start + rest[start..].find('"').unwrap();
    rest[start..end].replace("&amp;", "&")
}

/// A CSV the page's button downloads (with the page's cookie): its body.
fn download(server: &Server, path: &str, token: &str) -> String {
    let res = ureq::get(&server.url(path))
        .set("Cookie", &format!("mailtally_token={token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(res.content_type().starts_with("text/csv"), "{path}");
    res.into_string().unwrap()
}

/// CSV bodies as Python's csv module reads them: each a list of rows keyed by the header.
fn parse_csv(bodies: &[String]) -> Vec<Vec<BTreeMap<String, String>>> {
    if bodies.is_empty() {
        return Vec::new();
    }
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.path().join(format!("{i}.csv"));
            std::fs::write(&p, b).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let script = r#"
import csv, json, sys
out = []
for path in sys.argv[1:]:
    with open(path, newline="", encoding="utf-8") as fh:
        out.append(list(csv.DictReader(fh)))
print(json.dumps(out))
"#;
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let (ok, out) = common::smtp::python(script, &args);
    assert!(ok, "{out}");
    serde_json::from_str(out.trim()).unwrap()
}

/// A JSON value as the CSV writes it: numbers and booleans as text, null as empty.
fn as_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// VmHWM (peak resident memory) of a process, in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

const COPIES: i64 = 20_000;
const EVENTS_PER_COPY: i64 = 10;

/// Figures of an events CSV as Python's csv module reads it: JSON on stdout.
const COUNT_EVENTS: &str = r#"
import csv, json, sys
f = {"rows": 0, "opens": 0, "human_opens": 0, "clicks": 0, "human_clicks": 0, "replies": 0,
     "delivered": 0}
uo, huo, uc, huc, ur = set(), set(), set(), set(), set()
with open(sys.argv[1], newline="", encoding="utf-8") as fh:
    r = csv.DictReader(fh)
    for row in r:
        f["rows"] += 1
        k, human, copy = row["kind"], row["human"] == "true", row["copy_id"]
        if k == "open":
            f["opens"] += 1; uo.add(copy)
            if human: f["human_opens"] += 1; huo.add(copy)
        elif k == "click":
            f["clicks"] += 1; uc.add(copy)
            if human: f["human_clicks"] += 1; huc.add(copy)
        elif k == "reply":
            f["replies"] += 1; ur.add(copy)
        elif k == "delivered":
            f["delivered"] += 1
        if k in ("open", "click") and not human and not row["reason"] and row["class"] != "apple_mpp":
            raise SystemExit("a machine event without its reason: %r" % row)
f.update(unique_opens=len(uo), human_unique_opens=len(huo), unique_clicks=len(uc),
         human_unique_clicks=len(huc), unique_replies=len(ur))
print(json.dumps(f))
"#;

const SUM_PEOPLE: &str = r#"
import csv, json, sys
s = {"rows": 0, "opens": 0, "clicks": 0, "replies": 0}
with open(sys.argv[1], newline="", encoding="utf-8") as fh:
    for row in csv.DictReader(fh):
        s["rows"] += 1
        for k in ("opens", "clicks", "replies"):
            s[k] += int(row[k])
print(json.dumps(s))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_export_of_200000_rows_streams_and_parses_back_to_the_report() {
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let client = db.client().await;
    let message = uuid::Uuid::now_v7();
    let ann = &users[0];
    client
        .execute("INSERT INTO templates (key) VALUES ('bulk')", &[])
        .await
        .unwrap();
    // A long subject with quotes and commas: every row carries it, so the body is larger than
    // the memory the server may use.
    let subject = "Quarterly numbers, \"final\" edition; ".repeat(12);
    client
        .execute(
            "INSERT INTO messages (id, sender_id, team_id, visibility, template_key, subject,
             envelope_from, size_bytes, created_at)
             VALUES ($1, $2, $3, 'shared', 'bulk', $4, $5, 1000, now() - interval '2 days')",
            &[&message, &ann.id, &ann.team_id, &subject, &ann.email],
        )
        .await
        .unwrap();
    let links: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "https://example.com/landing/{i}?{}",
                "utm_campaign=bulk&x=1,".repeat(8)
            )
        })
        .collect();
    let links: Vec<&str> = links.iter().map(String::as_str).collect();
    common::set_links(&client, message, &links).await;
    client
        .execute(
            "INSERT INTO copies (id, message_id, recipient, status, attempts, delivered_at)
             SELECT gen_random_uuid(), $1, 'person' || g || '@Example.org', 'delivered', 1,
                    now() - interval '2 days' + interval '30 seconds'
             FROM generate_series(1, $2::bigint) g",
            &[&message, &COPIES],
        )
        .await
        .unwrap();
    // Per copy: delivered, five opens, three clicks ten minutes apart (no sweep), one reply;
    // classes spread over people and machines, machines with a reason holding a comma and
    // quotes.
    client
        .execute(
            "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, link_idx, class,
                                 reason, client, device)
             SELECT gen_random_uuid(), c.delivered_at + make_interval(secs => k * 600 + 60),
                    c.message_id, c.id, x.kind,
                    CASE WHEN x.kind = 'click' THEN k - 6 END,
                    x.class,
                    CASE WHEN x.class IN ('scanner', 'prefetch')
                         THEN 'gateway \"X\", checked' END,
                    CASE WHEN x.kind = 'open' THEN 'Outlook' END,
                    CASE WHEN x.kind = 'open' THEN 'desktop' END
             FROM copies c
             CROSS JOIN generate_series(0, $2::int - 1) k
             CROSS JOIN LATERAL (
                SELECT CASE WHEN k = 0 THEN 'delivered' WHEN k <= 5 THEN 'open'
                            WHEN k <= 8 THEN 'click' ELSE 'reply' END AS kind,
                       CASE WHEN k BETWEEN 1 AND 8
                            THEN (ARRAY['human', 'human', 'proxy', 'apple_mpp', 'scanner'])
                                 [1 + abs(hashtext(c.id::text || k::text)) % 5] END AS class
             ) x
             WHERE c.message_id = $1",
            &[&message, &(EVENTS_PER_COPY as i32)],
        )
        .await
        .unwrap();
    // What autovacuum does soon after a bulk write: the planner then knows the sizes.
    client
        .batch_execute("ANALYZE copies, events")
        .await
        .unwrap();
    aggregate(&db.url, 100_000).await;
    let server = Server::start(&db.url, &[]);
    let pid = server.child.id();
    let token = ann.token.as_str();

    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("events.csv");
    let before = peak_memory(pid);
    let res = ureq::get(&server.url("/api/exports/templates/bulk/events?class=all"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.content_type().starts_with("text/csv"));
    let mut file = std::fs::File::create(&csv_path).unwrap();
    let bytes = std::io::copy(&mut res.into_reader(), &mut file).unwrap();
    file.flush().unwrap();
    let peak = peak_memory(pid);
    eprintln!(
        "events export: {bytes} bytes; serve's peak memory {before} bytes before, {peak} after"
    );
    assert!(
        bytes > 100 * 1024 * 1024,
        "the body ({bytes} bytes) is larger than the memory bound, so that only streaming keeps it"
    );
    assert!(
        peak < 100 * 1024 * 1024,
        "serve's peak memory {peak} bytes (before the export: {before}) for a {bytes}-byte export"
    );

    let (ok, out) = common::smtp::python(COUNT_EVENTS, &[csv_path.to_str().unwrap()]);
    assert!(ok, "{out}");
    let counted: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(counted["rows"], COPIES * EVENTS_PER_COPY, "{counted}");
    let (status, report) = get(
        &server.url("/api/reports/templates/bulk?class=all"),
        Some(token),
    );
    assert_eq!(status, 200, "{report}");
    for k in [
        "opens",
        "human_opens",
        "clicks",
        "human_clicks",
        "replies",
        "unique_opens",
        "human_unique_opens",
        "unique_clicks",
        "human_unique_clicks",
        "unique_replies",
        "delivered",
    ] {
        assert_eq!(counted[k], report[k], "{k}: CSV {counted} vs JSON {report}");
    }
    assert!(counted["human_opens"].as_i64().unwrap() > 0);
    assert!(counted["opens"].as_i64() > counted["human_opens"].as_i64());

    // The people list as CSV: one row per person, their counts adding up to the report's.
    let people_path = dir.path().join("people.csv");
    let res = ureq::get(&server.url("/api/exports/templates/bulk/people"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let mut file = std::fs::File::create(&people_path).unwrap();
    std::io::copy(&mut res.into_reader(), &mut file).unwrap();
    let (ok, out) = common::smtp::python(SUM_PEOPLE, &[people_path.to_str().unwrap()]);
    assert!(ok, "{out}");
    let summed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summed["rows"], COPIES, "{summed}");
    assert_eq!(summed["opens"], report["human_opens"]);
    assert_eq!(summed["clicks"], report["human_clicks"]);
    assert_eq!(summed["replies"], report["replies"]);
    let (_, first) = get(
        &server.url("/api/reports/templates/bulk/people?limit=1"),
        Some(token),
    );
    assert_eq!(first["people"].as_array().unwrap().len(), 1);

    // The template report as CSV: the JSON figures.
    let res = ureq::get(&server.url("/api/exports/templates?class=all"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let text = res.into_string().unwrap();
    let script = r#"
import csv, io, json, sys
rows = list(csv.DictReader(io.StringIO(sys.argv[1], newline="")))
print(json.dumps(rows))
"#;
    let (ok, out) = common::smtp::python(script, &[&text]);
    assert!(ok, "{out}");
    let rows: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    for k in ["sent", "opens", "human_unique_opens", "clicks", "replies"] {
        assert_eq!(rows[0][k].as_str().unwrap(), report[k].to_string(), "{k}");
    }
    // Not for another team's user: the message is shared, so bob sees it; nina too. A private
    // export of nothing is a 404.
    let (status, _) = get(
        &server.url("/api/exports/templates/nothing/events"),
        Some(token),
    );
    assert_eq!(status, 404);
}

/// Writes a GeoIP2-City-format database placing a few networks.
fn write_geoip(path: &std::path::Path) {
    let script = r#"
use strict;
use MaxMind::DB::Writer::Tree;
my %types = (country => 'map', city => 'map', names => 'map', en => 'utf8_string',
             iso_code => 'utf8_string', geoname_id => 'uint32');
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 6, record_size => 24, database_type => 'GeoIP2-City',
    languages => ['en'], description => { en => 'mailtally test' },
    remove_reserved_networks => 0,
    map_key_type_callback => sub { $types{ $_[0] } },
);
sub place { my ($net, $code, $country, $city) = @_;
    my %r = (country => { iso_code => $code, names => { en => $country } });
    $r{city} = { names => { en => $city } } if defined $city;
    $tree->insert_network($net, \%r);
}
place('81.2.69.0/24', 'GB', 'United Kingdom', 'London');
place('89.160.20.0/24', 'DE', 'Germany', undef);
place('17.0.0.0/8', 'US', 'United States', 'Cupertino');
place('66.249.80.0/20', 'JP', 'Japan', 'Tokyo');
open my $fh, '>:raw', $ARGV[0] or die;
$tree->write_tree($fh);
close $fh;
"#;
    let out = std::process::Command::new("perl")
        .arg("-e")
        .arg(script)
        .arg(path)
        .output()
        .expect("perl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geography_places_people_and_never_machines() {
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let mmdb = dir.path().join("test-city.mmdb");
    write_geoip(&mmdb);

    let mut msgs = generate(5, &[0], 1);
    let m = &mut msgs[0];
    m.template = "geo".into();
    m.visibility = "team";
    m.copies.truncate(1);
    let base = m.created_at;
    let copy = |n: usize| Copy {
        id: uuid::Uuid::now_v7(),
        recipient: format!("reader{n}@example.org"),
        status: "delivered",
        events: vec![],
    };
    m.copies = (0..3).map(copy).collect();
    let client_ref = &client;
    insert(client_ref, &users, &msgs, &|_| true, true).await;
    let m = &msgs[0];
    // (copy, kind, class, ip): people in London and Germany, Apple MPP and a scanner from an
    // Apple range (US), Gmail's image proxy from Google's (JP), a person from an address the
    // database does not know.
    let events: [(usize, &str, &str, &str); 8] = [
        (0, "open", "human", "81.2.69.5"),
        (0, "open", "human", "81.2.69.6"),
        (0, "click", "human", "81.2.69.5"),
        (1, "click", "human", "89.160.20.7"),
        (1, "open", "apple_mpp", "17.1.2.3"),
        (2, "open", "apple_mpp", "17.58.0.1"),
        (2, "click", "scanner", "17.5.5.5"),
        (2, "open", "proxy", "66.249.84.1"),
    ];
    for (i, (c, kind, class, ip)) in events.iter().enumerate() {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let reason: Option<&str> = (*class == "scanner").then_some("known scanner agent");
        let link: Option<i32> = (*kind == "click").then_some(0);
        client
            .execute(
                "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, link_idx, class,
                 reason, ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &uuid::Uuid::now_v7(),
                    &(base + Duration::hours(2 + i as i64)),
                    &m.id,
                    &m.copies[*c].id,
                    kind,
                    &link,
                    class,
                    &reason,
                    &ip,
                ],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, class, ip)
             VALUES ($1, $2, $3, $4, 'open', 'human', '192.0.2.44')",
            &[
                &uuid::Uuid::now_v7(),
                &(base + Duration::hours(20)),
                &m.id,
                &m.copies[2].id,
            ],
        )
        .await
        .unwrap();
    aggregate(&db.url, 1000).await;

    let server = Server::start(&db.url, &[("GEOIP_DATABASE", mmdb.to_str().unwrap())]);
    let token = Some(users[1].token.as_str()); // amy, same team
    let (status, g) = get(&server.url("/api/reports/templates/geo/geography"), token);
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["available"], true);
    let countries: BTreeMap<String, (i64, i64, i64)> = g["countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["country_code"].as_str().unwrap().to_string(),
                (
                    c["opens"].as_i64().unwrap(),
                    c["clicks"].as_i64().unwrap(),
                    c["people"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (i64, i64, i64)> =
        [("GB".to_string(), (2, 1, 1)), ("DE".to_string(), (0, 1, 1))].into();
    assert_eq!(
        countries, want,
        "people only, never Apple MPP, scanners or proxies: {g}"
    );
    assert_eq!(g["countries"][0]["country"], "United Kingdom");
    let cities: Vec<&str> = g["cities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["city"].as_str().unwrap())
        .collect();
    assert_eq!(cities, vec!["London"], "{g}");
    assert_eq!(g["unplaced_events"], 1);
    let (status, by_message) = get(
        &server.url(&format!("/api/messages/{}/geography", m.id)),
        token,
    );
    assert_eq!(status, 200);
    assert_eq!(by_message["countries"], g["countries"]);
    let (status, html) = page(&server.url("/insights/templates/geo/geography"), token);
    assert_eq!(status, 200);
    assert!(html.contains("data-country=\"GB\"") && !html.contains("data-country=\"US\""));
    // The page's CSV button and the message's export: the same places as the JSON, countries
    // then cities.
    let amy = users[1].token.as_str();
    let bodies = [
        download(&server, &href(&html, "export-geography"), amy),
        download(
            &server,
            &format!("/api/exports/messages/{}/geography", m.id),
            amy,
        ),
    ];
    for (rows, json) in parse_csv(&bodies).iter().zip([&g, &by_message]) {
        let want: Vec<Vec<String>> = [("country", "countries"), ("city", "cities")]
            .iter()
            .flat_map(|(level, list)| {
                json[*list].as_array().unwrap().iter().map(move |p| {
                    let mut row = vec![level.to_string()];
                    row.extend(
                        [
                            "country_code",
                            "country",
                            "city",
                            "opens",
                            "clicks",
                            "people",
                        ]
                        .map(|c| as_field(&p[c])),
                    );
                    row
                })
            })
            .collect();
        let got: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                [
                    "level",
                    "country_code",
                    "country",
                    "city",
                    "opens",
                    "clicks",
                    "people",
                ]
                .map(|c| r[c].clone())
                .to_vec()
            })
            .collect();
        assert_eq!(got, want);
    }
    // bob (another team) does not see the team's template.
    let (status, _) = get(
        &server.url("/api/reports/templates/geo/geography"),
        Some(&users[2].token),
    );
    assert_eq!(status, 404);
    drop(server);

    // Without a database: no figures at all.
    let server = Server::start(&db.url, &[]);
    let (status, g) = get(&server.url("/api/reports/templates/geo/geography"), token);
    assert_eq!(status, 200);
    assert_eq!(g["available"], false);
    assert!(g.get("countries").is_none(), "{g}");
    let (_, html) = page(&server.url("/insights/templates/geo/geography"), token);
    assert!(html.contains("id=\"no-geography\""));
    let (status, body) = get(&server.url("/api/exports/templates/geo/geography"), token);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("GEOIP_DATABASE"),
        "{body}"
    );
}
