//! Typed settings: one struct per stage, read by figment from the documented defaults, an
//! optional TOML file and the environment, in that order of precedence (environment wins).
//!
//! [`SETTINGS`] is the one list of settings: each one's section and field, environment
//! variable, default and help. `--help`, the README's table and the defaults are made from
//! it, and a test keeps it and the section structs the same. The file may hold nothing else,
//! so that a typo is an error at startup instead of a setting silently ignored; an environment
//! variable that looks like a misspelt setting draws a warning.

mod parse;
mod sources;
mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub use parse::{redact_url, Cidr};
pub use sources::{likely_key, unknown_variables, Sources, UnknownVariable};
pub use table::{help_table, markdown_table, SettingDoc, HELP_WIDTH, SECTIONS, SETTINGS};

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
    Toml { path: PathBuf, cause: String },
    #[error("settings file {path}: unknown key `{key}`{}", likely_hint(.likely))]
    UnknownKey {
        path: PathBuf,
        key: String,
        likely: Option<String>,
    },
    #[error("settings file {path}: `{key}` must be a string, number or boolean")]
    BadType { path: PathBuf, key: String },
    #[error("settings file {path}: `{key}` must be a table of settings ([{key}])")]
    NotSection { path: PathBuf, key: String },
    #[error("settings file {path}: `{second}` is the same setting as `{first}`")]
    Twice {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("setting {key}={value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    /// A value refused as it was read: `detail` is `"value" is invalid: why`.
    #[error("setting {key}={detail}")]
    Rejected { key: &'static str, detail: String },
    #[error("setting {key}: {detail}")]
    Unreadable { key: String, detail: String },
}

fn likely_hint(likely: &Option<String>) -> String {
    match likely {
        Some(key) => format!(" (did you mean `{key}`?)"),
        None => " (known keys: see `mailtally --help`)".to_string(),
    }
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
        let doc = match path.as_slice() {
            [section, name] => table::by_field(section, name),
            _ => None,
        };
        match (doc, e.kind) {
            (Some(s), figment::error::Kind::Message(detail)) => {
                ConfigError::Rejected { key: s.key, detail }
            }
            (Some(s), kind) => ConfigError::Unreadable {
                key: s.key.to_string(),
                detail: kind.to_string(),
            },
            (None, kind) => ConfigError::Unreadable {
                key: path.join("."),
                detail: kind.to_string(),
            },
        }
    }
}

/// What the relay does with a recipient on the sender's suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressedRecipients {
    /// `550 5.7.1` at RCPT, naming the reason.
    Refuse,
    /// Accepted; the copy is recorded as `suppressed` and never sent.
    Record,
}

/// Bounces, complaints, unsubscribes and the suppression list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverabilitySection {
    #[serde(deserialize_with = "parse::suppressed_recipients")]
    pub suppressed_recipients: SuppressedRecipients,
    #[serde(deserialize_with = "parse::number")]
    pub soft_bounce_limit: u32,
    #[serde(deserialize_with = "parse::seconds")]
    pub soft_bounce_window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// The typed settings of one mailtally process, a section per stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub store: StoreSection,
    pub relay: RelaySection,
    pub accounts: AccountsSection,
    pub http: HttpSection,
    pub rewrite: RewriteSection,
    pub track: TrackSection,
    pub deliver: DeliverSection,
    pub queue: QueueSection,
    pub events: EventsSection,
    pub notify: NotifySection,
    pub outbound: OutboundSection,
    pub followup: FollowupSection,
    pub replies: RepliesSection,
    pub deliverability: DeliverabilitySection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default, deserialize_with = "parse::database_url")]
    pub database_url: Option<String>,
    #[serde(deserialize_with = "parse::path")]
    pub data_dir: PathBuf,
    #[serde(deserialize_with = "parse::number")]
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    #[serde(deserialize_with = "parse::listen")]
    pub listen: SocketAddr,
    #[serde(default, deserialize_with = "parse::readable_file")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, deserialize_with = "parse::readable_file")]
    pub tls_key: Option<PathBuf>,
    #[serde(deserialize_with = "parse::flag")]
    pub allow_plain_auth_on_loopback: bool,
    #[serde(default, deserialize_with = "parse::networks")]
    pub trusted_networks: Vec<Cidr>,
    #[serde(deserialize_with = "parse::flag")]
    pub own_address_only: bool,
    #[serde(deserialize_with = "parse::positive")]
    pub max_message_size: usize,
    #[serde(deserialize_with = "parse::positive")]
    pub max_recipients: usize,
    #[serde(deserialize_with = "parse::positive")]
    pub max_sessions: usize,
    #[serde(deserialize_with = "parse::whole_seconds")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "parse::number")]
    pub max_auth_failures: u32,
}

