//! Classification at ingest: who fetched the pixel or followed the link, and why we think so.
//!
//! The rules, first match wins (the README's "Who opened and clicked" lists them for users):
//! a HEAD request is a scanner; Gmail's and Yahoo's image proxies are `proxy` (a person's open);
//! a scanner, preview or script agent, a crawler agent, or no agent is a scanner; the bare agent
//! `Mozilla/5.0` is Apple MPP on the pixel and a scanner on a link; a pixel from Apple's MPP
//! networks is Apple MPP; an open within the prefetch window of delivery is `prefetch`, a click
//! within the click-after-delivery window is `scanner`; anything else is `human`. The hindsight
//! rules (sweeps, unknown delivery time) come later, in [`crate::classify::hindsight`].
//!
//! Pure functions of the request facts and the copy's delivery time; no I/O, so the tracking
//! handlers can call them inline. When the delivery time is not known the timing rules cannot
//! be applied: such an event gets no class and the reason `delivery_time_unknown`, and the
//! aggregation job decides later from the stored rows.

pub mod hindsight;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Cidr;

/// The class of an open or click (the `events.class` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Human,
    AppleMpp,
    Proxy,
    Scanner,
    Prefetch,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Human => "human",
            Class::AppleMpp => "apple_mpp",
            Class::Proxy => "proxy",
            Class::Scanner => "scanner",
            Class::Prefetch => "prefetch",
        }
    }
}

/// An open this soon after delivery was fetched by software, not read by a person (the default
/// of `PREFETCH_WINDOW`).
pub const OPEN_PREFETCH_WINDOW: TimeDelta = TimeDelta::seconds(5);
/// A click this soon after delivery is a link checker: people need longer to open and click (the
/// default of `CLICK_SCANNER_WINDOW`).
pub const CLICK_SCANNER_WINDOW: TimeDelta = TimeDelta::seconds(10);

/// The timing windows of the ingest rules. A zero window turns its rule off (a test setup where
/// the sender opens their own mail at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub open_prefetch: TimeDelta,
    pub click_scanner: TimeDelta,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows {
            open_prefetch: OPEN_PREFETCH_WINDOW,
            click_scanner: CLICK_SCANNER_WINDOW,
        }
    }
}

impl Windows {
    /// The windows of `PREFETCH_WINDOW` and `CLICK_SCANNER_WINDOW`.
    pub fn from_settings(s: &crate::config::Settings) -> Windows {
        let delta = |d: std::time::Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        Windows {
            open_prefetch: delta(s.track.prefetch_window),
            click_scanner: delta(s.track.click_scanner_window),
        }
    }
}

// The ingest reasons that the rules below are recognised by (stored in `events.reason`).
pub const REASON_HEAD: &str = "HEAD request";
pub const REASON_BARE_AGENT: &str = "bare Mozilla/5.0 agent";
pub const REASON_APPLE_RANGE: &str = "Apple MPP address range";
pub const REASON_CLICK_AFTER_DELIVERY: &str = "click within seconds of delivery";
pub const REASON_OPEN_AFTER_DELIVERY: &str = "open within seconds of delivery";
pub const REASON_CRAWLER: &str = "crawler agent";
pub const REASON_NO_AGENT: &str = "no user agent";
pub const REASON_NO_EVIDENCE: &str = "no machine evidence";
const REASON_GMAIL_PROXY: &str = "Gmail image proxy";
const REASON_YAHOO_PROXY: &str = "Yahoo Mail image proxy";

