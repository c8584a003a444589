//! The config file (Kairos format): JSON -> every problem reported at once -> an immutable
//! [`Config`] with only valid states (compiled routes, loaded keys, TLS roots), shared as
//! `Arc<Config>` by every connection.

mod backends;
mod fields;
mod jwt;
mod policies;
mod resilience;
mod routers;
mod server;
mod tls;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::rustls;
use serde_json::Value;

pub use backends::Backend;
use fields::{Fields, Report};
pub use jwt::{Jwt, KeySource};
pub use resilience::{CircuitBreaker, HealthCheck};
pub use routers::{Cidr, MessageFilter, OnExceed, RateLimit, Route, Sticky, Strategy};

/// Largest config file read (a real one is a few KiB; this stops a wrong path to a huge file).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The validated config.
#[derive(Debug)]
pub struct Config {
    /// `server.host` (default `0.0.0.0`).
    pub host: String,
    /// `server.port` (default 5900).
    pub port: u16,
    /// `server.workers`: executor threads (default: the available CPUs).
    pub workers: usize,
    /// `server.shutdown_timeout_ms` (10000, 0 to 3600000): on SIGTERM or SIGINT every open
    /// connection gets 1001 on both legs, and the gateway waits this long for the close
    /// handshakes before it exits.
    pub shutdown_timeout: Duration,
    /// `server.reload_poll_ms` (2000; 0 = `None`, off): how often the config file's contents
    /// are checked for a change to reload. Off, only SIGHUP reloads.
    pub reload_poll: Option<Duration>,
    /// `server.tls` (`cert_file`, `key_file`): when present, the listener serves `wss://`
    /// with this certificate (TLS 1.2 and 1.3, ALPN `http/1.1`).
    pub listener_tls: Option<Arc<rustls::ServerConfig>>,
    /// The `admin` block's `host` (default `127.0.0.1`) and `port` (default 9900; 0 picks a
    /// free port): the plain-HTTP listener of `/metrics`, `/healthz` and `/readyz`. `None`
    /// (no admin listener) when the block is absent; the public listener's own address makes the endpoints share it ([`Config::admin_on_public`]).
    pub admin: Option<(String, u16)>,
    /// `server.trusted_proxies` (none): peers whose `X-Forwarded-For` names the client for the
    /// per-address rate limits.
    pub trusted_proxies: Vec<Cidr>,
    /// `server.ipv6_prefix` (64; 32 to 128): the per-address rate limits count an IPv6 client
    /// by its first this many bits, as one host commonly has a whole /64 to pick addresses
    /// from. IPv4 clients (and IPv4-mapped IPv6 ones) are counted by their address.
    pub ipv6_prefix: u8,
    /// The routes served, in file order (routers with another protocol are skipped).
    pub routes: Vec<Route>,
    /// The `jwt` block, when present (`auth` builds the verifier from it).
    pub jwt: Option<Jwt>,
    /// TLS settings for `wss://` backends (only built when a route has one).
    pub backend_tls: Option<Arc<rustls::ClientConfig>>,
    /// The `limits` block.
    pub limits: Limits,
}

impl Config {
    /// The query parameter that carries a token (`jwt.query_param`, else `access_token`):
    /// its value is redacted wherever a URL is logged.
    pub fn token_param(&self) -> &str {
        self.jwt
            .as_ref()
            .and_then(|j| j.query_param.as_deref())
            .unwrap_or("access_token")
    }
}