/// The failure limiter shared by SMTP AUTH and the HTTP token checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsSection {
    #[serde(deserialize_with = "parse::number")]
    pub max_failures_per_ip: u32,
    #[serde(deserialize_with = "parse::seconds")]
    pub failure_window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(deserialize_with = "parse::listen")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "parse::positive")]
    pub max_body: usize,
    #[serde(deserialize_with = "parse::positive")]
    pub max_url: usize,
    #[serde(default, deserialize_with = "parse::networks")]
    pub trusted_proxies: Vec<Cidr>,
    #[serde(default, deserialize_with = "parse::optional_trimmed")]
    pub metrics_token: Option<String>,
}

/// What the rewrite of each copy needs: the base URL, the token secrets, DKIM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSection {
    #[serde(deserialize_with = "parse::public_url")]
    pub public_url: String,
    #[serde(default, deserialize_with = "parse::optional_text")]
    pub tracking_secret: Option<String>,
    #[serde(default, deserialize_with = "parse::list")]
    pub tracking_secret_previous: Vec<String>,
    #[serde(deserialize_with = "parse::flag")]
    pub track_text_links: bool,
    #[serde(deserialize_with = "parse::default_track")]
    pub default_track: String,
    #[serde(default, deserialize_with = "parse::dns_name")]
    pub dkim_domain: Option<String>,
    #[serde(default, deserialize_with = "parse::dns_name")]
    pub dkim_selector: Option<String>,
    #[serde(default, deserialize_with = "parse::readable_file")]
    pub dkim_key: Option<PathBuf>,
}

/// How tracking requests are recorded and first classified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackSection {
    #[serde(deserialize_with = "parse::flag")]
    pub anonymize_ip: bool,
    #[serde(default, deserialize_with = "parse::readable_file")]
    pub apple_mpp_cidrs: Option<PathBuf>,
    #[serde(deserialize_with = "parse::seconds")]
    pub prefetch_window: Duration,
    #[serde(deserialize_with = "parse::seconds")]
    pub click_scanner_window: Duration,
    #[serde(default, deserialize_with = "parse::readable_file")]
    pub geoip_database: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverSection {
    #[serde(default, deserialize_with = "parse::upstream_url")]
    pub upstream_url: Option<String>,
    #[serde(deserialize_with = "parse::positive")]
    pub workers: usize,
    #[serde(deserialize_with = "parse::seconds_list")]
    pub retry_schedule: Vec<Duration>,
    #[serde(deserialize_with = "parse::seconds")]
    pub upstream_timeout: Duration,
    #[serde(deserialize_with = "parse::seconds")]
    pub max_queue_age: Duration,
}

/// The pace and the budgets of what senders may queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    #[serde(deserialize_with = "parse::seconds")]
    pub commit_window: Duration,
    #[serde(deserialize_with = "parse::positive")]
    pub commit_max_messages: usize,
    #[serde(deserialize_with = "parse::positive")]
    pub committers: usize,
    #[serde(deserialize_with = "parse::number")]
    pub sender_rate_per_minute: u32,
    #[serde(deserialize_with = "parse::number")]
    pub submission_max_bytes: u64,
    #[serde(deserialize_with = "parse::number")]
    pub sender_max_bytes_per_hour: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    #[serde(deserialize_with = "parse::number")]
    pub batch_size: usize,
    #[serde(deserialize_with = "parse::number")]
    pub channel_capacity: usize,
}

/// Webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    #[serde(deserialize_with = "parse::seconds")]
    pub click_hold: Duration,
    #[serde(deserialize_with = "parse::seconds_list")]
    pub retry_schedule: Vec<Duration>,
    #[serde(deserialize_with = "parse::seconds")]
    pub max_age: Duration,
    #[serde(deserialize_with = "parse::number")]
    pub disable_after: u32,
}

/// Connections to hosts that users name (webhooks, IMAP mailboxes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSection {
    #[serde(default, deserialize_with = "parse::networks")]
    pub allowed_networks: Vec<Cidr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowupSection {
    #[serde(deserialize_with = "parse::seconds")]
    pub check_every: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepliesSection {
    #[serde(default, deserialize_with = "parse::optional_text")]
    pub mailbox_key: Option<String>,
    #[serde(deserialize_with = "parse::seconds")]
    pub poll_every: Duration,
    #[serde(deserialize_with = "parse::flag")]
    pub allow_plaintext: bool,
    #[serde(deserialize_with = "parse::number")]
    pub max_failures: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(deserialize_with = "parse::log_format")]
    pub format: LogFormat,
    #[serde(deserialize_with = "parse::log_level")]
    pub level: String,
}

