//! The rewrite as the recipient sees it: messages submitted over SMTP to `mailtally serve`,
//! each delivered copy fetched from the capture sink, decoded independently (Python's email
//! package), and its tracked links followed over HTTP.

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::smtp::{add_user, python, submit_as, wait_until};
use common::{Server, TestDb};

const PASSWORD: &str = "delivered-password-1";
const SENDER: &str = "ann@example.com";

/// Each text part of a raw message as a reader decodes it: (content type, charset, text).
const DECODE_PARTS: &str = r#"
import email, email.policy, json, sys
msg = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
out = []
for part in msg.walk():
    if part.get_content_maintype() == "text":
        out.append([part.get_content_type(), part.get_content_charset(), part.get_content()])
print(json.dumps(out))
"#;

struct Run {
    db: TestDb,
    server: Server,
    token: String,
    http: ureq::Agent,
}

impl Run {
    fn start() -> Run {
        let db = TestDb::migrated();
        let server = Server::start(&db.url, &[]);
        let token = add_user(&db.url, SENDER, PASSWORD);
        let http = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(10))
            .build();
        Run {
            db,
            server,
            token,
            http,
        }
    }

    fn submit(&self, to: &str, message: &[u8]) {
        submit_as(self.server.smtp, SENDER, PASSWORD, &[to], message);
    }

    /// The delivered copies, recipient -> raw bytes, once `n` are delivered.
    fn delivered(&self, n: usize) -> std::collections::BTreeMap<String, String> {
        assert!(
            wait_until(Duration::from_secs(30), || common::smtp::db_i64(
                &self.db.url,
                "SELECT count(*) FROM copies WHERE status = 'delivered'"
            ) == n as i64),
            "copies not delivered:\n{}",
            self.server.log_text()
        );
        let auth = format!("Bearer {}", self.token);
        let list: serde_json::Value = self
            .http
            .get(&self.server.url("/api/captured"))
            .set("authorization", &auth)
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        list["captured"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let id = c["copy_id"].as_str().unwrap();
                let raw = self
                    .http
                    .get(&self.server.url(&format!("/api/captured/{id}/raw")))
                    .set("authorization", &auth)
                    .call()
                    .unwrap()
                    .into_string()
                    .unwrap();
                (c["recipient"].as_str().unwrap().to_owned(), raw)
            })
            .collect()
    }

    /// Follows every tracked link of `text`; returns the `Location` of each (all must be 302).
    fn follow(&self, text: &str) -> Vec<String> {
        let prefix = self.server.url("/c/");
        text.match_indices(&prefix)
            .map(|(i, _)| {
                let after = &text[i + prefix.len()..];
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                    .unwrap_or(after.len());
                let url = format!("{prefix}{}", &after[..len]);
                let resp = match self.http.get(&url).call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(_, r)) => r,
                    Err(e) => panic!("{e}"),
                };
                assert_eq!(resp.status(), 302, "tracked link answers {}", resp.status());
                resp.header("location").unwrap().to_owned()
            })
            .collect()
    }
}

/// The text parts of a raw message, decoded by Python's email package.
fn decode_parts(raw: &str) -> Vec<(String, Option<String>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.eml");
    std::fs::write(&path, raw).unwrap();
    let (ok, out) = python(DECODE_PARTS, &[path.to_str().unwrap()]);
    assert!(ok, "python could not decode the copy: {out}");
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!("{e}: {out}");
    })
}

fn lf(s: &str) -> String {
    s.replace("\r\n", "\n")
}

/// Quoted-printable with CRLF line breaks kept as hard breaks (RFC 2045 6.7).
fn qp(text: &str) -> String {
    let mut out = String::new();
    for (n, line) in text.split("\r\n").enumerate() {
        if n > 0 {
            out.push_str("\r\n");
        }
        let mut col = 0;
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let lit = (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' && !last);
            let enc = if lit {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            };
            if col + enc.len() > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            col += enc.len();
            out.push_str(&enc);
        }
    }
    out
}

fn base64_lines(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

/// A URL of more than 2,000 characters, and the same broken into lines as mail clients write
/// it inside an attribute (with `sep` between pieces, and space and breaks around it).
fn long_url(name: &str, sep: &str) -> (String, String) {
    let id: String = (0..2100)
        .map(|i| {
            char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[i % 62])
        })
        .collect();
    let url = format!("https://shop.example.com/view/?campaign={name}&id={id}");
    let pieces: Vec<String> = url
        .as_bytes()
        .chunks(70)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    (url, format!("{sep} {}{sep}", pieces.join(sep)))
}

