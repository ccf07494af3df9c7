//! Specific cases of the rewrite, each checked on the delivered bytes.

use crate::rewrite_support;

use base64::Engine;
use mail_parser::{MessageParser, PartType};
use mailtally::rewrite::{crlf, prepare, preview, TrackMode, Unparseable, Untouched};
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
        // Every line ends in CRLF, whatever the message used: a bare LF could end an
        // upstream's DATA early.
        assert!(
            crlf::is_normal(s.as_bytes()) && s.contains("\r\n"),
            "{eol:?}"
        );
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
    assert!(s.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
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
    // Line ends become CRLF even here: S/MIME signs the CRLF form (RFC 8551 3.1.1).
    assert_eq!(
        out.len(),
        crlf::normalise(&signed).len() - "X-Mailtally-Template: t\r\n".len()
    );

    // S/MIME in one opaque part: signed-data and enveloped-data alike are left as they are.
    for (smime_type, why) in [
        ("signed-data", Untouched::Signed),
        ("enveloped-data", Untouched::Encrypted),
    ] {
        let opaque = msg(
            &format!("Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\nContent-Transfer-Encoding: base64\n"),
            b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABGk=\n",
            "\n",
        );
        let p = prepare(&opaque, &settings());
        assert_eq!(p.untouched, Some(why), "{smime_type}");
        assert_eq!(
            p.render(&keys(), Uuid::now_v7(), "b"),
            crlf::normalise(&opaque).as_ref(),
            "{smime_type}"
        );
    }

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
    assert_eq!(
        p.untouched,
        Some(Untouched::Unparseable(Unparseable::NoHeader))
    );
    assert_eq!(p.render(&keys(), Uuid::now_v7(), "b"), junk);
}

#[test]
fn unparseable_messages_say_why() {
    let html = b"<a href=\"https://x.test/\">x</a>\r\n";
    // A whitespace or blank first line: no header block where readers look for one.
    for first in [" \r\n", "\t\r\n", "\r\n"] {
        let mut raw = first.as_bytes().to_vec();
        raw.extend(msg(
            "X-Mailtally-Template: t\nContent-Type: text/html\n",
            html,
            "\r\n",
        ));
        let p = prepare(&raw, &settings());
        assert_eq!(
            p.untouched,
            Some(Untouched::Unparseable(Unparseable::NoHeader)),
            "{first:?}"
        );
        assert_eq!(p.render(&keys(), Uuid::now_v7(), "b"), raw, "{first:?}");
    }

    // A plain-text footer after a base64 body (list software): the body is left as it came.
    let b64 = base64::engine::general_purpose::STANDARD.encode(html);
    let footer = format!("{b64}\r\n_______________\r\nThe list: https://lists.test/info\r\n");
    for ct in ["text/html; charset=utf-8", "text/plain; charset=utf-8"] {
        let raw = msg(
            &format!(
                "X-Mailtally-Template: t\nContent-Type: {ct}\nContent-Transfer-Encoding: base64\n"
            ),
            footer.as_bytes(),
            "\r\n",
        );
        let p = prepare(&raw, &settings());
        assert_eq!(
            p.untouched,
            Some(Untouched::Unparseable(Unparseable::TransferEncoding)),
            "{ct}"
        );
        assert!(p.parts[0].skipped.is_some(), "{ct}: {:?}", p.parts);
        let out = p.render(&keys(), Uuid::now_v7(), "b");
        assert_eq!(out.len(), raw.len() - "X-Mailtally-Template: t\r\n".len());
        assert!(out.ends_with(footer.as_bytes()));
    }

    // Beside a part that is rewritten, the unreadable one stays byte for byte and the message
    // is not counted as untouched.
    let body = format!(
        "--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{footer}--b\r\nContent-Type: text/html\r\n\r\n<a href=\"https://x.test/\">x</a>\r\n--b--\r\n"
    );
    let raw = msg(
        "Content-Type: multipart/alternative; boundary=b\n",
        body.as_bytes(),
        "\r\n",
    );
    let p = prepare(&raw, &settings());
    assert_eq!(p.untouched, None);
    assert_eq!(p.links.len(), 1);
    let out = String::from_utf8(p.render(&keys(), Uuid::now_v7(), "b")).unwrap();
    assert!(out.contains(&footer));

    // UTF-16 of a byte order its text does not tell.
    let cjk: Vec<u8> = "ご注文の商品"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let raw = msg(
        "Content-Type: text/plain; charset=utf-16\nContent-Transfer-Encoding: base64\n",
        format!(
            "{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(&cjk)
        )
        .as_bytes(),
        "\r\n",
    );
    let p = prepare(&raw, &settings());
    assert_eq!(
        p.untouched,
        Some(Untouched::Unparseable(Unparseable::Charset))
    );
    assert_eq!(p.render(&keys(), Uuid::now_v7(), "b"), raw);

    // A charset the rewrite does not know, on text whose bytes are ASCII only because its
    // characters are spread over zero bytes (UTF-32, UTF-16 under a label of its own): the
    // recipient's client may know the label, and an ASCII pixel or link in it is garbage.
    let html = "<html><body><p>Hello <a href=\"https://x.test/a\">Bob</a></p></body></html>";
    let utf32: Vec<u8> = html
        .chars()
        .flat_map(|c| (c as u32).to_le_bytes())
        .collect();
    let utf16: Vec<u8> = html.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for (label, bytes) in [("utf-32", utf32), ("utf16", utf16)] {
        let raw = msg(
            &format!(
                "Content-Type: text/html; charset={label}\nContent-Transfer-Encoding: base64\n"
            ),
            format!(
                "{}\r\n",
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            )
            .as_bytes(),
            "\r\n",
        );
        let p = prepare(&raw, &settings());
        assert_eq!(
            p.untouched,
            Some(Untouched::Unparseable(Unparseable::Charset)),
            "{label}"
        );
        assert_eq!(p.render(&keys(), Uuid::now_v7(), "b"), raw, "{label}");
    }

    // A group sent one by one is still addressed one by one: only a body part was unreadable.
    let raw = msg(
        "X-Mailtally-Group: separate\nCc: Carl <c@example.net>\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n",
        footer.as_bytes(),
        "\r\n",
    );
    let p = prepare(&raw, &settings());
    assert_eq!(
        p.untouched,
        Some(Untouched::Unparseable(Unparseable::TransferEncoding))
    );
    let out = String::from_utf8(p.render(&keys(), Uuid::now_v7(), "b@example.net")).unwrap();
    assert!(out.contains("To: <b@example.net>\r\n"), "{out}");
    assert!(!out.contains("c@example.net"), "{out}");
}