impl Settings {
    /// Environment, then the optional file, then defaults.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(&Sources::load(file)?)
    }

    pub fn from_sources(src: &Sources) -> Result<Self, ConfigError> {
        let settings: Settings = src.figment().extract()?;
        settings.check()?;
        Ok(settings)
    }

    /// What no single value shows: settings that go together, bounds set by another stage.
    fn check(&self) -> Result<(), ConfigError> {
        if self.events.batch_size == 0 || self.events.channel_capacity == 0 {
            return Err(invalid(
                "EVENT_BATCH_SIZE",
                "0",
                "EVENT_BATCH_SIZE and EVENT_CHANNEL_CAPACITY must be at least 1",
            ));
        }
        // A replay lets fresh events go first when a whole batch waits in the channel: a channel
        // that cannot hold one would leave them behind the spool for the whole replay.
        if self.events.channel_capacity < self.events.batch_size {
            return Err(invalid(
                "EVENT_CHANNEL_CAPACITY",
                &self.events.channel_capacity.to_string(),
                &format!(
                    "must be at least EVENT_BATCH_SIZE ({})",
                    self.events.batch_size
                ),
            ));
        }
        if self
            .replies
            .mailbox_key
            .as_ref()
            .is_some_and(|k| k.len() < 32)
        {
            return Err(invalid(
                "MAILBOX_KEY",
                "(hidden)",
                "needs at least 32 characters",
            ));
        }
        // The tracker knows delivery times for ten minutes only; a longer window would never apply.
        for (key, window) in [
            ("PREFETCH_WINDOW", self.track.prefetch_window),
            ("CLICK_SCANNER_WINDOW", self.track.click_scanner_window),
        ] {
            if window > Duration::from_secs(600) {
                return Err(invalid(
                    key,
                    &window.as_secs_f64().to_string(),
                    "at most 600 seconds",
                ));
            }
        }
        let r = &self.rewrite;
        let dkim = [
            ("DKIM_DOMAIN", r.dkim_domain.is_some()),
            ("DKIM_SELECTOR", r.dkim_selector.is_some()),
            ("DKIM_KEY", r.dkim_key.is_some()),
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
        if self.relay.tls_cert.is_some() != self.relay.tls_key.is_some() {
            return Err(invalid(
                "TLS_CERT",
                "",
                "TLS_CERT and TLS_KEY are set together",
            ));
        }
        Ok(())
    }

    /// The settings table as text for `--help`.
    pub fn help_table() -> String {
        help_table()
    }
}

fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = Settings::from_sources(&Sources::default()).unwrap();
        assert_eq!(s.relay.listen.port(), 2525);
        assert_eq!(s.rewrite.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.deliver.retry_schedule.len(), 4);
        assert!(s.relay.allow_plain_auth_on_loopback);
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
        assert_eq!(s.relay.listen.port(), 2600);
        assert_eq!(s.relay.max_recipients, 7);
        src.env.insert("MAX_RECIPIENTS".into(), "9".into());
        assert_eq!(
            Settings::from_sources(&src).unwrap().relay.max_recipients,
            9
        );

        std::fs::write(&path, "SMTP_LISTN = \"x\"\n").unwrap();
        let err = Sources::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("unknown key `SMTP_LISTN`"), "{err}");
    }

    #[test]
    fn the_file_takes_sections_and_flat_keys_and_names_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let mut src = Sources::load(Some(&path))?;
            src.env.clear();
            Settings::from_sources(&src)
        };
        let s = load(
            "RETENTION_DAYS = 3\n[relay]\nlisten = \"127.0.0.1:2600\"\nmax_recipients = 7\n\
             [deliver]\nretry_schedule = [1, 2]\n[rewrite]\ntracking_secret = \"007\"\n",
        )
        .unwrap();
        assert_eq!(s.store.retention_days, 3);
        assert_eq!(s.relay.listen.port(), 2600);
        assert_eq!(s.relay.max_recipients, 7);
        assert_eq!(
            s.deliver.retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        // Text stays text: a secret of digits is not read as a number.
        assert_eq!(s.rewrite.tracking_secret.as_deref(), Some("007"));

        for (text, wanted) in [
            (
                "[relay]\nlisen = \"x\"\n",
                "unknown key `relay.lisen` (did you mean `relay.listen`?)",
            ),
            (
                "[rely]\nlisten = \"x\"\n",
                "unknown key `rely` (did you mean `relay`?)",
            ),
            (
                "[relay]\nlisten = \"127.0.0.1:1\"\n[http]\nlisten = \"x\"\n",
                "setting HTTP_LISTEN=\"x\" is invalid: expected an address and port",
            ),
            (
                "[relay]\nmax_recipients = 0\n",
                "setting MAX_RECIPIENTS=\"0\" is invalid: must be at least 1",
            ),
            (
                "[events]\nbatch_size = 100\nchannel_capacity = 50\n",
                "setting EVENT_CHANNEL_CAPACITY=\"50\" is invalid: must be at least EVENT_BATCH_SIZE (100)",
            ),
            (
                "SMTP_LISTEN = \"127.0.0.1:1\"\n[relay]\nlisten = \"127.0.0.1:2\"\n",
                "`relay.listen` is the same setting as `SMTP_LISTEN`",
            ),
            ("relay = 3\n", "`relay` must be a table"),
            (
                "[relay]\nmax_recipients = { a = 1 }\n",
                "`relay.max_recipients` must be a string, number or boolean",
            ),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn env_values_are_read_as_text_and_win_over_the_file() {
        let mut src = Sources::from_pairs([
            ("TRACKING_SECRET", "\"0123\""),
            ("SMTP_LISTEN", "[::1]:2525"),
            ("RETRY_SCHEDULE", "1.5"),
        ]);
        table::put(
            &mut src.file,
            table::by_key("SMTP_LISTEN").unwrap(),
            figment::value::Value::from("127.0.0.1:1".to_string()),
        );
        let s = Settings::from_sources(&src).unwrap();
        assert_eq!(s.rewrite.tracking_secret.as_deref(), Some("\"0123\""));
        assert_eq!(s.relay.listen, "[::1]:2525".parse().unwrap());
        assert_eq!(s.deliver.retry_schedule, [Duration::from_millis(1500)]);
    }

    /// The fields serde reads for `T`: what `deserialize_struct` is asked for.
    fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        #[derive(Debug)]
        struct Fields(&'static [&'static str]);
        impl std::fmt::Display for Fields {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl std::error::Error for Fields {}
        impl serde::de::Error for Fields {
            fn custom<T: std::fmt::Display>(_: T) -> Self {
                Fields(&[])
            }
        }
        struct Recorder;
        impl<'de> serde::Deserializer<'de> for Recorder {
            type Error = Fields;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
                Err(Fields(&[]))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Fields> {
                Err(Fields(fields))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        T::deserialize(Recorder).err().map_or(&[], |f| f.0)
    }

    #[test]
    fn the_table_lists_every_field_of_every_section_once() {
        assert_eq!(fields_of::<Settings>(), SECTIONS);
        let sections: [(&str, &[&str]); 15] = [
            ("store", fields_of::<StoreSection>()),
            ("relay", fields_of::<RelaySection>()),
            ("accounts", fields_of::<AccountsSection>()),
            ("http", fields_of::<HttpSection>()),
            ("rewrite", fields_of::<RewriteSection>()),
            ("track", fields_of::<TrackSection>()),
            ("deliver", fields_of::<DeliverSection>()),
            ("queue", fields_of::<QueueSection>()),
            ("events", fields_of::<EventsSection>()),
            ("notify", fields_of::<NotifySection>()),
            ("outbound", fields_of::<OutboundSection>()),
            ("followup", fields_of::<FollowupSection>()),
            ("replies", fields_of::<RepliesSection>()),
            ("deliverability", fields_of::<DeliverabilitySection>()),
            ("log", fields_of::<LogSection>()),
        ];
        let documented: Vec<(&str, &str)> = SETTINGS.iter().map(|s| (s.section, s.name)).collect();
        let declared: Vec<(&str, &str)> = sections
            .iter()
            .flat_map(|(section, names)| names.iter().map(move |n| (*section, *n)))
            .collect();
        assert_eq!(documented, declared);
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len(), "an environment variable twice");
    }

    /// `scripts/settings-table` runs this with SETTINGS_TABLE_WRITE=1 to rewrite the table.
    #[test]
    fn the_readme_table_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = "<!-- settings table:";
        let end = "<!-- end of settings table -->";
        let from = readme.find(start).expect("README has the settings table");
        let from = from + readme[from..].find('\n').unwrap() + 1;
        let to = readme.find(end).expect("README ends the settings table");
        let generated = markdown_table();
        if std::env::var_os("SETTINGS_TABLE_WRITE").is_some() {
            let written = format!("{}{generated}{}", &readme[..from], &readme[to..]);
            std::fs::write(path, written).unwrap();
            return;
        }
        assert!(
            readme[from..to] == generated,
            "the README's settings table differs from src/settings/table.rs; \
             scripts/settings-table rewrites it"
        );
    }
}
