//! Per-route policies: `rate_limit`, `allowed_origins` and `message_filter`; and the IP
//! networks of `server.trusted_proxies`.

use std::net::IpAddr;

use serde_json::Value;

use super::fields::{kind, At, Fields, Object};
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

impl Object for RateLimit {
    fn fields(&mut self, f: &mut Fields) {
        f.int("connections_per_ip", 1, 1_000_000, |n| {
            self.connections_per_ip = Some(n as u32)
        });
        f.any("handshakes_per_second_per_ip", |v, at| {
            self.handshakes_per_ip = bucket(v, at)
        });
        f.int("max_tracked_clients", 16, 1_000_000, |n| {
            self.max_tracked_clients = n as usize
        });
        f.any("messages_per_second", |v, at| self.messages = bucket(v, at));
        f.any("bytes_per_second", |v, at| self.bytes = bucket(v, at));
        f.text("on_exceed", |name, at| match name {
            "throttle" => self.on_exceed = OnExceed::Throttle,
            "close" => self.on_exceed = OnExceed::Close,
            other => at.fail(format_args!("{other:?} is not \"throttle\" or \"close\"")),
        });
    }
}

/// A rate: a number (the burst is one second's worth) or `{"rate": N, "burst": M}`.
fn bucket(v: &Value, at: &mut At) -> Option<Bucket> {
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
            at.unknown_fields(m, &["rate", "burst"]);
            match (rate, burst) {
                (Some(rate), Some(burst)) if burst >= 1.0 => Some(Bucket { rate, burst }),
                _ => None,
            }
        }
        _ => None,
    };
    if parsed.is_none() {
        at.fail(format_args!(
            "must be a positive number, or {{\"rate\": N, \"burst\": M}} with M >= 1, found {v}"
        ));
    }
    parsed
}

/// `allowed_origins` in lowercase (`None`: any, `"*"`).
pub(super) fn origins(list: Vec<&str>, at: &mut At) -> Option<Vec<String>> {
    if list.contains(&"*") {
        return None;
    }
    for o in &list {
        let host = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(['/', ' '])) {
            at.fail(format_args!(
                "{o:?} is not an origin: write scheme://host[:port], as browsers send it \
                 (no path), or \"*\""
            ));
        }
    }
    Some(list.iter().map(|o| o.to_ascii_lowercase()).collect())
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

impl Default for MessageFilter {
    /// Every message passes (as without the block).
    fn default() -> MessageFilter {
        MessageFilter {
            allow_text: true,
            allow_binary: true,
            max_up: None,
            max_down: None,
            require_json: false,
        }
    }
}

impl Object for MessageFilter {
    fn fields(&mut self, f: &mut Fields) {
        f.texts("allow_types", |types, at| {
            (self.allow_text, self.allow_binary) = (false, false);
            for t in types {
                match t {
                    "text" => self.allow_text = true,
                    "binary" => self.allow_binary = true,
                    other => at.fail(format_args!("{other:?} is not \"text\" or \"binary\"")),
                }
            }
        });
        f.any("max_message_bytes", |v, at| match v {
            Value::Object(_) => {
                let sides: Sides = at.object(v).unwrap_or_default();
                (self.max_up, self.max_down) = (sides.up, sides.down);
            }
            other => at.fail(format_args!(
                "must be {{\"client_to_backend\": N, \"backend_to_client\": N}}, found {}",
                kind(other)
            )),
        });
        f.flag("require_json", |on| self.require_json = on);
    }
}

/// `message_filter.max_message_bytes`, per direction.
#[derive(Default)]
struct Sides {
    up: Option<usize>,
    down: Option<usize>,
}

impl Object for Sides {
    fn fields(&mut self, f: &mut Fields) {
        f.int("client_to_backend", 16, 1 << 30, |n| {
            self.up = Some(n as usize)
        });
        f.int("backend_to_client", 16, 1 << 30, |n| {
            self.down = Some(n as usize)
        });
    }
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
