//! The config file (Kairos format): JSON -> every problem reported at once -> an immutable
//! [`Config`] with only valid states (compiled routes, loaded keys, TLS roots), shared as
//! `Arc<Config>` by every connection.
//!
//! Each block is a type that declares each of its fields once, as one line of its
//! `Object::fields` (the mechanism: `fields.rs`): the field's name, its check (type, range)
//! and where its value goes; the default is the type's `Default`, documented on the field.
//! Adding a field is that line (and one check after the lines, when it depends on other
//! fields). Every problem names the field's full path
//! (`routers[2] (/ws/chat): backends[0].port`) and what to fix, and all are reported at once.

mod backends;
mod fields;
mod jwt;
mod limits;
#[cfg(feature = "tls-listener")]
mod listener_tls;
mod policies;
mod resilience;
mod routers;
mod server;
mod tls;
mod transform;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use backends::Backend;
use fields::{read, At, Fields, Object, Report};
pub use jwt::{Jwt, KeySource};
pub use limits::Limits;
pub use policies::{Cidr, MessageFilter, OnExceed, RateLimit};
pub use resilience::{CircuitBreaker, HealthCheck};
pub use routers::{Route, Sticky, Strategy};
pub use tls::{ClientTls, ServerTls};
pub use transform::{MessageTransform, Pointer, Rule, Source};

/// Largest config file read (a real one is a few KiB; this stops a wrong path to a huge file).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// A day in milliseconds: the longest timeout or interval accepted.
const DAY_MS: u64 = 86_400_000;

