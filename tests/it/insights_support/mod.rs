//! Shared by the Insights and API tests: a dataset written with SQL as the relay, delivery and
//! tracking stages would write it, and the expected report figures computed independently from
//! that dataset (the end-to-end test through relay and tracking will reuse [`expected_templates`]).
#![allow(dead_code)]

pub mod browser;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub team_id: Option<i64>,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Ev {
    pub id: Uuid,
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    pub class: Option<&'static str>,
    pub reason: Option<String>,
    pub link_idx: Option<i32>,
    pub client: Option<&'static str>,
    pub device: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Copy {
    pub id: Uuid,
    pub recipient: String,
    pub status: &'static str,
    pub events: Vec<Ev>,
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub id: Uuid,
    pub sender: usize,
    pub visibility: &'static str,
    pub template: String,
    pub subject: String,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    pub created_at: DateTime<Utc>,
    pub links: Vec<String>,
    pub copies: Vec<Copy>,
}

/// Deterministic pseudo-random numbers (tests must be reproducible).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn ev(kind: &'static str, at: DateTime<Utc>) -> Ev {
    Ev {
        id: Uuid::now_v7(),
        kind,
        at,
        class: None,
        reason: None,
        link_idx: None,
        client: None,
        device: None,
    }
}

pub const TEMPLATES: &[&str] = &["welcome", "follow-up", "promo <b>&amp;</b>"];

/// Messages by `senders` (indexes into the users slice given later) over the last days, with
/// human and machine opens and clicks: human, proxy, apple_mpp, scanner at ingest, click sweeps,
/// near-delivery fetches whose delivery time was unknown at ingest, bounces.
pub fn generate(seed: u64, senders: &[usize], messages: usize) -> Vec<Msg> {
    let mut r = Rng::new(seed);
    let base = Utc::now() - Duration::days(6);
    let mut out = Vec::new();
    for i in 0..messages {
        let sender = senders[i % senders.len()];
        let created_at = base + Duration::seconds((r.next(5 * 86400)) as i64);
        let links: Vec<String> = (0..1 + r.next(3))
            .map(|k| format!("https://example.com/p{}?x=<{}>", k, r.next(3)))
            .collect();
        let mut copies = Vec::new();
        for c in 0..1 + r.next(4) {
            let mut events = vec![ev("accepted", created_at)];
            let delivered_at = created_at + Duration::seconds(1 + r.next(30) as i64);
            let status = if r.next(8) == 0 {
                events.push(ev("deferred", delivered_at));
                events.push(ev("bounced", delivered_at + Duration::seconds(60)));
                "bounced"
            } else {
                events.push(ev("delivered", delivered_at));
                "delivered"
            };
            if status == "delivered" {
                for _ in 0..r.next(4) {
                    let mut e = ev(
                        "open",
                        delivered_at + Duration::seconds(r.next(86400) as i64),
                    );
                    match r.next(6) {
                        0 => {
                            e.class = Some("proxy");
                            e.client = Some("Gmail");
                        }
                        1 => e.class = Some("apple_mpp"),
                        2 => {
                            // delivery time unknown at ingest, then close to delivery: prefetch
                            e.class = Some("human");
                            e.reason = Some("delivery_time_unknown".into());
                            e.at = delivered_at + Duration::seconds(r.next(8) as i64);
                        }
                        3 => {
                            // delivery time unknown at ingest, but late: a person
                            e.class = Some("human");
                            e.reason = Some("delivery_time_unknown".into());
                            e.at = delivered_at + Duration::seconds(3600);
                            e.client = Some("Thunderbird");
                            e.device = Some("desktop");
                        }
                        _ => {
                            e.class = Some("human");
                            e.client = Some(["Outlook", "Apple Mail"][r.next(2) as usize]);
                            e.device = Some(["desktop", "mobile"][r.next(2) as usize]);
                        }
                    }
                    events.push(e);
                }
                let click_at = delivered_at + Duration::seconds(100 + r.next(86400) as i64);
                match r.next(5) {
                    0 => {
                        // a scanner's sweep: every link within two seconds, several times
                        for k in 0..3 {
                            let mut e = ev("click", click_at + Duration::milliseconds(700 * k));
                            e.class = Some("human");
                            e.link_idx = Some((k as usize % links.len()) as i32);
                            events.push(e);
                        }
                    }
                    1 => {
                        let mut e = ev("click", delivered_at + Duration::seconds(2));
                        e.class = Some("scanner");
                        e.reason = Some("click within seconds of delivery".into());
                        e.link_idx = Some(0);
                        events.push(e);
                    }
                    2 | 3 => {
                        // two clicks a few seconds apart: not a sweep
                        for k in 0..2 {
                            let mut e = ev("click", click_at + Duration::seconds(4 * k));
                            e.class = Some("human");
                            e.link_idx = Some((r.next(links.len() as u64)) as i32);
                            events.push(e);
                        }
                    }
                    _ => {}
                }
            }
            copies.push(Copy {
                id: Uuid::now_v7(),
                recipient: format!("rcpt{}@Example.org", (i * 7 + c as usize) % 11),
                status,
                events,
            });
        }
        out.push(Msg {
            id: Uuid::now_v7(),
            sender,
            visibility: ["private", "team", "shared"][r.next(3) as usize],
            template: TEMPLATES[r.next(TEMPLATES.len() as u64) as usize].to_string(),
            subject: format!("Hello <{i}> & welcome"),
            deal: (r.next(3) == 0).then(|| format!("deal-{}", r.next(2))),
            lead: (r.next(2) == 0).then(|| format!("lead-{}", r.next(3))),
            project: (r.next(2) == 0).then(|| format!("project-{}", r.next(2))),
            created_at,
            links,
            copies,
        });
    }
    out
}

