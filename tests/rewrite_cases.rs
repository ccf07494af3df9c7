//! Specific cases of the rewrite, each checked on the delivered bytes.

mod rewrite_support;

use base64::Engine;
use mail_parser::{MessageParser, PartType};
use mailtally::rewrite::{prepare, preview, TrackMode, Untouched};
use rewrite_support::*;
use uuid::Uuid;

fn html_of(out: &[u8]) -> String {
    let m = MessageParser::default().parse(out).expect("parses");
    m.parts
        .iter()
        .find_map(|p| match &p.body {
            PartType::Html(h) => Some(h.to_string()),
            _ => None,
        })
        .expect("has an HTML part")
}

fn msg(headers: &str, body: &[u8], eol: &str) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.com{eol}To: Bob <b@example.net>{eol}Subject: Hello Bob{eol}MIME-Version: 1.0{eol}{}{eol}",
        headers.replace('\n', eol)
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

#[test]
fn crlf_and_lf_and_identity() {
    for eol in ["\r\n", "\n"] {
        let body = format!("<html><body>{eol}<a href=\"https://shop.test/x?a=1&amp;b=2\">Shop</a>{eol}<a href=\"mailto:x@y\">m</a></body></html>{eol}");
        let raw = msg(
            "X-Mailtally-Track: opens,clicks\nX-Mailtally-Deal: D-1\nContent-Type: text/html; charset=utf-8\n",
            body.as_bytes(),
            eol,
        );
        check_message("crlf/lf", &raw);
        let p = prepare(&raw, &settings());
        assert_eq!(p.links.len(), 1);
        assert_eq!(p.links[0].url, "https://shop.test/x?a=1&b=2");
        assert_eq!(p.controls.deal.as_deref(), Some("D-1"));
        let out = p.render(&keys(), Uuid::now_v7(), "b@example.net");
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("X-Mailtally"));
        assert!(
            s.contains(&format!("\" />{}</body>", "")),
            "pixel before </body>"
        );
        // Line endings of the message are the same kind as before.
        assert_eq!(s.matches("\r\n").count() > 0, eol == "\r\n");
    }
}

#[test]
fn iso_8859_1_quoted_printable() {
    let body = b"<p>Caf=E9 cr=E8me</p>\r\n<a href=3D\"https://caf=E9.test/men=FC\">Men=FC</a>\r\n";
    let raw = msg(
        "Content-Type: text/html; charset=ISO-8859-1\nContent-Transfer-Encoding: quoted-printable\n",
        body,
        "\r\n",
    );
    check_message("latin1 qp", &raw);
    let p = prepare(&raw, &settings());
    assert_eq!(p.links[0].url, "https://café.test/menü");
    let out = p.render(&keys(), Uuid::now_v7(), "b@example.net");
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains("charset=ISO-8859-1"));
    assert!(s.contains("Caf=E9 cr=E8me"), "still Latin-1, still QP");
    assert!(html_of(&out).contains("Café crème"));
}

#[test]
fn utf16_base64_becomes_utf8() {
    let html = "<html><head><meta charset=\"utf-16\"></head><body><a href=\"https://x.test/ü\">Über</a></body></html>";
    let mut utf16 = vec![0xFE, 0xFF];
    for u in html.encode_utf16() {
        utf16.extend_from_slice(&u.to_be_bytes());
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&utf16);
    let raw = msg(
        "Content-Type: text/html; charset=\"UTF-16\"\nContent-Transfer-Encoding: base64\n",
        format!("{b64}\r\n").as_bytes(),
        "\r\n",
    );
    check_message("utf16", &raw);
    let p = prepare(&raw, &settings());
    assert!(p.parts[0].converted);
    let out = p.render(&keys(), Uuid::now_v7(), "b@example.net");
    let s = String::from_utf8_lossy(&out);
    assert!(
        s.contains("charset=\"utf-8\"") || s.contains("charset=utf-8"),
        "{s}"
    );
    let h = html_of(&out);
    assert!(h.contains("<meta charset=\"utf-8\">"), "{h}");
    assert!(h.contains(">Über</a>"));
    assert_eq!(p.links[0].url, "https://x.test/ü");
}

#[test]
fn long_line_switches_to_quoted_printable() {
    let mut body = b"<html><body><a href=\"https://x.test/\">x</a>".to_vec();
    body.extend(std::iter::repeat_n(b'y', 990));
    body.extend_from_slice(b"</body></html>\n");
    let raw = msg(
        "Content-Type: text/html; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n",
        &body,
        "\n",
    );
    check_message("998", &raw);
    let out = prepare(&raw, &settings()).render(&keys(), Uuid::now_v7(), "b");
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains("Content-Transfer-Encoding: quoted-printable\n"));
    assert!(!s.contains("Content-Transfer-Encoding: 7bit"));
    assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 998));
}

