//! `routers[]`: each WebSocket route, its backends and its paths.

use serde_json::Value;

use super::backends::{read_backends, Backend};
use super::fields::{closest, kind, Fields, Report};
use super::policies::{read_message_filter, read_origins, read_rate_limit};
pub use super::policies::{Cidr, MessageFilter, OnExceed, RateLimit};
use super::resilience::{read_circuit, read_health, CircuitBreaker, HealthCheck};
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
    /// `pass_token_param` (default false): on an `auth_required` route, the backend request
    /// keeps the `jwt.query_param` parameter (removed by default: the token is the gateway's).
    pub pass_token_param: bool,
    /// `load_balancing_strategy` (default `round_robin`).
    pub strategy: Strategy,
    /// `retry.max_retries` (default 2): other backends tried after a failed connect, before
    /// the client got its 101.
    pub max_retries: u32,
    /// `sticky.key`: what keeps a client on one backend (none: the strategy decides).
    pub sticky: Option<Sticky>,
    /// `circuit_breaker` (on by default).
    pub circuit: CircuitBreaker,
    /// `health_check` (off unless configured, or a backend has a `health_check_path`).
    pub health: Option<HealthCheck>,
    /// `max_connections`: open connections on this route (unlimited when absent).
    pub max_connections: Option<usize>,
    /// `rate_limit` (nothing limited by default).
    pub rate_limit: RateLimit,
    /// `allowed_origins` in lowercase (`None`: any origin).
    pub origins: Option<Vec<String>>,
    /// `require_origin` (false): refuse requests without an `Origin`.
    pub require_origin: bool,
    /// `message_filter` (none: every message passes, on the fast path).
    pub filter: Option<MessageFilter>,
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

/// Router protocols of the Kairos format that other Kairos gateways serve: a router with one
/// is skipped (with a warning), its other fields unchecked. Any other protocol is an error.
const OTHER_PROTOCOLS: [&str; 3] = ["http", "ftp", "dns"];

/// What became of one entry of `routers`.
enum Read {
    /// A valid websocket route (boxed: the other variants are empty).
    Route(Box<Route>),
    /// A router of another Kairos protocol, skipped with a warning.
    Skipped,
    /// Not a valid websocket route: its problems are in the report.
    Refused,
}

