//! The streaming HTML rewriter: html5ever's tokenizer, no DOM, no re-serialisation.
//!
//! The tokenizer reads the part once, front to back. Each time it hands over a token the sink
//! reads how much input is left, so it knows where that token ends in the source; it then
//! finds the tag's `<` and scans the raw attributes itself (`tags`: the same states as the
//! HTML spec) to get the exact byte span of each attribute value. Only those spans and the
//! pixel's insertion point change; every other byte is copied. Raw-text elements (`style`,
//! `script`, `title`, `textarea`, ...) are switched by the sink, as a tree builder would, so
//! that `</a>` inside a `<style>` is text. Outlook conditional comments are rewritten by
//! tokenizing their text. Input the sink would never read is dropped before the tokenizer
//! sees it (`skip`); `scan_reference` is the same scan without that, and the two must agree.
//! This module must never re-serialise a token: the source bytes are the output.

use std::cell::RefCell;
use std::ops::Range;

use html5ever::buffer_queue::BufferQueue;
use html5ever::interface::TokenizerResult;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;

mod skip;
mod tags;

use super::copy::Chunk;
use super::mime::Ctx;
use html5ever::tokenizer::{
    Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use tags::{find_tag, is_ws};

/// How the original attribute value was quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quote {
    Double,
    Single,
    Unquoted,
}

/// A link found in the HTML, before the policy decides on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundLink {
    /// Byte span of the raw attribute value (between the quotes).
    pub span: Range<usize>,
    /// The value with character references decoded: what a browser follows.
    pub url: String,
    pub quote: Quote,
    /// Text (and image `alt`) between the start tag and its end tag.
    pub text: String,
    pub opted_out: bool,
    /// `v:*` element (Outlook VML button).
    pub vml: bool,
}

/// What a scan found in one HTML text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub links: Vec<FoundLink>,
    /// Where the pixel goes: before the last `</body>`, else before the last `</html>`, else
    /// the end.
    pub pixel_at: usize,
    /// Spans of `<meta>` charset names (to relabel a part converted to UTF-8).
    pub meta_charsets: Vec<Range<usize>>,
}

/// Longest link text kept for the unsubscribe check.
const MAX_TEXT: usize = 512;
/// Conditional comments inside conditional comments are not a thing; stop at one level.
const MAX_DEPTH: u8 = 1;

/// Scan an HTML text for links, the pixel position and meta charsets.
pub fn scan(src: &str) -> Scan {
    scan_with(src, true)
}

/// The same scan with every byte through the tokenizer: what `scan` must always agree with
/// (tests and the fuzz target compare them).
#[doc(hidden)]
pub fn scan_reference(src: &str) -> Scan {
    scan_with(src, false)
}

fn scan_with(src: &str, skipping: bool) -> Scan {
    let mut out = Scan::default();
    let body_end = scan_into(src, 0, 0, skipping, &mut out);
    out.pixel_at = body_end.unwrap_or(src.len());
    out.links.sort_by_key(|l| l.span.start);
    out
}

/// Tokenize `src` (located at `base` in the whole text); returns the pixel position.
fn scan_into(src: &str, base: usize, depth: u8, skipping: bool, out: &mut Scan) -> Option<usize> {
    // The tokenizer starts in its data state: what it need not see before the first thing
    // the sink reads is never queued.
    let start = if skipping {
        skip::next_needed(src.as_bytes(), 0)
    } else {
        0
    };
    let queue = BufferQueue::default();
    if let Some(rest) = src.get(start..) {
        queue.push_back(StrTendril::from_slice(rest));
    }
    let sink = Sink {
        queue: &queue,
        src: src.as_bytes(),
        skipping,
        st: RefCell::new(State {
            last: start,
            ..State::default()
        }),
    };
    let tok = Tokenizer::new(sink, TokenizerOpts::default());
    // A `Script` result never comes back from this sink; loop anyway until the input is done.
    while let TokenizerResult::Script(()) = tok.feed(&queue) {}
    tok.end();
    let mut st = tok.sink.st.into_inner();
    st.close_link();
    for mut l in st.links {
        l.span = l.span.start + base..l.span.end + base;
        out.links.push(l);
    }
    out.meta_charsets
        .extend(st.metas.into_iter().map(|r| r.start + base..r.end + base));
    if depth < MAX_DEPTH {
        for inner in st.cond_comments {
            if let Some(text) = src.get(inner.clone()) {
                if cond_comment_is_read(text.as_bytes()) {
                    scan_into(text, base + inner.start, depth + 1, skipping, out);
                }
            }
        }
    }
    st.body_end.or(st.html_end).map(|p| p + base)
}