#[test]
fn text_plain_links_and_no_pixel() {
    let raw = msg(
        "Content-Type: text/plain; charset=utf-8\nList-Unsubscribe: <https://x.test/leave>\n",
        b"See https://x.test/a.\nTo unsubscribe:\nhttps://x.test/bye\nor https://x.test/leave\n",
        "\n",
    );
    check_message("text", &raw);
    let p = prepare(&raw, &settings());
    let urls: Vec<_> = p.links.iter().map(|l| l.url.as_str()).collect();
    assert_eq!(urls, ["https://x.test/a"]);
    let out = p.render(&keys(), Uuid::now_v7(), "b");
    assert!(!String::from_utf8_lossy(&out).contains("/o/"));
    let mut s = settings();
    s.track_text_links = false;
    assert!(prepare(&raw, &s).links.is_empty());
}

#[test]
fn untouched_messages() {
    let signed = msg(
        "X-Mailtally-Template: t\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\n",
        b"--b\nContent-Type: text/html\n\n<a href=\"https://x.test/\">x</a>\n--b--\n",
        "\n",
    );
    let p = prepare(&signed, &settings());
    assert_eq!(p.untouched, Some(Untouched::Signed));
    let out = p.render(&keys(), Uuid::now_v7(), "b");
    assert!(!String::from_utf8_lossy(&out).contains("X-Mailtally"));
    assert_eq!(out.len(), signed.len() - "X-Mailtally-Template: t\n".len());

    let off = msg(
        "X-Mailtally-Track: off\nContent-Type: text/html\n",
        b"<a href=\"https://x.test/\">x</a>",
        "\n",
    );
    let p = prepare(&off, &settings());
    assert_eq!(p.untouched, Some(Untouched::TrackingOff));
    assert_eq!(p.controls.track, TrackMode::Off);

    let dkim = msg(
        "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from:to:subject; bh=x; b=y\nX-Mailtally-Lead: L\nContent-Type: text/html\n",
        b"<a href=\"https://x.test/\">x</a>",
        "\n",
    );
    let p = prepare(&dkim, &settings());
    assert_eq!(p.untouched, Some(Untouched::DkimWithoutKey));
    let out = p.render(&keys(), Uuid::now_v7(), "b");
    assert!(String::from_utf8_lossy(&out).contains("DKIM-Signature"));
    assert!(!String::from_utf8_lossy(&out).contains("X-Mailtally-Lead"));

    let junk = b"\x00\x01 not a message at all";
    let p = prepare(junk, &settings());
    assert!(p.untouched.is_some());
    assert_eq!(p.render(&keys(), Uuid::now_v7(), "b"), junk);
}

#[test]
fn dkim_with_key_resigns_each_copy() {
    let pem = include_str!("rewrite_support/dkim_test_key.pem");
    let mut s = settings();
    s.dkim = Some(mailtally::rewrite::DkimSettings {
        selector: "sel".into(),
        domain: "example.com".into(),
        key_pem: pem.into(),
    });
    let raw = msg(
        "DKIM-Signature: v=1; a=rsa-sha256; d=client.test; s=c; h=from; bh=x; b=y\nContent-Type: text/html\n",
        b"<a href=\"https://x.test/\">x</a>",
        "\r\n",
    );
    let p = prepare(&raw, &s);
    assert_eq!(p.untouched, None);
    let out = String::from_utf8(p.render(&keys(), Uuid::now_v7(), "b")).unwrap();
    assert!(out.starts_with("DKIM-Signature:"), "{out}");
    assert_eq!(out.matches("DKIM-Signature").count(), 1);
    assert!(out.contains("d=example.com"));
}

#[test]
fn template_key_and_preview() {
    let raw = msg(
        "Content-Type: text/html\n",
        b"<a href=\"https://x.test/\">x</a>",
        "\n",
    );
    let p = prepare(&raw, &settings());
    assert_eq!(p.controls.template, "hello {name}");
    assert!(!p.controls.template_explicit);
    let out = preview(&raw, "b@example.net", Some("k"), &settings(), &keys());
    assert!(String::from_utf8_lossy(&out).contains("/c/"));
}

#[test]
fn each_recipient_gets_own_tokens() {
    let raw = wrap_html(b"<body><a href=\"https://x.test/\">x</a></body>");
    let p = prepare(&raw, &settings());
    let a = p.render(&keys(), Uuid::now_v7(), "a");
    let b = p.render(&keys(), Uuid::now_v7(), "b");
    assert_ne!(a, b);
    assert_eq!(a.len(), b.len());
}