#[test]
fn wrapped_links_redirect_where_a_browser_goes() {
    let run = Run::start();

    // Quoted-printable HTML with CRLF breaks (hard breaks: the decoded value holds them) in
    // `<a>`, `<area>` and an Outlook VML button; a base64 text part with the long URL.
    let (a_url, a_raw) = long_url("anchor", "\r\n");
    let (area_url, area_raw) = long_url("area", "\r\n\t");
    let (vml_url, vml_raw) = long_url("vml", "\r\n\t\t");
    let (text_url, _) = long_url("text", "");
    let html = format!(
        "<html><body>\r\n<p>Your order</p>\r\n<a href=\"{a_raw}\">View it</a>\r\n\
         <map name=\"m\"><area shape=\"rect\" coords=\"0,0,9,9\" href=\"{area_raw}\" alt=\"Map\"></map>\r\n\
         <!--[if mso]><v:roundrect xmlns:v=\"urn:schemas-microsoft-com:vml\" href=\"{vml_raw}\" style=\"height:40px\"><center>Go</center></v:roundrect><![endif]-->\r\n\
         </body></html>\r\n"
    );
    let text = format!("Your order:\r\n{text_url}\r\n");
    let qp_message = format!(
        "From: {SENDER}\r\nTo: one@example.net\r\nSubject: Wrapped QP\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n\
         --b1--\r\n",
        base64_lines(text.as_bytes()),
        qp(&html)
    );
    run.submit("one@example.net", qp_message.as_bytes());

    // Base64 HTML with LF breaks, a tab, and leading and trailing control characters.
    let (b_url, b_raw) = long_url("base64", "\n");
    let b_html = format!(
        "<html><body><a href=\"&#1;{}\u{c}\">Open</a> <a href=\"{b_url}\">Same</a></body></html>\n",
        b_raw.replacen('\n', "\t\n", 3)
    );
    let b64_message = format!(
        "From: {SENDER}\r\nTo: two@example.net\r\nSubject: Wrapped base64\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(b_html.as_bytes())
    );
    run.submit("two@example.net", b64_message.as_bytes());

    let copies = run.delivered(2);
    let public = run.server.url("");

    let parts = decode_parts(&copies["one@example.net"]);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let (_, _, got_text) = &parts[0];
    assert_eq!(run.follow(got_text), [text_url.as_str()]);
    assert_eq!(lf(&common::untrack(got_text, &public)), lf(&text));
    let (_, _, got_html) = &parts[1];
    assert_eq!(
        run.follow(got_html),
        [a_url.clone(), area_url.clone(), vml_url.clone()]
    );
    // Every other byte as it was; the values now read as the URLs a browser follows.
    let want = html
        .replace(&a_raw, &a_url)
        .replace(&area_raw, &area_url)
        .replace(&vml_raw, &vml_url);
    assert_eq!(lf(&common::untrack(got_html, &public)), lf(&want));

    let parts = decode_parts(&copies["two@example.net"]);
    assert_eq!(parts.len(), 1, "{parts:?}");
    let (_, _, got) = &parts[0];
    assert_eq!(run.follow(got), [b_url.clone(), b_url.clone()]);
    let written = format!("&#1;{}\u{c}", b_raw.replacen('\n', "\t\n", 3));
    assert_eq!(
        lf(&common::untrack(got, &public)),
        b_html.replace(&written, &b_url)
    );
}

fn utf16(text: &str, little_endian: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for u in bom.then_some(0xFEFF).into_iter().chain(text.encode_utf16()) {
        out.extend_from_slice(&if little_endian {
            u.to_le_bytes()
        } else {
            u.to_be_bytes()
        });
    }
    out
}

/// A multipart/alternative message whose two parts are UTF-16, base64.
fn utf16_message(to: &str, label: &str, text: &str, html: &str, le: bool, bom: bool) -> String {
    format!(
        "From: {SENDER}\r\nTo: {to}\r\nSubject: Your order\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"u16\"\r\n\r\n--u16\r\n\
         Content-Type: text/plain; charset=\"{label}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --u16\r\nContent-Type: text/html; charset={label}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --u16--\r\n",
        base64_lines(&utf16(text, le, bom)),
        base64_lines(&utf16(html, le, bom)),
    )
}

