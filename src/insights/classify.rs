//! Classification at ingest: who fetched the pixel or followed the link, and why we think so.
//!
//! Pure functions of the request facts and the copy's delivery time; no I/O, so the tracking
//! handlers can call them inline. When the delivery time is not known the timing rules cannot
//! be applied: such an event gets no class and the reason `delivery_time_unknown`, and the
//! aggregation job decides later from the stored rows.

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

/// An open this soon after delivery was fetched by software, not read by a person.
pub const OPEN_PREFETCH_WINDOW: TimeDelta = TimeDelta::seconds(5);
/// A click this soon after delivery is a link checker: people need longer to open and click.
pub const CLICK_SCANNER_WINDOW: TimeDelta = TimeDelta::seconds(10);

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
}

impl Classifier {
    pub fn new(apple: Vec<Cidr>) -> Classifier {
        Classifier { apple }
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
            return verdict(Class::Scanner, "HEAD request");
        }
        match ua.rule {
            Some(AgentRule::Machine(class, reason)) => return verdict(class, reason),
            // MPP fetches the pixel with this bare agent; a link followed with it is a checker.
            Some(AgentRule::BareMozilla) if r.click => {
                return verdict(Class::Scanner, "bare Mozilla/5.0 agent")
            }
            Some(AgentRule::BareMozilla) => {
                return verdict(Class::AppleMpp, "bare Mozilla/5.0 agent")
            }
            None => {}
        }
        // Private Relay users browse from Apple's ranges too: only the pixel counts as MPP.
        if let (false, Some(ip)) = (r.click, r.ip) {
            if self.apple.iter().any(|n| n.contains(ip)) {
                return verdict(Class::AppleMpp, "Apple MPP address range");
            }
        }
        match r.delivery {
            Delivery::At(delivered) => {
                let gap = r.at - delivered;
                if r.click && gap < CLICK_SCANNER_WINDOW {
                    verdict(Class::Scanner, "click within seconds of delivery")
                } else if !r.click && gap < OPEN_PREFETCH_WINDOW {
                    verdict(Class::Prefetch, "open within seconds of delivery")
                } else {
                    verdict(Class::Human, "no machine evidence")
                }
            }
            Delivery::NotRecent => verdict(Class::Human, "no machine evidence"),
            Delivery::Unknown => Verdict {
                class: None,
                reason: crate::insights::hindsight::DELIVERY_UNKNOWN_REASON,
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
        return Some(AgentRule::Machine(Class::Proxy, "Gmail image proxy"));
    }
    if agent.contains("YahooMailProxy") {
        return Some(AgentRule::Machine(Class::Proxy, "Yahoo Mail image proxy"));
    }
    let lower = agent.to_ascii_lowercase();
    if let Some((_, reason)) = SCANNER_AGENTS.iter().find(|(k, _)| lower.contains(k)) {
        return Some(AgentRule::Machine(Class::Scanner, reason));
    }
    if crawler {
        return Some(AgentRule::Machine(Class::Scanner, "crawler agent"));
    }
    if agent.is_empty() {
        return Some(AgentRule::Machine(Class::Scanner, "no user agent"));
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
            (false, Delivery::Unknown, None, crate::insights::hindsight::DELIVERY_UNKNOWN_REASON),
            (true, Delivery::Unknown, None, crate::insights::hindsight::DELIVERY_UNKNOWN_REASON),
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
