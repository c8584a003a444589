//! Per-route policies: `max_connections`, `rate_limit`, `allowed_origins` / `require_origin`
//! and `message_filter`; and `server.trusted_proxies`.

use std::net::IpAddr;

use serde_json::Value;

use super::fields::{kind, unknown_fields, Fields, Report};
use crate::bucket::Bucket;

/// What happens to a connection over its message or byte rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExceed {
    /// Stop reading that side until tokens return: TCP slows the sender, nothing is lost.
    #[default]
    Throttle,
    /// Close with 1008 "rate limit".
    Close,
}

/// The default of `rate_limit.max_tracked_clients`.
pub const DEFAULT_TRACKED_CLIENTS: usize = 100_000;

/// `rate_limit`: per client address and per connection.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// `connections_per_ip`: open connections of one client address on this route.
    pub connections_per_ip: Option<u32>,
    /// `handshakes_per_second_per_ip`: new connections of one client address.
    pub handshakes_per_ip: Option<Bucket>,
    /// `max_tracked_clients` (100 000; 16 to 1 000 000): client addresses the route keeps
    /// state for, for the two rules above. It bounds the memory of that state (about 75
    /// bytes a client at most: 7.5 MB at the default), whoever floods the route.
    pub max_tracked_clients: usize,
    /// `messages_per_second`: data messages, per connection and direction.
    pub messages: Option<Bucket>,
    /// `bytes_per_second`: wire bytes, per connection and direction.
    pub bytes: Option<Bucket>,
    /// `on_exceed` (throttle) for the message and byte rates.
    pub on_exceed: OnExceed,
}

impl Default for RateLimit {
    /// No rule, and the default table bound.
    fn default() -> RateLimit {
        RateLimit {
            connections_per_ip: None,
            handshakes_per_ip: None,
            max_tracked_clients: DEFAULT_TRACKED_CLIENTS,
            messages: None,
            bytes: None,
            on_exceed: OnExceed::default(),
        }
    }
}

/// `message_filter`: what messages may pass, checked whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFilter {
    /// `allow_types` (both): text, binary.
    pub allow_text: bool,
    /// See `allow_text`.
    pub allow_binary: bool,
    /// `max_message_bytes.client_to_backend` (the global limit when absent).
    pub max_up: Option<usize>,
    /// `max_message_bytes.backend_to_client` (the global limit when absent).
    pub max_down: Option<usize>,
    /// `require_json`: text messages from the client must be JSON.
    pub require_json: bool,
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or `addr`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (a, p) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{text:?}: the prefix must be 0 to {max}")),
            }
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: IpAddr| match a {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let ((net, nlen), (host, hlen)) = (bits(self.addr), bits(ip));
        if nlen != hlen {
            return false;
        }
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & mask == host & mask
    }
}

/// Reads `server.trusted_proxies`.
pub fn read_trusted_proxies(s: &mut Fields, report: &mut Report) -> Vec<Cidr> {
    let list = s.strings(report, "trusted_proxies").unwrap_or_default();
    list.iter()
        .filter_map(|t| {
            Cidr::parse(t)
                .map_err(|e| s.error(report, "trusted_proxies", e))
                .ok()
        })
        .collect()
}

/// A rate: a number (the burst is one second's worth) or `{"rate": N, "burst": M}`.
fn bucket(f: &mut Fields, report: &mut Report, key: &'static str) -> Option<Bucket> {
    let v = f.raw(key)?;
    let positive = |v: &Value| v.as_f64().filter(|n| *n > 0.0 && n.is_finite());
    let parsed = match v {
        Value::Number(_) => positive(v).map(|rate| Bucket {
            rate,
            burst: rate.max(1.0),
        }),
        Value::Object(m) => {
            let rate = m.get("rate").and_then(positive);
            let burst = m.get("burst").map_or(rate.map(|r| r.max(1.0)), positive);
            // Unknown fields are errors, as everywhere in the config.
            let prefix = format!("{}.", f.name(key));
            unknown_fields(report, &prefix, m, &["rate", "burst"]);
            match (rate, burst) {
                (Some(rate), Some(burst)) if burst >= 1.0 => Some(Bucket { rate, burst }),
                _ => None,
            }
        }
        _ => None,
    };
    if parsed.is_none() {
        f.error(
            report,
            key,
            format!(
                "must be a positive number, or {{\"rate\": N, \"burst\": M}} with M >= 1, \
                 found {v}"
            ),
        );
    }
    parsed
}

