//! `routers[]`: each WebSocket route, its backends and its paths.

use serde_json::Value;

use super::fields::{kind, Fields, Report};
use crate::route::PathPattern;

/// One WebSocket route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index in `routers[]` (for logs).
    pub index: usize,
    /// `external_path`: what clients ask for.
    pub external: PathPattern,
    /// `internal_path`: what the backend is asked for (`{name}` substituted).
    pub internal: PathPattern,
    /// `backends[]` (at least one).
    pub backends: Vec<Backend>,
    /// `auth_required` (default false).
    pub auth_required: bool,
    /// `load_balancing_strategy` (default `round_robin`).
    pub strategy: Strategy,
    /// `retry.max_retries` (default 2): other backends tried after a failed connect, before
    /// the client got its 101.
    pub max_retries: u32,
    /// `sticky.key`: what keeps a client on one backend (none: the strategy decides).
    pub sticky: Option<Sticky>,
}

/// `sticky.key`: where a connection's stickiness key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// `ip`: the client address.
    Ip,
    /// `header:NAME`.
    Header(String),
    /// `cookie:NAME`.
    Cookie(String),
    /// `query:NAME`.
    Query(String),
    /// `claim:NAME` (of the verified JWT).
    Claim(String),
}

/// How a route picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `round_robin`: smooth weighted round robin (nginx's).
    RoundRobin,
    /// `least_connections`: fewest open proxied connections per unit of weight.
    LeastConnections,
    /// `random`: weighted random.
    Random,
    /// `ip_hash`: the client address, by weighted rendezvous hashing.
    IpHash,
}

impl Strategy {
    const NAMES: [(&'static str, Strategy); 4] = [
        ("round_robin", Strategy::RoundRobin),
        ("least_connections", Strategy::LeastConnections),
        ("random", Strategy::Random),
        ("ip_hash", Strategy::IpHash),
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        Strategy::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("?", |(n, _)| n)
    }
}

/// One backend of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `wss://` (true) or `ws://` (false).
    pub tls: bool,
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `weight` (>= 1, default 1).
    pub weight: u32,
}

impl Backend {
    /// `ws://host:port` (for logs and error messages).
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value for this backend.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Reads `routers`; skips (with a warning) routers of another protocol.
pub fn read_routers(value: &Value, have_jwt: bool, report: &mut Report) -> Vec<Route> {
    let Some(list) = value.as_array() else {
        report
            .errors
            .push(format!("routers: must be an array, found {}", kind(value)));
        return Vec::new();
    };
    let mut routes: Vec<Route> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let Some(route) = read_router(i, v, have_jwt, report) else {
            continue;
        };
        if let Some(first) = routes
            .iter()
            .find(|r| r.external.same_shape(&route.external))
        {
            report.errors.push(format!(
                "routers[{i}] ({}): external_path: duplicate of routers[{}]",
                route.external.as_str(),
                first.index
            ));
        }
        routes.push(route);
    }
    routes
}

fn read_router(i: usize, v: &Value, have_jwt: bool, report: &mut Report) -> Option<Route> {
    let ext_text = v
        .get("external_path")
        .and_then(Value::as_str)
        .unwrap_or("?");
    // Escaped: a control character in the path must not split the one-line message.
    let ctx = format!("routers[{i}] ({}): ", ext_text.escape_debug());
    let mut f = Fields::new(&ctx, "", v, report)?;
    match f.required_string(report, "protocol") {
        Some("websocket") => {}
        Some(other) => {
            report.warnings.push(format!(
                "{ctx}protocol {other:?} is not served by this gateway: router skipped"
            ));
            return None;
        }
        None => return None,
    }
    let errors_before = report.errors.len();
    let external = path_field(&mut f, report, "external_path");
    let internal = path_field(&mut f, report, "internal_path");
    if let (Some(ext), Some(int)) = (&external, &internal) {
        for p in int.params() {
            if !ext.params().any(|q| q == p) {
                f.error(
                    report,
                    "internal_path",
                    format!("uses {{{p}}}, which external_path does not have"),
                );
            }
        }
    }
    let before_methods = report.errors.len();
    match f.strings(report, "methods") {
        None if report.errors.len() == before_methods => {
            f.error(report, "methods", "is required and must contain \"GET\"")
        }
        Some(m) if !m.iter().any(|m| m.eq_ignore_ascii_case("GET")) => f.error(
            report,
            "methods",
            format!("{m:?} must contain \"GET\" (a WebSocket upgrade is a GET)"),
        ),
        _ => {}
    }
    let auth_required = f.bool(report, "auth_required", false);
    if auth_required && !have_jwt {
        f.error(
            report,
            "auth_required",
            "is true but there is no valid jwt block",
        );
    }
    let backends = read_backends(&mut f, report);
    let strategy = match f.string(report, "load_balancing_strategy") {
        None => Strategy::RoundRobin,
        Some(name) => match Strategy::NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, s)) => *s,
            None => {
                let names: Vec<&str> = Strategy::NAMES.iter().map(|(n, _)| *n).collect();
                f.error(
                    report,
                    "load_balancing_strategy",
                    format!("{name:?} is not one of {}", names.join(", ")),
                );
                Strategy::RoundRobin
            }
        },
    };
    let max_retries = read_retry(&mut f, report);
    let sticky = read_sticky(&mut f, report, auth_required);
    f.finish(report);
    if report.errors.len() > errors_before {
        return None;
    }
    Some(Route {
        index: i,
        external: external?,
        internal: internal?,
        backends,
        auth_required,
        strategy,
        max_retries,
        sticky,
    })
}