/// Limits that bound what a peer can make the gateway do; each default is the reason it exists.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `handshake_timeout_ms` (10000): time from accept to a complete request head. Stops
    /// slowloris clients from holding sockets.
    pub handshake_timeout: Duration,
    /// `backend_connect_timeout_ms` (10000): TCP connect + TLS + WebSocket handshake with the
    /// backend. Past it the client gets 504.
    pub backend_connect_timeout: Duration,
    /// `max_message_bytes` (16 MiB): largest message (the sum of its frames' payloads), either direction.
    pub max_message_bytes: usize,
    /// `max_frame_bytes` (16 MiB): largest single frame payload, either direction.
    pub max_frame_bytes: usize,
    /// `max_request_head_bytes` (8192): largest HTTP request head (request line + headers).
    pub max_request_head_bytes: usize,
    /// `idle_timeout_ms` (0 = off): a relayed connection on which no frame arrives from
    /// either side for this long is closed with 1001 on both legs. Bounds clients that vanish
    /// without a FIN.
    pub idle_timeout: Option<Duration>,
    /// `ping_interval_ms` (0 = off): the gateway pings the client this often and closes both
    /// legs with 1001 when two pings in a row go unanswered.
    pub ping_interval: Option<Duration>,
    /// `max_connections` (unlimited when absent): open connections, all routes together.
    /// Past it: 503 with `Retry-After`.
    pub max_connections: Option<usize>,
    /// `dns_cache_ms` (10000, 0 to 3600000): how long a backend name's addresses are reused
    /// before it is looked up again (a failed lookup: at most 1 s). Without it, every
    /// connection would run a blocking lookup; 10 s follows a backend that moves (a container
    /// restarted elsewhere) within one health-check interval. 0: every connection looks it up
    /// (the connections asking at the same time still share one lookup).
    pub dns_cache: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_millis(10_000),
            backend_connect_timeout: Duration::from_millis(10_000),
            max_message_bytes: 16 << 20,
            max_frame_bytes: 16 << 20,
            max_request_head_bytes: 8192,
            idle_timeout: None,
            ping_interval: None,
            max_connections: None,
            dns_cache: Duration::from_millis(10_000),
        }
    }
}

/// A config that failed to load: every problem, one line each.
#[derive(Debug)]
pub struct ConfigError {
    /// What is wrong, each naming the field.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(msg: String) -> Self {
        ConfigError {
            problems: vec![msg],
        }
    }
}

/// A loaded config and the warnings (routers of other Kairos protocols, skipped) to log.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Warnings to log.
    pub warnings: Vec<String>,
}

/// The check of a `jwt` block that only its user can make: `auth` builds the token verifier
/// from it (its algorithms, its key), and this module does not import `auth`. Whoever loads a
/// config passes it in (`control::load` passes auth's), so that its problems are reported in
/// place with every other, and a route that needs the block is told there is none.
pub type JwtCheck<'a> = &'a dyn Fn(&Jwt) -> Result<(), Vec<String>>;

/// Reads and validates a config file. Relative paths in it (`public_key_file`, `ca_file`) are
/// relative to the file's directory.
pub fn load_file(path: &Path, check_jwt: JwtCheck) -> Result<Loaded, ConfigError> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::one(format!("config file {shown}: {e}")))?;
    if meta.is_dir() {
        return Err(ConfigError::one(format!(
            "config file {shown} is a directory: pass the path of a JSON file"
        )));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::one(format!(
            "config file {shown} is {} bytes: larger than the {MAX_CONFIG_BYTES} bytes allowed",
            meta.len()
        )));
    }
    // Read at most one byte over the cap: a device or a pipe has no size to check beforehand.
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| ConfigError::one(format!("config file {shown}: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::one(format!(
            "config file {shown} is larger than the {MAX_CONFIG_BYTES} bytes allowed"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        ConfigError::one(format!(
            "config file {shown}: stream did not contain valid UTF-8"
        ))
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_with(&text, &base, check_jwt).map_err(|mut e| {
        for p in &mut e.problems {
            *p = format!("{shown}: {p}");
        }
        e
    })
}

/// Parses and validates config text; `base` resolves relative file paths. The `jwt` block's
/// key is not checked: [`parse_with`] does.
pub fn parse(text: &str, base: &Path) -> Result<Loaded, ConfigError> {
    parse_with(text, base, &|_| Ok(()))
}

/// [`parse`], with `check_jwt` to check the `jwt` block.
pub fn parse_with(text: &str, base: &Path, check_jwt: JwtCheck) -> Result<Loaded, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json ends its message with the same position: say it once.
        let at = format!("line {} column {}", e.line(), e.column());
        let msg = e.to_string();
        let msg = msg.strip_suffix(&format!(" at {at}")).unwrap_or(&msg);
        ConfigError::one(format!("invalid JSON at {at}: {msg}"))
    })?;
    let mut report = Report::default();
    let config = read_root(&value, base, check_jwt, &mut report);
    // Every problem is one line, whatever the paths and values it quotes contain.
    let one_line = |v: Vec<String>| v.into_iter().map(fields::one_line).collect();
    match config {
        Some(config) if report.errors.is_empty() => Ok(Loaded {
            config,
            warnings: one_line(report.warnings),
        }),
        _ => Err(ConfigError {
            problems: one_line(report.errors),
        }),
    }
}

