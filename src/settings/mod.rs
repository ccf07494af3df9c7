//! Settings: environment variables, an optional TOML file with the same keys, and defaults.
//!
//! Precedence is environment, then file, then default. Every key mailtally reads is listed in
//! [`SETTINGS`]; the file may hold nothing else, so that a typo is an error at startup instead
//! of a setting silently ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// One setting: its key, its default (as text, `None` when unset by default) and what it does.
pub struct SettingDoc {
    pub key: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// Every setting mailtally reads. `--help` prints this table.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "DATABASE_URL",
        default: None,
        help: "PostgreSQL URL; unset: a private cluster under MAILTALLY_DATA/pg",
    },
    SettingDoc {
        key: "MAILTALLY_DATA",
        default: Some("./var"),
        help: "data directory (embedded cluster, TLS certificate, event spool)",
    },
    SettingDoc {
        key: "SMTP_LISTEN",
        default: Some("127.0.0.1:2525"),
        help: "SMTP submission listener",
    },
    SettingDoc {
        key: "HTTP_LISTEN",
        default: Some("127.0.0.1:8080"),
        help: "HTTP listener: tracking, API, Insights, /metrics",
    },
    SettingDoc {
        key: "PUBLIC_URL",
        default: Some("http://127.0.0.1:8080"),
        help: "base URL of tracked links and the pixel",
    },
    SettingDoc {
        key: "UPSTREAM_URL",
        default: None,
        help: "smtp://user:pass@host:587 (STARTTLS) or smtps://...; unset: the capture sink",
    },
    SettingDoc {
        key: "TRACKING_SECRET",
        default: None,
        help: "token signing secret; unset: generated on first start and kept in the database",
    },
    SettingDoc {
        key: "TRACKING_SECRET_PREVIOUS",
        default: None,
        help: "comma-separated rotated-out secrets whose tokens still verify",
    },
    SettingDoc {
        key: "TLS_CERT",
        default: None,
        help: "PEM certificate chain for STARTTLS; unset: a self-signed one under MAILTALLY_DATA",
    },
    SettingDoc {
        key: "TLS_KEY",
        default: None,
        help: "PEM private key for TLS_CERT",
    },
    SettingDoc {
        key: "ALLOW_PLAIN_AUTH_ON_LOOPBACK",
        default: Some("true"),
        help: "allow AUTH without TLS on loopback listeners (development)",
    },
    SettingDoc {
        key: "SUBMIT_TRUSTED_NETWORKS",
        default: None,
        help: "comma-separated CIDRs that may submit without AUTH (sender must be a known user)",
    },
    SettingDoc {
        key: "MAX_MESSAGE_SIZE",
        default: Some("26214400"),
        help: "largest message accepted, in bytes (552 beyond)",
    },
    SettingDoc {
        key: "MAX_RECIPIENTS",
        default: Some("100"),
        help: "recipients per message (452 beyond)",
    },
    SettingDoc {
        key: "MAX_SMTP_SESSIONS",
        default: Some("500"),
        help: "SMTP sessions at once (421 beyond)",
    },
    SettingDoc {
        key: "SMTP_IDLE_TIMEOUT",
        default: Some("300"),
        help: "seconds an SMTP session may wait for a command",
    },
    SettingDoc {
        key: "SMTP_MAX_AUTH_FAILURES",
        default: Some("3"),
        help: "failed AUTH attempts before the session is closed",
    },
    SettingDoc {
        key: "AUTH_MAX_FAILURES_PER_IP",
        default: Some("10"),
        help: "failed SMTP AUTH attempts or bad API tokens per client IP per window (0: no limit); then SMTP 421 4.7.0, HTTP 429",
    },
    SettingDoc {
        key: "AUTH_FAILURE_WINDOW",
        default: Some("300"),
        help: "seconds over which AUTH_MAX_FAILURES_PER_IP counts, and how long an address is then refused",
    },
    SettingDoc {
        key: "SUBMIT_OWN_ADDRESS_ONLY",
        default: Some("false"),
        help: "an authenticated sender's MAIL FROM must be their own address (553 5.7.1 otherwise)",
    },
    SettingDoc {
        key: "HTTP_MAX_BODY",
        default: Some("1048576"),
        help: "largest HTTP request body in bytes (413 beyond)",
    },
    SettingDoc {
        key: "HTTP_MAX_URL",
        default: Some("8192"),
        help: "longest HTTP request target (path and query) in bytes (414 beyond)",
    },
    SettingDoc {
        key: "DELIVERY_WORKERS",
        default: Some("16"),
        help: "concurrent upstream deliveries per process",
    },
    SettingDoc {
        key: "RETRY_SCHEDULE",
        default: Some("60,300,900,3600"),
        help: "seconds between delivery attempts; the last repeats",
    },
    SettingDoc {
        key: "UPSTREAM_TIMEOUT",
        default: Some("60"),
        help: "seconds the upstream may take to answer one SMTP command (a stalled upstream is a deferral)",
    },
    SettingDoc {
        key: "MAX_QUEUE_AGE",
        default: Some("432000"),
        help: "seconds a deferred copy is retried before it bounces",
    },
    SettingDoc {
        key: "METRICS_TOKEN",
        default: None,
        help: "bearer token /metrics requires (Authorization: Bearer ...); unset: /metrics is open",
    },
    SettingDoc {
        key: "TRUSTED_PROXIES",
        default: None,
        help: "comma-separated CIDRs whose X-Forwarded-For is honoured",
    },
    SettingDoc {
        key: "ANONYMIZE_IP",
        default: Some("false"),
        help: "store client addresses with the last octet zeroed",
    },
    SettingDoc {
        key: "TRACK_TEXT_LINKS",
        default: Some("true"),
        help: "track URLs in text/plain parts",
    },
    SettingDoc {
        key: "DEFAULT_TRACK",
        default: Some("opens,clicks"),
        help: "tracking when X-Mailtally-Track is absent",
    },
    SettingDoc {
        key: "DKIM_DOMAIN",
        default: None,
        help: "DKIM signing domain (with DKIM_SELECTOR and DKIM_KEY)",
    },
    SettingDoc {
        key: "DKIM_SELECTOR",
        default: None,
        help: "DKIM selector",
    },
    SettingDoc {
        key: "DKIM_KEY",
        default: None,
        help: "path to the DKIM private key (PEM, RSA or Ed25519)",
    },
    SettingDoc {
        key: "APPLE_MPP_CIDRS",
        default: None,
        help: "file of Apple Mail Privacy Protection CIDRs; unset: the built-in list",
    },
    SettingDoc {
        key: "PREFETCH_WINDOW",
        default: Some("5"),
        help: "seconds after delivery within which an open counts as prefetch, not a person (0: off; at most 600)",
    },
    SettingDoc {
        key: "CLICK_SCANNER_WINDOW",
        default: Some("10"),
        help: "seconds after delivery within which a click counts as a link scanner, not a person (0: off; at most 600)",
    },
    SettingDoc {
        key: "WEBHOOK_CLICK_HOLD",
        default: Some("30"),
        help: "seconds a click notification waits so that a scanner sweep is classified first",
    },
    SettingDoc {
        key: "WEBHOOK_RETRY_SCHEDULE",
        default: Some("10,60,300,1800,7200"),
        help: "seconds between webhook attempts; the last repeats",
    },
    SettingDoc {
        key: "WEBHOOK_MAX_AGE",
        default: Some("86400"),
        help: "seconds a webhook delivery is retried before it is given up",
    },
    SettingDoc {
        key: "WEBHOOK_DISABLE_AFTER",
        default: Some("50"),
        help: "failed attempts in a row after which an endpoint is disabled",
    },
    SettingDoc {
        key: "OUTBOUND_ALLOWED_NETWORKS",
        default: None,
        help: "comma-separated CIDRs that webhooks and IMAP mailboxes may reach although they are loopback, private, link-local or reserved (refused by default)",
    },
    SettingDoc {
        key: "RETENTION_DAYS",
        default: Some("0"),
        help: "drop raw events older than this many days (whole months), keeping reports; 0 keeps them all",
    },
    SettingDoc {
        key: "SENDER_RATE_PER_MINUTE",
        default: Some("600"),
        help: "most messages a minute each sender's group emails and follow-ups leave at; 0: no limit",
    },
    SettingDoc {
        key: "SUBMISSION_MAX_BYTES",
        default: Some("52428800"),
        help: "most bytes of copies one submission may queue (an SMTP message's size times its recipients, a group email's copies); 0: no limit; SMTP 552 5.3.4, HTTP 413 beyond",
    },
    SettingDoc {
        key: "SENDER_MAX_BYTES_PER_HOUR",
        default: Some("536870912"),
        help: "bytes of copies each sender may queue an hour, by every way of sending (the whole budget at once, then at its pace); 0: no limit; SMTP 451 4.7.0, HTTP 429 with Retry-After beyond",
    },
    SettingDoc {
        key: "FOLLOWUP_CHECK_EVERY",
        default: Some("15"),
        help: "seconds between two looks for due follow-ups",
    },
    SettingDoc {
        key: "MAILBOX_KEY",
        default: None,
        help: "secret (32+ characters) that encrypts IMAP passwords at rest; unset: reply detection off",
    },
    SettingDoc {
        key: "MAILBOX_POLL_EVERY",
        default: Some("60"),
        help: "seconds between two looks into a mailbox whose server has no IMAP IDLE",
    },
    SettingDoc {
        key: "MAILBOX_ALLOW_PLAINTEXT",
        default: Some("false"),
        help: "allow mailboxes with `security: none` (the IMAP password crosses the network in clear)",
    },
    SettingDoc {
        key: "MAILBOX_MAX_FAILURES",
        default: Some("20"),
        help: "failed IMAP connections in a row (with backoff up to 5 minutes) after which a mailbox is marked failed until it is set again",
    },
    SettingDoc {
        key: "EVENT_BATCH_SIZE",
        default: Some("1000"),
        help: "events per COPY batch (a batch is also written every 100 ms)",
    },
    SettingDoc {
        key: "EVENT_CHANNEL_CAPACITY",
        default: Some("65536"),
        help: "events queued for the writer; beyond, they go to the disk spool",
    },
    SettingDoc {
        key: "LOG_FORMAT",
        default: Some("human"),
        help: "human or json",
    },
    SettingDoc {
        key: "LOG_LEVEL",
        default: Some("info"),
        help: "tracing filter, e.g. info or mailtally=debug",
    },
];