/// `sticky: {"key": "ip" | "header:NAME" | "cookie:NAME" | "query:NAME" | "claim:NAME"}`.
fn read_sticky(f: &mut Fields, report: &mut Report, auth_required: bool) -> Option<Sticky> {
    let v = f.raw("sticky")?;
    let ctx = f.name("");
    let mut s = Fields::new(&ctx, "sticky.", v, report)?;
    let key = s.required_string(report, "key");
    let parsed = key.and_then(|k| {
        let named = |prefix: &str| k.strip_prefix(prefix).filter(|n| !n.is_empty());
        let sticky = if k == "ip" {
            Sticky::Ip
        } else if let Some(n) = named("header:") {
            Sticky::Header(n.to_string())
        } else if let Some(n) = named("cookie:") {
            Sticky::Cookie(n.to_string())
        } else if let Some(n) = named("query:") {
            Sticky::Query(n.to_string())
        } else if let Some(n) = named("claim:") {
            if !auth_required {
                s.error(
                    report,
                    "key",
                    "claim: keys need auth_required: true (a verified token)",
                );
                return None;
            }
            Sticky::Claim(n.to_string())
        } else {
            s.error(
                report,
                "key",
                format!("{k:?} is not ip, header:NAME, cookie:NAME, query:NAME or claim:NAME"),
            );
            return None;
        };
        Some(sticky)
    });
    s.finish(report);
    parsed
}

/// `retry: {"max_retries": N}` (0 to 100, default 2).
fn read_retry(f: &mut Fields, report: &mut Report) -> u32 {
    const DEFAULT: u32 = 2;
    let Some(v) = f.raw("retry") else {
        return DEFAULT;
    };
    let ctx = f.name("");
    let Some(mut r) = Fields::new(&ctx, "retry.", v, report) else {
        return DEFAULT;
    };
    let n = r.int(report, "max_retries", 0, 100, DEFAULT as u64) as u32;
    r.finish(report);
    n
}

fn path_field(f: &mut Fields, report: &mut Report, key: &'static str) -> Option<PathPattern> {
    let text = f.required_string(report, key)?;
    PathPattern::parse(text)
        .map_err(|e| f.error(report, key, e))
        .ok()
}

fn read_backends(f: &mut Fields, report: &mut Report) -> Vec<Backend> {
    let list = match f.raw("backends") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            f.error(report, "backends", "must list at least one backend");
            return Vec::new();
        }
        Some(other) => {
            f.error(
                report,
                "backends",
                format!("must be an array, found {}", kind(other)),
            );
            return Vec::new();
        }
        None => {
            f.error(report, "backends", "is required (at least one backend)");
            return Vec::new();
        }
    };
    let ctx = f.name("");
    list.iter()
        .enumerate()
        .filter_map(|(j, v)| {
            let mut b = Fields::new(&ctx, &format!("backends[{j}]."), v, report)?;
            let host = b.required_string(report, "host");
            let port = match b.raw("port") {
                None => {
                    b.error(report, "port", "is required (1-65535)");
                    0
                }
                Some(_) => b.int(report, "port", 1, 65535, 0) as u16,
            };
            let weight = b.int(report, "weight", 1, 1_000_000, 1) as u32;
            let parsed =
                host.and_then(|h| parse_host(h).map_err(|e| b.error(report, "host", e)).ok());
            b.finish(report);
            let (tls, host) = parsed?;
            (port != 0).then_some(Backend {
                tls,
                host,
                port,
                weight,
            })
        })
        .collect()
}

/// `ws://name` or `wss://name` -> (tls, name). A port or path in the host is refused, since
/// `port` and `internal_path` are separate fields.
pub fn parse_host(text: &str) -> Result<(bool, String), String> {
    let (tls, rest) = if let Some(r) = text.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = text.strip_prefix("wss://") {
        (true, r)
    } else {
        return Err(format!("{text:?} must start with ws:// or wss://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let name = if let Some(v6) = rest.strip_prefix('[') {
        match v6.strip_suffix(']') {
            Some(addr) if addr.parse::<std::net::Ipv6Addr>().is_ok() => addr,
            _ => return Err(format!("{text:?}: bad IPv6 address")),
        }
    } else {
        if rest.contains(':') {
            return Err(format!(
                "{text:?}: put the port in the port field, not in host"
            ));
        }
        rest
    };
    if name.is_empty()
        || (!rest.starts_with('[')
            && !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
    {
        return Err(format!(
            "{text:?}: the host must be a plain name or IP address (no path, user or query)"
        ));
    }
    Ok((tls, name.to_string()))
}