struct Sink<'a> {
    queue: &'a BufferQueue,
    src: &'a [u8],
    /// Drop input the sink never reads (`false`: the reference scan).
    skipping: bool,
    st: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// Input position at the end of the last tag or comment token.
    last: usize,
    links: Vec<FoundLink>,
    /// Index into `links` and element name of the link whose text is being collected.
    open: Option<(usize, String)>,
    body_end: Option<usize>,
    html_end: Option<usize>,
    metas: Vec<Range<usize>>,
    /// Inner spans of `<!--[if ...]> ... -->` comments.
    cond_comments: Vec<Range<usize>>,
}

impl State {
    fn close_link(&mut self) {
        self.open = None;
    }

    fn push_text(&mut self, s: &str) {
        if let Some((i, _)) = &self.open {
            if let Some(l) = self.links.get_mut(*i) {
                if l.text.len() < MAX_TEXT {
                    l.text.push_str(s);
                }
            }
        }
    }
}

impl Sink<'_> {
    /// Bytes consumed so far. The tokenizer only ever puts consumed input back at the front,
    /// so total minus what is queued is the position just after the current token.
    fn pos(&self) -> usize {
        // Usually one buffer is queued: look at it without allocating.
        let Some(first) = self.queue.pop_front() else {
            return self.src.len();
        };
        let mut left = first.len();
        if self.queue.is_empty() {
            self.queue.push_front(first);
            return self.src.len().saturating_sub(left);
        }
        let mut held = vec![first];
        while let Some(b) = self.queue.pop_front() {
            left += b.len();
            held.push(b);
        }
        for b in held.into_iter().rev() {
            self.queue.push_front(b);
        }
        self.src.len().saturating_sub(left)
    }

    /// Drop the input between `at` (the current position, as `pos` gives it) and `to`, so
    /// that the tokenizer never sees it. Only when the queue is the one untouched rest of
    /// the source; returns whether it skipped.
    fn skip(&self, at: usize, to: usize) -> bool {
        if to <= at {
            return false;
        }
        let Some(mut first) = self.queue.pop_front() else {
            return false;
        };
        let whole = self.queue.is_empty()
            && self.src.len().checked_sub(at) == Some(first.len())
            && to <= self.src.len();
        let done = whole && u32::try_from(to - at).is_ok_and(|n| first.try_pop_front(n).is_ok());
        self.queue.push_front(first);
        done
    }

    /// After a token that leaves the tokenizer in its data state: when no link is collecting
    /// text, drop what the sink would never read (see `skip`).
    fn skip_text(&self, at: usize, st: &mut State) {
        if st.open.is_some() || !self.skipping {
            return;
        }
        let to = skip::next_needed(self.src, at);
        if self.skip(at, to) {
            st.last = to;
        }
    }

    /// A raw-text element (`style`, `script`, ...) just started at `at`: when no link is
    /// collecting text, skip its text up to the end tag that closes it and leave the
    /// tokenizer in its data state, which reads that end tag as the raw-text state would
    /// (and so it can be skipped too). Script text holding `<!--` has escape states; that is
    /// left to the tokenizer.
    fn skip_raw_text(&self, at: usize, name: &str, st: &mut State) -> bool {
        if st.open.is_some() || !self.skipping {
            return false;
        }
        let Some(rest) = self.src.get(at..) else {
            return false;
        };
        let end = at + raw_text_end(rest, name.as_bytes());
        if name == "script" && find(&self.src[at..end], b"<!--").is_some() {
            return false;
        }
        let to = skip::next_needed(self.src, end);
        if to == at {
            return true;
        }
        if self.skip(at, to) {
            st.last = to;
            return true;
        }
        false
    }

    fn tag(&self, tag: Tag) -> TokenSinkResult<()> {
        let end = self.pos();
        let mut st = self.st.borrow_mut();
        let from = st.last.saturating_sub(4);
        st.last = end;
        let name: &str = &tag.name;
        match tag.kind {
            TagKind::StartTag => {
                let is_link = matches!(name, "a" | "area") || name.starts_with("v:");
                if is_link {
                    if let Some(href) = tag.attrs.iter().find(|a| &*a.name.local == "href") {
                        let opted_out = tag.attrs.iter().any(|a| {
                            &*a.name.local == "data-mailtally"
                                && a.value.trim().eq_ignore_ascii_case("off")
                        });
                        let raw = find_tag(self.src, from, end, name, false)
                            .and_then(|t| t.attr(self.src, "href"));
                        if let Some((span, quote)) = raw {
                            st.links.push(FoundLink {
                                span,
                                url: href.value.to_string(),
                                quote,
                                text: String::new(),
                                opted_out,
                                vml: name.starts_with("v:"),
                            });
                            if name != "area" {
                                let i = st.links.len() - 1;
                                st.open = Some((i, name.to_owned()));
                            }
                            if name == "area" {
                                if let Some(alt) =
                                    tag.attrs.iter().find(|a| &*a.name.local == "alt")
                                {
                                    if let Some(l) = st.links.last_mut() {
                                        l.text.push_str(&alt.value);
                                    }
                                }
                            }
                        }
                    } else if name == "a" {
                        // A new anchor ends the previous one, as the tree builder would.
                        st.close_link();
                    }
                } else if name == "img" {
                    if let Some(alt) = tag.attrs.iter().find(|a| &*a.name.local == "alt") {
                        st.push_text(" ");
                        st.push_text(&alt.value);
                    }
                } else if name == "meta" {
                    if let Some(t) = find_tag(self.src, from, end, name, false) {
                        if let Some((span, _)) = t.attr(self.src, "charset") {
                            st.metas.push(span);
                        } else if let Some((span, _)) = t.attr(self.src, "content") {
                            if let Some(r) = charset_in(self.src, span) {
                                st.metas.push(r);
                            }
                        }
                    }
                }
                let raw = match name {
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                        TokenSinkResult::RawData(RawKind::Rawtext)
                    }
                    "script" => TokenSinkResult::RawData(RawKind::ScriptData),
                    "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
                    "plaintext" => return TokenSinkResult::Plaintext,
                    _ => {
                        self.skip_text(end, &mut st);
                        return TokenSinkResult::Continue;
                    }
                };
                return if self.skip_raw_text(end, name, &mut st) {
                    TokenSinkResult::Continue
                } else {
                    raw
                };
            }
            TagKind::EndTag => {
                if st.open.as_ref().is_some_and(|(_, n)| n == name) {
                    st.close_link();
                }
                if name == "body" || name == "html" {
                    if let Some(t) = find_tag(self.src, from, end, name, true) {
                        if name == "body" {
                            st.body_end = Some(t.start);
                        } else {
                            st.html_end = Some(t.start);
                        }
                    }
                }
                self.skip_text(end, &mut st);
            }
        }
        TokenSinkResult::Continue
    }

    fn comment(&self, text: &str) {
        let end = self.pos();
        let mut st = self.st.borrow_mut();
        self.comment_at(&mut st, text, end);
        self.skip_text(end, &mut st);
    }

    fn comment_at(&self, st: &mut State, text: &str, end: usize) {
        let from = st.last.saturating_sub(4);
        st.last = end;
        let t = text.trim_start();
        if !(t.len() >= 3 && t.as_bytes()[..3].eq_ignore_ascii_case(b"[if")) {
            return;
        }
        // The raw comment is `<!--` inner `-->`; its inner text must be what the tokenizer
        // reported (after newline normalisation), or the span is not trusted.
        let Some(inner_end) = end.checked_sub(3) else {
            return;
        };
        if self.src.get(inner_end..end) != Some(b"-->") {
            return;
        }
        let Some(hay) = self.src.get(from..inner_end) else {
            return;
        };
        let Some(i) = find(hay, b"<!--") else { return };
        let inner_start = from + i + 4;
        if inner_start <= inner_end
            && same_after_preprocessing(&self.src[inner_start..inner_end], text)
        {
            st.cond_comments.push(inner_start..inner_end);
        }
    }
}

