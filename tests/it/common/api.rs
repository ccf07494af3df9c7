//! JSON API calls and delivered copies as a recipient reads them.

use serde_json::Value;

/// A request with a bearer token (and an Idempotency-Key when given); (status, JSON body).
pub fn call(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = ureq::request(method, url).set("Authorization", &format!("Bearer {token}"));
    if let Some(k) = key {
        req = req.set("Idempotency-Key", k);
    }
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// A delivered copy as its recipient reads it.
pub struct Received {
    pub subject: String,
    pub html: String,
    pub text: String,
    pub to: Vec<String>,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
}

/// Parses a copy as smtp-sink dumped it (LF line ends).
pub fn received(dump: &str) -> Received {
    let raw = dump.replace('\n', "\r\n");
    let m = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the copy parses");
    let to = m
        .to()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Received {
        subject: m.subject().unwrap_or("").to_string(),
        html: m.body_html(0).map(|h| h.into_owned()).unwrap_or_default(),
        text: m.body_text(0).map(|h| h.into_owned()).unwrap_or_default(),
        to,
        message_id: m.message_id().map(str::to_string),
        in_reply_to: m.in_reply_to().as_text().map(str::to_string),
        references: m.references().as_text().map(str::to_string),
    }
}