/// The rule that decided an event's class: the names the README and the Insights page use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A HEAD request: a checker asking whether the link works; a person's client sends GET.
    HeadRequest,
    /// Gmail's or Yahoo's image proxy, which fetches when the person opens: counts as a person.
    ImageProxy,
    /// A security gateway, link preview or scripted client named in its user agent.
    ScannerAgent,
    /// An agent that woothee knows as a crawler.
    CrawlerAgent,
    /// No user agent at all.
    NoAgent,
    /// Exactly `Mozilla/5.0`: Apple MPP on the pixel, a checker on a link.
    BareAgent,
    /// A pixel fetched from Apple's MPP networks.
    AppleRange,
    /// An open within the prefetch window after delivery.
    PrefetchWindow,
    /// A click within the click-after-delivery window.
    ClickAfterDelivery,
    /// A run of clicks of one copy too dense for a person (hindsight).
    Sweep,
    /// An event near delivery whose delivery time the tracker did not know (hindsight).
    UnknownDeliveryWindow,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::HeadRequest => "HEAD request",
            Rule::ImageProxy => "image proxy",
            Rule::ScannerAgent => "scanner agent",
            Rule::CrawlerAgent => "crawler agent",
            Rule::NoAgent => "no user agent",
            Rule::BareAgent => "bare agent",
            Rule::AppleRange => "Apple address range",
            Rule::PrefetchWindow => "prefetch window",
            Rule::ClickAfterDelivery => "click-after-delivery window",
            Rule::Sweep => "sweep",
            Rule::UnknownDeliveryWindow => "unknown-delivery window",
        }
    }

    /// Whether the rule is about time after delivery: a sender testing their own mail at once
    /// meets these.
    pub fn is_delivery_window(self) -> bool {
        matches!(
            self,
            Rule::PrefetchWindow | Rule::ClickAfterDelivery | Rule::UnknownDeliveryWindow
        )
    }

    /// The rule behind a stored reason (the ingest's or the hindsight's); `None` for a person
    /// with no machine evidence and for reasons this version does not write.
    pub fn of_reason(reason: &str) -> Option<Rule> {
        use crate::classify::hindsight;
        Some(match reason {
            REASON_HEAD => Rule::HeadRequest,
            REASON_GMAIL_PROXY | REASON_YAHOO_PROXY => Rule::ImageProxy,
            REASON_CRAWLER => Rule::CrawlerAgent,
            REASON_NO_AGENT => Rule::NoAgent,
            REASON_BARE_AGENT => Rule::BareAgent,
            REASON_APPLE_RANGE => Rule::AppleRange,
            REASON_OPEN_AFTER_DELIVERY => Rule::PrefetchWindow,
            REASON_CLICK_AFTER_DELIVERY => Rule::ClickAfterDelivery,
            hindsight::SWEEP_REASON => Rule::Sweep,
            hindsight::UNKNOWN_DELIVERY_WINDOW_REASON => Rule::UnknownDeliveryWindow,
            r if SCANNER_AGENTS.iter().any(|(_, why)| *why == r) => Rule::ScannerAgent,
            _ => return None,
        })
    }
}

/// The built-in Apple MPP networks (see the file for where they come from).
pub const BUILTIN_APPLE_MPP_CIDRS: &str = include_str!("apple_mpp_cidrs.txt");

/// Agents of security gateways, link checkers and link previews (matched lowercase), with the
/// reason recorded.
const SCANNER_AGENTS: &[(&str, &str)] = &[
    ("barracuda", "Barracuda scanner agent"),
    ("bingpreview", "BingPreview agent"),
    ("microsoftpreview", "Microsoft link preview agent"),
    ("skypeuripreview", "Skype link preview agent"),
    ("proofpoint", "Proofpoint scanner agent"),
    ("mimecast", "Mimecast scanner agent"),
    ("messagelabs", "Symantec MessageLabs scanner agent"),
    ("symantec", "Symantec scanner agent"),
    ("trendmicro", "Trend Micro scanner agent"),
    ("forcepoint", "Forcepoint scanner agent"),
    ("ironport", "Cisco IronPort scanner agent"),
    ("fortiguard", "Fortinet scanner agent"),
    ("sophos", "Sophos scanner agent"),
    ("zscaler", "Zscaler scanner agent"),
    ("slackbot", "Slack link preview agent"),
    ("facebookexternalhit", "Facebook link preview agent"),
    ("twitterbot", "Twitter link preview agent"),
    ("linkedinbot", "LinkedIn link preview agent"),
    ("discordbot", "Discord link preview agent"),
    ("telegrambot", "Telegram link preview agent"),
    ("whatsapp", "WhatsApp link preview agent"),
    ("python-requests", "scripted HTTP client"),
    ("go-http-client", "scripted HTTP client"),
    ("libwww-perl", "scripted HTTP client"),
    ("headlesschrome", "headless browser"),
    ("phantomjs", "headless browser"),
];

