//! How each kind of setting is read from its text, for serde's `deserialize_with`.
//!
//! A value arrives as text from the environment and as a string, number, boolean or array
//! from the settings file; each is read back as text first, so that `7` in the file and `"7"`
//! in the environment are the same setting, then checked. A rejected value becomes a serde
//! error whose message is `"value" is invalid: why`; the loader puts the key in front.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::LogFormat;

/// A value refused, with the text to show for it (a password hidden) and why.
#[derive(Debug)]
pub(super) struct Rejected {
    pub shown: String,
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is invalid: {}", self.shown, self.reason)
    }
}

fn rejected(shown: &str, reason: impl Into<String>) -> Rejected {
    Rejected {
        shown: shown.to_string(),
        reason: reason.into(),
    }
}

/// Any scalar as its text; an array as its items joined by commas, as a list is written in
/// the environment.
struct Text;

impl<'de> Visitor<'de> for Text {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item.0);
        }
        Ok(items.join(","))
    }
}

/// One item of an array: a string or an integer.
struct Item(String);

impl<'de> serde::Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl Visitor<'_> for ItemVisitor {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                Ok(Item(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item, E> {
                Ok(Item(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
                Ok(Item(v.to_string()))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

/// The value as text, read by `read`.
fn read<'de, D, T>(d: D, read: impl FnOnce(&str) -> Result<T, Rejected>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = d.deserialize_any(Text)?;
    read(&text).map_err(de::Error::custom)
}

/// `None` for a blank value, as for an unset one; else the value read by `read`.
fn optional<'de, D, T>(
    d: D,
    read: impl FnOnce(&str) -> Result<T, Rejected>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = d.deserialize_any(Text)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    read(&text).map(Some).map_err(de::Error::custom)
}

fn parsed<T: FromStr>(value: &str) -> Result<T, Rejected>
where
    T::Err: fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| rejected(value, e.to_string()))
}

/// A number.
pub(super) fn number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    read(d, parsed)
}

/// A count that must be at least 1 (0 would refuse everything or run nothing).
pub(super) fn positive<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + PartialOrd + From<u8>,
    T::Err: fmt::Display,
{
    read(d, |value| {
        let n: T = parsed(value)?;
        if n < T::from(1) {
            return Err(rejected(value, "must be at least 1"));
        }
        Ok(n)
    })
}

/// Whole seconds.
pub(super) fn whole_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    read(d, |value| parsed(value).map(Duration::from_secs))
}

/// Seconds, fractions allowed.
pub(super) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    read(d, |value| {
        let secs: f64 = parsed(value)?;
        // Duration::from_secs_f64 panics on these; a setting must not crash startup.
        if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
            return Err(rejected(&secs.to_string(), "expected non-negative seconds"));
        }
        Ok(Duration::from_secs_f64(secs))
    })
}

/// Comma-separated seconds, at least one.
pub(super) fn seconds_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    read(d, |value| {
        let values = parsed_list::<f64>(value)?;
        if let Some(bad) = values
            .iter()
            .find(|v| !v.is_finite() || !(0.0..=1e12).contains(*v))
        {
            return Err(rejected(
                &bad.to_string(),
                "intervals are non-negative seconds",
            ));
        }
        if values.is_empty() {
            return Err(rejected("", "needs at least one interval"));
        }
        Ok(values.into_iter().map(Duration::from_secs_f64).collect())
    })
}

pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    read(d, |value| {
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            _ => Err(rejected(value, "expected true or false")),
        }
    })
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parsed_list<T: FromStr>(value: &str) -> Result<Vec<T>, Rejected>
where
    T::Err: fmt::Display,
{
    items(value)
        .map(|item| {
            item.parse()
                .map_err(|e: T::Err| rejected(item, e.to_string()))
        })
        .collect()
}

/// Comma-separated words.
pub(super) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    read(d, |value| Ok(items(value).map(str::to_string).collect()))
}

