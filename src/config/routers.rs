//! `routers[]`: each WebSocket route, its backends and its paths.

use serde_json::Value;

use super::backends::{self, Backend};
use super::fields::{closest, kind, read, At, Fields, Object};
use super::policies::{self, MessageFilter, RateLimit};
use super::resilience::{CircuitBreaker, HealthCheck};
use super::transform::MessageTransform;
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
    /// `message_transform` (none, or no rule: messages pass unchanged, on the fast path).
    pub transform: Option<MessageTransform>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// `round_robin`: smooth weighted round robin (nginx's).
    #[default]
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

    /// The strategy of this config name, or the default with the problem reported.
    fn named(name: &str, at: &mut At) -> Strategy {
        match Strategy::NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, s)) => *s,
            None => {
                let names: Vec<&str> = Strategy::NAMES.iter().map(|(n, _)| *n).collect();
                at.fail(format_args!("{name:?} is not one of {}", names.join(", ")));
                Strategy::default()
            }
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Strategy::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("?", |(n, _)| n)
    }
}

impl Default for Route {
    /// The defaults documented on the fields (the paths and backends are required).
    fn default() -> Route {
        Route {
            index: 0,
            external: PathPattern::default(),
            internal: PathPattern::default(),
            backends: Vec::new(),
            auth_required: false,
            pass_token_param: false,
            strategy: Strategy::default(),
            max_retries: 2,
            sticky: None,
            circuit: CircuitBreaker::default(),
            health: None,
            max_connections: None,
            rate_limit: RateLimit::default(),
            origins: None,
            require_origin: false,
            filter: None,
            transform: None,
        }
    }
}

impl Object for Route {
    fn fields(&mut self, f: &mut Fields) {
        f.required("is required").text("protocol", websocket);
        f.required("is required")
            .text("external_path", |t, at| self.external = pattern(t, at));
        f.required("is required")
            .text("internal_path", |t, at| self.internal = pattern(t, at));
        f.required("is required and must contain \"GET\"")
            .texts("methods", |m, at| {
                if !m.iter().any(|m| m.eq_ignore_ascii_case("GET")) {
                    let why = "must contain \"GET\" (a WebSocket upgrade is a GET)";
                    at.fail(format_args!("{m:?} {why}"))
                }
            });
        f.flag("auth_required", |on| self.auth_required = on);
        f.flag("pass_token_param", |on| self.pass_token_param = on);
        f.required("is required (at least one backend)")
            .any("backends", |v, at| {
                self.backends = backends::read_all(v, at)
            });
        f.text("load_balancing_strategy", |name, at| {
            self.strategy = Strategy::named(name, at)
        });
        f.nested("retry", |f| {
            f.int("max_retries", 0, 100, |n| self.max_retries = n as u32)
        });
        f.nested("sticky", |f| {
            f.required("is required")
                .text("key", |k, at| self.sticky = sticky(k, at))
        });
        f.any("circuit_breaker", |v, at| {
            self.circuit = at.object(v).unwrap_or_default()
        });
        f.any("health_check", |v, at| self.health = at.object(v));
        f.int("max_connections", 1, 100_000_000, |n| {
            self.max_connections = Some(n as usize)
        });
        f.any("rate_limit", |v, at| {
            self.rate_limit = at.object(v).unwrap_or_default()
        });
        f.texts("allowed_origins", |list, at| {
            self.origins = policies::origins(list, at)
        });
        f.flag("require_origin", |on| self.require_origin = on);
        f.any("message_filter", |v, at| self.filter = at.object(v));
        f.any("message_transform", |v, at| {
            let t: Option<MessageTransform> = at.object(v);
            let rules = |t: &MessageTransform| {
                !t.client_to_backend.is_empty() || !t.backend_to_client.is_empty()
            };
            self.transform = t.filter(rules);
        });
        self.defaults(f);
        self.check(f.at());
    }
}

impl Route {
    /// The defaults that depend on the backends: no breaker for a lone backend, health
    /// checks when a backend has a `health_check_path`.
    fn defaults(&mut self, f: &Fields) {
        if !f.given("circuit_breaker") && self.backends.len() < 2 {
            self.circuit.failure_threshold = 0;
        }
        let probe_paths = self.backends.iter().any(|b| b.health_check_path.is_some());
        if !f.given("health_check") && probe_paths {
            self.health = Some(HealthCheck::default());
        }
    }

    /// The checks across fields.
    fn check(&mut self, at: &mut At) {
        if self.pass_token_param && !self.auth_required {
            at.error(
                "pass_token_param",
                "only has a meaning with auth_required: true (the parameter is removed only there)",
            );
        }
        if matches!(self.sticky, Some(Sticky::Claim(_))) && !self.auth_required {
            at.error(
                "sticky.key",
                "claim: keys need auth_required: true (a verified token)",
            );
            self.sticky = None;
        }
        if let Some(t) = self.transform.as_ref().filter(|_| !self.auth_required) {
            if let Some(claim) = t.claims().first() {
                at.error(
                    "message_transform",
                    format_args!(
                        "a rule sets a value from_claim {claim:?}, which needs auth_required: \
                         true (claims come from the verified token)"
                    ),
                );
            }
        }
        let (ext, int) = (&self.external, &self.internal);
        // An empty pattern is one that was missing or wrong (reported).
        let paths = !ext.as_str().is_empty() && !int.as_str().is_empty();
        for p in int
            .params()
            .filter(|p| paths && !ext.params().any(|q| q == *p))
        {
            let msg = format!("uses {{{p}}}, which external_path does not have");
            at.error("internal_path", msg);
        }
        if self.health.is_some() && paths {
            self.check_probe_paths(at);
        }
    }

