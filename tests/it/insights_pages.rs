//! The Insights pages over HTTP escape by default: a template key, subject, recipient and link
//! URL, and an event's reason and the mail client, device and OS read from its user agent, each
//! written to break out of element text and of attributes in either quote, come back from the
//! running server as text on the templates page, the template's page (its tables and chart) and
//! the message's page. Each page is read with html5ever's tokenizer, as a browser reads it.

use crate::common;
use crate::insights_support;

use std::cell::{Cell, RefCell};

use chrono::{Duration, Utc};
use common::{Server, TestDb};
use html5ever::buffer_queue::BufferQueue;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use insights_support::*;

/// Closes a double- or single-quoted attribute and the tag, then opens a script and an image.
const BREAK_OUT: &str = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>";
const CLIENT: &str = "Mail \"'><script>alert(1)</script><img src=x onerror=alert(2)>";
const DEVICE: &str = "Phone \"'><script>alert(1)</script><img src=x onerror=alert(2)>";

fn hostile(what: &str) -> String {
    format!("{what} {BREAK_OUT}")
}

/// A page as the browser's tokenizer sees it: its tags and its text, entities decoded.
#[derive(Debug)]
enum Part {
    Start(String, Vec<(String, String)>),
    End(String),
    Text(String),
}

struct Sink {
    parts: RefCell<Vec<Part>>,
    /// Inside an `<svg>`, where `<title>` holds markup like any element.
    svg: Cell<u32>,
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut parts = self.parts.borrow_mut();
        match token {
            Token::TagToken(tag) => {
                let name = tag.name.to_string();
                if tag.kind == TagKind::EndTag {
                    if name == "svg" {
                        self.svg.set(self.svg.get() - 1);
                    }
                    parts.push(Part::End(name));
                    return TokenSinkResult::Continue;
                }
                let attrs = tag
                    .attrs
                    .iter()
                    .map(|a| (a.name.local.to_string(), a.value.to_string()))
                    .collect();
                parts.push(Part::Start(name.clone(), attrs));
                // The text states a browser switches to inside these elements.
                match name.as_str() {
                    "style" => return TokenSinkResult::RawData(RawKind::Rawtext),
                    "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
                    "title" if self.svg.get() == 0 => {
                        return TokenSinkResult::RawData(RawKind::Rcdata)
                    }
                    "svg" => self.svg.set(self.svg.get() + 1),
                    _ => {}
                }
            }
            Token::CharacterTokens(s) => match parts.last_mut() {
                Some(Part::Text(t)) => t.push_str(&s),
                _ => parts.push(Part::Text(s.to_string())),
            },
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn parse(html: &str) -> Vec<Part> {
    let queue = BufferQueue::default();
    queue.push_back(StrTendril::from_slice(html));
    let sink = Sink {
        parts: RefCell::new(Vec::new()),
        svg: Cell::new(0),
    };
    let tok = Tokenizer::new(sink, TokenizerOpts::default());
    let _ = tok.feed(&queue);
    tok.end();
    tok.sink.parts.into_inner()
}

/// The text of every element whose start tag `matches`, up to its end tag.
fn texts_of(parts: &[Part], matches: impl Fn(&str, &[(String, String)]) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let Part::Start(name, attrs) = p else {
            continue;
        };
        if !matches(name, attrs) {
            continue;
        }
        let mut text = String::new();
        let mut depth = 0;
        for q in &parts[i + 1..] {
            match q {
                Part::Start(..) => depth += 1,
                Part::End(n) if n == name && depth == 0 => break,
                Part::End(_) => depth -= 1,
                Part::Text(t) => text.push_str(t),
            }
        }
        out.push(text);
    }
    out
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn by_id(id: &'static str) -> impl Fn(&str, &[(String, String)]) -> bool {
    move |_, attrs| attr(attrs, "id") == Some(id)
}

fn by_tag(tag: &'static str) -> impl Fn(&str, &[(String, String)]) -> bool {
    move |name, _| name == tag
}

/// A signed-in page, read: answered 200, with no markup of the hostile values in it, and its
/// `<title>` names `title`.
fn read(url: &str, token: &str, title: &str) -> (String, Vec<Part>) {
    let (status, html) = page(url, Some(token));
    assert_eq!(status, 200, "{html}");
    let parts = parse(&html);
    assert_no_injected_markup(&html, &parts);
    assert_eq!(
        texts_of(&parts, by_tag("title"))[0],
        format!("{title} - mailtally Insights")
    );
    (html, parts)
}

/// No markup of the hostile values got through: the one script is the page's own live notice,
/// no image and no event-handler attribute exist.
fn assert_no_injected_markup(page: &str, parts: &[Part]) {
    let scripts: Vec<_> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Start(n, attrs) if n == "script" => Some(attr(attrs, "src")),
            _ => None,
        })
        .collect();
    assert_eq!(scripts, vec![Some("/insights/live.js")], "{page}");
    for p in parts {
        if let Part::Start(name, attrs) = p {
            assert_ne!(name, "img", "{page}");
            for (a, _) in attrs {
                assert!(!a.starts_with("on"), "attribute {a} on <{name}>: {page}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_escaped_on_every_page_and_in_the_chart() {
    let db = TestDb::migrated();
    let users = users(&db.pool()).await;
    let mut msgs = generate(5, &[0], 1);
    let m = &mut msgs[0];
    m.template = hostile("template");
    m.subject = hostile("subject");
    m.links = vec![format!("https://example.com/?q={BREAK_OUT}")];
    let sent = Utc::now() - Duration::days(1);
    m.created_at = sent;
    let at = |s: i64| sent + Duration::seconds(s);
    let ev = |kind: &'static str, s: i64| Ev {
        id: uuid::Uuid::now_v7(),
        kind,
        at: at(s),
        class: None,
        reason: None,
        link_idx: None,
        client: None,
        device: None,
    };
    let open = Ev {
        class: Some("human"),
        reason: Some(hostile("reason")),
        client: Some(CLIENT),
        device: Some(DEVICE),
        ..ev("open", 3600)
    };
    let click = Ev {
        class: Some("human"),
        link_idx: Some(0),
        ..ev("click", 3700)
    };
    m.copies = vec![Copy {
        id: uuid::Uuid::now_v7(),
        recipient: hostile("recipient"),
        status: "delivered",
        events: vec![ev("accepted", 0), ev("delivered", 2), open, click],
    }];
    let client = db.client().await;
    insert(&client, &users, &msgs, &|_| true, true).await;
    client
        .execute(
            "UPDATE events SET os = $1 WHERE kind = 'open'",
            &[&hostile("os")],
        )
        .await
        .unwrap();
    aggregate(&db.url, 1000).await;
    let server = Server::start(&db.url, &[]);
    let token = users[0].token.as_str();
    let m = &msgs[0];

    // The templates page: the key as the row's attribute and as its link's text.
    let (html, parts) = read(&server.url("/insights?class=all"), token, "Templates");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    let row = parts
        .iter()
        .find_map(|p| match p {
            Part::Start(n, attrs) if n == "tr" && attr(attrs, "data-template").is_some() => {
                Some(attrs)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no template row: {html}"));
    assert_eq!(attr(row, "data-template"), Some(m.template.as_str()));
    assert_eq!(attr(row, "data-scope"), Some(scope_of(&users, m).as_str()));
    let link = parts
        .iter()
        .find_map(|p| match p {
            Part::Start(n, attrs) if n == "a" => attr(attrs, "href")
                .filter(|h| h.starts_with("/insights/templates/"))
                .map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no template link: {html}"));
    let links = texts_of(&parts, |n, attrs| {
        n == "a" && attr(attrs, "href") == Some(link.as_str())
    });
    assert_eq!(links, vec![m.template.clone()]);

    // The template's page, reached through that link: its heading, tables and chart.
    let (html, parts) = read(&server.url(&link), token, &m.template);
    assert_eq!(
        texts_of(&parts, by_id("template-key")),
        vec![m.template.clone()]
    );
    assert!(texts_of(&parts, by_id("figures"))[0].contains(&m.template));
    let links = texts_of(&parts, by_id("links"));
    assert!(links[0].contains(&m.links[0]), "{html}");
    let clients = texts_of(&parts, by_id("clients"));
    assert!(
        clients[0].contains(CLIENT) && clients[0].contains(DEVICE),
        "{html}"
    );
    let messages = texts_of(&parts, by_id("messages"));
    assert!(messages[0].contains(&m.subject), "{html}");
    // The chart: one well-formed SVG of bars, titles and labels, a bar per series and day.
    let start = parts
        .iter()
        .position(|p| matches!(p, Part::Start(n, _) if n == "svg"))
        .unwrap_or_else(|| panic!("no chart: {html}"));
    let end = start
        + parts[start..]
            .iter()
            .position(|p| matches!(p, Part::End(n) if n == "svg"))
            .expect("the chart's end tag");
    let mut bars = 0;
    for p in &parts[start + 1..end] {
        if let Part::Start(name, attrs) = p {
            assert!(
                ["title", "line", "text", "rect"].contains(&name.as_str()),
                "<{name}> in the chart: {html}"
            );
            if attr(attrs, "class").is_some_and(|c| c.starts_with("bar-")) {
                bars += 1;
            }
        }
    }
    assert!(bars >= 2 && bars % 2 == 0, "{bars} bars: {html}");
    let chart = texts_of(&parts, by_tag("svg"));
    assert!(
        chart[0].contains("1 opens") && chart[0].contains("1 clicks"),
        "{html}"
    );

    // The message's page: subject, recipient and each event's recorded details.
    let url = server.url(&format!("/insights/messages/{}", m.id));
    let (html, parts) = read(&url, token, &m.subject);
    assert_eq!(texts_of(&parts, by_id("subject")), vec![m.subject.clone()]);
    let about = texts_of(&parts, by_tag("p"));
    assert!(about
        .iter()
        .any(|p| p.starts_with(&format!("Template {}", m.template))));
    let copy = texts_of(&parts, |n, attrs| {
        n == "section" && attr(attrs, "class") == Some("copy")
    });
    assert!(copy[0].starts_with(&m.copies[0].recipient), "{html}");
    let reasons = texts_of(&parts, |n, attrs| {
        n == "td" && attr(attrs, "class") == Some("l reason")
    });
    let all = reasons.join("\n");
    for part in [
        hostile("reason"),
        m.links[0].clone(),
        CLIENT.into(),
        DEVICE.into(),
        hostile("os"),
    ] {
        assert!(all.contains(&part), "{part} not in the timeline: {all}");
    }
}
