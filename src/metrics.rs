//! Counters behind `GET /metrics` (Prometheus text format 0.0.4). Nothing here runs per frame:
//! a connection counts its frames in plain integers of its own and folds them in here once,
//! when it ends; the rest is counted once per handshake, close or connect.
//!
//! Counters live in one process-wide registry and are keyed by route (`external_path`), so they
//! survive config reloads: a route that stays keeps counting, one that goes keeps its totals.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// Message types, in label order.
pub const TYPES: [&str; 5] = ["text", "binary", "ping", "pong", "close"];

/// Directions, in label order (index 0: client to backend).
pub const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];

/// Who sent a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// The client.
    Client,
    /// The backend.
    Backend,
    /// The gateway itself (a violation, a timeout, a shutdown).
    Gateway,
}

impl Side {
    /// `client`, `backend` or `gateway`.
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
            Side::Gateway => "gateway",
        }
    }
}

/// Upper bounds of the backend connect and handshake time histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Upper bounds of the connection duration histogram, in seconds: a second to a day.
const LIFETIMES: [f64; 10] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
];

/// One route's counters.
#[derive(Default)]
pub struct RouteStats {
    active: AtomicI64,
    total: AtomicU64,
    messages: [[AtomicU64; 5]; 2],
    bytes: [AtomicU64; 2],
    handshakes: Mutex<BTreeMap<u16, u64>>,
    /// By side and [`code_label`].
    closes: Mutex<BTreeMap<(Side, &'static str), u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    /// Connect time histograms by backend (`ws://host:port`).
    connects: Mutex<BTreeMap<String, Histogram<12>>>,
    /// Accept to 101, backend connect included.
    handshake_times: Mutex<Histogram<12>>,
    /// Relayed connections' lives, accept to end.
    lifetimes: Mutex<Histogram<10>>,
}

/// Cumulative bucket counts over bounds given where it is observed.
#[derive(Clone)]
struct Histogram<const N: usize> {
    counts: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            counts: [0; N],
            count: 0,
            sum: 0.0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, took: Duration, bounds: &[f64; N]) {
        let secs = took.as_secs_f64();
        for (i, le) in bounds.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Messages of one direction by type: data messages when complete, control frames each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Messages {
    /// Text messages.
    pub text: u64,
    /// Binary messages.
    pub binary: u64,
    /// Ping frames.
    pub ping: u64,
    /// Pong frames.
    pub pong: u64,
    /// Close frames.
    pub close: u64,
}

impl Messages {
    /// Data messages (text and binary).
    pub fn data(&self) -> u64 {
        self.text + self.binary
    }

    /// The counts in [`TYPES`] order.
    fn by_type(&self) -> [u64; 5] {
        [self.text, self.binary, self.ping, self.pong, self.close]
    }
}

/// What passed one way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Messages by type.
    pub messages: Messages,
    /// Wire bytes written on.
    pub bytes: u64,
}

/// What one relayed connection counted, folded in when it ends.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    /// From the client to the backend.
    pub client_to_backend: Flow,
    /// From the backend to the client.
    pub backend_to_client: Flow,
}

impl Traffic {
    /// The two flows in [`DIRECTIONS`] order.
    fn flows(&self) -> [&Flow; 2] {
        [&self.client_to_backend, &self.backend_to_client]
    }
}

/// The process-wide counters.
pub struct Registry {
    routes: Mutex<BTreeMap<String, Arc<RouteStats>>>,
    reloads: [AtomicU64; 2],
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    routes: Mutex::default(),
    reloads: Default::default(),
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The counters of route `name` (its `external_path`, or [`NO_ROUTE`]).
pub fn route(name: &str) -> Arc<RouteStats> {
    let mut routes = lock(&REGISTRY.routes);
    match routes.get(name) {
        Some(r) => r.clone(),
        None => {
            let r = Arc::new(RouteStats::default());
            routes.insert(name.to_string(), r.clone());
            r
        }
    }
}

/// A route's figures for the status page.
pub struct Figures {
    /// Data messages, client to backend then backend to client (an open connection's within
    /// 5 s).
    pub messages: [u64; 2],
    /// Wire bytes, the same way.
    pub bytes: [u64; 2],
}

/// The figures of route `name`, if it has counters.
pub fn figures(name: &str) -> Option<Figures> {
    let s = lock(&REGISTRY.routes).get(name)?.clone();
    let data = |d: usize| s.messages[d][0].load(Relaxed) + s.messages[d][1].load(Relaxed);
    Some(Figures {
        messages: [data(0), data(1)],
        bytes: [s.bytes[0].load(Relaxed), s.bytes[1].load(Relaxed)],
    })
}

/// Counts a config reload that applied (`ok`) or was rejected.
pub fn reloaded(ok: bool) {
    REGISTRY.reloads[usize::from(!ok)].fetch_add(1, Relaxed);
}

impl RouteStats {
    /// The gateway answered a handshake with `status` (101 included).
    pub fn handshake(&self, status: u16) {
        *lock(&self.handshakes).entry(status).or_default() += 1;
    }

