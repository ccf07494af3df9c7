//! Request facts: the client's address behind trusted proxies, its anonymised form, the agent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::Cidr;

/// Longest user agent stored; longer ones are cut (at a character boundary).
pub const MAX_USER_AGENT: usize = 1024;

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the right-most
/// hop of `X-Forwarded-For` that is not itself trusted. Hops further left are written by the
/// client and cannot be believed.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a [u8]>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&[u8]> = forwarded_for
        .flat_map(|v| v.split(|b| *b == b','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An unreadable hop ends what can be trusted: keep the last address we could read.
        let Some(ip) = std::str::from_utf8(hop).ok().and_then(parse_hop) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// IPv4: the last octet zeroed (a /24). IPv6: the last 80 bits zeroed, keeping the /48 a site
/// is usually given, which says as much as a /24 does for IPv4.
pub fn anonymize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1))),
    }
}

/// The user agent as text (lossy for bytes that are not UTF-8), bounded in length.
pub fn user_agent(raw: Option<&[u8]>) -> String {
    let Some(raw) = raw else {
        return String::new();
    };
    let mut s = String::from_utf8_lossy(raw).into_owned();
    if s.len() > MAX_USER_AGENT {
        let mut cut = MAX_USER_AGENT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let xff: &[&[u8]] = &[b"203.0.113.9, 198.51.100.7, 10.0.0.5"];
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(ip("192.0.2.1"), xff.iter().copied(), &trusted),
            ip("192.0.2.1")
        );
        // Trusted peer: the right-most untrusted hop (the left one is the client's claim).
        assert_eq!(
            client_ip(ip("10.1.1.1"), xff.iter().copied(), &trusted),
            ip("198.51.100.7")
        );
        // Several header lines read as one list.
        let lines: &[&[u8]] = &[b"203.0.113.9", b"198.51.100.8:4431, 10.9.9.9"];
        assert_eq!(
            client_ip(ip("10.1.1.1"), lines.iter().copied(), &trusted),
            ip("198.51.100.8")
        );
        // All hops trusted: the left-most one.
        let inner: &[&[u8]] = &[b"10.2.2.2, 10.3.3.3"];
        assert_eq!(
            client_ip(ip("::1"), inner.iter().copied(), &trusted),
            ip("10.2.2.2")
        );
        // Garbage stops the walk at the last readable address.
        let junk: &[&[u8]] = &[b"198.51.100.7, bogus, 10.0.0.4"];
        assert_eq!(
            client_ip(ip("10.1.1.1"), junk.iter().copied(), &trusted),
            ip("10.0.0.4")
        );
        let bad_utf8: &[&[u8]] = &[b"\xff\xfe"];
        assert_eq!(
            client_ip(ip("10.1.1.1"), bad_utf8.iter().copied(), &trusted),
            ip("10.1.1.1")
        );
        // No header at all.
        assert_eq!(
            client_ip(ip("10.1.1.1"), std::iter::empty(), &trusted),
            ip("10.1.1.1")
        );
        // IPv6 hops and a mapped peer.
        let v6: &[&[u8]] = &[b"[2001:db8::7]:443"];
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), v6.iter().copied(), &trusted),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn anonymized_addresses() {
        assert_eq!(anonymize(ip("198.51.100.77")), ip("198.51.100.0"));
        assert_eq!(
            anonymize(ip("2001:db8:abcd:12:3456:789a:bcde:f012")),
            ip("2001:db8:abcd::")
        );
    }

    #[test]
    fn agents_are_bounded_and_lossy() {
        assert_eq!(user_agent(None), "");
        assert_eq!(user_agent(Some(b"ab\xffc")), "ab\u{fffd}c");
        let long = "é".repeat(MAX_USER_AGENT);
        assert!(user_agent(Some(long.as_bytes())).len() <= MAX_USER_AGENT);
    }
}
