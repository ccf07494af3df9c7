//! HTML escaping for the stages that splice text into a message's own markup: the rewrite's
//! tracked attribute values and pixel, the compose merge's recipient values. (The Insights pages
//! are maud templates, which escape by themselves.)
//!
//! One escaper serves text and attribute values alike, quoted with either quote character.
//! It must never decode: input is taken as literal text.

/// Escapes `&`, `<`, `>`, `"` and `'`, so the result is safe as element text and as an
/// attribute value in single or double quotes.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::html;

    #[test]
    fn escapes_the_five_characters_and_keeps_the_rest() {
        assert_eq!(
            html("<a href=\"x?a=1&b='2'\">é</a>"),
            "&lt;a href=&quot;x?a=1&amp;b=&#39;2&#39;&quot;&gt;é&lt;/a&gt;"
        );
        assert_eq!(html(""), "");
        assert_eq!(html("plain ünïcode"), "plain ünïcode");
        assert_eq!(html("&amp;"), "&amp;amp;");
    }
}
