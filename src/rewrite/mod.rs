//! The rewrite stage: turns one accepted message into per-recipient copies.
//!
//! Owns the MIME walk and splice, the streaming HTML rewriter (html5ever tokenizer, no DOM),
//! the link policy, the control headers and the tracking tokens.
//! Never re-serialises HTML or MIME, never fails and never drops a message: anything it cannot
//! change safely goes out untouched, with the reason in `Prepared::untouched`.

pub mod charset;
pub mod controls;
pub mod copy;
pub mod crlf;
pub mod dkim;
mod headers;
pub mod html;
pub mod mime;
pub mod policy;
pub mod rewriter;
pub mod text;
pub mod token;
pub mod transfer;

use std::sync::Arc;

use uuid::Uuid;

pub use controls::{template_key, Controls};
pub use copy::SlotKind;
pub use dkim::DkimSettings;
pub use rewriter::Rewriter;
pub use token::{click_token, open_token, verify, TokenError, TokenKeys, Verified};

/// Settings the rewrite reads.
#[derive(Clone, Debug)]
pub struct RewriteSettings {
    /// Base of tracked links, e.g. `https://t.example.com`.
    pub public_url: String,
    /// Track URLs in text/plain parts.
    pub track_text_links: bool,
    /// Used when a message has no `X-Mailtally-Track`.
    pub default_track: TrackMode,
    pub dkim: Option<DkimSettings>,
}

impl RewriteSettings {
    pub fn new(public_url: &str) -> Self {
        RewriteSettings {
            public_url: public_url.to_owned(),
            track_text_links: true,
            default_track: TrackMode::OpensAndClicks,
            dkim: None,
        }
    }

    pub fn default_track_text(&self) -> &'static str {
        self.default_track.as_str()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackMode {
    OpensAndClicks,
    Opens,
    Clicks,
    Off,
}

impl TrackMode {
    pub fn opens(self) -> bool {
        matches!(self, TrackMode::OpensAndClicks | TrackMode::Opens)
    }
    pub fn clicks(self) -> bool {
        matches!(self, TrackMode::OpensAndClicks | TrackMode::Clicks)
    }
    /// As `X-Mailtally-Track` and the `messages.track` column write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackMode::OpensAndClicks => "opens,clicks",
            TrackMode::Opens => "opens",
            TrackMode::Clicks => "clicks",
            TrackMode::Off => "off",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tracking mode must be \"opens,clicks\", \"opens\", \"clicks\" or \"off\", not {0:?}")]
pub struct TrackModeError(String);

impl std::str::FromStr for TrackMode {
    type Err = TrackModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut opens = false;
        let mut clicks = false;
        for w in s.split([',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
            match w.to_ascii_lowercase().as_str() {
                "opens" | "open" => opens = true,
                "clicks" | "click" => clicks = true,
                "off" | "none" if !opens && !clicks => return Ok(TrackMode::Off),
                _ => return Err(TrackModeError(s.to_owned())),
            }
        }
        match (opens, clicks) {
            (true, true) => Ok(TrackMode::OpensAndClicks),
            (true, false) => Ok(TrackMode::Opens),
            (false, true) => Ok(TrackMode::Clicks),
            (false, false) => Err(TrackModeError(s.to_owned())),
        }
    }
}

/// Why a message goes out unchanged (apart from its control headers, see `prepare`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untouched {
    Signed,
    Encrypted,
    Unparseable(Unparseable),
    TrackingOff,
    DkimWithoutKey,
}

/// What made a message unparseable: the `cause` label of the untouched-messages metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparseable {
    /// The first line is not a header field (blank or whitespace), or there is no header
    /// block at all: readers disagree on where such a message's headers are.
    NoHeader,
    /// The MIME parser finds no message in it.
    Mime,
    /// A text part's body is not valid in its Content-Transfer-Encoding (a plain-text footer
    /// appended to a base64 body by list software), and no other part could be rewritten.
    TransferEncoding,
    /// A text part's charset cannot be read exactly (unknown label on 8-bit text, malformed
    /// text, UTF-16 of undeclared byte order that cannot be told), and no other part could be
    /// rewritten.
    Charset,
    /// The rewrite gave up on a bug of its own (caught; the message still goes out).
    Internal,
}