/// The validated config.
#[derive(Debug)]
pub struct Config {
    /// `server.host` (default `0.0.0.0`).
    pub host: String,
    /// `server.port` (default 5900).
    pub port: u16,
    /// `server.workers`: executor threads (default: the available CPUs).
    pub workers: usize,
    /// `server.shutdown_timeout_ms` (20000, 0 to 3600000): on SIGTERM or SIGINT every open
    /// connection gets 1001 on both legs (spread over `close_spread`), and the gateway waits
    /// this long for the close handshakes before it exits.
    pub shutdown_timeout: Duration,
    /// `server.close_spread_ms` (half of `shutdown_timeout`, at most 10000; 0 to
    /// `shutdown_timeout`): the window over which the open connections get their 1001, each at
    /// a random moment, so that their clients do not all reconnect in the same second.
    pub close_spread: Duration,
    /// `server.reload_poll_ms` (2000; 0 = `None`, off): how often the config file's contents
    /// are checked for a change to reload. Off, only SIGHUP reloads.
    pub reload_poll: Option<Duration>,
    /// `server.tls` (`cert_file`, `key_file`): when present, the listener serves `wss://`
    /// with this certificate (TLS 1.2 and 1.3, ALPN `http/1.1`).
    pub listener_tls: Option<ServerTls>,
    /// The `admin` block's `host` (default `127.0.0.1`) and `port` (default 9900; 0 picks a
    /// free port): the plain-HTTP listener of `/metrics`, `/healthz` and `/readyz`. `None`
    /// (no admin listener) when the block is absent; the public listener's own address makes the endpoints share it ([`Config::admin_on_public`]).
    pub admin: Option<(String, u16)>,
    /// `admin.token` (none): when set, every admin request but `/healthz`, `/readyz` and
    /// `/metrics` needs `Authorization: Bearer <token>`. At least 16 characters.
    pub admin_token: Option<String>,
    /// `server.trusted_proxies` (none): peers whose `X-Forwarded-For` names the client for the
    /// per-address rate limits.
    pub trusted_proxies: Vec<Cidr>,
    /// `server.ipv6_prefix` (64; 32 to 128): the per-address rate limits count an IPv6 client
    /// by its first this many bits, as one host commonly has a whole /64 to pick addresses
    /// from. IPv4 clients (and IPv4-mapped IPv6 ones) are counted by their address.
    pub ipv6_prefix: u8,
    /// `access_log.format` (`"text"`): the access log's lines are `key=value` text, or one
    /// JSON object each (`"json"`) ([`crate::access`]).
    pub access_json: bool,
    /// The routes served, in file order (routers with another protocol are skipped).
    pub routes: Vec<Route>,
    /// The `jwt` block, when present (`auth` builds the verifier from it).
    pub jwt: Option<Jwt>,
    /// TLS settings for `wss://` backends (only built when a route has one).
    pub backend_tls: Option<ClientTls>,
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

/// The whole file as it is read: the config, and what only the reading needs.
struct Root {
    config: Config,
    /// `version`: must be 1.
    version: u64,
    /// `tls.ca_file`, resolved from the config's directory.
    ca_file: Option<PathBuf>,
}

impl Default for Root {
    /// The defaults documented on [`Config`]'s fields.
    fn default() -> Root {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let config = Config {
            host: "0.0.0.0".to_string(),
            port: 5900,
            workers: cpus,
            shutdown_timeout: ms(20_000),
            close_spread: ms(10_000),
            reload_poll: Some(ms(2000)),
            listener_tls: None,
            admin: None,
            admin_token: None,
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            access_json: false,
            routes: Vec::new(),
            jwt: None,
            backend_tls: None,
            limits: Limits::default(),
        };
        Root {
            config,
            version: 1,
            ca_file: None,
        }
    }
}

impl Object for Root {
    fn fields(&mut self, f: &mut Fields) {
        let c = &mut self.config;
        f.int("version", 0, u64::MAX, |n| self.version = n);
        f.nested("server", |f| server::fields(c, f));
        f.any("admin", |v, at| {
            let (admin, token) = server::admin(v, at).unzip();
            (c.admin, c.admin_token) = (admin, token.flatten());
        });
        f.any("limits", |v, at| {
            c.limits = at.object(v).unwrap_or_default()
        });
        f.any("jwt", |v, at| c.jwt = jwt::read(v, at));
        f.nested("access_log", |f| {
            f.text("format", |format, at| match format {
                "text" => c.access_json = false,
                "json" => c.access_json = true,
                other => at.error(
                    "format",
                    format_args!("must be \"text\" or \"json\", found {other:?}"),
                ),
            })
        });
        let ca_file = &mut self.ca_file;
        f.nested("tls", |f| {
            f.text("ca_file", |file, at| *ca_file = Some(at.env.resolve(file)))
        });
        let have_jwt = c.jwt.is_some();
        f.required("is required (an array of routes)")
            .any("routers", |v, at| {
                c.routes = routers::read_all(v, have_jwt, at)
            });
        if self.version != 1 {
            f.at()
                .error("version", format_args!("must be 1, found {}", self.version));
        }
        // Built when a route needs it; a ca_file is checked whenever it is set, so that a wrong
        // path shows up in `--check` before a wss:// backend is added.
        if self.ca_file.is_some() || c.routes.iter().flat_map(|r| &r.backends).any(|b| b.tls) {
            c.backend_tls = tls::build_backend_tls(self.ca_file.as_deref(), f.at());
        }
    }
}

/// What a load is given besides the text.
pub(crate) struct Env<'a> {
    /// The config file's directory: relative paths in it start there.
    base: &'a Path,
    /// The check of the `jwt` block ([`JwtCheck`]).
    check_jwt: JwtCheck<'a>,
}

impl Env<'_> {
    /// `file` relative to the config file's directory (an absolute path as it is).
    pub fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

/// `n` milliseconds.
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `n` milliseconds; 0 turns a timer off.
fn off_or_ms(n: u64) -> Option<Duration> {
    (n > 0).then(|| ms(n))
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
    let env = Env { base, check_jwt };
    let mut report = Report::default();
    let root: Option<Root> = read(&value, &mut At::root(&mut report, &env));
    // Every problem is one line, whatever the paths and values it quotes contain.
    let one_line = |v: Vec<String>| v.into_iter().map(fields::one_line).collect();
    match root {
        Some(root) if report.errors.is_empty() => Ok(Loaded {
            config: root.config,
            warnings: one_line(report.warnings),
        }),
        _ => Err(ConfigError {
            problems: one_line(report.errors),
        }),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_strict;