#[derive(Debug, Error)]
pub enum ClassifyError {
    #[error("cannot read the Apple MPP CIDR list {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("Apple MPP CIDR list, line {line}: {reason}")]
    Parse { line: usize, reason: String },
}

/// Parses a CIDR list: one network a line, `#` starts a comment.
pub fn parse_cidr_list(text: &str) -> Result<Vec<Cidr>, ClassifyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(line.parse().map_err(|reason| ClassifyError::Parse {
            line: i + 1,
            reason,
        })?);
    }
    Ok(out)
}

/// What the classifier knows of the copy's delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered at this time.
    At(DateTime<Utc>),
    /// Not delivered within the window the cache covers: the timing rules cannot apply.
    NotRecent,
    /// The cache cannot tell (not filled yet, or the database is away).
    Unknown,
}

/// The facts of one tracking request that classification looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub click: bool,
    pub head: bool,
    /// The client's address; `None` when the connection has none (a Unix socket).
    pub ip: Option<IpAddr>,
    pub user_agent: &'a str,
    pub at: DateTime<Utc>,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub class: Option<Class>,
    pub reason: &'static str,
}

fn verdict(class: Class, reason: &'static str) -> Verdict {
    Verdict {
        class: Some(class),
        reason,
    }
}

/// The rules, with the Apple MPP networks they use.
#[derive(Debug, Clone)]
pub struct Classifier {
    apple: Vec<Cidr>,
    windows: Windows,
}

impl Classifier {
    pub fn new(apple: Vec<Cidr>) -> Classifier {
        Classifier {
            apple,
            windows: Windows::default(),
        }
    }

    /// The same rules with other timing windows.
    pub fn with_windows(self, windows: Windows) -> Classifier {
        Classifier { windows, ..self }
    }

    /// The list of `APPLE_MPP_CIDRS` when set, else the built-in one.
    pub fn load(apple_cidrs: Option<&Path>) -> Result<Classifier, ClassifyError> {
        let text = match apple_cidrs {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ClassifyError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => BUILTIN_APPLE_MPP_CIDRS.to_string(),
        };
        Ok(Classifier::new(parse_cidr_list(&text)?))
    }

    pub fn classify(&self, r: &Request<'_>, ua: &UserAgent) -> Verdict {
        if r.head {
            return verdict(Class::Scanner, REASON_HEAD);
        }
        match ua.rule {
            Some(AgentRule::Machine(class, reason)) => return verdict(class, reason),
            // MPP fetches the pixel with this bare agent; a link followed with it is a checker.
            Some(AgentRule::BareMozilla) if r.click => {
                return verdict(Class::Scanner, REASON_BARE_AGENT)
            }
            Some(AgentRule::BareMozilla) => return verdict(Class::AppleMpp, REASON_BARE_AGENT),
            None => {}
        }
        // Private Relay users browse from Apple's ranges too: only the pixel counts as MPP.
        if let (false, Some(ip)) = (r.click, r.ip) {
            if self.apple.iter().any(|n| n.contains(ip)) {
                return verdict(Class::AppleMpp, REASON_APPLE_RANGE);
            }
        }
        match r.delivery {
            Delivery::At(delivered) => {
                let gap = r.at - delivered;
                if r.click && gap < self.windows.click_scanner {
                    verdict(Class::Scanner, REASON_CLICK_AFTER_DELIVERY)
                } else if !r.click && gap < self.windows.open_prefetch {
                    verdict(Class::Prefetch, REASON_OPEN_AFTER_DELIVERY)
                } else {
                    verdict(Class::Human, REASON_NO_EVIDENCE)
                }
            }
            Delivery::NotRecent => verdict(Class::Human, REASON_NO_EVIDENCE),
            Delivery::Unknown => Verdict {
                class: None,
                reason: crate::classify::hindsight::DELIVERY_UNKNOWN_REASON,
            },
        }
    }
}