impl TokenSink for Sink<'_> {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => return self.tag(tag),
            Token::CharacterTokens(s) => self.st.borrow_mut().push_text(&s),
            Token::CommentToken(c) => self.comment(&c),
            Token::DoctypeToken(_) => {
                let end = self.pos();
                let mut st = self.st.borrow_mut();
                st.last = end;
                self.skip_text(end, &mut st);
            }
            Token::NullCharacterToken | Token::EOFToken | Token::ParseError(_) => {}
        }
        TokenSinkResult::Continue
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Whether a conditional comment's text can yield anything: only an `href` or a `<meta>`
/// can; most conditional comments (Outlook table scaffolding) hold neither.
fn cond_comment_is_read(text: &[u8]) -> bool {
    contains_ignore_case(text, b"href") || contains_ignore_case(text, b"meta")
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay).any(|i| {
        hay.get(i + 1..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(rest))
    })
}

/// Where the text of a raw-text element named `name` ends in `rest` (the input just after
/// its start tag): at the first `</name` followed by white space, `/` or `>` (the
/// tokenizer's "appropriate end tag"), else at the end of the input.
fn raw_text_end(rest: &[u8], name: &[u8]) -> usize {
    for lt in memchr::memchr_iter(b'<', rest) {
        let Some(tail) = rest.get(lt + 1..) else {
            break;
        };
        if tail.first() == Some(&b'/')
            && tail
                .get(1..1 + name.len())
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && tail
                .get(1 + name.len())
                .is_some_and(|&b| is_ws(b) || b == b'/' || b == b'>')
        {
            return lt;
        }
    }
    rest.len()
}