/// Reads `routers`; skips (with a warning) routers of another Kairos protocol. A config whose
/// routers are all skipped (or none) serves nothing: that is an error.
pub fn read_routers(value: &Value, have_jwt: bool, report: &mut Report) -> Vec<Route> {
    let Some(list) = value.as_array() else {
        report
            .errors
            .push(format!("routers: must be an array, found {}", kind(value)));
        return Vec::new();
    };
    let mut routes: Vec<Route> = Vec::new();
    let mut websocket = 0;
    for (i, v) in list.iter().enumerate() {
        let route = match read_router(i, v, have_jwt, report) {
            Read::Route(route) => *route,
            Read::Skipped => continue,
            Read::Refused => {
                websocket += 1;
                continue;
            }
        };
        websocket += 1;
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
    if websocket == 0 {
        report.errors.push(format!(
            "routers: no websocket route ({} router(s), none with \"protocol\": \"websocket\"): \
             every request would get 404",
            list.len()
        ));
    }
    routes
}

fn read_router(i: usize, v: &Value, have_jwt: bool, report: &mut Report) -> Read {
    let ext_text = v
        .get("external_path")
        .and_then(Value::as_str)
        .unwrap_or("?");
    // Escaped: a control character in the path must not split the one-line message.
    let ctx = format!("routers[{i}] ({}): ", ext_text.escape_debug());
    let Some(mut f) = Fields::new(&ctx, "", v, report) else {
        return Read::Refused;
    };
    let errors_before = report.errors.len();
    // A missing or unknown protocol is reported; the rest of the router is still read as a
    // websocket route, so that every problem of it (a misspelt field too) is reported at once.
    if read_protocol(&mut f, report) == Protocol::Other {
        return Read::Skipped;
    }
    let route = read_route(i, &mut f, have_jwt, report);
    f.finish(report);
    match route {
        Some(route) if report.errors.len() == errors_before => Read::Route(Box::new(route)),
        _ => Read::Refused,
    }
}

/// A router's `protocol`.
#[derive(PartialEq, Eq)]
enum Protocol {
    /// `websocket`: served.
    Websocket,
    /// One of [`OTHER_PROTOCOLS`]: skipped, with a warning.
    Other,
    /// Missing, or none of the above: an error (naming the closest known one).
    Wrong,
}

/// Reads `protocol`: `websocket`, or another Kairos protocol (a warning), or an error.
fn read_protocol(f: &mut Fields, report: &mut Report) -> Protocol {
    let Some(protocol) = f.required_string(report, "protocol") else {
        return Protocol::Wrong;
    };
    if protocol == "websocket" {
        return Protocol::Websocket;
    }
    if OTHER_PROTOCOLS.contains(&protocol) {
        let name = f.name("protocol");
        report.warnings.push(format!(
            "{name} {protocol:?} is not served by this gateway: router skipped"
        ));
        return Protocol::Other;
    }
    let known: Vec<&str> = ["websocket"].into_iter().chain(OTHER_PROTOCOLS).collect();
    let hint = match closest(protocol, &known) {
        Some(p) => format!("did you mean {p:?}?"),
        None => format!(
            "want \"websocket\" (or {}: other Kairos routers, which this gateway skips)",
            OTHER_PROTOCOLS.map(|p| format!("{p:?}")).join(", ")
        ),
    };
    f.error(
        report,
        "protocol",
        format!("{protocol:?} is not a known protocol; {hint}"),
    );
    Protocol::Wrong
}

/// Every field of a websocket router but `protocol`; `None` when one of them is wrong.
fn read_route(i: usize, f: &mut Fields, have_jwt: bool, report: &mut Report) -> Option<Route> {
    let (external, internal) = read_paths(f, report);
    read_methods(f, report);
    let auth_required = f.bool(report, "auth_required", false);
    if auth_required && !have_jwt {
        f.error(
            report,
            "auth_required",
            "is true but there is no valid jwt block",
        );
    }
    let pass_token_param = f.bool(report, "pass_token_param", false);
    if pass_token_param && !auth_required {
        f.error(
            report,
            "pass_token_param",
            "only has a meaning with auth_required: true (the parameter is removed only there)",
        );
    }
    let backends = read_backends(f, report);
    let strategy = read_strategy(f, report);
    let max_retries = read_retry(f, report);
    let sticky = read_sticky(f, report, auth_required);
    let circuit = read_circuit(f, report, backends.len());
    let any_path = backends.iter().any(|b| b.health_check_path.is_some());
    let health = read_health(f, report, any_path);
    if let (Some(_), Some(int)) = (&health, &internal) {
        check_probe_paths(f, report, int, &backends);
    }
    let max_connections = f
        .raw("max_connections")
        .map(|_| f.int(report, "max_connections", 1, 100_000_000, 1) as usize);
    let rate_limit = read_rate_limit(f, report);
    let (origins, require_origin) = read_origins(f, report);
    let filter = read_message_filter(f, report);
    Some(Route {
        index: i,
        external: external?,
        internal: internal?,
        backends,
        auth_required,
        pass_token_param,
        strategy,
        max_retries,
        sticky,
        circuit,
        health,
        max_connections,
        rate_limit,
        origins,
        require_origin,
        filter,
    })
}

/// `external_path` and `internal_path`, which may only use the external path's parameters.
fn read_paths(f: &mut Fields, report: &mut Report) -> (Option<PathPattern>, Option<PathPattern>) {
    let external = path_field(f, report, "external_path");
    let internal = path_field(f, report, "internal_path");
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
    (external, internal)
}

/// `methods`: required, and must contain `GET`.
fn read_methods(f: &mut Fields, report: &mut Report) {
    let before = report.errors.len();
    match f.strings(report, "methods") {
        None if report.errors.len() == before => {
            f.error(report, "methods", "is required and must contain \"GET\"")
        }
        Some(m) if !m.iter().any(|m| m.eq_ignore_ascii_case("GET")) => f.error(
            report,
            "methods",
            format!("{m:?} must contain \"GET\" (a WebSocket upgrade is a GET)"),
        ),
        _ => {}
    }
}

/// `load_balancing_strategy` (default `round_robin`).
fn read_strategy(f: &mut Fields, report: &mut Report) -> Strategy {
    let Some(name) = f.string(report, "load_balancing_strategy") else {
        return Strategy::RoundRobin;
    };
    match Strategy::NAMES.iter().find(|(n, _)| *n == name) {
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
    }
}

/// A health check by WebSocket handshake asks for `internal_path`: it cannot when the path has
/// `{name}` parameters, unless every backend has its own `health_check_path`.
fn check_probe_paths(
    f: &Fields,
    report: &mut Report,
    internal: &PathPattern,
    backends: &[Backend],
) {
    let unprobed = backends.iter().any(|b| b.health_check_path.is_none());
    if internal.params().next().is_some() && unprobed {
        f.error(
            report,
            "health_check",
            format!(
                "internal_path {} has {{name}} parameters, so a WebSocket probe cannot \
                 know what to ask for: give each backend a health_check_path",
                internal.as_str()
            ),
        );
    }
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
