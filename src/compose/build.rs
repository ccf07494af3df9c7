//! One recipient's message as MIME, written with lettre's message builder.

use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::ComposeError;

/// Everything one composed message is made of, merged already.
#[derive(Debug, Clone)]
pub struct Draft {
    pub from: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
    /// With its angle brackets.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    /// `X-Mailtally-*` control headers for the rewrite stage (name without the prefix); they
    /// are read and removed there, exactly as for mail submitted over SMTP.
    pub controls: Vec<(&'static str, String)>,
}

/// A new Message-ID on the sender's domain.
pub fn message_id(sender: &lettre::Address) -> String {
    format!("<{}@{}>", uuid::Uuid::now_v7().simple(), sender.domain())
}

/// The message bytes, CRLF line endings, control headers first.
pub fn build(d: &Draft) -> Result<Vec<u8>, ComposeError> {
    let mut b = lettre::Message::builder()
        .from(d.from.clone())
        .to(d.to.clone())
        .subject(d.subject.clone())
        .message_id(Some(d.message_id.clone()))
        .date_now();
    if let Some(v) = &d.in_reply_to {
        b = b.in_reply_to(v.clone());
    }
    if let Some(v) = &d.references {
        b = b.references(v.clone());
    }
    let message = match &d.text {
        Some(text) => b.multipart(MultiPart::alternative_plain_html(
            text.clone(),
            d.html.clone(),
        )),
        None => b.singlepart(SinglePart::html(d.html.clone())),
    }
    .map_err(|e| ComposeError::Build(e.to_string()))?;
    let mut out = Vec::new();
    for (name, value) in &d.controls {
        if value.chars().any(char::is_control) {
            return Err(ComposeError::Build(format!(
                "X-Mailtally-{name} holds a control character"
            )));
        }
        out.extend_from_slice(format!("X-Mailtally-{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(&message.formatted());
    Ok(out)
}

/// Appends a signature: in HTML before the last `</body>` (or at the end), in text after the
/// usual `-- ` delimiter line.
pub fn with_signature(html: &str, text: Option<&str>, sig: &Signature) -> (String, Option<String>) {
    let html = match sig.html.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => {
            let at = html
                .to_ascii_lowercase()
                .rfind("</body")
                .unwrap_or(html.len());
            format!("{}{}{}", &html[..at], s, &html[at..])
        }
        None => html.to_string(),
    };
    let text = match (text, sig.text.as_deref().filter(|s| !s.trim().is_empty())) {
        (Some(t), Some(s)) => Some(format!("{}\r\n\r\n-- \r\n{}", t.trim_end(), s)),
        (t, _) => t.map(str::to_string),
    };
    (html, text)
}

pub use crate::accounts::Signature;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_becomes_a_parseable_message() {
        let from: Mailbox = "Ann <ann@example.com>".parse().unwrap();
        let d = Draft {
            from: from.clone(),
            to: "Bob <bob@example.org>".parse().unwrap(),
            subject: "Re: Grüße".into(),
            html: "<p>Hi Bob</p>".into(),
            text: Some("Hi Bob".into()),
            message_id: message_id(&from.email),
            in_reply_to: Some("<a@example.com>".into()),
            references: Some("<a@example.com>".into()),
            controls: vec![("Template", "welcome".into())],
        };
        let raw = build(&d).unwrap();
        assert!(raw.starts_with(b"X-Mailtally-Template: welcome\r\n"));
        let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(m.subject(), Some("Re: Grüße"));
        assert_eq!(m.in_reply_to().as_text(), Some("a@example.com"));
        assert_eq!(m.body_html(0).unwrap().trim(), "<p>Hi Bob</p>");
        assert_eq!(m.body_text(0).unwrap().trim(), "Hi Bob");
        assert_eq!(
            m.to().unwrap().first().unwrap().address(),
            Some("bob@example.org")
        );
    }

    #[test]
    fn signatures_go_before_the_body_end() {
        let sig = Signature {
            html: Some("<p>-- Ann</p>".into()),
            text: Some("Ann".into()),
        };
        let (h, t) = with_signature("<html><BODY><p>x</p></BODY></html>", Some("x\n"), &sig);
        assert_eq!(h, "<html><BODY><p>x</p><p>-- Ann</p></BODY></html>");
        assert_eq!(t.unwrap(), "x\r\n\r\n-- \r\nAnn");
        let (h, t) = with_signature("<p>x</p>", None, &sig);
        assert_eq!(h, "<p>x</p><p>-- Ann</p>");
        assert!(t.is_none());
    }
}