/// Reads a router's `rate_limit`.
pub fn read_rate_limit(f: &mut Fields, report: &mut Report) -> RateLimit {
    let Some(v) = f.raw("rate_limit") else {
        return RateLimit::default();
    };
    let ctx = f.name("");
    let Some(mut r) = Fields::new(&ctx, "rate_limit.", v, report) else {
        return RateLimit::default();
    };
    let connections_per_ip = r
        .raw("connections_per_ip")
        .map(|_| r.int(report, "connections_per_ip", 1, 1_000_000, 1) as u32);
    let tracked = DEFAULT_TRACKED_CLIENTS as u64;
    let limit = RateLimit {
        connections_per_ip,
        handshakes_per_ip: bucket(&mut r, report, "handshakes_per_second_per_ip"),
        max_tracked_clients: r.int(report, "max_tracked_clients", 16, 1_000_000, tracked) as usize,
        messages: bucket(&mut r, report, "messages_per_second"),
        bytes: bucket(&mut r, report, "bytes_per_second"),
        on_exceed: match r.string(report, "on_exceed") {
            None | Some("throttle") => OnExceed::Throttle,
            Some("close") => OnExceed::Close,
            Some(other) => {
                r.error(
                    report,
                    "on_exceed",
                    format!("{other:?} is not \"throttle\" or \"close\""),
                );
                OnExceed::Throttle
            }
        },
    };
    r.finish(report);
    limit
}

/// Reads `allowed_origins` (`None`: any) and `require_origin`.
pub fn read_origins(f: &mut Fields, report: &mut Report) -> (Option<Vec<String>>, bool) {
    let origins = f.strings(report, "allowed_origins").and_then(|list| {
        if list.contains(&"*") {
            return None;
        }
        for o in &list {
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            let ok = host.is_some_and(|h| !h.is_empty() && !h.contains(['/', ' ']));
            if !ok {
                f.error(
                    report,
                    "allowed_origins",
                    format!(
                        "{o:?} is not an origin: write scheme://host[:port], as browsers send it \
                         (no path), or \"*\""
                    ),
                );
            }
        }
        Some(list.iter().map(|o| o.to_ascii_lowercase()).collect())
    });
    let require = f.bool(report, "require_origin", false);
    (origins, require)
}

/// Reads `message_filter`.
pub fn read_message_filter(f: &mut Fields, report: &mut Report) -> Option<MessageFilter> {
    let v = f.raw("message_filter")?;
    let ctx = f.name("");
    let mut m = Fields::new(&ctx, "message_filter.", v, report)?;
    let types = m.strings(report, "allow_types");
    let (mut allow_text, mut allow_binary) = (types.is_none(), types.is_none());
    for t in types.unwrap_or_default() {
        match t {
            "text" => allow_text = true,
            "binary" => allow_binary = true,
            other => m.error(
                report,
                "allow_types",
                format!("{other:?} is not \"text\" or \"binary\""),
            ),
        }
    }
    let (mut max_up, mut max_down) = (None, None);
    match m.raw("max_message_bytes") {
        None => {}
        Some(Value::Object(_)) => {
            let ctx = m.name("");
            if let Some(v) = m.raw("max_message_bytes") {
                if let Some(mut b) = Fields::new(&ctx, "max_message_bytes.", v, report) {
                    let mut side = |key| {
                        b.raw(key)
                            .map(|_| b.int(report, key, 16, 1 << 30, 16) as usize)
                    };
                    max_up = side("client_to_backend");
                    max_down = side("backend_to_client");
                    b.finish(report);
                }
            }
        }
        Some(other) => m.error(
            report,
            "max_message_bytes",
            format!(
                "must be {{\"client_to_backend\": N, \"backend_to_client\": N}}, found {}",
                kind(other)
            ),
        ),
    }
    let require_json = m.bool(report, "require_json", false);
    m.finish(report);
    Some(MessageFilter {
        allow_text,
        allow_binary,
        max_up,
        max_down,
        require_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_their_addresses() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("192.0.2.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
    }
}
