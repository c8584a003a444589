//! The `server` block (listen address, workers, shutdown and reload timing, TLS on the
//! listener), the `admin` block, and the listen-address overrides from the environment.

use serde_json::Value;

#[cfg(feature = "admin")]
use super::fields::Object;
use super::fields::{At, Fields};
use super::policies::Cidr;
use super::{ms, off_or_ms, Config, ConfigError, DAY_MS};

/// The longest default of `server.close_spread_ms`.
const DEFAULT_SPREAD_MS: u64 = 10_000;

/// The `server` block's fields: they set the listener's part of [`Config`] (defaults there).
pub(super) fn fields(c: &mut Config, f: &mut Fields) {
    f.text("host", |h, _| c.host = h.to_string());
    f.int("port", 0, 65535, |n| c.port = n as u16);
    f.int("workers", 1, 1024, |n| c.workers = n as usize);
    f.int("shutdown_timeout_ms", 0, 3_600_000, |n| {
        c.shutdown_timeout = ms(n)
    });
    let mut spread = None;
    f.int("close_spread_ms", 0, 3_600_000, |n| spread = Some(ms(n)));
    c.close_spread = match spread {
        // Half the timeout, at most 10 s: the last closes still have time to finish.
        None => (c.shutdown_timeout / 2).min(ms(DEFAULT_SPREAD_MS)),
        Some(s) if s > c.shutdown_timeout => {
            f.at().error(
                "close_spread_ms",
                format_args!(
                    "{} ms is longer than server.shutdown_timeout_ms ({} ms): the connections \
                     due to close last would be cut off; shorten it or raise the timeout",
                    s.as_millis(),
                    c.shutdown_timeout.as_millis()
                ),
            );
            c.shutdown_timeout
        }
        Some(s) => s,
    };
    f.int("reload_poll_ms", 0, DAY_MS, |n| {
        c.reload_poll = off_or_ms(n)
    });
    f.any("tls", |_v, at| {
        #[cfg(feature = "tls-listener")]
        {
            c.listener_tls = at
                .object::<super::listener_tls::ListenerTls>(_v)
                .and_then(|t| t.built)
        }
        #[cfg(not(feature = "tls-listener"))]
        at.fail(FEATURE_TLS)
    });
    f.texts("trusted_proxies", |list, at| {
        c.trusted_proxies = list
            .iter()
            .filter_map(|t| Cidr::parse(t).map_err(|e| at.fail(e)).ok())
            .collect()
    });
    f.int("ipv6_prefix", 32, 128, |n| c.ipv6_prefix = n as u8);
}

impl Config {
    /// Whether the admin endpoints share the public listener (`admin` names its address):
    /// then a plain GET of `/metrics`, `/healthz` or `/readyz` there is answered by them.
    pub fn admin_on_public(&self) -> bool {
        self.admin
            .as_ref()
            .is_some_and(|(host, port)| *port != 0 && *port == self.port && *host == self.host)
    }
}

/// The `admin` block: its listener's host and port.
#[cfg(feature = "admin")]
struct Admin {
    host: String,
    port: u16,
    token: Option<String>,
}

#[cfg(feature = "admin")]
impl Default for Admin {
    fn default() -> Admin {
        Admin {
            host: "127.0.0.1".to_string(),
            port: 9900,
            token: None,
        }
    }
}

#[cfg(feature = "admin")]
impl Object for Admin {
    fn fields(&mut self, f: &mut Fields) {
        f.text("host", |h, _| self.host = h.to_string());
        f.int("port", 0, 65535, |n| self.port = n as u16);
        f.text("token", |t, at| match t.chars().count() {
            n if n < MIN_TOKEN => at.error(
                "token",
                format_args!(
                    "must be at least {MIN_TOKEN} characters, found {n} (a short token is guessed)"
                ),
            ),
            _ if t.chars().any(|c| c.is_control() || c == ' ') => {
                at.error("token", "must not hold spaces or control characters")
            }
            _ => self.token = Some(t.to_string()),
        });
    }
}

#[cfg(not(feature = "tls-listener"))]
const FEATURE_TLS: &str = "this build has no TLS listener: build with the tls-listener feature \
     (the default), or end TLS in front of the gateway";
#[cfg(not(feature = "admin"))]
const FEATURE_ADMIN: &str = "this build has no admin listener (/metrics, /healthz, /readyz): \
     build with the admin feature (the default)";

/// The shortest `admin.token` accepted.
#[cfg(feature = "admin")]
const MIN_TOKEN: usize = 16;

/// Reads the `admin` block: the listener's address and the token (`None`: not an object, or a
/// build without the admin listener).
pub(super) fn admin(v: &Value, at: &mut At) -> Option<((String, u16), Option<String>)> {
    #[cfg(not(feature = "admin"))]
    {
        let _ = v;
        at.fail(FEATURE_ADMIN);
        None
    }
    #[cfg(feature = "admin")]
    at.object::<Admin>(v).map(|a| ((a.host, a.port), a.token))
}

impl Config {
    /// Applies `KAIROS_HOST` / `KAIROS_PORT` (they win over the `server` block).
    pub fn apply_listen_env(
        &mut self,
        host: Option<String>,
        port: Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(h) = host.filter(|h| !h.is_empty()) {
            self.host = h;
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            self.port = p.parse().map_err(|_| {
                ConfigError::one(format!("KAIROS_PORT: {p:?} is not a port number (0-65535)"))
            })?;
        }
        Ok(())
    }
}