#[test]
fn utf16_parts_arrive_as_the_text_that_was_written() {
    let run = Run::start();
    // (label, little-endian, BOM): Windows mailers write little-endian without a BOM.
    let cases = [
        ("utf-16", true, false),
        ("utf-16", true, true),
        ("utf-16", false, false),
        ("utf-16", false, true),
        ("UTF-16LE", true, false),
        ("utf-16be", false, false),
    ];
    let text_of = |i: usize| {
        format!("Hello Jane,\r\n\r\nyour order {i} has shipped. Track it at https://shop.example.com/track?order={i} today.\r\n")
    };
    let html_of = |i: usize| {
        format!("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-16\"></head>\r\n\
                 <body><p>Hello Jane,</p><p>your order {i} has shipped.</p>\r\n\
                 <a href=\"https://shop.example.com/track?order={i}\">Track it</a></body></html>\r\n")
    };
    for (i, (label, le, bom)) in cases.iter().enumerate() {
        let to = format!("case{i}@example.net");
        let m = utf16_message(&to, label, &text_of(i), &html_of(i), *le, *bom);
        run.submit(&to, m.as_bytes());
    }
    let copies = run.delivered(cases.len());
    let public = run.server.url("");
    for (i, case) in cases.iter().enumerate() {
        let parts = decode_parts(&copies[&format!("case{i}@example.net")]);
        assert_eq!(parts.len(), 2, "{case:?}: {parts:?}");
        let link = format!("https://shop.example.com/track?order={i}");
        let (ty, charset, text) = &parts[0];
        assert_eq!(
            (ty.as_str(), charset.as_deref()),
            ("text/plain", Some("utf-8"))
        );
        assert_eq!(
            lf(&common::untrack(text, &public)),
            lf(&text_of(i)),
            "{case:?}"
        );
        assert_eq!(run.follow(text), [link.as_str()], "{case:?}");
        let (ty, charset, html) = &parts[1];
        assert_eq!(
            (ty.as_str(), charset.as_deref()),
            ("text/html", Some("utf-8"))
        );
        assert_eq!(
            lf(&common::untrack(html, &public)),
            lf(&html_of(i).replace("charset=utf-16", "charset=utf-8")),
            "{case:?}"
        );
        assert_eq!(run.follow(html), [link], "{case:?}");
    }
}

/// The untouched-messages counter of one cause, from `/metrics`.
fn unparseable_count(run: &Run, cause: &str) -> Option<f64> {
    let text = run
        .http
        .get(&run.server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("mailtally_rewrite_untouched_messages_total{"))
        .filter(|l| {
            l.contains("reason=\"unparseable\"") && l.contains(&format!("cause=\"{cause}\""))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn unparseable_messages_go_out_as_they_came_and_are_counted_by_cause() {
    let run = Run::start();
    let causes = [
        "no_header",
        "mime",
        "transfer_encoding",
        "charset",
        "internal",
    ];
    for cause in causes {
        assert_eq!(
            unparseable_count(&run, cause),
            Some(0.0),
            "{cause} from the start"
        );
    }

    // The first line is whitespace: readers disagree on where the headers are.
    let ws = format!(" \r\nFrom: {SENDER}\r\nTo: ws@example.net\r\nSubject: Hi\r\nContent-Type: text/html\r\n\r\n<a href=\"https://shop.example.com/a\">a</a>\r\n");
    // A plain-text footer appended to a base64 body, as list software does.
    let footer = format!(
        "From: {SENDER}\r\nTo: list@example.net\r\nSubject: List mail\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         \r\n_______________________________________________\r\nList mailing list\r\nhttps://lists.example.org/listinfo/list\r\n",
        base64_lines(b"<html><body><a href=\"https://shop.example.com/b\">b</a></body></html>")
    );
    // UTF-16 without a BOM whose byte order its text does not tell (no ASCII-range text).
    let cjk = format!(
        "From: {SENDER}\r\nTo: cjk@example.net\r\nSubject: Order\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(&utf16("ご注文の商品を発送いたしました", true, false))
    );
    let sent = [
        ("ws@example.net", ws, "no_header"),
        ("list@example.net", footer, "transfer_encoding"),
        ("cjk@example.net", cjk, "charset"),
    ];
    for (to, m, _) in &sent {
        run.submit(to, m.as_bytes());
    }
    let copies = run.delivered(sent.len());
    for (to, m, cause) in &sent {
        assert_eq!(
            &copies[*to], m,
            "{cause}: the copy is the message as it came"
        );
    }
    for cause in causes {
        let want = if sent.iter().any(|s| s.2 == cause) {
            1.0
        } else {
            0.0
        };
        assert_eq!(unparseable_count(&run, cause), Some(want), "{cause}");
    }
}