/// Comma-separated networks.
pub(super) fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    read(d, parsed_list)
}

/// Text kept as given; blank is unset.
pub(super) fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |value| Ok(value.to_string()))
}

/// Text without its surrounding spaces; blank is unset.
pub(super) fn optional_trimmed<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    optional(d, |value| Ok(value.trim().to_string()))
}

/// A path; blank is the empty path.
pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    read(d, |value| {
        Ok(PathBuf::from(if value.trim().is_empty() {
            ""
        } else {
            value
        }))
    })
}

pub(super) fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    read(d, |value| {
        value.trim().parse().map_err(|_| {
            rejected(
                value,
                "expected an address and port such as 127.0.0.1:2525 or [::]:2525",
            )
        })
    })
}

/// A path that must name a readable file now, not when the stage that needs it starts.
pub(super) fn readable_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    optional(d, |value| {
        let path = PathBuf::from(value.trim());
        match std::fs::File::open(&path).and_then(|f| f.metadata()) {
            Ok(meta) if meta.is_file() => Ok(path),
            Ok(_) => Err(rejected(value, "is not a file")),
            Err(e) => Err(rejected(value, format!("cannot be read: {e}"))),
        }
    })
}

pub(super) fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read(d, |value| {
        let trimmed = value.trim().trim_end_matches('/');
        let allowed = "expected an http:// or https:// URL with a host and no query or \
                       fragment, such as https://t.example.com";
        let rest = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"))
            .ok_or_else(|| rejected(value, allowed))?;
        let authority = rest.split('/').next().unwrap_or("");
        // Tracked links are this base followed by a path: a query or fragment would swallow it.
        if rest.contains(['?', '#'])
            || rest.contains(char::is_whitespace)
            || host_port(authority).is_err()
        {
            return Err(rejected(value, allowed));
        }
        Ok(trimmed.to_string())
    })
}

pub(super) fn database_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |value| {
        match value.trim().parse::<tokio_postgres::Config>() {
            Ok(_) => Ok(value.trim().to_string()),
            Err(e) => Err(rejected(
                &redact_url(value),
                format!("{e}; expected postgresql://user:pass@host:5432/db"),
            )),
        }
    })
}

/// `smtp://[user:pass@]host[:port]` (STARTTLS) or `smtps://...` (TLS from the first byte).
pub(super) fn upstream_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |value| {
        let trimmed = value.trim();
        let shown = redact_url(trimmed);
        let fail = |why: &str| {
            rejected(
                &shown,
                format!("{why}; expected smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465"),
            )
        };
        let (scheme, rest) = trimmed.split_once("://").ok_or_else(|| fail("not a URL"))?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "smtp" | "smtps") {
            return Err(fail(&format!("the scheme `{scheme}` is not smtp or smtps")));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        host_port(host).map_err(|why| fail(&why))?;
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split('&') {
                if let Some(mode) = pair.strip_prefix("tls=") {
                    if !matches!(mode, "none" | "opportunistic" | "required") {
                        return Err(fail(&format!(
                            "tls={mode} is not none, opportunistic or required"
                        )));
                    }
                }
            }
        }
        // The SMTP client reads the URL again when delivery starts, after PostgreSQL and the
        // listeners: what it would refuse there (a host character such as `|`, credentials
        // that are not UTF-8 once decoded) is refused now. The scheme and `tls=` are checked
        // above.
        let without_query = &rest[..rest.find('?').unwrap_or(rest.len())];
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&format!(
            "smtp://{without_query}"
        ))
        .map_err(|e| fail(&format!("the host or credentials cannot be read ({e})")))?;
        // In lower case, so that `SMTP://user:pass@host` gets STARTTLS like `smtp://`.
        Ok(format!("{}://{rest}", scheme.to_ascii_lowercase()))
    })
}

