//! End to end over the API: rows written as the other stages write them, the aggregation job
//! run (events arriving out of order, across batches), and every report figure compared with
//! the value computed from what was inserted.

use crate::common;
use crate::insights_support;

use std::collections::BTreeMap;

use common::{Server, TestDb};
use insights_support::*;

fn rows_by_template(body: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    body["templates"]
        .as_array()
        .expect("templates array")
        .iter()
        .map(|r| (report_row_key(r), r.clone()))
        .collect()
}

/// Equal, rates within rounding (JSON parsing of floats is not bit-exact without
/// serde_json's float_roundtrip).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_f64() || b.is_f64() => (x - y).abs() < 1e-12,
        _ => a == b,
    }
}

fn assert_rows(
    server: &Server,
    user: &TestUser,
    query: &str,
    expected: &BTreeMap<String, Counts>,
    human: bool,
) {
    let (status, body) = get(
        &server.url(&format!("/api/reports/templates?{query}")),
        Some(&user.token),
    );
    assert_eq!(status, 200, "{body}");
    let got = rows_by_template(&body);
    let want: BTreeMap<&String, &Counts> = expected.iter().filter(|(_, c)| c.sent > 0).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "templates for {} with {query}",
        user.email
    );
    for (key, counts) in want {
        let row = &got[key];
        let exp = counts.json(human);
        for (field, value) in exp.as_object().unwrap() {
            assert!(
                same(&row[field], value),
                "{field} of {key} for {} with `{query}`: {row}",
                user.email
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_figure_matches_what_was_inserted() {
    let db = TestDb::migrated();
    let pool = db.pool();
    let users = users(&pool).await;
    let msgs = generate(7, &[0, 1, 2, 3, 4], 60);
    let client = db.client().await;
    // Events arrive out of order: clicks and late opens first, delivery events afterwards,
    // with aggregation runs in small batches between the two.
    let late = |e: &Ev| e.kind == "delivered" || (e.kind == "click" && e.link_idx == Some(1));
    insert(&client, &users, &msgs, &|e| !late(e), true).await;
    let first = aggregate(&db.url, 17).await;
    insert(&client, &users, &msgs, &late, false).await;
    let second = aggregate(&db.url, 17).await;
    let total: usize = msgs
        .iter()
        .flat_map(|m| &m.copies)
        .map(|c| c.events.len())
        .sum();
    assert_eq!((first + second) as usize, total);
    // A run with nothing new changes nothing.
    assert_eq!(aggregate(&db.url, 17).await, 0);

    // The dataset exercises every rule.
    let classes: Vec<_> = msgs
        .iter()
        .flat_map(|m| &m.copies)
        .flat_map(final_classes)
        .flatten()
        .collect();
    for class in ["human", "proxy", "apple_mpp", "scanner", "prefetch"] {
        assert!(classes.contains(&class), "no {class} event in the dataset");
    }

    let server = Server::start(&db.url, &[]);
    let all = |_: &Msg| true;
    for (i, user) in users.iter().enumerate() {
        let expected = expected_templates(&users, &msgs, i, &all);
        assert_rows(&server, user, "class=all", &expected, false);
        assert_rows(&server, user, "", &expected, true);
    }

    // Filters: days of sending, sender, team, deal (per-copy state path).
    let ann = &users[0];
    let days: Vec<_> = msgs.iter().map(|m| m.created_at.date_naive()).collect();
    let mid = days[days.len() / 2];
    let q = format!("from={mid}&to={mid}&class=all");
    let exp = expected_templates(&users, &msgs, 0, &|m| m.created_at.date_naive() == mid);
    assert_rows(&server, ann, &q, &exp, false);
    let q = format!("sender={}", users[1].id);
    let exp = expected_templates(&users, &msgs, 0, &|m| m.sender == 1);
    assert_rows(&server, ann, &q, &exp, true);
    let q = format!("team={}", users[2].team_id.unwrap());
    let exp = expected_templates(&users, &msgs, 0, &|m| {
        users[m.sender].team_id == users[2].team_id
    });
    assert_rows(&server, ann, &q, &exp, true);
    let exp = expected_templates(&users, &msgs, 0, &|m| m.deal.as_deref() == Some("deal-1"));
    assert_rows(&server, ann, "deal=deal-1&class=all", &exp, false);
    let exp = expected_templates(&users, &msgs, 0, &|m| {
        m.deal.as_deref() == Some("deal-0") && m.created_at.date_naive() >= mid
    });
    assert_rows(&server, ann, &format!("deal=deal-0&from={mid}"), &exp, true);
    // One deal, lead or project over every day is read from its own rollup (every viewer sees
    // only what the rule lets them); two at once, from the per-copy state.
    for (i, user) in users.iter().enumerate() {
        let exp = expected_templates(&users, &msgs, i, &|m| m.lead.as_deref() == Some("lead-1"));
        assert!(i > 0 || !exp.is_empty(), "no mail of lead-1 in the dataset");
        assert_rows(&server, user, "lead=lead-1&class=all", &exp, false);
        let exp = expected_templates(&users, &msgs, i, &|m| {
            m.project.as_deref() == Some("project-0")
        });
        assert!(
            i > 0 || !exp.is_empty(),
            "no mail of project-0 in the dataset"
        );
        assert_rows(&server, user, "project=project-0", &exp, true);
        let exp = expected_templates(&users, &msgs, i, &|m| m.deal.as_deref() == Some("deal-0"));
        assert_rows(&server, user, "deal=deal-0", &exp, true);
    }
    let exp = expected_templates(&users, &msgs, 0, &|m| {
        m.deal.as_deref() == Some("deal-1") && m.project.as_deref() == Some("project-1")
    });
    assert_rows(
        &server,
        ann,
        "deal=deal-1&project=project-1&class=all",
        &exp,
        false,
    );

    // One template: the same figures, a daily series adding up to them, top links.
    let expected = expected_templates(&users, &msgs, 0, &all);
    for (key, counts) in &expected {
        let (scope, template) = key.split_once(' ').unwrap();
        let url = server.url(&format!(
            "/api/reports/templates/{}?scope={scope}&class=all",
            mailtally::http::ui::url_part(template)
        ));
        let (status, body) = get(&url, Some(&ann.token));
        assert_eq!(status, 200, "{body}");
        for (field, value) in counts.json(false).as_object().unwrap() {
            assert!(same(&body[field], value), "{field} of {key}");
        }
        let daily = body["daily"].as_array().unwrap();
        let sum = |f: &str| daily.iter().map(|d| d[f].as_i64().unwrap()).sum::<i64>();
        assert_eq!(sum("sent"), counts.sent);
        assert_eq!(sum("human_clicks"), counts.human_clicks);
        assert_eq!(sum("opens"), counts.opens);
        let links: BTreeMap<String, (i64, i64)> = body["top_links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["url"].as_str().unwrap().to_string(),
                    (
                        l["clicks"].as_i64().unwrap(),
                        l["human_clicks"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            links,
            expected_links(&users, &msgs, 0, key),
            "links of {key}"
        );
        let client_opens: i64 = body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["opens"].as_i64().unwrap())
            .sum();
        assert_eq!(client_opens, counts.opens);
    }
    let (status, body) = get(&server.url("/api/reports/templates/nope"), Some(&ann.token));
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = get(
        &server.url("/api/reports/templates?from=yesterday"),
        Some(&ann.token),
    );
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));

    // A message's timeline shows the classes the reports counted.
    let m = msgs
        .iter()
        .find(|m| {
            m.sender == 0
                && m.copies
                    .iter()
                    .any(|c| c.events.iter().any(|e| e.kind == "click"))
        })
        .expect("a message of ann with clicks");
    let (status, body) = get(
        &server.url(&format!("/api/messages/{}", m.id)),
        Some(&ann.token),
    );
    assert_eq!(status, 200, "{body}");
    for c in &m.copies {
        let got = body["copies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == c.id.to_string())
            .unwrap();
        let timeline = got["timeline"].as_array().unwrap();
        assert_eq!(timeline.len(), c.events.len());
        let classes = final_classes(c);
        for (e, class) in c.events.iter().zip(classes) {
            let t = timeline
                .iter()
                .find(|t| t["id"] == e.id.to_string())
                .unwrap();
            assert_eq!(t["class"].as_str(), class, "{t}");
            let icon = match e.kind {
                "open" => Some("eye"),
                "click" => Some("cursor"),
                _ => None,
            };
            assert_eq!(t["icon"].as_str(), icon);
        }
        assert_eq!(got["status"], c.status);
    }

    // The job's metrics are exported.
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for name in [
        "mailtally_aggregation_lag_seconds",
        "mailtally_aggregation_lag_events",
        "mailtally_aggregation_batch_duration_seconds",
        "mailtally_aggregation_events_folded_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

/// `seq` is assigned at insert and visible at commit: an event of a transaction still open when
/// the job runs must be folded later, not skipped by a watermark that moved past its seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_late_is_not_skipped() {
    let db = TestDb::migrated();
    let pool = db.pool();
    let users = users(&pool).await;
    let msgs = generate(3, &[0], 2);
    let client = db.client().await;
    insert(&client, &users, &msgs, &|_| false, true).await;
    let (c1, c2) = (&msgs[0].copies[0], &msgs[1].copies[0]);
    let insert_open = "INSERT INTO events (id, occurred_at, message_id, copy_id, kind, class)
                       VALUES ($1, now(), $2, $3, 'open', 'human')";

    // The slow writer takes its seq first, and commits last.
    let mut slow = db.client().await;
    let slow_tx = slow.transaction().await.unwrap();
    slow_tx
        .execute(insert_open, &[&uuid::Uuid::now_v7(), &msgs[0].id, &c1.id])
        .await
        .unwrap();
    client
        .execute(insert_open, &[&uuid::Uuid::now_v7(), &msgs[1].id, &c2.id])
        .await
        .unwrap();
    aggregate_settled(&db.url, 100).await;
    slow_tx.commit().await.unwrap();
    aggregate(&db.url, 100).await;

    let opens: i64 = client
        .query_one("SELECT sum(opens)::bigint FROM insights_daily", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(opens, 2, "the late event was skipped");
    let states: i64 = client
        .query_one("SELECT count(*) FROM insights_copy_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(states, 2);
}