#[test]
fn wrapped_link_values_are_signed_as_a_browser_reads_them() {
    let long = "A1b2C3d4".repeat(300);
    let url = format!("https://shop.test/view/?id={long}");
    let wrapped: String = url
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    let html = format!(
        "<html><body><a href=\" {wrapped}\r\n\">a</a><map><area href=\"&#10;{wrapped}\" alt=\"m\"></map>\
         <!--[if mso]><v:roundrect href=\"{}\"><center>v</center></v:roundrect><![endif]-->\
         <a href=\"java\r\nscript:alert(1)\">j</a><a href=\"mail\r\nto:a@b.test\">m</a>\
         <a href=\"https://shop.test/un\r\nsubscribe\">u</a></body></html>\r\n",
        wrapped.replace("\r\n", "\r\n\t")
    );
    let raw = msg(
        "Content-Type: text/html; charset=utf-8\n",
        html.as_bytes(),
        "\r\n",
    );
    // Every byte but the three link values maps back to the original.
    assert_eq!(check_message("wrapped", &raw), 3);
    let p = prepare(&raw, &settings());
    let urls: Vec<_> = p.links.iter().map(|l| l.url.as_str()).collect();
    assert_eq!(urls, [url.as_str(); 3]);
    assert!(p.links.iter().any(|l| l.vml));
    assert!(p.links[0].raw.contains("\r\n"), "the written value is kept");
}