/// Inserts the dataset's rows as the relay and tracking stages write them. `events_filter`
/// chooses which events go in now (the rest can be written later, out of order).
pub async fn insert(
    client: &tokio_postgres::Client,
    users: &[TestUser],
    msgs: &[Msg],
    events_filter: &dyn Fn(&Ev) -> bool,
    with_messages: bool,
) {
    if with_messages {
        for m in msgs {
            let u = &users[m.sender];
            client
                .execute(
                    "INSERT INTO templates (key) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&m.template],
                )
                .await
                .unwrap();
            client
                .execute(
                    "INSERT INTO messages (id, sender_id, team_id, visibility, template_key, subject,
                     envelope_from, deal, size_bytes, created_at, lead, project)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1000, $9, $10, $11)",
                    &[
                        &m.id,
                        &u.id,
                        &u.team_id,
                        &m.visibility,
                        &m.template,
                        &m.subject,
                        &u.email,
                        &m.deal,
                        &m.created_at,
                        &m.lead,
                        &m.project,
                    ],
                )
                .await
                .unwrap();
            let urls: Vec<&str> = m.links.iter().map(String::as_str).collect();
            crate::common::set_links(client, m.id, &urls).await;
            for c in &m.copies {
                let delivered_at = c
                    .events
                    .iter()
                    .find(|e| e.kind == "delivered")
                    .map(|e| e.at);
                client
                    .execute(
                        "INSERT INTO copies (id, message_id, recipient, status, attempts, delivered_at)
                         VALUES ($1, $2, $3, $4, 1, $5)",
                        &[&c.id, &m.id, &c.recipient, &c.status, &delivered_at],
                    )
                    .await
                    .unwrap();
            }
        }
    }
    for m in msgs {
        for c in &m.copies {
            for e in c.events.iter().filter(|e| events_filter(e)) {
                client
                    .execute(
                        "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, link_idx,
                         class, reason, client, device) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                        &[
                            &e.id,
                            &e.at,
                            &m.id,
                            &c.id,
                            &e.kind,
                            &e.link_idx,
                            &e.class,
                            &e.reason,
                            &e.client,
                            &e.device,
                        ],
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

/// The class each event ends with, computed from the rules of DESIGN.md and the issue
/// independently of the SQL: a click in a window of 5 s starting at a click and holding 3 or more
/// clicks is `scanner`; an open or click whose ingest reason says the delivery time was unknown
/// and that is within 10 s of the delivered event is `prefetch`.
pub fn final_classes(copy: &Copy) -> Vec<Option<&'static str>> {
    let delivered = copy
        .events
        .iter()
        .filter(|e| e.kind == "delivered")
        .map(|e| e.at)
        .min();
    let clicks: Vec<DateTime<Utc>> = copy
        .events
        .iter()
        .filter(|e| e.kind == "click")
        .map(|e| e.at)
        .collect();
    let window = Duration::seconds(5);
    copy.events
        .iter()
        .map(|e| {
            if e.kind != "open" && e.kind != "click" {
                return None;
            }
            let class = e.class.unwrap_or("human");
            if class != "human" && class != "proxy" {
                return Some(class);
            }
            if e.kind == "click" {
                let swept = clicks.iter().any(|&start| {
                    start <= e.at
                        && e.at <= start + window
                        && clicks
                            .iter()
                            .filter(|&&t| t >= start && t <= start + window)
                            .count()
                            >= 3
                });
                if swept {
                    return Some("scanner");
                }
            }
            if e.reason.as_deref() == Some("delivery_time_unknown") {
                if let Some(d) = delivered {
                    if (e.at - d).abs() <= Duration::seconds(10) {
                        return Some("prefetch");
                    }
                }
            }
            Some(class)
        })
        .collect()
}

/// The counts of one report row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub sent: i64,
    pub bounced: i64,
    pub opens: i64,
    pub unique_opens: i64,
    pub human_opens: i64,
    pub human_unique_opens: i64,
    pub clicks: i64,
    pub unique_clicks: i64,
    pub human_clicks: i64,
    pub human_unique_clicks: i64,
}

impl Counts {
    /// Every figure of the API row, rates included, for the chosen class.
    pub fn json(&self, human: bool) -> serde_json::Value {
        let ratio = |a: i64, b: i64| {
            if b > 0 {
                serde_json::json!(a as f64 / b as f64)
            } else {
                serde_json::Value::Null
            }
        };
        let delivered = self.sent - self.bounced;
        let (o, c) = if human {
            (self.human_unique_opens, self.human_unique_clicks)
        } else {
            (self.unique_opens, self.unique_clicks)
        };
        serde_json::json!({
            "sent": self.sent, "delivered": delivered, "bounced": self.bounced,
            "opens": self.opens, "unique_opens": self.unique_opens,
            "human_opens": self.human_opens, "human_unique_opens": self.human_unique_opens,
            "clicks": self.clicks, "unique_clicks": self.unique_clicks,
            "human_clicks": self.human_clicks, "human_unique_clicks": self.human_unique_clicks,
            "open_rate": ratio(o, delivered), "click_rate": ratio(c, delivered),
            "click_to_open": ratio(c, o), "bounce_rate": ratio(self.bounced, self.sent),
        })
    }
}

pub fn sees(users: &[TestUser], viewer: usize, m: &Msg) -> bool {
    let v = &users[viewer];
    let s = &users[m.sender];
    m.visibility == "shared"
        || m.sender == viewer
        || (m.visibility == "team" && v.team_id.is_some() && v.team_id == s.team_id)
}

/// The template scope a message is filed under, as reports write it: its sender's team, or the
/// sender for one without a team.
pub fn scope_of(users: &[TestUser], m: &Msg) -> String {
    let s = &users[m.sender];
    match s.team_id {
        Some(t) => format!("team:{t}"),
        None => format!("sender:{}", s.id),
    }
}

/// The key of a report row: scope and template key (a key is unique within its scope only).
pub fn row_key(scope: &str, template: &str) -> String {
    format!("{scope} {template}")
}

/// [`row_key`] of the row a message counts in.
pub fn msg_row_key(users: &[TestUser], m: &Msg) -> String {
    row_key(&scope_of(users, m), &m.template)
}

/// [`row_key`] of a report row as the API returns it.
pub fn report_row_key(r: &serde_json::Value) -> String {
    row_key(
        r["scope"].as_str().expect("scope"),
        r["template"].as_str().expect("template"),
    )
}

/// Expected report rows per template ([`row_key`]) for `viewer`, over the messages `keep`
/// selects.
pub fn expected_templates(
    users: &[TestUser],
    msgs: &[Msg],
    viewer: usize,
    keep: &dyn Fn(&Msg) -> bool,
) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for m in msgs.iter().filter(|m| sees(users, viewer, m) && keep(m)) {
        let row = out.entry(msg_row_key(users, m)).or_default();
        for c in &m.copies {
            let classes = final_classes(c);
            let human = |i: usize| matches!(classes[i], Some("human") | Some("proxy"));
            let count = |kind: &str, only_human: bool| {
                c.events
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| e.kind == kind && (!only_human || human(*i)))
                    .count() as i64
            };
            row.sent += 1;
            row.bounced += c.events.iter().any(|e| e.kind == "bounced") as i64;
            let (o, ho, k, hk) = (
                count("open", false),
                count("open", true),
                count("click", false),
                count("click", true),
            );
            row.opens += o;
            row.human_opens += ho;
            row.clicks += k;
            row.human_clicks += hk;
            row.unique_opens += (o > 0) as i64;
            row.human_unique_opens += (ho > 0) as i64;
            row.unique_clicks += (k > 0) as i64;
            row.human_unique_clicks += (hk > 0) as i64;
        }
    }
    out
}