/// The grammar of `X-Mailtally-Track` (rewrite::TrackMode, which this layer cannot import).
pub(super) fn default_track<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read(d, |value| {
        let words: Vec<String> = value
            .split([',', ' '])
            .map(|w| w.trim().to_ascii_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        let known = |w: &String| matches!(w.as_str(), "opens" | "open" | "clicks" | "click");
        let off = words.len() == 1 && matches!(words[0].as_str(), "off" | "none");
        if off || (!words.is_empty() && words.iter().all(known)) {
            return Ok(value.trim().to_string());
        }
        Err(rejected(
            value,
            "expected opens,clicks, opens, clicks or off",
        ))
    })
}

/// A DNS name (DKIM domain or selector): dot-separated labels of letters, digits, `-` and `_`.
pub(super) fn dns_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |value| {
        let name = value.trim().trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(rejected(
                value,
                "expected a DNS name such as example.com (letters, digits, - and _, dot-separated)",
            ));
        }
        Ok(name.to_string())
    })
}

pub(super) fn suppressed_recipients<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<super::SuppressedRecipients, D::Error> {
    read(d, |value| {
        match value.trim().to_ascii_lowercase().as_str() {
            "refuse" => Ok(super::SuppressedRecipients::Refuse),
            "record" => Ok(super::SuppressedRecipients::Record),
            other => Err(rejected(other, "expected refuse or record")),
        }
    })
}

pub(super) fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    read(d, |value| {
        match value.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(rejected(other, "expected human or json")),
        }
    })
}

pub(super) fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read(d, |value| {
        match tracing_subscriber::EnvFilter::try_new(value.trim()) {
            Ok(_) => Ok(value.trim().to_string()),
            Err(e) => Err(rejected(
                value,
                format!(
                    "{e}; expected a tracing filter such as info, warn or info,mailtally=debug"
                ),
            )),
        }
    })
}

/// The URL (or libpq key=value string) with its password replaced, fit for an error message or
/// a log.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return hide_password_pairs(url);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let shown = match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    };
    hide_password_pairs(&shown)
}

/// `password=...` hidden where libpq takes it besides the userinfo: a key=value connection
/// string (`host=h password='a b'`) and a URL parameter (`?password=...`).
fn hide_password_pairs(s: &str) -> String {
    const KEY: &str = "password";
    let b = s.as_bytes();
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(off) = lower[from..].find(KEY) {
        let start = from + off;
        from = start + KEY.len();
        let at_key = start == 0 || matches!(b[start - 1], b' ' | b'\t' | b'\n' | b'?' | b'&');
        let mut value = from;
        while b.get(value) == Some(&b' ') {
            value += 1;
        }
        if !at_key || b.get(value) != Some(&b'=') {
            continue;
        }
        value += 1;
        while b.get(value) == Some(&b' ') {
            value += 1;
        }
        let mut end = value;
        if b.get(end) == Some(&b'\'') {
            end += 1;
            while end < b.len() && b[end] != b'\'' {
                end += if b[end] == b'\\' { 2 } else { 1 };
            }
            end = (end + 1).min(b.len());
        } else {
            while end < b.len() && !matches!(b[end], b' ' | b'\t' | b'\n' | b'&') {
                end += 1;
            }
        }
        out.push_str(&s[copied..value]);
        out.push_str("***");
        copied = end;
        from = end;
    }
    out.push_str(&s[copied..]);
    out
}

/// `host[:port]` or `[v6]:port`: a non-empty host without spaces, and a port 1-65535 if any.
fn host_port(authority: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
        (addr, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "@/?#[]".contains(c)) {
        return Err("no host".into());
    }
    if let Some(port) = port {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{port}` is not a port"))?;
    }
    Ok(())
}

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V6(_), IpAddr::V4(v4)) => self.contains(IpAddr::V6(v4.to_ipv6_mapped())),
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => self.contains(IpAddr::V4(v4)),
                None => false,
            },
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}