impl Unparseable {
    pub const ALL: [Unparseable; 5] = [
        Unparseable::NoHeader,
        Unparseable::Mime,
        Unparseable::TransferEncoding,
        Unparseable::Charset,
        Unparseable::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unparseable::NoHeader => "no_header",
            Unparseable::Mime => "mime",
            Unparseable::TransferEncoding => "transfer_encoding",
            Unparseable::Charset => "charset",
            Unparseable::Internal => "internal",
        }
    }

    /// Only a body part was unreadable: the header block is sound and may be edited.
    fn headers_read(self) -> bool {
        matches!(self, Unparseable::TransferEncoding | Unparseable::Charset)
    }
}

impl Untouched {
    /// Every value, for metrics exported before the first message.
    pub fn all() -> impl Iterator<Item = Untouched> {
        [
            Untouched::Signed,
            Untouched::Encrypted,
            Untouched::TrackingOff,
            Untouched::DkimWithoutKey,
        ]
        .into_iter()
        .chain(Unparseable::ALL.map(Untouched::Unparseable))
    }

    /// Label for the untouched metric's `reason` and the `messages.untouched` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Untouched::Signed => "signed",
            Untouched::Encrypted => "encrypted",
            Untouched::Unparseable(_) => "unparseable",
            Untouched::TrackingOff => "tracking_off",
            Untouched::DkimWithoutKey => "dkim_without_key",
        }
    }

    /// Label for the untouched metric's `cause`: what made it unparseable, else empty.
    pub fn cause(self) -> &'static str {
        match self {
            Untouched::Unparseable(c) => c.as_str(),
            _ => "",
        }
    }
}

/// A link that is tracked: its index in the message and its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedLink {
    pub index: u32,
    /// Destination (entities decoded, surrounding whitespace removed): what `/c/` redirects to.
    pub url: String,
    /// The attribute value or text as it was written in the message.
    pub raw: String,
    /// From a VML element (Outlook button) rather than `<a>`/`<area>` or text.
    pub vml: bool,
}

/// What happened to one text part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartReport {
    /// Index of the part in mail-parser's part list.
    pub part: usize,
    pub html: bool,
    /// `None` when rewritten, else why the part was left as it was.
    pub skipped: Option<String>,
    /// The part was converted to UTF-8 (UTF-16, UTF-7, ISO-2022-JP, ...).
    pub converted: bool,
}

/// A message rewritten once; `render` makes each recipient's copy.
pub struct Prepared {
    pub controls: Controls,
    pub links: Vec<TrackedLink>,
    pub untouched: Option<Untouched>,
    pub parts: Vec<PartReport>,
    /// The message with placeholder tokens.
    template: Vec<u8>,
    patches: Vec<copy::Patch>,
    signer: Option<Arc<dkim::Signer>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("controls", &self.controls)
            .field("links", &self.links)
            .field("untouched", &self.untouched)
            .field("parts", &self.parts)
            .field("bytes", &self.template.len())
            .field("slots", &self.patches.len())
            .finish()
    }
}