/// Expected clicks per link URL of one template ([`row_key`]) for `viewer`: (clicks, human
/// clicks).
pub fn expected_links(
    users: &[TestUser],
    msgs: &[Msg],
    viewer: usize,
    key: &str,
) -> BTreeMap<String, (i64, i64)> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for m in msgs
        .iter()
        .filter(|m| sees(users, viewer, m) && msg_row_key(users, m) == key)
    {
        for c in &m.copies {
            let classes = final_classes(c);
            for (i, e) in c.events.iter().enumerate() {
                if e.kind == "click" {
                    let url = m.links[e.link_idx.unwrap_or(0) as usize].clone();
                    let entry = out.entry(url).or_default();
                    entry.0 += 1;
                    entry.1 += matches!(classes[i], Some("human") | Some("proxy")) as i64;
                }
            }
        }
    }
    out
}

/// Creates users: 0 = ann (team alpha), 1 = amy (team alpha), 2 = bob (team beta),
/// 3 = root (admin, team alpha), 4 = nina (no team).
pub async fn users(pool: &deadpool_postgres::Pool) -> Vec<TestUser> {
    use mailtally::accounts::{add_user, Role};
    let mut out = Vec::new();
    for (email, team, role) in [
        ("ann@example.com", Some("alpha"), Role::Member),
        ("amy@example.com", Some("alpha"), Role::Member),
        ("bob@example.com", Some("beta"), Role::Member),
        ("root@example.com", Some("alpha"), Role::Admin),
        ("nina@example.com", None, Role::Member),
    ] {
        let mut client = pool.get().await.unwrap();
        let new = add_user(&mut client, email, "password-123", team, role)
            .await
            .unwrap();
        out.push(TestUser {
            id: new.user.id,
            email: email.into(),
            team_id: new.user.team_id,
            token: new.api_token,
        });
    }
    out
}