// The causes below are part of each message and deliberately not `source`s: a reporter that
// prints the chain would otherwise print them twice.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read settings file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("settings file {path} is not valid TOML: {cause}")]
    Toml {
        path: PathBuf,
        cause: Box<toml::de::Error>,
    },
    #[error("settings file {path}: unknown key `{key}`{}", likely_hint(.likely))]
    UnknownKey {
        path: PathBuf,
        key: String,
        likely: Option<&'static str>,
    },
    #[error("settings file {path}: `{key}` must be a string, number or boolean")]
    BadType { path: PathBuf, key: String },
    #[error("setting {key}={value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Raw key/value view of the settings, before they are typed.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    file: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    unknown_env: Vec<UnknownVariable>,
}

/// An environment variable that looks meant for mailtally but is none of its keys: a typo
/// would otherwise leave the setting at its default without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    pub name: String,
    /// The known key it most likely means, when one is close.
    pub likely: Option<&'static str>,
}

/// `MAILTALLY_*` variables that are not settings: read by the scripts and the test harness.
const NON_SETTING_VARIABLES: &[&str] = &[
    "MAILTALLY_BIN",
    "MAILTALLY_PID",
    "MAILTALLY_KEEP_TEST_DB",
    "MAILTALLY_SOAK",
];

impl Sources {
    /// Reads the environment and, when given, the TOML file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env = SETTINGS
            .iter()
            .filter_map(|s| std::env::var(s.key).ok().map(|v| (s.key.to_string(), v)))
            .collect();
        let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
        let unknown_env = unknown_variables(names);
        let file = match file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        Ok(Sources {
            file,
            env,
            unknown_env,
        })
    }

    /// Environment variables that look like misspelt or unknown mailtally settings.
    pub fn unknown_variables(&self) -> &[UnknownVariable] {
        &self.unknown_env
    }

    /// Sources made only of the given pairs (tests, embedding).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Sources {
            file: BTreeMap::new(),
            unknown_env: Vec::new(),
            env: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn get(&self, key: &'static str) -> Option<String> {
        if let Some(v) = self.env.get(key).or_else(|| self.file.get(key)) {
            return Some(v.clone());
        }
        SETTINGS
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.default.map(str::to_string))
    }
}

