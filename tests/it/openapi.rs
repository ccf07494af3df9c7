//! The OpenAPI document against a running mailtally: it describes exactly the `/api` routes the
//! server's route table registers, every documented operation is answered (never the scope's
//! 404 for unknown routes, never 405) with a status and content type the document gives for
//! it, the security it declares is the security enforced, and a path's undocumented methods
//! are not answered.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{smtp, Server, TestDb};
use serde_json::{json, Value};

/// What the `/api` scope answers for a route it does not have.
const NO_ROUTE: &str = "resource not found";

/// An answer: status, content type (without parameters) and body (unread for event streams).
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

fn request(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(20));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let res = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = res.status();
    let content_type = res.content_type().to_string();
    // An event stream stays open: its headers are the answer.
    let body = if content_type == "text/event-stream" {
        Value::Null
    } else {
        let text = res.into_string().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// `path` with each `{name}` replaced by what `value` gives for it.
fn fill(path: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(&rest[..open]);
        out.push_str(&value(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The documented operations: (METHOD, path) with the operation object.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn the_document_is_the_route_table_and_every_documented_route_answers() {
    let db = TestDb::migrated();
    let server = Server::start(&db.url, &[("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")]);
    let token = smtp::add_user(&db.url, "ann@example.com", "ann-password-1");

    let served = request("GET", &server.url("/api/openapi.json"), None, None);
    assert_eq!(
        (served.status, served.content_type.as_str()),
        (200, "application/json")
    );
    let doc = served.body;
    assert_eq!(doc["openapi"], "3.0.3");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    assert_eq!(
        (&schemes["cookie"]["type"], &schemes["cookie"]["in"]),
        (&json!("apiKey"), &json!("cookie"))
    );
    assert_eq!(schemes["cookie"]["name"], mailtally::http::auth::COOKIE);
    assert_eq!(doc["security"], json!([{"bearer": []}]));

    // (a) The route table the server registers its `/api` scope from is what is documented.
    let table: BTreeSet<(String, String)> = mailtally::http::api::openapi::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    let ops = operations(&doc);
    let documented: BTreeSet<(String, String)> =
        ops.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    assert_eq!(documented.len(), ops.len());
    assert_eq!(table, documented);
    for route in [
        ("POST", "/api/webhooks"),
        ("GET", "/api/webhooks/{id}/deliveries"),
        ("GET", "/api/events/stream"),
        ("GET", "/api/captured/{copy_id}/raw"),
        ("POST", "/api/group-emails"),
    ] {
        let route = (route.0.to_string(), route.1.to_string());
        assert!(table.contains(&route), "{route:?} is not in the table");
    }
    assert!(table.len() >= 32, "{table:?}");

    // Real things for the path parameters.
    let (status, body) = common::api::call(
        "POST",
        &server.url("/api/templates"),
        &token,
        Some(&json!({"key": "welcome", "subject": "Hello", "html": "<p>Hello</p>"})),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = common::api::call(
        "POST",
        &server.url("/api/group-emails"),
        &token,
        Some(&json!({"template": "welcome", "recipients": [{"email": "bob@example.net"}]})),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let message_id = body["message_id"].as_str().unwrap().to_string();
    let copy_id = body["recipients"][0]["copy_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        smtp::wait_until(Duration::from_secs(30), || smtp::delivered(&db.url) == 1),
        "the copy did not reach the capture sink"
    );
    let (status, body) = common::api::call(
        "POST",
        &server.url("/api/webhooks"),
        &token,
        Some(&json!({"url": "http://127.0.0.1:9/hook", "event_types": ["reply"]})),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let webhook_id = body["id"].to_string();

    // The scope's own 404, which no documented route may give.
    let none = request("GET", &server.url("/api/no-such-route"), Some(&token), None);
    assert_eq!(
        (none.status, &none.body["message"]),
        (404, &json!(NO_ROUTE))
    );

    for (method, path, op) in &ops {
        // A deletion gets a well-formed id of nothing, so that the other calls keep theirs.
        let deleting = method == "DELETE";
        let url = server.url(&fill(path, |name| match (name, deleting) {
            ("key", false) => "welcome".into(),
            ("key", true) => "no-such-template".into(),
            ("copy_id", _) => copy_id.clone(),
            ("id", false) if path.starts_with("/api/messages") => message_id.clone(),
            ("id", false) if path.starts_with("/api/exports/messages") => message_id.clone(),
            ("recipient", _) => "bob@example.net".into(),
            ("id", true) if path.starts_with("/api/messages") => uuid::Uuid::new_v4().to_string(),
            ("id", false) if path.starts_with("/api/webhooks") => webhook_id.clone(),
            ("id", _) => "987654321".into(),
            (other, _) => panic!("{method} {path}: no value for {{{other}}}"),
        }));
        let body = op.get("requestBody").map(|_| json!({}));
        let documented = &op["responses"];
        let what = format!("{method} {path}");

        // The security the document declares is enforced.
        let open = op["security"] == json!([{}]);
        let anonymous = request(method, &url, None, body.as_ref());
        if open {
            assert_eq!(anonymous.status, 200, "{what} without a token");
        } else {
            assert_eq!(
                (anonymous.status, &anonymous.body["error"]),
                (401, &json!("unauthorized")),
                "{what} without a token"
            );
        }

        let answer = request(method, &url, Some(&token), body.as_ref());
        assert_ne!(answer.status, 405, "{what}: {}", answer.body);
        assert_ne!(
            answer.body["message"],
            json!(NO_ROUTE),
            "{what} is not routed"
        );
        let status = answer.status.to_string();
        assert!(
            documented.get(&status).is_some(),
            "{what} answered {status}, not documented: {}",
            answer.body
        );
        if let Some(content) = documented[&status]["content"].as_object() {
            assert!(
                content.contains_key(&answer.content_type),
                "{what} answered {status} as {}, documented {:?}",
                answer.content_type,
                content.keys().collect::<Vec<_>>()
            );
        }
        if deleting || status == "404" {
            assert_eq!(answer.body["error"], "not_found", "{what}: {}", answer.body);
        }
    }

    // A documented path answers no method the document does not give it.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let messages = path.starts_with("/api/messages");
        let url = server.url(&fill(path, |name| match name {
            "copy_id" => uuid::Uuid::new_v4().to_string(),
            "id" if messages => uuid::Uuid::new_v4().to_string(),
            _ => "987654321".into(),
        }));
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if item.get(method.to_lowercase()).is_some() {
                continue;
            }
            let answer = request(method, &url, Some(&token), None);
            let unrouted = answer.status == 405
                || (answer.status == 404 && answer.body["message"] == json!(NO_ROUTE));
            assert!(
                unrouted,
                "{method} {path} is answered ({}) but not documented: {}",
                answer.status, answer.body
            );
        }
    }
}
