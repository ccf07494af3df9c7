//! The one table of settings: `--help`, the README and the defaults all read it.

use figment::value::{Dict, Value};

/// One setting: where it lives in [`super::Settings`], its environment variable, its default
/// (as text, `None` when unset by default) and what it does.
pub struct SettingDoc {
    /// The environment variable, also accepted as a top-level key of the settings file.
    pub key: &'static str,
    /// The section of [`super::Settings`], a `[section]` table of the settings file.
    pub section: &'static str,
    /// The field of that section, its key inside the `[section]` table.
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn setting(
    section: &'static str,
    name: &'static str,
    key: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> SettingDoc {
    SettingDoc {
        key,
        section,
        name,
        default,
        help,
    }
}

/// The sections, in the order of [`SETTINGS`].
pub const SECTIONS: &[&str] = &[
    "store",
    "relay",
    "accounts",
    "http",
    "rewrite",
    "track",
    "deliver",
    "queue",
    "events",
    "notify",
    "outbound",
    "followup",
    "replies",
    "deliverability",
    "log",
];

/// Every setting mailtally reads, by section.
pub const SETTINGS: &[SettingDoc] = &[
    setting(
        "store",
        "database_url",
        "DATABASE_URL",
        None,
        "PostgreSQL URL (postgresql://user:pass@host/db); unset: a private cluster under MAILTALLY_DATA/pg",
    ),
    setting(
        "store",
        "data_dir",
        "MAILTALLY_DATA",
        Some("./var"),
        "data directory (embedded cluster, TLS certificate, event spool)",
    ),
    setting(
        "store",
        "retention_days",
        "RETENTION_DAYS",
        Some("0"),
        "drop raw events older than this many days (whole months), keeping reports; 0 keeps them all",
    ),
    setting(
        "relay",
        "listen",
        "SMTP_LISTEN",
        Some("127.0.0.1:2525"),
        "SMTP submission listener",
    ),
    setting(
        "relay",
        "tls_cert",
        "TLS_CERT",
        None,
        "PEM certificate chain for STARTTLS; unset: a self-signed one under MAILTALLY_DATA",
    ),
    setting(
        "relay",
        "tls_key",
        "TLS_KEY",
        None,
        "PEM private key for TLS_CERT",
    ),
    setting(
        "relay",
        "allow_plain_auth_on_loopback",
        "ALLOW_PLAIN_AUTH_ON_LOOPBACK",
        Some("true"),
        "allow AUTH without TLS on loopback listeners (development)",
    ),
    setting(
        "relay",
        "trusted_networks",
        "SUBMIT_TRUSTED_NETWORKS",
        None,
        "comma-separated CIDRs that may submit without AUTH (sender must be a known user)",
    ),
    setting(
        "relay",
        "own_address_only",
        "SUBMIT_OWN_ADDRESS_ONLY",
        Some("false"),
        "an authenticated sender's MAIL FROM must be their own address (553 5.7.1 otherwise)",
    ),
    setting(
        "relay",
        "max_message_size",
        "MAX_MESSAGE_SIZE",
        Some("26214400"),
        "largest message accepted, in bytes (552 beyond)",
    ),
    setting(
        "relay",
        "max_recipients",
        "MAX_RECIPIENTS",
        Some("100"),
        "recipients per message (452 beyond)",
    ),
    setting(
        "relay",
        "max_sessions",
        "MAX_SMTP_SESSIONS",
        Some("500"),
        "SMTP sessions at once (421 beyond)",
    ),
    setting(
        "relay",
        "idle_timeout",
        "SMTP_IDLE_TIMEOUT",
        Some("300"),
        "seconds an SMTP session may wait for a command",
    ),
    setting(
        "relay",
        "max_auth_failures",
        "SMTP_MAX_AUTH_FAILURES",
        Some("3"),
        "failed AUTH attempts before the session is closed",
    ),
    setting(
        "accounts",
        "max_failures_per_ip",
        "AUTH_MAX_FAILURES_PER_IP",
        Some("10"),
        "failed SMTP AUTH attempts or bad API tokens per client IP per window (0: no limit); then SMTP 421 4.7.0, HTTP 429",
    ),
    setting(
        "accounts",
        "failure_window",
        "AUTH_FAILURE_WINDOW",
        Some("300"),
        "seconds over which AUTH_MAX_FAILURES_PER_IP counts, and how long an address is then refused",
    ),
    setting(
        "http",
        "listen",
        "HTTP_LISTEN",
        Some("127.0.0.1:8080"),
        "HTTP listener: tracking, API, Insights, /metrics",
    ),
    setting(
        "http",
        "max_body",
        "HTTP_MAX_BODY",
        Some("1048576"),
        "largest HTTP request body in bytes (413 beyond)",
    ),
    setting(
        "http",
        "max_url",
        "HTTP_MAX_URL",
        Some("8192"),
        "longest HTTP request target (path and query) in bytes (414 beyond)",
    ),
    setting(
        "http",
        "trusted_proxies",
        "TRUSTED_PROXIES",
        None,
        "comma-separated CIDRs whose X-Forwarded-For is honoured",
    ),
    setting(
        "http",
        "metrics_token",
        "METRICS_TOKEN",
        None,
        "bearer token /metrics requires (Authorization: Bearer ...; in Prometheus `authorization: {credentials: ...}`); unset: /metrics is open",
    ),
    setting(
        "rewrite",
        "public_url",
        "PUBLIC_URL",
        Some("http://127.0.0.1:8080"),
        "base URL of tracked links and the pixel",
    ),
    setting(
        "rewrite",
        "tracking_secret",
        "TRACKING_SECRET",
        None,
        "token signing secret; unset: generated on first start and kept in the database",
    ),
    setting(
        "rewrite",
        "tracking_secret_previous",
        "TRACKING_SECRET_PREVIOUS",
        None,
        "comma-separated rotated-out secrets whose tokens still verify",
    ),
    setting(
        "rewrite",
        "track_text_links",
        "TRACK_TEXT_LINKS",
        Some("true"),
        "track URLs in text/plain parts",
    ),
    setting(
        "rewrite",
        "default_track",
        "DEFAULT_TRACK",
        Some("opens,clicks"),
        "tracking when X-Mailtally-Track is absent",
    ),
    setting(
        "rewrite",
        "dkim_domain",
        "DKIM_DOMAIN",
        None,
        "DKIM signing domain (with DKIM_SELECTOR and DKIM_KEY)",
    ),
    setting(
        "rewrite",
        "dkim_selector",
        "DKIM_SELECTOR",
        None,
        "DKIM selector",
    ),
    setting(
        "rewrite",
        "dkim_key",
        "DKIM_KEY",
        None,
        "path to the DKIM private key (PEM, RSA or Ed25519: `openssl genpkey -algorithm ed25519 -out dkim.pem`)",
    ),
    setting(
        "track",
        "anonymize_ip",
        "ANONYMIZE_IP",
        Some("false"),
        "store client addresses with the last octet zeroed",
    ),
    setting(
        "track",
        "apple_mpp_cidrs",
        "APPLE_MPP_CIDRS",
        None,
        "file of Apple Mail Privacy Protection CIDRs; unset: the built-in list",
    ),
    setting(
        "track",
        "prefetch_window",
        "PREFETCH_WINDOW",
        Some("5"),
        "seconds after delivery within which an open counts as prefetch, not a person (0: off; at most 600)",
    ),
    setting(
        "track",
        "click_scanner_window",
        "CLICK_SCANNER_WINDOW",
        Some("10"),
        "seconds after delivery within which a click counts as a link scanner, not a person (0: off; at most 600)",
    ),
    setting(
        "track",
        "geoip_database",
        "GEOIP_DATABASE",
        None,
        "MaxMind-format database file (GeoLite2/GeoIP2 City or Country .mmdb) placing people's opens and clicks by country and city; unset: no geography",
    ),
    setting(
        "deliver",
        "upstream_url",
        "UPSTREAM_URL",
        None,
        "smtp://user:pass@host:587 (STARTTLS) or smtps://...; unset: the capture sink",
    ),
    setting(
        "deliver",
        "workers",
        "DELIVERY_WORKERS",
        Some("16"),
        "concurrent upstream deliveries per process",
    ),
    setting(
        "deliver",
        "retry_schedule",
        "RETRY_SCHEDULE",
        Some("60,300,900,3600"),
        "seconds between delivery attempts; the last repeats",
    ),
    setting(
        "deliver",
        "upstream_timeout",
        "UPSTREAM_TIMEOUT",
        Some("60"),
        "seconds the upstream may take to answer one SMTP command (a stalled upstream is a deferral)",
    ),
    setting(
        "deliver",
        "max_queue_age",
        "MAX_QUEUE_AGE",
        Some("432000"),
        "seconds a deferred copy is retried before it bounces",
    ),
    setting(
        "queue",
        "commit_window",
        "QUEUE_COMMIT_WINDOW",
        Some("0"),
        "seconds the relay waits for other sessions' messages to share one commit; 0: only those already waiting while the previous commit ran (each still answered 250 after its commit)",
    ),
    setting(
        "queue",
        "commit_max_messages",
        "QUEUE_COMMIT_MAX_MESSAGES",
        Some("64"),
        "most messages in one group commit",
    ),
    setting(
        "queue",
        "committers",
        "QUEUE_COMMITTERS",
        Some("4"),
        "group commits in flight at once, each on its own connection",
    ),
    setting(
        "queue",
        "sender_rate_per_minute",
        "SENDER_RATE_PER_MINUTE",
        Some("600"),
        "most messages a minute each sender's group emails and follow-ups leave at; 0: no limit",
    ),
    setting(
        "queue",
        "submission_max_bytes",
        "SUBMISSION_MAX_BYTES",
        Some("52428800"),
        "most bytes of copies one submission may queue (an SMTP message's size times its recipients, a group email's copies); 0: no limit; SMTP 552 5.3.4, HTTP 413 beyond",
    ),
    setting(
        "queue",
        "sender_max_bytes_per_hour",
        "SENDER_MAX_BYTES_PER_HOUR",
        Some("536870912"),
        "bytes of copies each sender may queue an hour, by every way of sending (the whole budget at once, then at its pace); 0: no limit; SMTP 451 4.7.0, HTTP 429 with Retry-After beyond",
    ),
    setting(
        "events",
        "batch_size",
        "EVENT_BATCH_SIZE",
        Some("5000"),
        "events per COPY batch (a batch is also written every 100 ms)",
    ),
    setting(
        "events",
        "channel_capacity",
        "EVENT_CHANNEL_CAPACITY",
        Some("65536"),
        "events queued for the writer; beyond, they go to the disk spool",
    ),
    setting(
        "notify",
        "click_hold",
        "WEBHOOK_CLICK_HOLD",
        Some("30"),
        "seconds a click notification waits so that a scanner sweep is classified first",
    ),
    setting(
        "notify",
        "retry_schedule",
        "WEBHOOK_RETRY_SCHEDULE",
        Some("10,60,300,1800,7200"),
        "seconds between webhook attempts; the last repeats",
    ),
    setting(
        "notify",
        "max_age",
        "WEBHOOK_MAX_AGE",
        Some("86400"),
        "seconds a webhook delivery is retried before it is given up",
    ),
    setting(
        "notify",
        "disable_after",
        "WEBHOOK_DISABLE_AFTER",
        Some("50"),
        "failed attempts in a row after which an endpoint is disabled",
    ),
    setting(
        "outbound",
        "allowed_networks",
        "OUTBOUND_ALLOWED_NETWORKS",
        None,
        "comma-separated CIDRs that webhooks and IMAP mailboxes may reach although they are loopback, private, link-local or reserved (refused by default)",
    ),
    setting(
        "followup",
        "check_every",
        "FOLLOWUP_CHECK_EVERY",
        Some("15"),
        "seconds between two looks for due follow-ups",
    ),
    setting(
        "replies",
        "mailbox_key",
        "MAILBOX_KEY",
        None,
        "secret (32+ characters) that encrypts IMAP passwords at rest; unset: reply detection off",
    ),
    setting(
        "replies",
        "poll_every",
        "MAILBOX_POLL_EVERY",
        Some("60"),
        "seconds between two looks into a mailbox whose server has no IMAP IDLE",
    ),
    setting(
        "replies",
        "allow_plaintext",
        "MAILBOX_ALLOW_PLAINTEXT",
        Some("false"),
        "allow mailboxes with `security: none` (the IMAP password crosses the network in clear)",
    ),
    setting(
        "replies",
        "max_failures",
        "MAILBOX_MAX_FAILURES",
        Some("20"),
        "failed IMAP connections in a row (with backoff up to 5 minutes) after which a mailbox is marked failed until it is set again",
    ),
    setting(
        "deliverability",
        "suppressed_recipients",
        "SUPPRESSED_RECIPIENTS",
        Some("refuse"),
        "a recipient on the sender's suppression list: refuse (SMTP 550 5.7.1 at RCPT naming the reason) or record (accepted, the copy recorded as suppressed and never sent)",
    ),
    setting(
        "deliverability",
        "soft_bounce_limit",
        "SOFT_BOUNCE_LIMIT",
        Some("3"),
        "soft bounces of one address within SOFT_BOUNCE_WINDOW that put it on the suppression list; 0: never",
    ),
    setting(
        "deliverability",
        "soft_bounce_window",
        "SOFT_BOUNCE_WINDOW",
        Some("604800"),
        "seconds within which SOFT_BOUNCE_LIMIT soft bounces count",
    ),
    setting("log", "format", "LOG_FORMAT", Some("human"), "human or json"),
    setting(
        "log",
        "level",
        "LOG_LEVEL",
        Some("info"),
        "tracing filter, e.g. info or mailtally=debug",
    ),
];

impl SettingDoc {
    /// The setting's place in the settings file, `section.name`.
    pub fn file_key(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// The setting whose environment variable is `key` (exactly: `public_url` is not `PUBLIC_URL`).
pub fn by_key(key: &str) -> Option<&'static SettingDoc> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The setting at `section.name`.
pub fn by_field(section: &str, name: &str) -> Option<&'static SettingDoc> {
    SETTINGS
        .iter()
        .find(|s| s.section == section && s.name == name)
}

/// The documented defaults, nested by section, as the lowest layer of the settings. Every
/// section is present, so that a section whose fields all default to unset still reads.
pub fn defaults() -> Dict {
    let mut out = Dict::new();
    for section in SECTIONS {
        out.insert(section.to_string(), Value::from(Dict::new()));
    }
    for s in SETTINGS {
        if let Some(default) = s.default {
            put(&mut out, s, Value::from(default.to_string()));
        }
    }
    out
}

/// Sets `s`'s value in a dictionary nested by section.
pub(super) fn put(out: &mut Dict, s: &SettingDoc, value: Value) {
    let section = out
        .entry(s.section.to_string())
        .or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, fields) = section {
        fields.insert(s.name.to_string(), value);
    }
}

/// Width of the settings table, within clap's own wrapping width so that it is left alone.
pub const HELP_WIDTH: usize = 80;
const HELP_INDENT: &str = "          ";

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
        // The default and the file key are kept whole: on the last line when they fit, else
        // on their own.
        let tags = s
            .default
            .map(|d| format!("[default: {d}]"))
            .into_iter()
            .chain([format!("[file: {}]", s.file_key())]);
        for tag in tags {
            match lines.last_mut() {
                Some(last) if last.chars().count() + 1 + tag.chars().count() <= width => {
                    last.push(' ');
                    last.push_str(&tag);
                }
                _ => lines.push(tag),
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

/// The settings table as Markdown, as the README shows it.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| environment | in the file | default | meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let default = s.default.map_or("unset".to_string(), |d| format!("`{d}`"));
        out.push_str(&format!(
            "| `{}` | `[{}]` `{}` | {} | {} |\n",
            s.key,
            s.section,
            s.name,
            default,
            s.help.replace('|', "\\|")
        ));
    }
    out
}

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