/// The names among `names` that are no setting but look like one: `MAILTALLY_*`, a known key
/// in the wrong case, or within a typo or two of a known key.
pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<UnknownVariable> {
    let mut out: Vec<UnknownVariable> = names
        .into_iter()
        .filter(|name| !SETTINGS.iter().any(|s| s.key == name))
        .filter(|name| !NON_SETTING_VARIABLES.contains(&name.as_str()))
        .filter_map(|name| {
            let likely = likely_key(&name);
            let ours = name.to_ascii_uppercase().starts_with("MAILTALLY_");
            (likely.is_some() || ours).then_some(UnknownVariable { name, likely })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The known key `name` most likely means: the same key in another case, or the nearest key
/// within one edit (two for keys of 10 characters or more, where two typos are common and a
/// chance match with an unrelated variable is not).
pub fn likely_key(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    SETTINGS
        .iter()
        .map(|s| (edit_distance(&upper, s.key), s.key))
        .filter(|(d, key)| *d <= if key.len() >= 10 { 2 } else { 1 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, key)| key)
}

fn likely_hint(likely: &Option<&'static str>) -> String {
    match likely {
        Some(key) => format!(" (did you mean `{key}`?)"),
        None => " (known keys: see `mailtally --help`)".to_string(),
    }
}

/// Optimal string alignment distance: insertions, deletions, substitutions and transpositions
/// of adjacent characters (`UPSTREAM_ULR` is one edit from `UPSTREAM_URL`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let table: toml::Table = text.parse().map_err(|cause| ConfigError::Toml {
        path: path.to_owned(),
        cause: Box::new(cause),
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let upper = key.to_ascii_uppercase();
        if !SETTINGS.iter().any(|s| s.key == upper) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                likely: likely_key(&upper),
                key,
            });
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => parts.push(s),
                        toml::Value::Integer(i) => parts.push(i.to_string()),
                        _ => {
                            return Err(ConfigError::BadType {
                                path: path.to_owned(),
                                key,
                            })
                        }
                    }
                }
                parts.join(",")
            }
            _ => {
                return Err(ConfigError::BadType {
                    path: path.to_owned(),
                    key,
                })
            }
        };
        out.insert(upper, text);
    }
    Ok(out)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// The typed settings of one mailtally process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub smtp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub public_url: String,
    pub upstream_url: Option<String>,
    pub tracking_secret: Option<String>,
    pub tracking_secret_previous: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_plain_auth_on_loopback: bool,
    pub submit_trusted_networks: Vec<Cidr>,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_smtp_sessions: usize,
    pub smtp_idle_timeout: Duration,
    pub smtp_max_auth_failures: u32,
    pub auth_max_failures_per_ip: u32,
    pub auth_failure_window: Duration,
    pub submit_own_address_only: bool,
    pub http_max_body: usize,
    pub http_max_url: usize,
    pub delivery_workers: usize,
    pub retry_schedule: Vec<Duration>,
    pub max_queue_age: Duration,
    pub upstream_timeout: Duration,
    pub trusted_proxies: Vec<Cidr>,
    pub metrics_token: Option<String>,
    pub anonymize_ip: bool,
    pub track_text_links: bool,
    pub default_track: String,
    pub dkim_domain: Option<String>,
    pub dkim_selector: Option<String>,
    pub dkim_key: Option<PathBuf>,
    pub apple_mpp_cidrs: Option<PathBuf>,
    pub prefetch_window: Duration,
    pub click_scanner_window: Duration,
    pub webhook_click_hold: Duration,
    pub webhook_retry_schedule: Vec<Duration>,
    pub webhook_max_age: Duration,
    pub webhook_disable_after: u32,
    pub outbound_allowed_networks: Vec<Cidr>,
    pub retention_days: u32,
    pub sender_rate_per_minute: u32,
    pub submission_max_bytes: u64,
    pub sender_max_bytes_per_hour: u64,
    pub followup_check_every: Duration,
    pub mailbox_key: Option<String>,
    pub mailbox_poll_every: Duration,
    pub mailbox_allow_plaintext: bool,
    pub mailbox_max_failures: u32,
    pub event_batch_size: usize,
    pub event_channel_capacity: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Settings {
    /// Environment, then the optional file, then defaults.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(&Sources::load(file)?)
    }

    pub fn from_sources(src: &Sources) -> Result<Self, ConfigError> {
        let opt = |key| src.get(key).filter(|v| !v.trim().is_empty());
        let req = |key: &'static str| opt(key).unwrap_or_default();
        let settings = Settings {
            database_url: opt("DATABASE_URL").map(database_url).transpose()?,
            data_dir: PathBuf::from(req("MAILTALLY_DATA")),
            smtp_listen: listen(src, "SMTP_LISTEN")?,
            http_listen: listen(src, "HTTP_LISTEN")?,
            public_url: public_url(&req("PUBLIC_URL"))?,
            upstream_url: opt("UPSTREAM_URL").map(upstream_url).transpose()?,
            tracking_secret: opt("TRACKING_SECRET"),
            tracking_secret_previous: list(src, "TRACKING_SECRET_PREVIOUS"),
            tls_cert: readable_file(src, "TLS_CERT")?,
            tls_key: readable_file(src, "TLS_KEY")?,
            allow_plain_auth_on_loopback: parse_bool(src, "ALLOW_PLAIN_AUTH_ON_LOOPBACK")?,
            submit_trusted_networks: parse_list(src, "SUBMIT_TRUSTED_NETWORKS")?,
            max_message_size: positive(src, "MAX_MESSAGE_SIZE")?,
            max_recipients: positive(src, "MAX_RECIPIENTS")?,
            max_smtp_sessions: positive(src, "MAX_SMTP_SESSIONS")?,
            smtp_idle_timeout: Duration::from_secs(parse(src, "SMTP_IDLE_TIMEOUT")?),
            smtp_max_auth_failures: parse(src, "SMTP_MAX_AUTH_FAILURES")?,
            auth_max_failures_per_ip: parse(src, "AUTH_MAX_FAILURES_PER_IP")?,
            auth_failure_window: seconds(src, "AUTH_FAILURE_WINDOW")?,
            submit_own_address_only: parse_bool(src, "SUBMIT_OWN_ADDRESS_ONLY")?,
            http_max_body: positive(src, "HTTP_MAX_BODY")?,
            http_max_url: positive(src, "HTTP_MAX_URL")?,
            delivery_workers: positive(src, "DELIVERY_WORKERS")?,
            retry_schedule: seconds_list(src, "RETRY_SCHEDULE")?,
            max_queue_age: seconds(src, "MAX_QUEUE_AGE")?,
            upstream_timeout: seconds(src, "UPSTREAM_TIMEOUT")?,
            trusted_proxies: parse_list(src, "TRUSTED_PROXIES")?,
            metrics_token: opt("METRICS_TOKEN").map(|t| t.trim().to_string()),
            anonymize_ip: parse_bool(src, "ANONYMIZE_IP")?,
            track_text_links: parse_bool(src, "TRACK_TEXT_LINKS")?,
            default_track: default_track(&req("DEFAULT_TRACK"))?,
            dkim_domain: opt("DKIM_DOMAIN")
                .map(|v| dns_name("DKIM_DOMAIN", v))
                .transpose()?,
            dkim_selector: opt("DKIM_SELECTOR")
                .map(|v| dns_name("DKIM_SELECTOR", v))
                .transpose()?,
            dkim_key: readable_file(src, "DKIM_KEY")?,
            apple_mpp_cidrs: readable_file(src, "APPLE_MPP_CIDRS")?,
            prefetch_window: seconds(src, "PREFETCH_WINDOW")?,
            click_scanner_window: seconds(src, "CLICK_SCANNER_WINDOW")?,
            webhook_click_hold: seconds(src, "WEBHOOK_CLICK_HOLD")?,
            webhook_retry_schedule: seconds_list(src, "WEBHOOK_RETRY_SCHEDULE")?,
            webhook_max_age: seconds(src, "WEBHOOK_MAX_AGE")?,
            webhook_disable_after: parse(src, "WEBHOOK_DISABLE_AFTER")?,
            outbound_allowed_networks: parse_list(src, "OUTBOUND_ALLOWED_NETWORKS")?,
            retention_days: parse(src, "RETENTION_DAYS")?,
            sender_rate_per_minute: parse(src, "SENDER_RATE_PER_MINUTE")?,
            submission_max_bytes: parse(src, "SUBMISSION_MAX_BYTES")?,
            sender_max_bytes_per_hour: parse(src, "SENDER_MAX_BYTES_PER_HOUR")?,
            followup_check_every: seconds(src, "FOLLOWUP_CHECK_EVERY")?,
            mailbox_key: opt("MAILBOX_KEY"),
            mailbox_poll_every: seconds(src, "MAILBOX_POLL_EVERY")?,
            mailbox_allow_plaintext: parse_bool(src, "MAILBOX_ALLOW_PLAINTEXT")?,
            mailbox_max_failures: parse(src, "MAILBOX_MAX_FAILURES")?,
            event_batch_size: parse(src, "EVENT_BATCH_SIZE")?,
            event_channel_capacity: parse(src, "EVENT_CHANNEL_CAPACITY")?,
            log_format: match req("LOG_FORMAT").to_ascii_lowercase().as_str() {
                "human" | "text" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "LOG_FORMAT",
                        value: other.to_string(),
                        reason: "expected human or json".into(),
                    })
                }
            },
            log_level: log_level(&req("LOG_LEVEL"))?,
        };
        if settings.event_batch_size == 0 || settings.event_channel_capacity == 0 {
            return Err(invalid(
                "EVENT_BATCH_SIZE",
                "0",
                "EVENT_BATCH_SIZE and EVENT_CHANNEL_CAPACITY must be at least 1",
            ));
        }
        if settings.mailbox_key.as_ref().is_some_and(|k| k.len() < 32) {
            return Err(invalid(
                "MAILBOX_KEY",
                "(hidden)",
                "needs at least 32 characters",
            ));
        }
        if settings.retry_schedule.is_empty() {
            return Err(invalid("RETRY_SCHEDULE", "", "needs at least one interval"));
        }
        if settings.webhook_retry_schedule.is_empty() {
            return Err(invalid(
                "WEBHOOK_RETRY_SCHEDULE",
                "",
                "needs at least one interval",
            ));
        }
        // The tracker knows delivery times for ten minutes only; a longer window would never apply.
        for (key, window) in [
            ("PREFETCH_WINDOW", settings.prefetch_window),
            ("CLICK_SCANNER_WINDOW", settings.click_scanner_window),
        ] {
            if window > Duration::from_secs(600) {
                return Err(invalid(
                    key,
                    &window.as_secs_f64().to_string(),
                    "at most 600 seconds",
                ));
            }
        }
        let dkim = [
            ("DKIM_DOMAIN", settings.dkim_domain.is_some()),
            ("DKIM_SELECTOR", settings.dkim_selector.is_some()),
            ("DKIM_KEY", settings.dkim_key.is_some()),
        ];
        if dkim.iter().any(|(_, set)| *set) {
            if let Some(missing) = dkim.iter().find(|(_, set)| !*set).map(|(key, _)| *key) {
                return Err(invalid(
                    missing,
                    "",
                    "DKIM_DOMAIN, DKIM_SELECTOR and DKIM_KEY are set together",
                ));
            }
        }
        if settings.tls_cert.is_some() != settings.tls_key.is_some() {
            return Err(invalid(
                "TLS_CERT",
                "",
                "TLS_CERT and TLS_KEY are set together",
            ));
        }
        Ok(settings)
    }

    /// The settings table as text for `--help`: each key on its line, its help below it,
    /// wrapped and indented like clap's own long help, so that no line needs rewrapping.
    pub fn help_table() -> String {
        let mut out = String::from(
            "Settings (environment variables, or the same keys in the --config TOML file):\n",
        );
        for s in SETTINGS {
            out.push_str("  ");
            out.push_str(s.key);
            out.push('\n');
            let width = HELP_WIDTH - HELP_INDENT.len();
            let mut lines = wrap(s.help, width);
            // The default is kept whole: on the last line when it fits, else on its own.
            if let Some(d) = s.default {
                let default = format!("[default: {d}]");
                match lines.last_mut() {
                    Some(last) if last.chars().count() + 1 + default.chars().count() <= width => {
                        last.push(' ');
                        last.push_str(&default);
                    }
                    _ => lines.push(default),
                }
            }
            for line in lines {
                out.push_str(HELP_INDENT);
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

/// Width of the settings table, within clap's own wrapping width so that it is left alone.
pub const HELP_WIDTH: usize = 80;
const HELP_INDENT: &str = "          ";

/// Greedy word wrap; a word longer than `width` stands on its own line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse<T: FromStr>(src: &Sources, key: &'static str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let value = src.get(key).unwrap_or_default();
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| invalid(key, &value, &e.to_string()))
}

fn parse_bool(src: &Sources, key: &'static str) -> Result<bool, ConfigError> {
    let value = src.get(key).unwrap_or_default();
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(key, &value, "expected true or false")),
    }
}