impl Prepared {
    /// The bytes to deliver to one recipient: the tokens name the copy; with
    /// `X-Mailtally-Group: separate` the copy is addressed to `recipient` alone.
    pub fn render(&self, keys: &TokenKeys, copy: Uuid, recipient: &str) -> Vec<u8> {
        let mut out = copy::fill(&self.template, &self.patches, &self.links, keys, copy);
        // A signature over the headers would break; an unparseable message is left alone.
        let may_readdress = match self.untouched {
            None | Some(Untouched::TrackingOff) => true,
            Some(Untouched::Unparseable(c)) => c.headers_read(),
            Some(_) => false,
        };
        if self.controls.separate && may_readdress {
            out = headers::addressed_to(&out, recipient);
        }
        // The input was normalised in `prepare`; this also holds for whatever a part's
        // re-encoding or a header edit wrote, before anything is signed, stored or sent.
        if let std::borrow::Cow::Owned(normal) = crlf::normalise(&out) {
            out = normal;
        }
        match &self.signer {
            Some(signer) => match signer.header(&out) {
                Ok(h) => {
                    let mut signed = Vec::with_capacity(h.len() + out.len());
                    signed.extend_from_slice(h.as_bytes());
                    signed.extend_from_slice(&out);
                    signed
                }
                // Unsigned beats undelivered; the relay's DKIM errors are configuration.
                Err(_) => out,
            },
            None => out,
        }
    }

    /// Number of token slots each copy fills.
    pub fn slots(&self) -> usize {
        self.patches.len()
    }
}

/// Longest header line RFC 5322 allows; a `List-Unsubscribe` longer than that (a very long
/// `PUBLIC_URL`) is left out rather than folded inside its URL.
const MAX_LINE: usize = 998;

/// Adds `List-Unsubscribe` (the copy's signed `/u/` URL, RFC 2369) and
/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058) at the end of the header
/// block of a tracked message. The token is a slot like the pixel's, so that a copy still costs
/// one fill, and the fields come before the DKIM signature is made, which covers them.
fn with_list_unsubscribe(mut p: Prepared, settings: &RewriteSettings) -> Prepared {
    if p.untouched.is_some() || !p.controls.list_unsubscribe {
        return p;
    }
    let fields = headers::fields(&p.template, 0, p.template.len());
    let Some(at) = fields.last().map(|f| f.span.end) else {
        return p;
    };
    let eol = headers::eol_of(&p.template);
    let public = settings.public_url.trim().trim_end_matches('/');
    let mut insert = format!("List-Unsubscribe: <{public}/u/").into_bytes();
    let token_at = at + insert.len();
    let len = token::open_token_len();
    if insert.len() + len + 1 > MAX_LINE {
        return p;
    }
    insert.resize(insert.len() + len, copy::PLACEHOLDER);
    insert.push(b'>');
    insert.extend_from_slice(eol);
    insert.extend_from_slice(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click");
    insert.extend_from_slice(eol);
    for patch in &mut p.patches {
        if patch.start() >= at {
            patch.shift(insert.len());
        }
    }
    p.template.splice(at..at, insert);
    p.patches.push(copy::Patch::Plain {
        slot: SlotKind::Unsubscribe,
        runs: vec![(token_at, len)],
    });
    p
}

/// Rewrite a message once. Never panics, never fails: the worst case is `untouched`.
pub fn prepare(raw: &[u8], settings: &RewriteSettings) -> Prepared {
    // Every way in (SMTP, composed mail, `mailtally rewrite`) comes through here: no bare CR or
    // LF goes further (SMTP smuggling, see `crlf`).
    let raw = &*crlf::normalise(raw);
    // The rewrite is written not to panic; this is the last line of defence so that a bug
    // in it or in a parser costs tracking, never the message.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_list_unsubscribe(mime::prepare(raw, settings), settings)
    }))
    .unwrap_or_else(|_| {
        mime::untouched(raw, settings, Untouched::Unparseable(Unparseable::Internal))
    })
}

/// What `mailtally rewrite` prints: the copy one recipient would get.
pub fn preview(
    raw: &[u8],
    recipient: &str,
    template: Option<&str>,
    settings: &RewriteSettings,
    keys: &TokenKeys,
) -> Vec<u8> {
    let mut p = prepare(raw, settings);
    if let Some(t) = template {
        p.controls.template = t.to_owned();
        p.controls.template_explicit = true;
    }
    p.render(keys, Uuid::now_v7(), recipient)
}