fn read_root(
    value: &Value,
    base: &Path,
    check_jwt: JwtCheck,
    report: &mut Report,
) -> Option<Config> {
    let mut root = Fields::new("", "", value, report)?;
    let version = root.int(report, "version", 0, u64::MAX, 1);
    if version != 1 {
        root.error(report, "version", format!("must be 1, found {version}"));
    }
    let server = server::read_server(&mut root, base, report);
    let admin = server::read_admin(&mut root, report);
    let limits = read_limits(&mut root, report);
    let jwt = jwt::read_jwt(&mut root, base, check_jwt, report);
    let ca_file = tls::read_tls(&mut root, base, report);
    let routes = match root.raw("routers") {
        None => {
            root.error(report, "routers", "is required (an array of routes)");
            Vec::new()
        }
        Some(v) => routers::read_routers(v, jwt.is_some(), report),
    };
    root.finish(report);
    // Built when a route needs it; a ca_file is checked whenever it is set, so that a wrong
    // path shows up in `--check` before a wss:// backend is added.
    let backend_tls = if ca_file.is_some() || routes.iter().flat_map(|r| &r.backends).any(|b| b.tls)
    {
        tls::build_backend_tls(ca_file.as_deref(), report)
    } else {
        None
    };
    let config = Config {
        host: server.host,
        port: server.port,
        workers: server.workers,
        shutdown_timeout: server.shutdown_timeout,
        reload_poll: server.reload_poll,
        listener_tls: server.tls,
        trusted_proxies: server.trusted_proxies,
        ipv6_prefix: server.ipv6_prefix,
        admin,
        routes,
        jwt,
        backend_tls,
        limits,
    };
    Some(config)
}

fn read_limits(root: &mut Fields, report: &mut Report) -> Limits {
    let d = Limits::default();
    let Some(v) = root.raw("limits") else {
        return d;
    };
    let Some(mut l) = Fields::new("", "limits.", v, report) else {
        return d;
    };
    let ms = |f: &mut Fields, r: &mut Report, k, def: Duration| {
        Duration::from_millis(f.int(r, k, 1, 86_400_000, def.as_millis() as u64))
    };
    let limits = Limits {
        handshake_timeout: ms(&mut l, report, "handshake_timeout_ms", d.handshake_timeout),
        backend_connect_timeout: ms(
            &mut l,
            report,
            "backend_connect_timeout_ms",
            d.backend_connect_timeout,
        ),
        max_message_bytes: l.int(
            report,
            "max_message_bytes",
            16,
            1 << 30,
            d.max_message_bytes as u64,
        ) as usize,
        max_frame_bytes: l.int(
            report,
            "max_frame_bytes",
            16,
            1 << 30,
            d.max_frame_bytes as u64,
        ) as usize,
        max_request_head_bytes: l.int(
            report,
            "max_request_head_bytes",
            256,
            1 << 20,
            d.max_request_head_bytes as u64,
        ) as usize,
        idle_timeout: off_or_ms(l.int(report, "idle_timeout_ms", 0, 86_400_000, 0)),
        ping_interval: off_or_ms(l.int(report, "ping_interval_ms", 0, 86_400_000, 0)),
        max_connections: l
            .raw("max_connections")
            .map(|_| l.int(report, "max_connections", 1, 100_000_000, 1) as usize),
        dns_cache: Duration::from_millis(l.int(
            report,
            "dns_cache_ms",
            0,
            3_600_000,
            d.dns_cache.as_millis() as u64,
        )),
    };
    l.finish(report);
    limits
}

/// 0 turns a timer off.
fn off_or_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_strict;