fn list(src: &Sources, key: &'static str) -> Vec<String> {
    src.get(key)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_list<T: FromStr>(src: &Sources, key: &'static str) -> Result<Vec<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    list(src, key)
        .into_iter()
        .map(|item| {
            item.parse()
                .map_err(|e: T::Err| invalid(key, &item, &e.to_string()))
        })
        .collect()
}

fn seconds(src: &Sources, key: &'static str) -> Result<Duration, ConfigError> {
    let value: f64 = parse(src, key)?;
    // Duration::from_secs_f64 panics on these; a setting must not crash startup.
    if !value.is_finite() || !(0.0..=1e12).contains(&value) {
        return Err(invalid(
            key,
            &value.to_string(),
            "expected non-negative seconds",
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

fn seconds_list(src: &Sources, key: &'static str) -> Result<Vec<Duration>, ConfigError> {
    let values = parse_list::<f64>(src, key)?;
    if let Some(bad) = values
        .iter()
        .find(|v| !v.is_finite() || !(0.0..=1e12).contains(*v))
    {
        return Err(invalid(
            key,
            &bad.to_string(),
            "intervals are non-negative seconds",
        ));
    }
    Ok(values.into_iter().map(Duration::from_secs_f64).collect())
}

fn public_url(value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim().trim_end_matches('/');
    let allowed = "expected an http:// or https:// URL with a host and no query or fragment, \
                   such as https://t.example.com";
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| invalid("PUBLIC_URL", value, allowed))?;
    let authority = rest.split('/').next().unwrap_or("");
    // Tracked links are this base followed by a path: a query or fragment would swallow it.
    if rest.contains(['?', '#'])
        || rest.contains(char::is_whitespace)
        || host_port(authority).is_err()
    {
        return Err(invalid("PUBLIC_URL", value, allowed));
    }
    Ok(trimmed.to_string())
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

fn database_url(value: String) -> Result<String, ConfigError> {
    match value.trim().parse::<tokio_postgres::Config>() {
        Ok(_) => Ok(value.trim().to_string()),
        Err(e) => Err(invalid(
            "DATABASE_URL",
            &redact_url(&value),
            &format!("{e}; expected postgresql://user:pass@host:5432/db"),
        )),
    }
}

/// `smtp://[user:pass@]host[:port]` (STARTTLS) or `smtps://...` (TLS from the first byte).
fn upstream_url(value: String) -> Result<String, ConfigError> {
    let trimmed = value.trim();
    let shown = redact_url(trimmed);
    let fail = |why: &str| {
        invalid(
            "UPSTREAM_URL",
            &shown,
            &format!("{why}; expected smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465"),
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
    // listeners: what it would refuse there (a host character such as `|`, credentials that are
    // not UTF-8 once decoded) is refused now. The scheme and `tls=` are checked above.
    let without_query = &rest[..rest.find('?').unwrap_or(rest.len())];
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&format!(
        "smtp://{without_query}"
    ))
    .map_err(|e| fail(&format!("the host or credentials cannot be read ({e})")))?;
    // In lower case, so that `SMTP://user:pass@host` gets STARTTLS like `smtp://`.
    Ok(format!("{}://{rest}", scheme.to_ascii_lowercase()))
}

fn listen(src: &Sources, key: &'static str) -> Result<SocketAddr, ConfigError> {
    let value = src.get(key).unwrap_or_default();
    value.trim().parse().map_err(|_| {
        invalid(
            key,
            &value,
            "expected an address and port such as 127.0.0.1:2525 or [::]:2525",
        )
    })
}

/// A count that must be at least 1 (0 would refuse everything or run nothing).
fn positive<T: FromStr + PartialOrd + From<u8>>(
    src: &Sources,
    key: &'static str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let value: T = parse(src, key)?;
    if value < T::from(1) {
        return Err(invalid(
            key,
            &src.get(key).unwrap_or_default(),
            "must be at least 1",
        ));
    }
    Ok(value)
}

/// A path that must name a readable file now, not when the stage that needs it starts.
fn readable_file(src: &Sources, key: &'static str) -> Result<Option<PathBuf>, ConfigError> {
    let Some(value) = src.get(key).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(value.trim());
    match std::fs::File::open(&path).and_then(|f| f.metadata()) {
        Ok(meta) if meta.is_file() => Ok(Some(path)),
        Ok(_) => Err(invalid(key, &value, "is not a file")),
        Err(e) => Err(invalid(key, &value, &format!("cannot be read: {e}"))),
    }
}

/// The grammar of `X-Mailtally-Track` (rewrite::TrackMode, which this layer cannot import).
fn default_track(value: &str) -> Result<String, ConfigError> {
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
    Err(invalid(
        "DEFAULT_TRACK",
        value,
        "expected opens,clicks, opens, clicks or off",
    ))
}

/// A DNS name (DKIM domain or selector): dot-separated labels of letters, digits, `-` and `_`.
fn dns_name(key: &'static str, value: String) -> Result<String, ConfigError> {
    let name = value.trim().trim_end_matches('.');
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(invalid(
            key,
            &value,
            "expected a DNS name such as example.com (letters, digits, - and _, dot-separated)",
        ));
    }
    Ok(name.to_string())
}

fn log_level(value: &str) -> Result<String, ConfigError> {
    match tracing_subscriber::EnvFilter::try_new(value.trim()) {
        Ok(_) => Ok(value.trim().to_string()),
        Err(e) => Err(invalid(
            "LOG_LEVEL",
            value,
            &format!("{e}; expected a tracing filter such as info, warn or info,mailtally=debug"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = Settings::from_sources(&Sources::default()).unwrap();
        assert_eq!(s.smtp_listen.port(), 2525);
        assert_eq!(s.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.retry_schedule.len(), 4);
        assert!(s.allow_plain_auth_on_loopback);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Settings::from_sources(&Sources::from_pairs([("MAX_RECIPIENTS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAX_RECIPIENTS"), "{err}");
        for (key, value) in [
            ("MAX_QUEUE_AGE", "-1"),
            ("RETRY_SCHEDULE", "1,inf"),
            ("WEBHOOK_CLICK_HOLD", "NaN"),
            ("PREFETCH_WINDOW", "601"),
            ("CLICK_SCANNER_WINDOW", "-1"),
        ] {
            let err = Settings::from_sources(&Sources::from_pairs([(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn misspelt_keys_point_to_the_likely_one() {
        assert_eq!(likely_key("UPSTREAM_ULR"), Some("UPSTREAM_URL"));
        assert_eq!(likely_key("PUBLIC_URI"), Some("PUBLIC_URL"));
        assert_eq!(likely_key("smtp_listen"), Some("SMTP_LISTEN"));
        assert_eq!(
            likely_key("SUBMIT_TRUSTED_NETWORK"),
            Some("SUBMIT_TRUSTED_NETWORKS")
        );
        for unrelated in [
            "PATH",
            "HOME",
            "HTTP_PROXY",
            "SSL_CERT_FILE",
            "RUST_LOG",
            "TERM",
        ] {
            assert_eq!(likely_key(unrelated), None, "{unrelated}");
        }
        let names = [
            "PATH",
            "MAILTALLY_DATADIR",
            "MAILTALLY_DATA",
            "MAILTALLY_SOAK",
            "LOG_LEVL",
        ];
        let unknown = unknown_variables(names.map(String::from));
        assert_eq!(
            unknown,
            vec![
                UnknownVariable {
                    name: "LOG_LEVL".into(),
                    likely: Some("LOG_LEVEL")
                },
                UnknownVariable {
                    name: "MAILTALLY_DATADIR".into(),
                    likely: None
                },
            ]
        );
    }

    #[test]
    fn urls_in_errors_hide_their_password() {
        assert_eq!(
            redact_url("smtp://ann:hunter2@mail.example.com:587"),
            "smtp://ann:***@mail.example.com:587"
        );
        assert_eq!(
            redact_url("smtps://mail.example.com"),
            "smtps://mail.example.com"
        );
        // libpq also takes a password as a key=value pair (quoted or not) or a URL parameter.
        assert_eq!(
            redact_url("host=/tmp password=hunter2 port=x"),
            "host=/tmp password=*** port=x"
        );
        assert_eq!(
            redact_url("user=u PASSWORD = 'hun ter\\'2' dbname=d"),
            "user=u PASSWORD = *** dbname=d"
        );
        assert_eq!(
            redact_url("postgresql://u@h/db?sslmode=off&password=hunter2&port=x"),
            "postgresql://u@h/db?sslmode=off&password=***&port=x"
        );
        assert_eq!(
            redact_url("postgresql://u:hunter2@h/db?application_name=nopassword=1"),
            "postgresql://u:***@h/db?application_name=nopassword=1"
        );
        let err = Settings::from_sources(&Sources::from_pairs([(
            "UPSTREAM_URL",
            "ftp://ann:hunter2@mail.example.com",
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("UPSTREAM_URL") && !err.contains("hunter2"),
            "{err}"
        );
        for good in [
            "smtp://ann:pw@mail.example.com:587",
            "smtps://mail.example.com",
            "smtp://[::1]:2525?tls=none",
        ] {
            let s = Settings::from_sources(&Sources::from_pairs([("UPSTREAM_URL", good)]));
            assert!(s.is_ok(), "{good}: {:?}", s.err());
        }
    }

    #[test]
    fn help_lines_fit_and_keep_defaults_whole() {
        for line in Settings::help_table().lines() {
            assert!(line.chars().count() <= HELP_WIDTH, "{line:?}");
            if line.contains("[default:") {
                assert!(line.contains(']'), "default split across lines: {line:?}");
            }
        }
    }

    #[test]
    fn cidr_matching() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn file_rejects_unknown_keys_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "SMTP_LISTEN = \"127.0.0.1:2600\"\nmax_recipients = 7\n",
        )
        .unwrap();
        let mut src = Sources::load(Some(&path)).unwrap();
        src.env.clear();
        let s = Settings::from_sources(&src).unwrap();
        assert_eq!(s.smtp_listen.port(), 2600);
        assert_eq!(s.max_recipients, 7);
        src.env.insert("MAX_RECIPIENTS".into(), "9".into());
        assert_eq!(Settings::from_sources(&src).unwrap().max_recipients, 9);

        std::fs::write(&path, "SMTP_LISTN = \"x\"\n").unwrap();
        let err = Sources::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("unknown key `SMTP_LISTN`"), "{err}");
    }
}
