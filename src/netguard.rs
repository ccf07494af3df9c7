//! The address policy of every connection mailtally makes to a host a user named: webhook
//! receivers and IMAP servers.
//!
//! A user who may name a host must not make mailtally reach what only mailtally can reach
//! (loopback, the cloud metadata service, the private network, PostgreSQL). So these
//! destinations are refused unless `OUTBOUND_ALLOWED_NETWORKS` lists them, and the check is made
//! on the address actually connected to, after resolution, so that a name that resolves to a
//! public address when it is registered and to an internal one later (DNS rebinding) does not
//! pass. IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
//! the IPv4 address they carry.
//!
//! Errors name the class of the failure, never the peer's bytes nor a resolved address (which
//! would turn a refusal into an oracle of the internal DNS).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;

use crate::config::{Cidr, Settings};

/// How long resolving a name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an address is not a destination for outbound connections by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// `0.0.0.0/8`, `::`: connecting there reaches this host.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// RFC 6598 carrier-grade NAT: `100.64/10`.
    SharedAddressSpace,
    /// `169.254/16` (the cloud metadata service), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`, and the deprecated site-local `fec0::/10`.
    UniqueLocal,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`.
    Benchmarking,
    /// Everything else IANA reserves: `192.0.0/24`, `192.88.99/24`, `240/4`, IPv6 outside
    /// global unicast `2000::/3`, `2001::/23` (Teredo, ORCHID, ...).
    Reserved,
}

impl Blocked {
    /// Destinations that are never a single unicast peer: no setting opens them.
    pub fn always_refused(self) -> bool {
        matches!(
            self,
            Blocked::Unspecified | Blocked::Multicast | Blocked::Broadcast
        )
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Blocked::Unspecified => "an unspecified address",
            Blocked::Loopback => "a loopback address",
            Blocked::Private => "a private address",
            Blocked::SharedAddressSpace => "a carrier-grade NAT address",
            Blocked::LinkLocal => "a link-local address",
            Blocked::UniqueLocal => "a unique-local address",
            Blocked::Multicast => "a multicast address",
            Blocked::Broadcast => "a broadcast address",
            Blocked::Documentation => "a documentation address",
            Blocked::Benchmarking => "a benchmarking address",
            Blocked::Reserved => "a reserved address",
        })
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

fn blocked_v4(ip: Ipv4Addr) -> Option<Blocked> {
    const TABLE: &[([u8; 4], u32, Blocked)] = &[
        ([0, 0, 0, 0], 8, Blocked::Unspecified),
        ([10, 0, 0, 0], 8, Blocked::Private),
        ([100, 64, 0, 0], 10, Blocked::SharedAddressSpace),
        ([127, 0, 0, 0], 8, Blocked::Loopback),
        ([169, 254, 0, 0], 16, Blocked::LinkLocal),
        ([172, 16, 0, 0], 12, Blocked::Private),
        ([192, 0, 0, 0], 24, Blocked::Reserved),
        ([192, 0, 2, 0], 24, Blocked::Documentation),
        ([192, 88, 99, 0], 24, Blocked::Reserved),
        ([192, 168, 0, 0], 16, Blocked::Private),
        ([198, 18, 0, 0], 15, Blocked::Benchmarking),
        ([198, 51, 100, 0], 24, Blocked::Documentation),
        ([203, 0, 113, 0], 24, Blocked::Documentation),
        ([224, 0, 0, 0], 4, Blocked::Multicast),
        ([255, 255, 255, 255], 32, Blocked::Broadcast),
        ([240, 0, 0, 0], 4, Blocked::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

/// The IPv4 address an IPv6 address stands for, where it carries one: mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4 ones.
    if bits >> 32 == 0 && bits > 1 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if in_v6(ip, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if in_v6(ip, 0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

fn blocked_v6(ip: Ipv6Addr) -> Option<Blocked> {
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4);
    }
    const TABLE: &[(u128, u32, Blocked)] = &[
        (0, 128, Blocked::Unspecified),
        (1, 128, Blocked::Loopback),
        (0xff00_u128 << 112, 8, Blocked::Multicast),
        (0xfe80_u128 << 112, 10, Blocked::LinkLocal),
        (0xfec0_u128 << 112, 10, Blocked::UniqueLocal),
        (0xfc00_u128 << 112, 7, Blocked::UniqueLocal),
        (0x2001_0db8_u128 << 96, 32, Blocked::Documentation),
        (0x3fff_u128 << 112, 20, Blocked::Documentation),
        (0x2001_u128 << 112, 23, Blocked::Reserved),
    ];
    if let Some((_, _, class)) = TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return Some(*class);
    }
    // Only global unicast is a destination on the internet.
    (!in_v6(ip, 0x2000_u128 << 112, 3)).then_some(Blocked::Reserved)
}

/// Why `ip` is refused by default, or `None` for a public unicast address.
pub fn blocked(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

/// An address literal, IPv6 with or without brackets.
fn parse_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The addresses of `host`, unfiltered.
async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
    let host = host.trim();
    if let Some(ip) = parse_literal(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if is_localhost_name(host) {
        return Ok(vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ]);
    }
    // getaddrinfo also reads `127.1`, `2130706433` and `0x7f.1`: whatever it makes of the name
    // is what is checked, since it is what is connected to.
    let found: Vec<SocketAddr> =
        tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| GuardError::DnsTimeout)?
            .map_err(GuardError::Dns)?
            .collect();
    if found.is_empty() {
        return Err(GuardError::NoAddress);
    }
    Ok(found)
}

/// Names that are loopback whatever DNS says (RFC 6761).
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Why an outbound connection was not made, as shown to users: a class, never a peer's bytes.
#[derive(Debug, Error)]
pub enum GuardError {
    #[error("address not allowed: the host is {0}")]
    NotAllowed(Blocked),
    #[error("DNS lookup failed")]
    Dns(#[source] std::io::Error),
    #[error("DNS lookup timed out")]
    DnsTimeout,
    #[error("the host has no address")]
    NoAddress,
    #[error("connection refused")]
    Refused,
    #[error("connection timed out")]
    ConnectTimeout,
    #[error("connection failed")]
    Connect(#[source] std::io::Error),
}

/// The networks that are open despite [`blocked`] (`OUTBOUND_ALLOWED_NETWORKS`).
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Arc<Vec<Cidr>>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<Cidr>) -> AddressPolicy {
        AddressPolicy {
            allowed: Arc::new(allowed),
        }
    }

    pub fn from_settings(settings: &Settings) -> AddressPolicy {
        AddressPolicy::new(settings.outbound.allowed_networks.clone())
    }

    /// Whether mailtally may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        let Some(class) = blocked(ip) else {
            return Ok(());
        };
        if class.always_refused() {
            return Err(class);
        }
        let carried = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let listed = |a: IpAddr| self.allowed.iter().any(|net| net.contains(a));
        if listed(ip) || carried.is_some_and(listed) {
            Ok(())
        } else {
            Err(class)
        }
    }

    /// Resolves `host` (a name or an address literal, IPv6 with or without brackets) and keeps
    /// the addresses the policy allows; an error when none is left, naming why the first
    /// address was refused.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        self.filter(lookup(host, port).await?)
    }

    /// Keeps the allowed addresses of a resolution.
    pub fn filter(&self, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, GuardError> {
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check(a.ip()) {
                Ok(()) => true,
                Err(class) => {
                    first_refusal.get_or_insert(class);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(class)) => Err(GuardError::NotAllowed(class)),
            (true, None) => Err(GuardError::NoAddress),
        }
    }

    /// What registration checks, so that an obviously internal target is refused at once:
    /// refused when any address the host resolves to now is refused. A name that does not
    /// resolve yet passes; connections check again, whatever it resolves to then.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<(), GuardError> {
        let found = match lookup(host, port).await {
            Ok(found) => found,
            Err(GuardError::Dns(_) | GuardError::DnsTimeout | GuardError::NoAddress) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        match found.iter().find_map(|a| self.check(a.ip()).err()) {
            Some(class) => Err(GuardError::NotAllowed(class)),
            None => Ok(()),
        }
    }

    /// Checks a URL's host when it is an address literal, as the URL parser reads it (`127.1`,
    /// `2130706433` and `0x7f.0.0.1` are all 127.0.0.1): reqwest connects to literals without
    /// asking the resolver. A name is left to [`GuardedResolver`].
    pub fn check_url_literal(&self, url: &reqwest::Url) -> Result<(), GuardError> {
        match url.host_str().and_then(parse_literal) {
            Some(ip) => self.check(ip).map_err(GuardError::NotAllowed),
            None => Ok(()),
        }
    }

    /// Connects to the first allowed address of `host` that answers, each within `timeout`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, GuardError> {
        let mut last = GuardError::NoAddress;
        for addr in self.resolve(host, port).await? {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = GuardError::Refused
                }
                Ok(Err(e)) => last = GuardError::Connect(e),
                Err(_) => last = GuardError::ConnectTimeout,
            }
        }
        Err(last)
    }
}

/// A resolver for reqwest that resolves with the system's resolver and keeps only allowed
/// addresses, so that every connection reqwest makes to a name is checked. reqwest does not
/// resolve address literals: callers check those with [`check_url_host`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port.
            let addrs = policy.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The policy's refusal inside an error chain (reqwest wraps what the resolver returned).
pub fn guard_error_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a GuardError> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<GuardError>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<Blocked> {
        blocked(ip.parse().unwrap())
    }

    #[test]
    fn every_internal_ipv4_range_is_refused_and_public_ones_pass() {
        use Blocked::*;
        let cases = [
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.255", Some(Unspecified)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.1", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("169.254.169.254", Some(LinkLocal)),
            ("172.15.255.255", None),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("192.88.99.1", Some(Reserved)),
            ("192.168.1.1", Some(Private)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.1", None),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn every_internal_ipv6_range_and_ipv4_carrying_form_is_refused() {
        use Blocked::*;
        let cases = [
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(UniqueLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("ff02::1", Some(Multicast)),
            ("ff05::1:3", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001::1", Some(Reserved)),
            ("2001:10::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("64:ff9b:1::1", Some(Reserved)),
            ("5f00::1", Some(Reserved)),
            // IPv4-mapped, -compatible, NAT64 and 6to4 forms are judged by the IPv4 address.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::127.0.0.1", Some(Loopback)),
            ("::10.1.2.3", Some(Private)),
            ("::0.0.0.2", Some(Unspecified)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:c0a8:101::1", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn allowed_networks_open_only_what_they_list() {
        let policy = AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        let ok = |ip: &str| policy.check(ip.parse().unwrap());
        assert_eq!(ok("127.0.0.1"), Ok(()));
        assert_eq!(
            ok("::ffff:127.0.0.1"),
            Ok(()),
            "mapped form of a listed one"
        );
        assert_eq!(ok("::127.0.0.1"), Ok(()), "compatible form of a listed one");
        assert_eq!(ok("fd00::5"), Ok(()));
        assert_eq!(ok("8.8.8.8"), Ok(()));
        assert_eq!(ok("::1"), Err(Blocked::Loopback));
        assert_eq!(ok("10.0.0.1"), Err(Blocked::Private));
        assert_eq!(ok("169.254.169.254"), Err(Blocked::LinkLocal));
        // No setting opens what is never one unicast peer.
        let all = AddressPolicy::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
        for ip in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
            assert!(all.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert_eq!(all.check("10.0.0.1".parse().unwrap()), Ok(()));
        assert!(AddressPolicy::default()
            .check("127.0.0.1".parse().unwrap())
            .is_err());
    }

    #[test]
    fn url_literals_are_read_as_the_url_parser_reads_them() {
        let policy = AddressPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/",
            "http://0.0.0.0/",
            "http://0/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "https://10.0.0.1:5432/",
            "http://[fe80::1%25eth0]/",
        ] {
            let parsed = reqwest::Url::parse(url);
            let Ok(parsed) = parsed else {
                continue; // what does not parse is refused by registration anyway
            };
            assert!(
                matches!(
                    policy.check_url_literal(&parsed),
                    Err(GuardError::NotAllowed(_))
                ),
                "{url} -> {:?}",
                parsed.host_str()
            );
        }
        let public = reqwest::Url::parse("https://93.184.216.34/hook").unwrap();
        assert!(policy.check_url_literal(&public).is_ok());
        let name = reqwest::Url::parse("https://hooks.example.com/").unwrap();
        assert!(
            policy.check_url_literal(&name).is_ok(),
            "names are left to the resolver"
        );
    }

    #[tokio::test]
    async fn names_and_numeric_forms_are_judged_by_what_they_resolve_to() {
        let policy = AddressPolicy::default();
        for host in [
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "127.0.0.1",
            "[::1]",
            "::1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0.0.0.0",
        ] {
            assert!(
                matches!(
                    policy.resolve(host, 993).await,
                    Err(GuardError::NotAllowed(_))
                ),
                "{host}"
            );
            assert!(
                matches!(
                    policy.check_host(host, 993).await,
                    Err(GuardError::NotAllowed(_))
                ),
                "{host}"
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = policy
            .connect("localhost", port, Duration::from_secs(5))
            .await;
        assert!(
            matches!(refused, Err(GuardError::NotAllowed(Blocked::Loopback))),
            "{refused:?}"
        );
        let open = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(open
            .connect("127.0.0.1", port, Duration::from_secs(5))
            .await
            .is_ok());
        drop(listener);
        assert!(matches!(
            open.connect("127.0.0.1", port, Duration::from_secs(5))
                .await,
            Err(GuardError::Refused)
        ));
    }

    #[tokio::test]
    async fn the_reqwest_resolver_refuses_a_name_that_resolves_to_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: AddressPolicy::default(),
            }))
            .build()
            .unwrap();
        let err = client
            .post(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            guard_error_in(&err).map(ToString::to_string).as_deref(),
            Some("address not allowed: the host is a loopback address"),
            "{err:?}"
        );
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "nothing connected");
    }
}