    /// A token was refused for `reason`.
    pub fn auth_failed(&self, reason: &'static str) {
        *lock(&self.auth_failures).entry(reason).or_default() += 1;
    }

    /// A connection limit refused a handshake, for `reason` (`max_connections`...).
    pub fn rejected(&self, reason: &'static str) {
        *lock(&self.rejections).entry(reason).or_default() += 1;
    }

    /// A backend completed its handshake in `took`.
    pub fn connected(&self, backend: &str, took: Duration) {
        let mut connects = lock(&self.connects);
        let h = match connects.get_mut(backend) {
            Some(h) => h,
            None => connects.entry(backend.to_string()).or_default(),
        };
        h.observe(took, &BUCKETS);
    }

    /// A handshake ended in its 101 `took` after the accept.
    pub fn handshake_took(&self, took: Duration) {
        lock(&self.handshake_times).observe(took, &BUCKETS);
    }

    /// A relayed connection starts.
    pub fn opened(&self) {
        self.active.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
    }

    /// A relayed connection ended, `lived` after its accept: the traffic not counted yet, and
    /// the close frames each side sent.
    pub fn closed(&self, traffic: &Traffic, closes: &[(Side, u16)], lived: Duration) {
        self.active.fetch_sub(1, Relaxed);
        lock(&self.lifetimes).observe(lived, &LIFETIMES);
        self.add_traffic(traffic);
        if !closes.is_empty() {
            let mut map = lock(&self.closes);
            for &(side, code) in closes {
                *map.entry((side, code_label(code))).or_default() += 1;
            }
        }
    }

    /// Counts `traffic` (an open connection's, since it was last counted).
    pub fn add_traffic(&self, traffic: &Traffic) {
        for (d, flow) in traffic.flows().into_iter().enumerate() {
            for (t, n) in flow.messages.by_type().into_iter().enumerate() {
                if n > 0 {
                    self.messages[d][t].fetch_add(n, Relaxed);
                }
            }
            if flow.bytes > 0 {
                self.bytes[d].fetch_add(flow.bytes, Relaxed);
            }
        }
    }
}

/// The `code` label of a close code. Peers choose their codes, so the label's values are
/// bounded: the codes RFC 6455 and IANA define (1000-1015) as themselves, the registered and
/// private ranges as `3xxx` and `4xxx`, anything else as `other`.
fn code_label(code: u16) -> &'static str {
    const DEFINED: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
        "1011", "1012", "1013", "1014", "1015",
    ];
    match code {
        1000..=1015 => DEFINED[usize::from(code - 1000)],
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "other",
    }
}

