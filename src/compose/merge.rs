//! Merge fields: `{{first_name}}`, and `{{first_name|there}}` with a default.
//!
//! A template is parsed once into literal pieces and fields; each recipient's values are then
//! escaped for where they land: HTML-escaped in HTML, refused in headers when they could break
//! out of the header (CR, LF and other control characters), as they are in plain text.

use std::collections::BTreeMap;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field {
        name: String,
        default: Option<String>,
    },
}

/// A template text split into literals and merge fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeText {
    pieces: Vec<Piece>,
}

/// Where a merged value lands, which decides how it is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Html,
    Text,
    Header,
}

/// Why a text cannot be merged for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("merge field `{0}` has no value and no default")]
    Missing(String),
    #[error(
        "merge field `{0}` holds a line break or control character, which a header cannot carry"
    )]
    Unsafe(String),
}

/// A field name: letters, digits, `_`, `-` and `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl MergeText {
    /// Splits `src` at each `{{ name }}` or `{{ name | default }}`. Anything else between
    /// braces (CSS, other template languages) stays literal.
    pub fn parse(src: &str) -> MergeText {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let field = after.find("}}").and_then(|end| {
                let inner = &after[..end];
                let (name, default) = match inner.split_once('|') {
                    Some((n, d)) => (n.trim(), Some(d.trim().to_string())),
                    None => (inner.trim(), None),
                };
                is_name(name).then(|| (name.to_string(), default, end))
            });
            match field {
                Some((name, default, end)) => {
                    literal.push_str(&rest[..start]);
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field { name, default });
                    rest = &after[end + 2..];
                }
                None => {
                    literal.push_str(&rest[..start + 2]);
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        MergeText { pieces }
    }

    /// The names of the fields that have no default: every recipient needs a value for them.
    pub fn required(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field {
                name,
                default: None,
            } => Some(name.as_str()),
            _ => None,
        })
    }

    /// The text with `values` filled in. An empty value counts as missing when there is a
    /// default ("there" reads better than nothing).
    pub fn render(
        &self,
        values: &BTreeMap<String, String>,
        target: Target,
    ) -> Result<String, MergeError> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Field { name, default } => {
                    let value = values.get(name).map(String::as_str);
                    let (text, from_template) = match (value, default) {
                        (Some(v), Some(d)) if v.trim().is_empty() => (d.as_str(), true),
                        (Some(v), _) => (v, false),
                        (None, Some(d)) => (d.as_str(), true),
                        (None, None) => return Err(MergeError::Missing(name.clone())),
                    };
                    match target {
                        // A default is the template author's own text, already in the
                        // template's language; a recipient's value is data.
                        Target::Html if !from_template => out.push_str(&crate::escape::html(text)),
                        Target::Header if text.chars().any(char::is_control) => {
                            return Err(MergeError::Unsafe(name.clone()))
                        }
                        _ => out.push_str(text),
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fields_defaults_and_literals() {
        let t = MergeText::parse("Hi {{ first_name | there }}, {{company}}! {{ not a field }} {{");
        assert_eq!(t.required().collect::<Vec<_>>(), vec!["company"]);
        let v = values(&[("company", "ACME")]);
        assert_eq!(
            t.render(&v, Target::Text).unwrap(),
            "Hi there, ACME! {{ not a field }} {{"
        );
        let v = values(&[("company", "ACME"), ("first_name", "Ann")]);
        assert_eq!(
            t.render(&v, Target::Text).unwrap(),
            "Hi Ann, ACME! {{ not a field }} {{"
        );
        let v = values(&[("company", "ACME"), ("first_name", " ")]);
        assert!(t.render(&v, Target::Text).unwrap().starts_with("Hi there,"));
        assert_eq!(
            t.render(&values(&[]), Target::Text),
            Err(MergeError::Missing("company".into()))
        );
    }

    #[test]
    fn values_are_escaped_for_html_and_refused_in_headers() {
        let t = MergeText::parse("<p title=\"{{name}}\">{{name}}</p>");
        let v = values(&[("name", "<script>alert(\"x\")</script> & 'co'")]);
        let html = t.render(&v, Target::Html).unwrap();
        assert!(!html.contains("<script>"));
        assert_eq!(
            html,
            "<p title=\"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;\">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;</p>"
        );
        let subject = MergeText::parse("Offer for {{name}}");
        for bad in ["a\r\nBcc: x@evil.example", "a\nb", "a\rb", "a\u{0}b"] {
            assert_eq!(
                subject.render(&values(&[("name", bad)]), Target::Header),
                Err(MergeError::Unsafe("name".into()))
            );
        }
        assert_eq!(
            subject
                .render(&values(&[("name", "Zoë")]), Target::Header)
                .unwrap(),
            "Offer for Zoë"
        );
    }
}
