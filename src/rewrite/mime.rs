//! The MIME walk and splice: find the text parts, rewrite each one, put it back in place.
//!
//! mail-parser gives each part's byte offsets. A rewritten part is decoded (transfer encoding,
//! charset), rewritten, encoded again the same way and spliced over its old body; header
//! fields change only where the body's encoding or charset had to. Every other byte of the
//! message is copied as it came.

use std::ops::Range;
use std::sync::Arc;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::charset::{self, Plan};
use super::controls;
use super::copy::{Chunk, Patch, SlotKind};
use super::dkim::Signer;
use super::headers::{self, Field};
use super::policy::{self, LinkPolicy};
use super::token;
use super::transfer::{self, Cte, Flat, MAX_LINE};
use super::{html, text};
use super::{PartReport, Prepared, RewriteSettings, TrackedLink, Unparseable, Untouched};

/// Shared state of one message's rewrite: the policy and the links found so far.
pub(crate) struct Ctx {
    pub policy: LinkPolicy,
    /// `{public_url}/c/`
    pub click_prefix: String,
    /// `{public_url}/o/`
    pub open_prefix: String,
    pub opens: bool,
    pub clicks: bool,
    pub links: Vec<TrackedLink>,
    pub pixels: usize,
}

impl Ctx {
    /// Decide a link; when tracked, register it and return its slot.
    pub(crate) fn track(
        &mut self,
        url: &str,
        raw: &str,
        text: &str,
        opted_out: bool,
        vml: bool,
    ) -> Option<Chunk> {
        // Decided and signed as the browser will read it, so the redirect goes where the
        // recipient's click would have gone.
        let url = policy::browser_url(url);
        self.policy.decide(&url, text, opted_out).ok()?;
        let url = url.into_owned();
        let index = u32::try_from(self.links.len()).ok()?;
        let len = token::click_token_len(url.len());
        self.links.push(TrackedLink {
            index,
            url,
            raw: raw.to_owned(),
            vml,
        });
        Some(Chunk::Token {
            slot: SlotKind::Click(index),
            len,
        })
    }

    pub(crate) fn open_slot(&self) -> Chunk {
        Chunk::Token {
            slot: SlotKind::Open,
            len: token::open_token_len(),
        }
    }
}

/// A replacement of `range` of the raw message.
struct Edit {
    range: Range<usize>,
    bytes: Vec<u8>,
    /// Relative to the start of `bytes`.
    patches: Vec<Patch>,
}