/// Mail client, device type and OS read from a user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAgent {
    pub client: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
    pub crawler: bool,
    /// What the agent alone says (cached with the parse: agents repeat, the scan is costly).
    pub rule: Option<AgentRule>,
}

/// Evidence in the user agent alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRule {
    Machine(Class, &'static str),
    /// Exactly `Mozilla/5.0`: Apple MPP on a pixel, a checker on a link.
    BareMozilla,
}

fn agent_rule(agent: &str, crawler: bool) -> Option<AgentRule> {
    let agent = agent.trim();
    if agent.contains("GoogleImageProxy") {
        return Some(AgentRule::Machine(Class::Proxy, REASON_GMAIL_PROXY));
    }
    if agent.contains("YahooMailProxy") {
        return Some(AgentRule::Machine(Class::Proxy, REASON_YAHOO_PROXY));
    }
    let lower = agent.to_ascii_lowercase();
    if let Some((_, reason)) = SCANNER_AGENTS.iter().find(|(k, _)| lower.contains(k)) {
        return Some(AgentRule::Machine(Class::Scanner, reason));
    }
    if crawler {
        return Some(AgentRule::Machine(Class::Scanner, REASON_CRAWLER));
    }
    if agent.is_empty() {
        return Some(AgentRule::Machine(Class::Scanner, REASON_NO_AGENT));
    }
    (agent == "Mozilla/5.0").then_some(AgentRule::BareMozilla)
}

thread_local! {
    // Agents repeat heavily (one mail client, one proxy); parsing is the costly part.
    static UA_CACHE: RefCell<HashMap<Box<str>, Arc<UserAgent>>> = RefCell::new(HashMap::new());
}
const UA_CACHE_MAX: usize = 4096;

/// [`parse_user_agent`] with a per-thread cache.
pub fn user_agent(agent: &str) -> Arc<UserAgent> {
    UA_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(hit) = cache.get(agent) {
            return hit.clone();
        }
        if cache.len() >= UA_CACHE_MAX {
            cache.clear();
        }
        let parsed = Arc::new(parse_user_agent(agent));
        cache.insert(agent.into(), parsed.clone());
        parsed
    })
}