/// `name{labels} value` lines of a metric family, with its HELP and TYPE.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn start<'o>(out: &'o mut String, name: &str, kind: &str, help: &str) -> Family<'o> {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The `_bucket`, `_sum` and `_count` samples of `h` (over `bounds`) with `base` labels.
    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        base: &[(&str, &str)],
        h: &Histogram<N>,
        bounds: &[f64; N],
    ) {
        let bucket = format!("{name}_bucket");
        let les: Vec<String> = bounds.iter().map(f64::to_string).collect();
        for (le, n) in les.iter().zip(h.counts) {
            let mut labels = base.to_vec();
            labels.push(("le", le));
            self.sample(&bucket, &labels, n);
        }
        let mut labels = base.to_vec();
        labels.push(("le", "+Inf"));
        self.sample(&bucket, &labels, h.count);
        self.sample(&format!("{name}_sum"), base, h.sum);
        self.sample(&format!("{name}_count"), base, h.count);
    }
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition; `backends` lists (route, backend, state: `up`, `down`,
/// `breaker_open` or `drained`) for the config in force.
pub fn render(version: &str, backends: &[(&str, &str, &str)]) -> String {
    let routes: Vec<(String, Arc<RouteStats>)> = lock(&REGISTRY.routes)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = String::with_capacity(4096);
    let mut f = Family::start(&mut out, "kairos_build_info", "gauge", "Build information.");
    f.sample("kairos_build_info", &[("version", version)], 1);
    render_connections(&mut out, &routes);
    render_events(&mut out, &routes);
    render_traffic(&mut out, &routes);
    render_connects(&mut out, &routes);
    render_route_histograms(&mut out, &routes);
    render_backends(&mut out, backends);
    let name = "kairos_config_reloads_total";
    let mut f = Family::start(&mut out, name, "counter", "Config reloads by result.");
    for (i, result) in ["success", "failure"].into_iter().enumerate() {
        f.sample(
            name,
            &[("result", result)],
            REGISTRY.reloads[i].load(Relaxed),
        );
    }
    let name = "kairos_tls_handshake_failures_total";
    let help = "Client connections whose TLS handshake failed.";
    let mut f = Family::start(&mut out, name, "counter", help);
    f.sample(name, &[], crate::net::tls_handshake_failures());
    out
}

fn render_backends(out: &mut String, backends: &[(&str, &str, &str)]) {
    let name = "kairos_backend_up";
    let help =
        "1 while a backend takes new connections (health check up, breaker not open, not drained).";
    let mut f = Family::start(out, name, "gauge", help);
    for &(route, backend, state) in backends {
        let labels = [("route", route), ("backend", backend)];
        f.sample(name, &labels, u8::from(state == "up"));
    }
    let name = "kairos_backend_state";
    let help =
        "1 for a backend's state: up, down (health check), breaker_open, drained (by an operator).";
    let mut f = Family::start(out, name, "gauge", help);
    for &(route, backend, now) in backends {
        for state in ["up", "down", "breaker_open", "drained"] {
            let labels = [("route", route), ("backend", backend), ("state", state)];
            f.sample(name, &labels, u8::from(now == state));
        }
    }
}

fn render_connections(out: &mut String, routes: &[(String, Arc<RouteStats>)]) {
    let name = "kairos_connections_active";
    let mut f = Family::start(out, name, "gauge", "Relayed connections open now.");
    for (route, s) in routes {
        f.sample(name, &[("route", route)], s.active.load(Relaxed));
    }
    let name = "kairos_connections_total";
    let mut f = Family::start(out, name, "counter", "Relayed connections opened.");
    for (route, s) in routes {
        f.sample(name, &[("route", route)], s.total.load(Relaxed));
    }
}

fn render_events(out: &mut String, routes: &[(String, Arc<RouteStats>)]) {
    let name = "kairos_handshakes_total";
    let help = "Handshakes by the HTTP status the gateway answered (101 included).";
    let mut f = Family::start(out, name, "counter", help);
    for (route, s) in routes {
        for (status, n) in lock(&s.handshakes).iter() {
            f.sample(
                name,
                &[("route", route), ("status", &status.to_string())],
                n,
            );
        }
    }
    let name = "kairos_closes_total";
    let help = "Close frames by the side that sent them and their code \
                (1005: no code; 3xxx, 4xxx: those ranges).";
    let mut f = Family::start(out, name, "counter", help);
    for (route, s) in routes {
        for ((side, code), n) in lock(&s.closes).iter() {
            let labels = [
                ("route", route.as_str()),
                ("side", side.label()),
                ("code", code),
            ];
            f.sample(name, &labels, n);
        }
    }
    let name = "kairos_auth_failures_total";
    let mut f = Family::start(out, name, "counter", "Refused tokens by reason.");
    for (route, s) in routes {
        for (reason, n) in lock(&s.auth_failures).iter() {
            f.sample(name, &[("route", route.as_str()), ("reason", reason)], n);
        }
    }
    let name = "kairos_rejections_total";
    let help = "Handshakes refused by a policy (a connection limit or the origin), by reason.";
    let mut f = Family::start(out, name, "counter", help);
    for (route, s) in routes {
        for (reason, n) in lock(&s.rejections).iter() {
            f.sample(name, &[("route", route.as_str()), ("reason", reason)], n);
        }
    }
}

fn render_traffic(out: &mut String, routes: &[(String, Arc<RouteStats>)]) {
    let name = "kairos_messages_total";
    let help =
        "Relayed messages (data messages and control frames); an open connection's within 5 s (10 s at worst).";
    let mut f = Family::start(out, name, "counter", help);
    for (route, s) in routes {
        for (d, dir) in DIRECTIONS.iter().enumerate() {
            for (t, kind) in TYPES.iter().enumerate() {
                let labels = [
                    ("route", route.as_str()),
                    ("direction", dir),
                    ("type", kind),
                ];
                f.sample(name, &labels, s.messages[d][t].load(Relaxed));
            }
        }
    }
    let name = "kairos_bytes_total";
    let help = "Relayed wire bytes; an open connection's within 5 s (10 s at worst).";
    let mut f = Family::start(out, name, "counter", help);
    for (route, s) in routes {
        for (d, dir) in DIRECTIONS.iter().enumerate() {
            let labels = [("route", route.as_str()), ("direction", dir)];
            f.sample(name, &labels, s.bytes[d].load(Relaxed));
        }
    }
}

/// The per-route histograms: handshake time and connection lifetime.
fn render_route_histograms(out: &mut String, routes: &[(String, Arc<RouteStats>)]) {
    let name = "kairos_handshake_seconds";
    let help = "Accept to 101 of relayed connections, backend connect included.";
    let mut f = Family::start(out, name, "histogram", help);
    for (route, s) in routes {
        let h = lock(&s.handshake_times).clone();
        f.histogram(name, &[("route", route.as_str())], &h, &BUCKETS);
    }
    let name = "kairos_connection_duration_seconds";
    let help = "Lifetime of relayed connections that ended, accept to close.";
    let mut f = Family::start(out, name, "histogram", help);
    for (route, s) in routes {
        let h = lock(&s.lifetimes).clone();
        f.histogram(name, &[("route", route.as_str())], &h, &LIFETIMES);
    }
}

fn render_connects(out: &mut String, routes: &[(String, Arc<RouteStats>)]) {
    let name = "kairos_backend_connect_seconds";
    let help = "Backend TCP + TLS + WebSocket handshake time of successful connects.";
    let mut f = Family::start(out, name, "histogram", help);
    for (route, s) in routes {
        for (backend, h) in lock(&s.connects).iter() {
            let base = [("route", route.as_str()), ("backend", backend.as_str())];
            f.histogram(name, &base, h, &BUCKETS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let r = route("/metrics-unit-test");
        r.handshake(101);
        r.handshake(101);
        r.handshake(404);
        r.opened();
        let mut t = Traffic::default();
        t.client_to_backend.messages.text = 3;
        t.client_to_backend.bytes = 30;
        t.backend_to_client.bytes = 40;
        r.closed(
            &t,
            &[(Side::Client, 1000), (Side::Gateway, 1001)],
            Duration::from_secs(2),
        );
        r.handshake_took(Duration::from_millis(4));
        r.connected("ws://b:1", Duration::from_millis(3));
        r.auth_failed("expired");
        r.rejected("connections_per_ip");
        let up = [("/metrics-unit-test", "ws://b:1", "up")];
        let text = render("9.9.9", &up);
        let route = "route=\"/metrics-unit-test\"";
        for want in [
            "kairos_build_info{version=\"9.9.9\"} 1".to_string(),
            format!("kairos_handshakes_total{{{route},status=\"101\"}} 2"),
            format!("kairos_connections_active{{{route}}} 0"),
            format!("kairos_connections_total{{{route}}} 1"),
            format!(
                "kairos_messages_total{{{route},direction=\"client_to_backend\",type=\"text\"}} 3"
            ),
            format!("kairos_bytes_total{{{route},direction=\"backend_to_client\"}} 40"),
            format!("kairos_closes_total{{{route},side=\"gateway\",code=\"1001\"}} 1"),
            format!("kairos_auth_failures_total{{{route},reason=\"expired\"}} 1"),
            format!("kairos_rejections_total{{{route},reason=\"connections_per_ip\"}} 1"),
            format!(
                "kairos_backend_connect_seconds_bucket{{{route},backend=\"ws://b:1\",le=\"0.0025\"}} 0"
            ),
            format!(
                "kairos_backend_connect_seconds_bucket{{{route},backend=\"ws://b:1\",le=\"0.005\"}} 1"
            ),
            format!("kairos_backend_up{{{route},backend=\"ws://b:1\"}} 1"),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn close_code_labels_are_bounded() {
        for (code, label) in [
            (1000, "1000"),
            (1005, "1005"),
            (1015, "1015"),
            (1016, "other"),
            (2999, "other"),
            (3000, "3xxx"),
            (3999, "3xxx"),
            (4000, "4xxx"),
            (4999, "4xxx"),
            (5000, "other"),
            (0, "other"),
        ] {
            assert_eq!(code_label(code), label, "code {code}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