/// The tokenizer turns CR LF and CR into LF and NUL into U+FFFD; compare with that in mind.
fn same_after_preprocessing(raw: &[u8], text: &str) -> bool {
    let Ok(raw) = std::str::from_utf8(raw) else {
        return false;
    };
    let mut a = raw.chars().peekable();
    let mut b = text.chars();
    loop {
        let x = match a.next() {
            Some('\r') => {
                if a.peek() == Some(&'\n') {
                    a.next();
                }
                Some('\n')
            }
            Some('\0') => Some('\u{FFFD}'),
            other => other,
        };
        let y = b.next();
        if x != y {
            return false;
        }
        if x.is_none() {
            return true;
        }
    }
}

/// Span of the charset name inside a `content="text/html; charset=..."` value.
fn charset_in(src: &[u8], span: Range<usize>) -> Option<Range<usize>> {
    let v = src.get(span.clone())?;
    let lower = v.to_ascii_lowercase();
    let at = find(&lower, b"charset")? + 7;
    let mut i = at;
    while i < v.len() && v[i].is_ascii_whitespace() {
        i += 1;
    }
    if v.get(i) != Some(&b'=') {
        return None;
    }
    i += 1;
    while i < v.len() && (v[i].is_ascii_whitespace() || v[i] == b'\'' || v[i] == b'"') {
        i += 1;
    }
    let s = i;
    while i < v.len() && !(v[i].is_ascii_whitespace() || b";'\"".contains(&v[i])) {
        i += 1;
    }
    (i > s).then(|| span.start + s..span.start + i)
}

/// The pixel, given the full image URL (already attribute-escaped).
pub fn pixel_html(src_url: &str) -> String {
    format!(
        "<img src=\"{src_url}\" width=\"1\" height=\"1\" border=\"0\" alt=\"\" style=\"display:block;width:1px;height:1px;border:0\" />"
    )
}

/// Rewrite an HTML text: tracked links and the pixel become slots, everything else is copied.
/// `relabel` turns `<meta>` charsets into UTF-8 (the part is being converted).
pub(crate) fn rewrite(src: &str, ctx: &mut Ctx, relabel: bool) -> Vec<Chunk> {
    let scan = scan(src);
    let mut edits: Vec<(Range<usize>, Vec<Chunk>)> = Vec::new();
    if ctx.clicks {
        for l in &scan.links {
            let raw = src.get(l.span.clone()).unwrap_or("");
            if let Some(slot) = ctx.track(&l.url, raw, &l.text, l.opted_out, l.vml) {
                let mut prefix = crate::escape::html(&ctx.click_prefix);
                let quote = l.quote == Quote::Unquoted
                    && prefix.bytes().any(|b| is_ws(b) || b"\"'=<>`".contains(&b));
                if quote {
                    prefix.insert(0, '"');
                }
                let mut c = vec![Chunk::Lit(prefix.into_bytes()), slot];
                if quote {
                    c.push(Chunk::Lit(b"\"".to_vec()));
                }
                edits.push((l.span.clone(), c));
            }
        }
    }
    if ctx.opens {
        let (before, after) = pixel_parts(&crate::escape::html(&ctx.open_prefix));
        edits.push((
            scan.pixel_at..scan.pixel_at,
            vec![
                Chunk::Lit(before.into_bytes()),
                ctx.open_slot(),
                Chunk::Lit(after.into_bytes()),
            ],
        ));
        ctx.pixels += 1;
    }
    if relabel {
        for r in &scan.meta_charsets {
            edits.push((r.clone(), vec![Chunk::Lit(b"utf-8".to_vec())]));
        }
    }
    splice(src.as_bytes(), edits)
}

