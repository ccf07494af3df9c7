//! Visibility through every endpoint and page: private (sender only), team (sender's team),
//! shared (everyone); admins see no more. Plus auth, admin-only calls, archive and delete.

use crate::common;
use crate::insights_support;

use common::{Server, TestDb};
use insights_support::*;

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = ureq::request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap_or(serde_json::Value::Null)),
        Err(ureq::Error::Status(code, r)) => {
            (code, r.into_json().unwrap_or(serde_json::Value::Null))
        }
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_exactly_what_visibility_allows_everywhere() {
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    // ann (alpha) sends one message of each visibility, each with its own template so that
    // report rows show which ones a user sees.
    let mut msgs = generate(21, &[0], 3);
    for (m, (vis, tpl)) in msgs.iter_mut().zip([
        ("private", "tpl-private"),
        ("team", "tpl-team"),
        ("shared", "tpl-shared"),
    ]) {
        m.visibility = vis;
        m.template = tpl.into();
        m.deal = Some("deal-x".into());
    }
    let client = db.client().await;
    insert(&client, &users, &msgs, &|_| true, true).await;
    aggregate(&db.url, 1000).await;
    let server = Server::start(&db.url, &[]);

    // viewer -> which of (private, team, shared) they see
    let cases = [
        (0, [true, true, true]),   // ann, the sender
        (1, [false, true, true]),  // amy, same team
        (2, [false, false, true]), // bob, other team
        (3, [false, true, true]),  // root, admin of the same team: no private
        (4, [false, false, true]), // nina, no team
    ];
    for (viewer, sees) in cases {
        let u = &users[viewer];
        let token = Some(u.token.as_str());
        let (status, body) = get(&server.url("/api/messages"), token);
        assert_eq!(status, 200);
        let listed = ids(&body);
        let (_, by_deal) = get(&server.url("/api/messages?deal=deal-x"), token);
        let (_, by_rcpt) = get(
            &server.url(&format!(
                "/api/messages?recipient={}",
                msgs[0].copies[0].recipient.to_uppercase()
            )),
            token,
        );
        let (_, report) = get(&server.url("/api/reports/templates?class=all"), token);
        let (_, crm_report) = get(&server.url("/api/reports/templates?deal=deal-x"), token);
        let (_, index) = page(&server.url("/insights"), token);
        let report_keys: Vec<&str> = report["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["template"].as_str().unwrap())
            .collect();
        for (m, &visible) in msgs.iter().zip(&sees) {
            let id = m.id.to_string();
            let who = format!("{} on {} message", u.email, m.visibility);
            assert_eq!(listed.contains(&id), visible, "list: {who}");
            assert_eq!(ids(&by_deal).contains(&id), visible, "deal list: {who}");
            let (status, body) = get(&server.url(&format!("/api/messages/{id}")), token);
            if visible {
                assert_eq!(status, 200, "{who}: {body}");
            } else {
                assert_eq!(status, 404, "{who}: {body}");
                assert_eq!(body["error"], "not_found");
            }
            assert_eq!(
                report_keys.contains(&m.template.as_str()),
                visible,
                "report: {who}"
            );
            let crm_has = crm_report["templates"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["template"] == m.template.as_str());
            assert_eq!(crm_has, visible, "CRM report: {who}");
            let (status, _) = get(
                &server.url(&format!("/api/reports/templates/{}", m.template)),
                token,
            );
            assert_eq!(
                status,
                if visible { 200 } else { 404 },
                "template report: {who}"
            );
            assert_eq!(index.contains(&m.template), visible, "page: {who}");
            let (status, html) = page(&server.url(&format!("/insights/messages/{id}")), token);
            assert_eq!(
                status,
                if visible { 200 } else { 404 },
                "message page: {who}"
            );
            assert_eq!(
                html.contains(&m.copies[0].recipient),
                visible,
                "message page: {who}"
            );
            let (status, _) = page(
                &server.url(&format!("/insights/templates/{}", m.template)),
                token,
            );
            assert_eq!(
                status,
                if visible { 200 } else { 404 },
                "template page: {who}"
            );
        }
        if viewer == 0 {
            assert_eq!(ids(&by_rcpt).len(), 1, "recipient filter: {by_rcpt}");
        }
        // Report rows equal the expected figures of what the viewer may see.
        let expected = expected_templates(&users, &msgs, viewer, &|_| true);
        for r in report["templates"].as_array().unwrap() {
            let want = &expected[&report_row_key(r)];
            assert_eq!(r["sent"], want.sent);
            assert_eq!(r["opens"], want.opens);
            assert_eq!(r["clicks"], want.clicks);
        }
    }

    // No token, a bad token: 401 with the JSON error shape.
    for token in [None, Some("mt_not-a-token")] {
        let (status, body) = get(&server.url("/api/messages"), token);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized"))
        );
        let (status, body) = get(&server.url("/api/reports/templates"), token);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let (status, body) = get(
        &server.url("/api/messages/not-a-uuid"),
        Some(&users[0].token),
    );
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = get(&server.url("/api/openapi.json"), None);
    assert_eq!(status, 200);
    assert_eq!(body["openapi"], "3.0.3");
    assert!(body["paths"]["/api/reports/templates"].is_object());

    // Admin-only user creation; the new user's token works; another token for oneself.
    let new_user = serde_json::json!({"email": "zed@example.com", "team": "beta"});
    let (status, body) = send(
        "POST",
        &server.url("/api/users"),
        Some(&users[0].token),
        Some(new_user.clone()),
    );
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    // An admin creates users of their own team only: a user in beta would read beta's mail.
    let (status, body) = send(
        "POST",
        &server.url("/api/users"),
        Some(&users[3].token),
        Some(new_user),
    );
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let new_user = serde_json::json!({"email": "zed@example.com"});
    let (status, body) = send(
        "POST",
        &server.url("/api/users"),
        Some(&users[3].token),
        Some(new_user.clone()),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["team_id"], users[3].team_id.unwrap(), "{body}");
    let zed = body["token"].as_str().unwrap().to_string();
    let (status, body) = get(&server.url("/api/messages"), Some(&zed));
    assert_eq!(status, 200);
    let mut seen = ids(&body);
    seen.sort();
    let mut want = vec![msgs[1].id.to_string(), msgs[2].id.to_string()];
    want.sort();
    assert_eq!(
        seen, want,
        "zed (alpha) sees the team one and the shared one"
    );
    let (status, body) = send(
        "POST",
        &server.url("/api/users"),
        Some(&users[3].token),
        Some(new_user),
    );
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")));
    let (status, body) = send(
        "POST",
        &server.url("/api/users"),
        Some(&users[3].token),
        Some(serde_json::json!({"nope": 1})),
    );
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, body) = send(
        "POST",
        &server.url("/api/tokens"),
        Some(&users[2].token),
        Some(serde_json::json!({"label": "ci"})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, me) = get(&server.url("/api/me"), body["token"].as_str());
    assert_eq!(
        (status, me["email"].as_str()),
        (200, Some("bob@example.com"))
    );

    // Archive and delete: 404 for who may not see, 403 for who sees but did not send.
    let team_msg = msgs[1].id;
    let archive = server.url(&format!("/api/messages/{team_msg}/archive"));
    assert_eq!(send("POST", &archive, Some(&users[2].token), None).0, 404);
    assert_eq!(send("POST", &archive, Some(&users[1].token), None).0, 403);
    assert_eq!(send("POST", &archive, Some(&users[0].token), None).0, 200);
    let (_, body) = get(&server.url("/api/messages"), Some(&users[0].token));
    assert!(
        !ids(&body).contains(&team_msg.to_string()),
        "archived is hidden"
    );
    let (_, body) = get(
        &server.url("/api/messages?archived=only"),
        Some(&users[0].token),
    );
    assert_eq!(ids(&body), vec![team_msg.to_string()]);

    let shared = &msgs[2];
    let del = server.url(&format!("/api/messages/{}", shared.id));
    assert_eq!(send("DELETE", &del, Some(&users[2].token), None).0, 403);
    let (_, before) = get(
        &server.url("/api/reports/templates?class=all"),
        Some(&users[2].token),
    );
    assert_eq!(before["templates"].as_array().unwrap().len(), 1);
    assert_eq!(send("DELETE", &del, Some(&users[0].token), None).0, 204);
    assert_eq!(send("DELETE", &del, Some(&users[0].token), None).0, 404);
    let (_, after) = get(
        &server.url("/api/reports/templates?class=all"),
        Some(&users[2].token),
    );
    assert_eq!(after["templates"].as_array().unwrap().len(), 0, "{after}");
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM events WHERE message_id = $1)
                  + (SELECT count(*) FROM copies WHERE message_id = $1)
                  + (SELECT count(*) FROM insights_copy_state WHERE message_id = $1)",
            &[&shared.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // The rollups after the delete equal a clean fold of what is left.
    let remaining: Vec<Msg> = msgs[..2].to_vec();
    let (_, report) = get(
        &server.url("/api/reports/templates?class=all"),
        Some(&users[0].token),
    );
    let expected = expected_templates(&users, &remaining, 0, &|_| true);
    assert_eq!(
        report["templates"].as_array().unwrap().len(),
        expected.len()
    );
    for r in report["templates"].as_array().unwrap() {
        let want = &expected[&report_row_key(r)];
        assert_eq!(r["sent"], want.sent);
        assert_eq!(r["human_unique_opens"], want.human_unique_opens);
        assert_eq!(r["clicks"], want.clicks);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_with_a_cookie_and_escapes_user_text() {
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let mut msgs = generate(4, &[0], 2);
    msgs[0].template = "<script>alert(1)</script>".into();
    msgs[0].subject = "<img src=x onerror=alert(2)>".into();
    let client = db.client().await;
    insert(&client, &users, &msgs, &|_| true, true).await;
    aggregate(&db.url, 1000).await;
    let server = Server::start(&db.url, &[]);

    let (status, html) = page(&server.url("/insights"), None);
    assert_eq!(status, 200);
    assert!(html.contains("name=\"token\""), "sign-in form: {html}");
    // A bad token is refused; a good one sets an HttpOnly, SameSite=Strict cookie.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let bad = agent
        .post(&server.url("/insights/login"))
        .send_form(&[("token", "nope")]);
    assert!(matches!(bad, Err(ureq::Error::Status(401, _))));
    let ok = agent
        .post(&server.url("/insights/login"))
        .send_form(&[("token", &users[0].token)])
        .unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let (_, html) = page(&server.url("/insights"), Some(&users[0].token));
    assert!(!html.contains("<script>alert"), "unescaped template key");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let (status, html) = page(
        &server.url(&format!("/insights/messages/{}", msgs[0].id)),
        Some(&users[0].token),
    );
    assert_eq!(status, 200);
    assert!(!html.contains("<img src=x"), "unescaped subject");
    assert!(
        !html
            .replace("<script src=\"/insights/live.js\" defer></script>", "")
            .contains("<script"),
        "no script but the page's own live notice"
    );
    // Not signed in: pages send to the sign-in form.
    let res = agent
        .get(&server.url(&format!("/insights/messages/{}", msgs[0].id)))
        .call()
        .unwrap();
    assert_eq!(res.status(), 303);
}