/// Reads the mail client, device and OS; knows mail clients that woothee does not.
pub fn parse_user_agent(agent: &str) -> UserAgent {
    let w = woothee::parser::Parser::new().parse(agent);
    fn known(s: &str) -> Option<&str> {
        (!s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN).then_some(s)
    }
    let category = w.as_ref().map(|w| w.category).unwrap_or("");
    let woothee_os = w.as_ref().and_then(|w| known(w.os));
    let apple_device = ["iPhone", "iPad", "iPod"]
        .into_iter()
        .find(|d| agent.contains(d));
    let webkit_no_browser = agent.contains("AppleWebKit")
        && !["Safari", "Chrome", "CriOS", "FxiOS", "EdgiOS", "Firefox"]
            .iter()
            .any(|b| agent.contains(b));

    let client: Option<&str> = if agent.contains("GoogleImageProxy") {
        Some("Gmail")
    } else if agent.contains("YahooMailProxy") {
        Some("Yahoo Mail")
    } else if agent.contains("Outlook-iOS") || agent.contains("Outlook-Android") {
        Some("Outlook Mobile")
    } else if agent.contains("Microsoft Outlook")
        || agent.contains("MSOffice")
        || agent.contains("ms-office")
    {
        Some("Outlook")
    } else if agent.contains("Thunderbird/") {
        Some("Thunderbird")
    } else if webkit_no_browser && apple_device.is_some() {
        // iOS Mail shows the WebKit agent without the "Safari" token the browser adds.
        Some("iOS Mail")
    } else if webkit_no_browser && agent.contains("Macintosh") {
        Some("Apple Mail")
    } else {
        w.as_ref().and_then(|w| known(w.name))
    };

    let proxy = agent.contains("GoogleImageProxy") || agent.contains("YahooMailProxy");
    let device = if proxy {
        None
    } else if apple_device == Some("iPad") {
        Some("tablet")
    } else {
        match category {
            "pc" => Some("desktop"),
            "smartphone" | "mobilephone" => Some("mobile"),
            "appliance" => Some("appliance"),
            "crawler" => Some("bot"),
            _ => None,
        }
    };
    let os = if proxy {
        None
    } else if apple_device.is_some() {
        Some("iOS")
    } else {
        match woothee_os {
            Some("Mac OSX") => Some("macOS"),
            other => other,
        }
    };
    UserAgent {
        client: client.map(str::to_string),
        device: device.map(str::to_string),
        os: os.map(str::to_string),
        crawler: category == "crawler",
        rule: agent_rule(agent, category == "crawler"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GMAIL: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    const YAHOO: &str = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html";
    const OUTLOOK: &str =
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)";
    const OUTLOOK_OLD: &str = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)";
    const APPLE_MAIL: &str =
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
    const IOS_MAIL: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
    const IPAD_MAIL: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
    const THUNDERBIRD: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0";
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const SAFARI_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    const BARRACUDA: &str = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))";
    const BING: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b";
    const MS_PREVIEW: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.79 Safari/537.36 Edge/14.14393 MicrosoftPreview/2.0 +https://aka.ms/MicrosoftPreview";
    const PROOFPOINT: &str = "Proofpoint URL Defense";
    const MIMECAST: &str = "Mozilla/5.0 (compatible; Mimecast-URL-Protect)";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn classifier() -> Classifier {
        Classifier::load(None).unwrap()
    }

    fn run(click: bool, head: bool, ip: &str, agent: &str, delivery: Delivery) -> Verdict {
        let at = DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = Request {
            click,
            head,
            ip: Some(ip.parse().unwrap()),
            user_agent: agent,
            at,
            delivery,
        };
        classifier().classify(&r, &parse_user_agent(agent))
    }

    fn delivered_ago(secs: i64) -> Delivery {
        let at = DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Delivery::At(at - TimeDelta::seconds(secs))
    }

    #[test]
    fn classes_by_agent_address_and_method() {
        let long_ago = delivered_ago(3600);
        let home = "198.51.100.23";
        #[rustfmt::skip]
        let cases: &[(bool, bool, &str, &str, Option<Class>)] = &[
            // (click, HEAD, ip, agent, expected class)
            (false, false, "66.249.84.1", GMAIL, Some(Class::Proxy)),
            (false, false, "98.137.1.1", YAHOO, Some(Class::Proxy)),
            (false, false, home, OUTLOOK, Some(Class::Human)),
            (false, false, home, OUTLOOK_OLD, Some(Class::Human)),
            (false, false, home, APPLE_MAIL, Some(Class::Human)),
            (false, false, home, IOS_MAIL, Some(Class::Human)),
            (false, false, home, THUNDERBIRD, Some(Class::Human)),
            (true, false, home, CHROME, Some(Class::Human)),
            (false, false, "17.58.101.4", APPLE_MAIL, Some(Class::AppleMpp)),
            (false, false, "2620:149:a44::10", IOS_MAIL, Some(Class::AppleMpp)),
            (false, false, home, "Mozilla/5.0", Some(Class::AppleMpp)),
            (true, false, home, "Mozilla/5.0", Some(Class::Scanner)),
            // A click from Apple's ranges is a Private Relay user, not MPP.
            (true, false, "17.58.101.4", SAFARI_IOS, Some(Class::Human)),
            (true, false, home, BARRACUDA, Some(Class::Scanner)),
            (true, false, home, BING, Some(Class::Scanner)),
            (true, false, home, MS_PREVIEW, Some(Class::Scanner)),
            (true, false, home, PROOFPOINT, Some(Class::Scanner)),
            (true, false, home, MIMECAST, Some(Class::Scanner)),
            (true, false, home, GOOGLEBOT, Some(Class::Scanner)),
            (true, false, home, "", Some(Class::Scanner)),
            (true, true, home, CHROME, Some(Class::Scanner)),
            (false, true, home, OUTLOOK, Some(Class::Scanner)),
        ];
        for (click, head, ip, agent, want) in cases {
            let got = run(*click, *head, ip, agent, long_ago);
            assert_eq!(
                got.class, *want,
                "{agent:?} click={click} head={head} ip={ip}: {got:?}"
            );
        }
    }

    #[test]
    fn timing_rules() {
        let home = "198.51.100.23";
        #[rustfmt::skip]
        let cases: &[(bool, Delivery, Option<Class>, &str)] = &[
            (false, delivered_ago(1), Some(Class::Prefetch), "open within seconds of delivery"),
            (false, delivered_ago(4), Some(Class::Prefetch), "open within seconds of delivery"),
            (false, delivered_ago(6), Some(Class::Human), "no machine evidence"),
            // Clock skew between nodes: an event "before" delivery is right after it.
            (false, delivered_ago(-1), Some(Class::Prefetch), "open within seconds of delivery"),
            (true, delivered_ago(2), Some(Class::Scanner), "click within seconds of delivery"),
            (true, delivered_ago(9), Some(Class::Scanner), "click within seconds of delivery"),
            (true, delivered_ago(30), Some(Class::Human), "no machine evidence"),
            (true, Delivery::NotRecent, Some(Class::Human), "no machine evidence"),
            (false, Delivery::Unknown, None, crate::classify::hindsight::DELIVERY_UNKNOWN_REASON),
            (true, Delivery::Unknown, None, crate::classify::hindsight::DELIVERY_UNKNOWN_REASON),
        ];
        for (click, delivery, class, reason) in cases {
            let got = run(*click, false, home, CHROME, *delivery);
            assert_eq!(got.class, *class, "{click} {delivery:?}");
            assert_eq!(got.reason, *reason);
        }
        // Agent evidence wins over an unknown delivery time.
        assert_eq!(
            run(false, false, home, GMAIL, Delivery::Unknown).class,
            Some(Class::Proxy)
        );
    }

    #[test]
    fn mail_clients_devices_and_systems() {
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (GMAIL, Some("Gmail"), None, None),
            (YAHOO, Some("Yahoo Mail"), None, None),
            (OUTLOOK, Some("Outlook"), Some("desktop"), Some("Windows 10")),
            (OUTLOOK_OLD, Some("Outlook"), None, None),
            (APPLE_MAIL, Some("Apple Mail"), Some("desktop"), Some("macOS")),
            (IOS_MAIL, Some("iOS Mail"), Some("mobile"), Some("iOS")),
            (IPAD_MAIL, Some("iOS Mail"), Some("tablet"), Some("iOS")),
            (THUNDERBIRD, Some("Thunderbird"), Some("desktop"), Some("Linux")),
            (CHROME, Some("Chrome"), Some("desktop"), Some("Windows 10")),
            (SAFARI_IOS, Some("Safari"), Some("mobile"), Some("iOS")),
            (GOOGLEBOT, Some("Googlebot"), Some("bot"), None),
        ];
        for (agent, client, device, os) in cases {
            let ua = parse_user_agent(agent);
            assert_eq!(ua.client.as_deref(), *client, "client of {agent}");
            assert_eq!(ua.device.as_deref(), *device, "device of {agent}");
            assert_eq!(ua.os.as_deref(), *os, "os of {agent}");
        }
        // Junk never panics.
        for junk in ["", "\u{0}\u{ffff}", "(((((", &"x".repeat(10_000)] {
            let _ = user_agent(junk);
        }
    }

    #[test]
    fn every_machine_reason_names_its_rule() {
        let home = "198.51.100.23";
        let long_ago = delivered_ago(3600);
        #[rustfmt::skip]
        let cases: &[(bool, bool, &str, &str, Delivery, Rule)] = &[
            (true, true, home, CHROME, long_ago, Rule::HeadRequest),
            (false, false, "66.249.84.1", GMAIL, long_ago, Rule::ImageProxy),
            (false, false, "98.137.1.1", YAHOO, long_ago, Rule::ImageProxy),
            (true, false, home, BARRACUDA, long_ago, Rule::ScannerAgent),
            (true, false, home, "python-requests/2.31", long_ago, Rule::ScannerAgent),
            (true, false, home, GOOGLEBOT, long_ago, Rule::CrawlerAgent),
            (true, false, home, "", long_ago, Rule::NoAgent),
            (false, false, home, "Mozilla/5.0", long_ago, Rule::BareAgent),
            (true, false, home, "Mozilla/5.0", long_ago, Rule::BareAgent),
            (false, false, "17.58.101.4", APPLE_MAIL, long_ago, Rule::AppleRange),
            (false, false, home, CHROME, delivered_ago(2), Rule::PrefetchWindow),
            (true, false, home, CHROME, delivered_ago(2), Rule::ClickAfterDelivery),
        ];
        for (click, head, ip, agent, delivery, rule) in cases {
            let got = run(*click, *head, ip, agent, *delivery);
            assert_eq!(
                Rule::of_reason(got.reason),
                Some(*rule),
                "{agent:?}: {got:?}"
            );
        }
        // Every agent reason is known to the page, and a person's event names no rule.
        for (_, reason) in SCANNER_AGENTS {
            assert_eq!(
                Rule::of_reason(reason),
                Some(Rule::ScannerAgent),
                "{reason}"
            );
        }
        assert_eq!(Rule::of_reason(REASON_NO_EVIDENCE), None);
        let h = crate::classify::hindsight::SWEEP_REASON;
        assert_eq!(Rule::of_reason(h), Some(Rule::Sweep));
        let h = crate::classify::hindsight::UNKNOWN_DELIVERY_WINDOW_REASON;
        assert_eq!(Rule::of_reason(h), Some(Rule::UnknownDeliveryWindow));
    }

    #[test]
    fn windows_are_settings_and_zero_turns_them_off() {
        let at = DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let classify = |windows: Windows, click: bool, secs: i64| {
            let r = Request {
                click,
                head: false,
                ip: Some("198.51.100.23".parse().unwrap()),
                user_agent: CHROME,
                at,
                delivery: Delivery::At(at - TimeDelta::seconds(secs)),
            };
            classifier()
                .with_windows(windows)
                .classify(&r, &parse_user_agent(CHROME))
                .class
        };
        let off = Windows {
            open_prefetch: TimeDelta::zero(),
            click_scanner: TimeDelta::zero(),
        };
        assert_eq!(classify(off, false, 1), Some(Class::Human));
        assert_eq!(classify(off, true, 1), Some(Class::Human));
        let long = Windows {
            open_prefetch: TimeDelta::seconds(60),
            click_scanner: TimeDelta::seconds(120),
        };
        assert_eq!(classify(long, false, 30), Some(Class::Prefetch));
        assert_eq!(classify(long, true, 90), Some(Class::Scanner));
        assert_eq!(classify(long, true, 121), Some(Class::Human));
        let s = crate::config::Settings::from_sources(&crate::config::Sources::from_pairs([
            ("PREFETCH_WINDOW", "0"),
            ("CLICK_SCANNER_WINDOW", "2.5"),
        ]))
        .unwrap();
        let w = Windows::from_settings(&s);
        assert_eq!(w.open_prefetch, TimeDelta::zero());
        assert_eq!(w.click_scanner, TimeDelta::milliseconds(2500));
        assert_eq!(
            Windows::from_settings(
                &crate::config::Settings::from_sources(&Default::default()).unwrap()
            ),
            Windows::default()
        );
    }

    #[test]
    fn cidr_list_parses_and_reports_bad_lines() {
        assert!(classifier().apple.len() >= 2);
        let list = parse_cidr_list("# c\n10.0.0.0/8 # private\n\n2001:db8::/32\n").unwrap();
        assert_eq!(list.len(), 2);
        let err = parse_cidr_list("10.0.0.0/8\nnonsense\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