/// Runs the aggregation job in-process until caught up.
/// Folds every event committed so far, as `mailtally aggregate` does.
pub async fn aggregate(db_url: &str, batch: i64) -> u64 {
    aggregate_with(db_url, batch, true).await
}

/// Folds what is settled now and stops, as the job inside `serve` does.
pub async fn aggregate_settled(db_url: &str, batch: i64) -> u64 {
    aggregate_with(db_url, batch, false).await
}

async fn aggregate_with(db_url: &str, batch: i64, wait: bool) -> u64 {
    let (mut client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    mailtally::insights::aggregate::run_until_caught_up(&mut client, batch, wait, |_| {})
        .await
        .unwrap()
}

/// Folds every event committed so far with one worker per part at once, as `serve` does.
pub async fn aggregate_parallel(db_url: &str, batch: i64) -> u64 {
    let mut clients = Vec::new();
    for _ in 0..mailtally::insights::aggregate::PARTS {
        let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        clients.push(client);
    }
    mailtally::insights::aggregate::run_workers(clients.iter_mut().collect(), batch, true, |_| {})
        .await
        .unwrap()
}

/// A GET with a bearer token; (status, JSON body).
pub fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_json().unwrap_or(serde_json::Value::Null)),
        Err(ureq::Error::Status(code, r)) => {
            (code, r.into_json().unwrap_or(serde_json::Value::Null))
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// A page as text (with the session cookie when given); (status, body).
pub fn page(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Cookie", &format!("mailtally_token={t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}