/// Copy `src` with `edits` (non-overlapping after sorting; an overlapping one is dropped).
pub(crate) fn splice(src: &[u8], mut edits: Vec<(Range<usize>, Vec<Chunk>)>) -> Vec<Chunk> {
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let mut out = Vec::with_capacity(edits.len() * 3 + 1);
    let mut at = 0;
    for (r, chunks) in edits {
        if r.start < at || r.end < r.start || r.end > src.len() {
            continue;
        }
        if r.start > at {
            out.push(Chunk::Lit(src[at..r.start].to_vec()));
        }
        out.extend(chunks);
        at = r.end;
    }
    if at < src.len() {
        out.push(Chunk::Lit(src[at..].to_vec()));
    }
    out
}

/// The pixel around its token.
fn pixel_parts(open_prefix: &str) -> (String, String) {
    let html = pixel_html(&format!("{open_prefix}\u{0}"));
    let (a, b) = html.split_once('\u{0}').unwrap_or((&html, ""));
    (a.to_owned(), b.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan, after checking that the reference scan (every byte tokenized) agrees.
    fn both(src: &str) -> Scan {
        let s = scan(src);
        assert_eq!(
            s,
            scan_reference(src),
            "skipping changed the scan of {src:?}"
        );
        s
    }

    fn urls(s: &Scan) -> Vec<&str> {
        s.links.iter().map(|l| l.url.as_str()).collect()
    }

    #[test]
    fn spans_point_at_raw_values() {
        let src = r#"<p><A HREF="https://a.test/?x=1&amp;y=2">A</A> <a href='https://b.test/'>B</a> <a href=https://c.test/x/>C</a></p>"#;
        let s = both(src);
        assert_eq!(
            urls(&s),
            [
                "https://a.test/?x=1&y=2",
                "https://b.test/",
                "https://c.test/x/"
            ]
        );
        assert_eq!(&src[s.links[0].span.clone()], "https://a.test/?x=1&amp;y=2");
        assert_eq!(s.links[0].quote, Quote::Double);
        assert_eq!(&src[s.links[1].span.clone()], "https://b.test/");
        assert_eq!(s.links[1].quote, Quote::Single);
        assert_eq!(&src[s.links[2].span.clone()], "https://c.test/x/");
        assert_eq!(s.links[2].quote, Quote::Unquoted);
        assert_eq!(s.links[0].text, "A");
        assert_eq!(s.pixel_at, src.len());
    }

    #[test]
    fn style_holding_end_tags_is_text() {
        let src =
            "<style>a[href]{}</a><a href=\"x\"></style><a href=\"https://r.test/\">R</a></body>";
        let s = both(src);
        assert_eq!(urls(&s), ["https://r.test/"]);
        assert_eq!(s.pixel_at, src.len() - "</body>".len());
    }

    #[test]
    fn vml_in_conditional_comment() {
        let src = "<body><!--[if mso]>\r\n<v:roundrect xmlns:v=\"urn:schemas-microsoft-com:vml\" href=\"https://v.test/\" style=\"x\"><center>Go</center></v:roundrect>\r\n<![endif]--><a href=\"https://v.test/\">Go</a></body>";
        let s = both(src);
        assert_eq!(urls(&s), ["https://v.test/", "https://v.test/"]);
        assert!(s.links[0].vml);
        assert_eq!(&src[s.links[0].span.clone()], "https://v.test/");
        assert_eq!(s.links[0].text, "Go");
    }

    #[test]
    fn body_in_conditional_comment_and_missing_body_end() {
        let src = "<!--[if mso]><body class=\"o\"><![endif]--><!--[if !mso]><!--><body><!--<![endif]--><a href=\"https://x.test/\">x</a></html>";
        let s = both(src);
        assert_eq!(s.pixel_at, src.len() - "</html>".len());
        assert_eq!(urls(&s), ["https://x.test/"]);
        let s = both("<p>no body</p>\n");
        assert_eq!(s.pixel_at, "<p>no body</p>\n".len());
    }

    #[test]
    fn odd_markup_keeps_spans_right() {
        let src = "<<a href=\"https://1.test/\">1</a><a\nhref = \"https://2.test/\"\n>2</a><a href=\"https://3.test/\"x=y>3</a><a title='>' href=\"https://4.test/\">4</a>";
        let s = both(src);
        assert_eq!(
            urls(&s),
            [
                "https://1.test/",
                "https://2.test/",
                "https://3.test/",
                "https://4.test/"
            ]
        );
        for l in &s.links {
            assert_eq!(&src[l.span.clone()], l.url);
        }
    }

    #[test]
    fn meta_charset() {
        let src = "<meta charset=\"utf-16\"><meta http-equiv=\"Content-Type\" content=\"text/html; charset=ISO-2022-JP\">";
        let s = both(src);
        let names: Vec<_> = s.meta_charsets.iter().map(|r| &src[r.clone()]).collect();
        assert_eq!(names, ["utf-16", "ISO-2022-JP"]);
    }

    #[test]
    fn skipped_markup_ends_where_the_tokenizer_ends_it() {
        let link = "<a href=\"https://k.test/\">k</a>";
        let around = [
            "<td style=\"a>b\" class='c>d' x=e>",
            "<td a=\"b\"c=d/>",
            "<td = x>",
            "<td a = 'x' b=\"y\"/ >",
            "<td a==x>",
            "<td a=x\"y>",
            "</td x=\"<a href='https://no.test/'>\">",
            "<!-- <a href=\"https://no.test/\">x</a> -->",
            "<!---->",
            "<!-->",
            "<!--->",
            "<!---!>",
            "<!----!>",
            "<!-- x --!>",
            "<!-- <!-- x --> -->",
            "<!-- a <!--!> b -->",
            "<!-- a <!----> b -->",
            "<!--\u{0}[if mso]>x<![endif]-->",
            "<!--[if mso]><table><tr><td><![endif]-->",
            "<!--[if mso]><a href=\"https://m.test/\">m</a><![endif]-->",
            "<!-- [IF mso]><v:rect HREF=\"https://v.test/\"/><![endif]-->",
            "<!--[if mso]><META charset=\"x\"><![endif]--!>",
            "<!--\u{a0}[if mso]><a href=\"https://m.test/\">m</a><![endif]-->",
            "<![endif]>",
            "<![if !mso]>",
            "<!DOCTYPE html>",
            "<!doctype html PUBLIC \"a>b\">",
            "<![CDATA[ <a href=\"https://no.test/\"> ]]>",
            "<?xml version=\"1.0\"?>",
            "</>",
            "</ x>",
            "< a href=\"https://no.test/\">",
            "<3 <<",
            "<img alt=\"x\"><br/><hr />",
            "<TD STYLE=\"X\"><Span>",
            "<style>a{}</style >",
            "<style></style><title>t</title><textarea><a href=\"https://no.test/\"></textarea>",
            "<script>if (a<b) {}</script>",
            "<script><!-- <script> </script> --></script>",
            "<xmp><a href=\"https://no.test/\"></xmp>",
            "<V:RECT href=\"https://v.test/\"></v:rect>",
            "<meta charset=\"latin1\">",
            "\r\n\t",
            "\u{0}",
            "&amp;<b>&lt;</b>",
            "<a name=\"top\">top</a>",
            "</a></body></html><body>",
        ];
        for a in around {
            for b in around {
                both(&format!("{a}{link}{b}{link}"));
                both(&format!("{link}{a}{b}"));
            }
            // Cut short anywhere: a tag or comment the input ends inside.
            let whole = format!("<p>{a}{link}");
            for cut in 0..=whole.len() {
                if let Some(prefix) = whole.get(..cut) {
                    both(prefix);
                }
            }
        }
    }

    #[test]
    fn corpus_scans_agree_with_the_reference() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/html");
        let Ok(entries) = std::fs::read_dir(dir) else {
            eprintln!("skipped: no corpus at {dir}");
            return;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            assert_eq!(scan(&text), scan_reference(&text), "{}", e.path().display());
            n += 1;
        }
        assert!(n > 0, "no files in {dir}");
    }
}