/// The DKIM record's `p=` for a private key: the SubjectPublicKeyInfo for RSA, the bare
/// 32-byte key for Ed25519 (RFC 8463), both from `openssl pkey`.
fn dkim_public_key(pem_path: &std::path::Path, ed25519: bool) -> String {
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(pem_path)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let der = if ed25519 {
        &out.stdout[out.stdout.len() - 32..]
    } else {
        &out.stdout[..]
    };
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Verifies `message` with dkimpy (Debian's python3-dkim), answering the key lookup itself.
fn dkimpy_verifies(message: &[u8], record: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.eml");
    std::fs::write(&path, message).unwrap();
    let script = r#"
import sys, dkim
record = sys.argv[2].encode()
def dns(name, timeout=5):
    return record if name == b"sel._domainkey.example.com." else None
msg = open(sys.argv[1], "rb").read()
d = dkim.DKIM(msg)
ok = d.verify(dnsfunc=dns)
print("verified" if ok else "failed")
sys.exit(0 if ok else 1)
"#;
    // Debian's interpreter, which sees Debian's python3-dkim whatever python3 is first on PATH.
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&path)
        .arg(record)
        .output()
        .expect("/usr/bin/python3 runs (scripts/test-packages installs python3-dkim)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A client's signature is removed and each copy carries the relay's own, which an
/// independent verifier accepts: RSA (PKCS#1) and Ed25519 as `openssl genpkey` writes it
/// (PKCS#8 without the public key).
#[test]
fn dkim_with_key_resigns_each_copy_and_the_signature_verifies() {
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/rewrite_support");
    for (file, ed25519) in [("dkim_test_key.pem", false), ("dkim_ed25519_key.pem", true)] {
        let pem_path = support.join(file);
        let mut s = settings();
        s.dkim = Some(mailtally::rewrite::DkimSettings {
            selector: "sel".into(),
            domain: "example.com".into(),
            key_pem: std::fs::read_to_string(&pem_path).unwrap(),
        });
        let raw = msg(
            "DKIM-Signature: v=1; a=rsa-sha256; d=client.test; s=c; h=from; bh=x; b=y\nDate: Fri, 27 Nov 2026 10:00:00 +0000\nContent-Type: text/html; charset=utf-8\n",
            b"<html><body><p>Hello</p>\r\n<a href=\"https://x.test/?a=1&amp;b=2\">x</a></body></html>\r\n",
            "\r\n",
        );
        let p = prepare(&raw, &s);
        assert_eq!(p.untouched, None, "{file}");
        let record = format!(
            "v=DKIM1; k={}; p={}",
            if ed25519 { "ed25519" } else { "rsa" },
            dkim_public_key(&pem_path, ed25519)
        );
        for rcpt in ["b@example.net", "c@example.net"] {
            let copy = p.render(&keys(), Uuid::now_v7(), rcpt);
            let text = String::from_utf8_lossy(&copy);
            assert!(text.starts_with("DKIM-Signature:"), "{file}: {text}");
            assert_eq!(text.matches("DKIM-Signature").count(), 1, "{file}");
            assert!(text.contains("d=example.com"), "{file}");
            assert!(text.contains("/c/"), "{file}: the copy is tracked");
            dkimpy_verifies(&copy, &record).unwrap_or_else(|e| panic!("{file}: {e}\n{text}"));
            // List-Unsubscribe and its one-click companion are added before signing, and signed.
            let signature = text.split("\r\n").take_while(|l| !l.is_empty()).fold(
                String::new(),
                |mut acc, l| {
                    if !l.starts_with([' ', '\t']) {
                        acc.push('\n');
                    }
                    acc.push_str(l.trim());
                    acc
                },
            );
            let h = signature
                .lines()
                .find(|l| l.starts_with("DKIM-Signature:"))
                .and_then(|l| l.split(';').map(str::trim).find(|t| t.starts_with("h=")))
                .unwrap_or_default()
                .to_ascii_lowercase();
            let names: Vec<&str> = h
                .trim_start_matches("h=")
                .split(':')
                .map(str::trim)
                .collect();
            assert!(
                names.contains(&"list-unsubscribe") && names.contains(&"list-unsubscribe-post"),
                "{file}: {h}"
            );
            let moved = text.replacen("/u/", "/u/X", 1);
            assert!(
                dkimpy_verifies(moved.as_bytes(), &record).is_err(),
                "{file}: a changed List-Unsubscribe breaks the signature"
            );
            // The check can fail: one changed body byte breaks the signature.
            let tampered = text.replacen("Hello", "Jello", 1);
            assert!(
                dkimpy_verifies(tampered.as_bytes(), &record).is_err(),
                "{file}"
            );
        }
    }
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

#[test]
fn list_unsubscribe_is_added_once_unless_turned_off_or_already_there() {
    let body = b"<html><body><a href=\"https://x.test/\">x</a></body></html>\r\n";
    let copy_of = |extra: &str| {
        let raw = msg(&format!("{extra}Content-Type: text/html\r\n"), body, "\r\n");
        let p = prepare(&raw, &settings());
        let copy = Uuid::now_v7();
        (
            String::from_utf8(p.render(&keys(), copy, "b@example.net")).unwrap(),
            copy,
        )
    };
    let (text, copy) = copy_of("");
    let head = text.split("\r\n\r\n").next().unwrap();
    let line = head
        .lines()
        .find(|l| l.starts_with("List-Unsubscribe: <"))
        .expect("List-Unsubscribe in the header");
    let token = line
        .split("/u/")
        .nth(1)
        .and_then(|t| t.strip_suffix('>'))
        .unwrap();
    assert_eq!(
        mailtally::rewrite::verify(&keys(), token),
        Ok(mailtally::rewrite::Verified::Unsubscribe { copy })
    );
    assert!(head.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert_eq!(text.matches("List-Unsubscribe:").count(), 1);

    let (off, _) = copy_of("X-Mailtally-List-Unsubscribe: off\r\n");
    assert!(!off.contains("List-Unsubscribe"), "{off}");
    assert!(off.contains("/c/"), "still tracked");

    let (own, _) = copy_of("List-Unsubscribe: <mailto:leave@example.com>\r\n");
    assert_eq!(own.matches("List-Unsubscribe").count(), 1, "{own}");
    assert!(own.contains("<mailto:leave@example.com>"));

    let (untracked, _) = copy_of("X-Mailtally-Track: off\r\n");
    assert!(!untracked.contains("List-Unsubscribe"));
}
