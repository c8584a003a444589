//! Who the client is, for the per-address limits: the socket peer, or, when the peer is a
//! trusted proxy (`server.trusted_proxies`), the address its `X-Forwarded-For` names; and what
//! the limits count it as ([`ClientKey`]: an IPv6 client by its prefix).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::config::Cidr;
use crate::handshake::Head;

/// The client address of a request from `peer`.
///
/// A peer outside `trusted` is the client, whatever headers it sent (so a client cannot
/// escape its limits by writing `X-Forwarded-For` itself). A trusted peer's
/// `X-Forwarded-For` (every such header, in order, comma-separated) is walked right to left,
/// skipping trusted addresses: the first untrusted one is the client; when all are trusted, the
/// leftmost. An entry that is not an address (`unknown`, garbage, a value that is not text)
/// ends the walk at the last good address: what lies left of it was written by someone the
/// walk can no longer vouch for. Empty entries are skipped; an entry may carry a port
/// (`1.2.3.4:5678`, `[::1]:5678`). IPv4-mapped IPv6 addresses count as IPv4.
pub fn client_ip(peer: IpAddr, trusted: &[Cidr], req: &impl Head) -> IpAddr {
    let is_trusted = |ip: IpAddr| is_trusted(ip, trusted);
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let values = req
        .headers()
        .iter()
        .rev()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Forwarded-For"));
    for (_, value) in values {
        let Ok(text) = std::str::from_utf8(value) else {
            return client;
        };
        for entry in text.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                return client;
            }
        }
    }
    client
}

/// Whether `peer` is one of the trusted proxies (IPv4-mapped IPv6 counts as IPv4).
pub fn is_trusted(peer: IpAddr, trusted: &[Cidr]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|c| c.contains(peer))
}

/// What the per-address limits count: an IPv4 address, or an IPv6 address's network of its
/// first `server.ipv6_prefix` bits (one host commonly has a whole /64 to pick addresses from,
/// so counting IPv6 addresses apart would let it count as 2^64 clients). 18 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    net: IpAddr,
    prefix: u8,
}

impl ClientKey {
    /// The key of client address `ip`; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey {
                net: IpAddr::V4(v4),
                prefix: 32,
            },
            IpAddr::V6(v6) => {
                let prefix = ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                ClientKey {
                    net: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    prefix,
                }
            }
        }
    }
}

impl fmt::Display for ClientKey {
    /// `192.0.2.1`, `2001:db8::1` (a /128), or `2001:db8:1:2::/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.net {
            IpAddr::V6(net) if self.prefix < 128 => write!(f, "{net}/{}", self.prefix),
            net => write!(f, "{net}"),
        }
    }
}

/// `1.2.3.4`, `::1`, `[::1]`, `1.2.3.4:80` or `[::1]:80`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    entry.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Request;

    fn request(xff: &[&[u8]]) -> Request {
        let mut headers = crate::handshake::Headers::default();
        headers.push("Host", b"gw");
        for v in xff {
            headers.push("X-Forwarded-For", v);
            headers.push("X-Other", b"1.1.1.1");
        }
        Request {
            method: "GET".into(),
            target: "/".into(),
            minor_version: 1,
            headers,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_walk_finds_the_first_untrusted_address_from_the_right() {
        let trusted: Vec<Cidr> = ["127.0.0.1", "10.0.0.0/8"]
            .iter()
            .map(|c| Cidr::parse(c).unwrap())
            .collect();
        let local = ip("127.0.0.1");
        #[rustfmt::skip]
        let cases: &[(&str, IpAddr, &[&[u8]], &str)] = &[
            ("untrusted peer: headers ignored", ip("192.0.2.9"), &[b"203.0.113.5"], "192.0.2.9"),
            ("trusted peer, no header", local, &[], "127.0.0.1"),
            ("one hop", local, &[b"203.0.113.5"], "203.0.113.5"),
            ("spoofed left part is skipped", local, &[b"6.6.6.6, 203.0.113.5"], "203.0.113.5"),
            ("trusted hops skipped", local, &[b"203.0.113.5, 10.1.2.3, 10.9.9.9"], "203.0.113.5"),
            ("all trusted: the leftmost", local, &[b"10.0.0.1, 10.0.0.2"], "10.0.0.1"),
            ("several headers, in order", local, &[b"6.6.6.6, 203.0.113.5", b"10.0.0.7"], "203.0.113.5"),
            ("the last header is the nearest hop", local, &[b"10.0.0.1", b"198.51.100.1"], "198.51.100.1"),
            ("garbage ends the walk", local, &[b"203.0.113.5, unknown, 10.0.0.3"], "10.0.0.3"),
            ("garbage first: the peer", local, &[b"203.0.113.5, bogus"], "127.0.0.1"),
            ("not text ends the walk", local, &[b"203.0.113.5", b"\xff"], "127.0.0.1"),
            ("empty entries are skipped", local, &[b"203.0.113.5, , "], "203.0.113.5"),
            ("ports are allowed", local, &[b"203.0.113.5:4711"], "203.0.113.5"),
            ("IPv6 with brackets", local, &[b"[2001:db8::1]"], "2001:db8::1"),
            ("IPv6 with a port", local, &[b"[2001:db8::1]:80"], "2001:db8::1"),
            ("IPv4-mapped counts as IPv4", local, &[b"::ffff:203.0.113.5"], "203.0.113.5"),
            ("a mapped peer is trusted too", ip("::ffff:127.0.0.1"), &[b"203.0.113.5"], "203.0.113.5"),
        ];
        for (what, peer, xff, want) in cases {
            let got = client_ip(*peer, &trusted, &request(xff));
            assert_eq!(got, ip(want), "{what}");
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_prefix() {
        let key = |s: &str, prefix| ClientKey::new(ip(s), prefix);
        #[rustfmt::skip]
        let cases: &[(&str, u8, &str)] = &[
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff::1", 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
            ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),
            ("2001:db8:1:2:3:4:5:6", 33, "2001:db8::/33"),
            ("::ffff:203.0.113.5", 64, "203.0.113.5"),
            ("203.0.113.5", 64, "203.0.113.5"),
        ];
        for (addr, prefix, want) in cases {
            assert_eq!(key(addr, *prefix).to_string(), *want, "{addr}/{prefix}");
        }
        assert_eq!(key("2001:db8:1:2::1", 64), key("2001:db8:1:2::9", 64));
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_ne!(key("2001:db8:1:2::", 64), key("2001:db8:1:2::", 128));
        assert_eq!(key("::ffff:192.0.2.1", 64), key("192.0.2.1", 64));
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let got = client_ip(ip("127.0.0.1"), &[], &request(&[b"203.0.113.5"]));
        assert_eq!(got, ip("127.0.0.1"));
    }
}