    /// A health check by WebSocket handshake asks for `internal_path`: it cannot when the path
    /// has `{name}` parameters, unless every backend has its own `health_check_path`.
    fn check_probe_paths(&self, at: &mut At) {
        let unprobed = self.backends.iter().any(|b| b.health_check_path.is_none());
        if self.internal.params().next().is_some() && unprobed {
            at.error(
                "health_check",
                format_args!(
                    "internal_path {} has {{name}} parameters, so a WebSocket probe cannot \
                     know what to ask for: give each backend a health_check_path",
                    self.internal.as_str()
                ),
            );
        }
    }
}

/// Reads `routers`; skips (with a warning) routers of another Kairos protocol. A config whose
/// routers are all skipped (or none) serves nothing: that is an error.
pub(super) fn read_all(value: &Value, have_jwt: bool, at: &mut At) -> Vec<Route> {
    let Some(list) = value.as_array() else {
        at.fail(format_args!("must be an array, found {}", kind(value)));
        return Vec::new();
    };
    let mut routes: Vec<Route> = Vec::new();
    let mut websocket = 0;
    for (i, v) in list.iter().enumerate() {
        let ext = v.get("external_path").and_then(Value::as_str);
        // Escaped: a control character in the path must not split the one-line message.
        let ext = ext.unwrap_or("?").escape_debug();
        let prefix = format!("routers[{i}] ({ext}): ");
        if let Some(p) = v.get("protocol").and_then(Value::as_str) {
            if OTHER_PROTOCOLS.contains(&p) {
                let why = "is not served by this gateway: router skipped";
                at.warn(format!("{prefix}protocol {p:?} {why}"));
                continue;
            }
        }
        websocket += 1;
        let before = at.errors();
        let mut at = at.child(&prefix);
        let Some(mut route) = read::<Route>(v, &mut at) else {
            continue;
        };
        if route.auth_required && !have_jwt {
            at.error("auth_required", "is true but there is no valid jwt block");
        }
        if at.errors() > before {
            continue;
        }
        route.index = i;
        let same = routes
            .iter()
            .find(|r| r.external.same_shape(&route.external));
        if let Some(first) = same {
            at.problem(format!(
                "routers[{i}] ({}): external_path: duplicate of routers[{}]",
                route.external.as_str(),
                first.index
            ));
        }
        routes.push(route);
    }
    if websocket == 0 {
        at.fail(format_args!(
            "no websocket route ({} router(s), none with \"protocol\": \"websocket\"): \
             every request would get 404",
            list.len()
        ));
    }
    routes
}

/// Router protocols of the Kairos format that other Kairos gateways serve: a router with one
/// is skipped (with a warning), its other fields unchecked. Any other protocol is an error.
const OTHER_PROTOCOLS: [&str; 3] = ["http", "ftp", "dns"];

/// A router's `protocol` other than one of [`OTHER_PROTOCOLS`] (skipped before): `websocket`,
/// or an error naming the closest known one.
fn websocket(protocol: &str, at: &mut At) {
    if protocol == "websocket" {
        return;
    }
    let known: Vec<&str> = ["websocket"].into_iter().chain(OTHER_PROTOCOLS).collect();
    let hint = match closest(protocol, &known) {
        Some(p) => format!("did you mean {p:?}?"),
        None => format!(
            "want \"websocket\" (or {}: other Kairos routers, which this gateway skips)",
            OTHER_PROTOCOLS.map(|p| format!("{p:?}")).join(", ")
        ),
    };
    at.fail(format_args!("{protocol:?} is not a known protocol; {hint}"));
}

/// A path pattern, or the empty one (matching nothing) with the problem reported.
fn pattern(text: &str, at: &mut At) -> PathPattern {
    PathPattern::parse(text)
        .map_err(|e| at.fail(e))
        .unwrap_or_default()
}

/// `sticky.key`: `ip`, `header:NAME`, `cookie:NAME`, `query:NAME` or `claim:NAME`.
fn sticky(k: &str, at: &mut At) -> Option<Sticky> {
    let named = |prefix: &str| k.strip_prefix(prefix).filter(|n| !n.is_empty());
    let found = if k == "ip" {
        Some(Sticky::Ip)
    } else if let Some(n) = named("header:") {
        Some(Sticky::Header(n.to_string()))
    } else if let Some(n) = named("cookie:") {
        Some(Sticky::Cookie(n.to_string()))
    } else if let Some(n) = named("query:") {
        Some(Sticky::Query(n.to_string()))
    } else {
        named("claim:").map(|n| Sticky::Claim(n.to_string()))
    };
    if found.is_none() {
        at.fail(format_args!(
            "{k:?} is not ip, header:NAME, cookie:NAME, query:NAME or claim:NAME"
        ));
    }
    found
}