impl Edit {
    fn bytes(range: Range<usize>, bytes: Vec<u8>) -> Edit {
        Edit {
            range,
            bytes,
            patches: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("part offsets outside the message")]
    Offsets,
    #[error(transparent)]
    Transfer(#[from] transfer::TransferError),
    #[error(transparent)]
    Charset(#[from] charset::CharsetError),
}

impl PartError {
    fn cause(&self) -> Unparseable {
        match self {
            PartError::Offsets => Unparseable::Mime,
            PartError::Transfer(_) => Unparseable::TransferEncoding,
            PartError::Charset(_) => Unparseable::Charset,
        }
    }
}

/// Names the subject may contain: the recipients' display names and local parts.
fn recipient_names(msg: &Message) -> Vec<String> {
    let mut names = Vec::new();
    for addrs in [msg.to(), msg.cc()].into_iter().flatten() {
        for a in addrs.iter() {
            if let Some(n) = &a.name {
                names.push(n.to_string());
            }
            if let Some(local) = a.address.as_deref().and_then(|x| x.split('@').next()) {
                names.push(local.to_owned());
            }
        }
    }
    names
}

/// The message as it came, with the control headers removed where that is safe.
pub(crate) fn untouched(raw: &[u8], settings: &RewriteSettings, why: Untouched) -> Prepared {
    let fields = headers::fields(raw, 0, raw.len());
    let controls = controls::read(raw, &fields, None, &[], settings.default_track);
    finish(
        raw,
        controls,
        Vec::new(),
        Vec::new(),
        strip_controls(raw, &fields),
        Some(why),
        None,
    )
}

/// Removing a control header a client's DKIM signature covers would break that signature;
/// then the header stays (the message goes out exactly as signed).
fn strip_controls(raw: &[u8], fields: &[Field]) -> Vec<Edit> {
    let signed_names: Vec<String> = fields
        .iter()
        .filter(|f| f.is(raw, "dkim-signature"))
        .flat_map(|f| {
            let v = f.text(raw).to_ascii_lowercase();
            v.split(';')
                .filter_map(|t| t.trim().strip_prefix("h=").map(str::to_owned))
                .flat_map(|h| {
                    h.split(':')
                        .map(|n| n.trim().to_owned())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    fields
        .iter()
        .filter(|f| f.name_starts_with(raw, controls::PREFIX))
        .filter(|f| {
            let name = String::from_utf8_lossy(raw.get(f.name.clone()).unwrap_or(&[]))
                .trim()
                .to_ascii_lowercase();
            !signed_names.contains(&name)
        })
        .map(|f| Edit::bytes(f.span.clone(), Vec::new()))
        .collect()
}

pub(crate) fn prepare(raw: &[u8], settings: &RewriteSettings) -> Prepared {
    let fields = headers::fields(raw, 0, raw.len());
    if fields.is_empty() {
        return untouched(raw, settings, Untouched::Unparseable(Unparseable::NoHeader));
    }
    let Some(msg) = MessageParser::default().parse(raw) else {
        return untouched(raw, settings, Untouched::Unparseable(Unparseable::Mime));
    };
    if msg.parts.is_empty() {
        return untouched(raw, settings, Untouched::Unparseable(Unparseable::Mime));
    }
    let names = recipient_names(&msg);
    let subject = msg.subject().map(str::to_owned);
    let controls = controls::read(raw, &fields, subject, &names, settings.default_track);
    let root = &msg.parts[0];
    let why = match root.content_type() {
        Some(ct) if ct.ctype().eq_ignore_ascii_case("multipart") => {
            match ct.subtype().map(str::to_ascii_lowercase).as_deref() {
                Some("signed") => Some(Untouched::Signed),
                Some("encrypted") => Some(Untouched::Encrypted),
                _ => None,
            }
        }
        Some(ct)
            if ct.ctype().eq_ignore_ascii_case("application")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("pkcs7-mime") || s.eq_ignore_ascii_case("x-pkcs7-mime")
                }) =>
        {
            if ct
                .attribute("smime-type")
                .is_some_and(|t| t.to_ascii_lowercase().contains("signed"))
            {
                Some(Untouched::Signed)
            } else {
                Some(Untouched::Encrypted)
            }
        }
        _ => None,
    };
    let why = why.or((controls.track == super::TrackMode::Off).then_some(Untouched::TrackingOff));
    let has_dkim = fields.iter().any(|f| f.is(raw, "dkim-signature"));
    let signer = settings.dkim.as_ref().and_then(|d| Signer::new(d).ok());
    let why = why.or((has_dkim && signer.is_none()).then_some(Untouched::DkimWithoutKey));
    if let Some(why) = why {
        let mut p = untouched(raw, settings, why);
        p.controls = controls;
        return p;
    }

    let list_unsub = fields
        .iter()
        .find(|f| f.is(raw, "list-unsubscribe"))
        .map(|f| f.text(raw));
    let public = settings.public_url.trim().trim_end_matches('/');
    let mut ctx = Ctx {
        policy: LinkPolicy::new(public, list_unsub.as_deref()),
        click_prefix: format!("{public}/c/"),
        open_prefix: format!("{public}/o/"),
        opens: controls.track.opens(),
        clicks: controls.track.clicks(),
        links: Vec::new(),
        pixels: 0,
    };

    // Top-level header edits: control headers go, and a client's DKIM signature when the
    // relay signs instead.
    let mut edits: Vec<Edit> = fields
        .iter()
        .filter(|f| {
            f.name_starts_with(raw, controls::PREFIX)
                || (signer.is_some() && f.is(raw, "dkim-signature"))
        })
        .map(|f| Edit::bytes(f.span.clone(), Vec::new()))
        .collect();

    let mut reports = Vec::new();
    // What made the first unreadable part unreadable, and whether any part changed.
    let mut unreadable = None;
    let mut changed = false;
    for (id, is_html) in text_parts(&msg) {
        if !(is_html || (ctx.clicks && settings.track_text_links)) {
            continue;
        }
        let before = ctx.links.len();
        match rewrite_part(raw, &msg, id, is_html, &mut ctx) {
            Ok((part_edits, converted)) => {
                changed |= !part_edits.is_empty();
                edits.extend(part_edits);
                reports.push(PartReport {
                    part: id,
                    html: is_html,
                    skipped: None,
                    converted,
                });
            }
            Err(e) => {
                ctx.links.truncate(before);
                unreadable = unreadable.or(Some(e.cause()));
                reports.push(PartReport {
                    part: id,
                    html: is_html,
                    skipped: Some(e.to_string()),
                    converted: false,
                });
            }
        }
    }
    // Nothing rewritten because a part could not be read: the message goes out as it came
    // (control headers aside) and is counted as such.
    let why = unreadable.filter(|_| !changed).map(Untouched::Unparseable);
    finish(
        raw,
        controls,
        ctx.links,
        reports,
        edits,
        why,
        signer.map(Arc::new),
    )
}

/// The text/html and text/plain parts to rewrite, in order: not attachments, not inside an
/// attached message, not under a signed or encrypted multipart.
fn text_parts(msg: &Message) -> Vec<(usize, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![0usize];
    let mut seen = vec![false; msg.parts.len()];
    while let Some(id) = stack.pop() {
        let Some(part) = msg.parts.get(id) else {
            continue;
        };
        // mail-parser builds a tree, but do not trust input-derived indexes to be one.
        if std::mem::replace(&mut seen[id], true) {
            continue;
        }
        let attachment = part
            .content_disposition()
            .is_some_and(|d| d.is_attachment());
        let ct = part.content_type();
        let is = |t: &str, s: &str| {
            ct.is_some_and(|c| {
                c.ctype().eq_ignore_ascii_case(t)
                    && c.subtype().is_some_and(|x| x.eq_ignore_ascii_case(s))
            })
        };
        match &part.body {
            PartType::Multipart(children) => {
                if is("multipart", "signed") || is("multipart", "encrypted") {
                    continue;
                }
                stack.extend(children.iter().rev().map(|&c| c as usize));
            }
            // By its label: a body mail-parser could not decode (base64 with a footer
            // appended) comes as Text whatever its type, and must be reported, not passed over.
            PartType::Html(_) | PartType::Text(_) if !attachment && is("text", "html") => {
                out.push((id, true))
            }
            PartType::Text(_) if !attachment && (ct.is_none() || is("text", "plain")) => {
                out.push((id, false))
            }
            _ => {}
        }
    }
    out
}

/// Rewrite one part; returns the edits of the raw message and whether it became UTF-8.
fn rewrite_part(
    raw: &[u8],
    msg: &Message,
    id: usize,
    is_html: bool,
    ctx: &mut Ctx,
) -> Result<(Vec<Edit>, bool), PartError> {
    let part = msg.parts.get(id).ok_or(PartError::Offsets)?;
    let (hs, bs, be) = (
        part.offset_header as usize,
        part.offset_body as usize,
        part.offset_end as usize,
    );
    if hs > bs || bs > be || be > raw.len() {
        return Err(PartError::Offsets);
    }
    let body = &raw[bs..be];
    let fields = headers::fields(raw, hs, bs);
    let cte_field = fields
        .iter()
        .find(|f| f.is(raw, "content-transfer-encoding"));
    let cte_value = cte_field.map(|f| f.text(raw));
    let cte = transfer::parse_cte(cte_value.as_deref())?;
    let decoded = transfer::decode(body, cte)?;
    let label = part.content_type().and_then(|c| c.attribute("charset"));
    let (text, plan) = charset::decode(&decoded, label)?;
    let converted = plan == Plan::ToUtf8;

    let pixels = ctx.pixels;
    let links = ctx.links.len();
    let chunks = if is_html {
        html::rewrite(&text, ctx, converted)
    } else {
        text::rewrite(&text, ctx)
    };
    if !converted && ctx.pixels == pixels && ctx.links.len() == links {
        return Ok((Vec::new(), false));
    }
    let chunks: Vec<Chunk> = if charset::reencodes(plan) {
        chunks
            .into_iter()
            .map(|c| match c {
                Chunk::Lit(b) => Chunk::Lit(charset::encode(&b, plan)),
                t => t,
            })
            .collect()
    } else {
        chunks
    };
    let flat = Flat::new(&chunks);
    // The body's own line ending (mixed messages exist); the header's when the body has none.
    let eol = if body.contains(&b'\n') {
        headers::eol_of(body)
    } else {
        headers::eol_of(raw.get(hs..bs).unwrap_or(&[]))
    };

    // A plain body stays plain unless SMTP could not carry it: over-long lines, or 8-bit
    // text in a part declared 7bit (after a conversion to UTF-8).
    let declared_7bit = cte_value
        .as_deref()
        .is_none_or(|v| v.trim().eq_ignore_ascii_case("7bit"));
    let out_cte = match cte {
        Cte::Identity
            if flat.longest_line() > MAX_LINE || (declared_7bit && !flat.data.is_ascii()) =>
        {
            Cte::QuotedPrintable
        }
        c => c,
    };
    let (mut bytes, patches) = match out_cte {
        Cte::Identity => transfer::encode_identity(flat),
        Cte::QuotedPrintable => transfer::encode_qp(&flat, eol),
        Cte::Base64 => transfer::encode_base64(&flat, eol),
    };
    if out_cte == Cte::Base64 && !body.ends_with(b"\n") && bytes.ends_with(eol) {
        bytes.truncate(bytes.len() - eol.len());
    }
    let mut edits = vec![Edit {
        range: bs..be,
        bytes,
        patches,
    }];
    if out_cte != cte {
        let mut line = b"Content-Transfer-Encoding: quoted-printable".to_vec();
        line.extend_from_slice(eol);
        match cte_field {
            Some(f) => edits.push(Edit::bytes(f.span.clone(), line)),
            None => {
                let at = headers::block_end(raw, hs, bs);
                edits.push(Edit::bytes(at..at, line));
            }
        }
    }
    if converted {
        if let Some(f) = fields.iter().find(|f| f.is(raw, "content-type")) {
            edits.push(relabel_charset(raw, f));
        }
    }
    Ok((edits, converted))
}

/// Set `charset=utf-8` in a Content-Type field, keeping the rest of it.
fn relabel_charset(raw: &[u8], f: &Field) -> Edit {
    let v = raw.get(f.value.clone()).unwrap_or(&[]);
    let lower = v.to_ascii_lowercase();
    let mut from = 0;
    while let Some(p) = lower
        .get(from..)
        .and_then(|l| l.windows(7).position(|w| w == b"charset"))
    {
        let at = from + p;
        let mut i = at + 7;
        let before_ok = at == 0 || matches!(v[at - 1], b';' | b' ' | b'\t' | b'\n' | b'\r');
        while matches!(v.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if before_ok && v.get(i) == Some(&b'=') {
            i += 1;
            while matches!(v.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            let s = i;
            if v.get(i) == Some(&b'"') {
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    i += 1;
                }
                i = (i + 1).min(v.len());
            } else {
                while i < v.len() && !matches!(v[i], b';' | b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
            }
            let base = f.value.start;
            return Edit::bytes(base + s..base + i, b"utf-8".to_vec());
        }
        from = at + 7;
    }
    let end = f.value.end;
    Edit::bytes(end..end, b"; charset=utf-8".to_vec())
}

/// Apply the edits front to back and build the prepared message.
fn finish(
    raw: &[u8],
    controls: controls::Controls,
    links: Vec<TrackedLink>,
    parts: Vec<PartReport>,
    mut edits: Vec<Edit>,
    untouched: Option<Untouched>,
    signer: Option<Arc<Signer>>,
) -> Prepared {
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let extra: usize = edits.iter().map(|e| e.bytes.len()).sum();
    let mut template = Vec::with_capacity(raw.len() + extra);
    let mut patches = Vec::new();
    let mut at = 0;
    for e in edits {
        if e.range.start < at || e.range.end > raw.len() || e.range.start > e.range.end {
            continue;
        }
        template.extend_from_slice(&raw[at..e.range.start]);
        let base = template.len();
        template.extend_from_slice(&e.bytes);
        patches.extend(e.patches.into_iter().map(|mut p| {
            p.shift(base);
            p
        }));
        at = e.range.end;
    }
    template.extend_from_slice(&raw[at..]);
    Prepared {
        controls,
        links,
        untouched,
        parts,
        template,
        patches,
        signer,
    }
}
