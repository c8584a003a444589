//! `routers[].backends[]`: where a route's connections go.

use serde_json::Value;

use super::fields::{kind, read, At, Fields, Object};

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
    /// `health_check_path`: when set, the route's health check is an HTTP GET of this path
    /// expecting 2xx (instead of a WebSocket handshake on `internal_path`).
    pub health_check_path: Option<String>,
}

impl Backend {
    /// `ws://host:port` (for logs and error messages).
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}", self.host_header())
    }

    /// The `Host` header value for this backend, `host:port` (an IPv6 address in brackets),
    /// written where it is displayed.
    pub fn host_header(&self) -> HostPort<'_> {
        HostPort(self)
    }
}

/// A backend's `host:port`, as [`Backend::host_header`] displays it.
pub struct HostPort<'a>(&'a Backend);

impl std::fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Backend { host, port, .. } = self.0;
        match host.contains(':') {
            true => write!(f, "[{host}]:{port}"),
            false => write!(f, "{host}:{port}"),
        }
    }
}

impl Default for Backend {
    /// No host and no port yet (both are required); weight 1.
    fn default() -> Backend {
        Backend {
            tls: false,
            host: String::new(),
            port: 0,
            weight: 1,
            health_check_path: None,
        }
    }
}

impl Object for Backend {
    fn fields(&mut self, f: &mut Fields) {
        f.required("is required")
            .text("host", |h, at| match parse_host(h) {
                Ok((tls, host)) => (self.tls, self.host) = (tls, host),
                Err(e) => at.fail(e),
            });
        f.required("is required (1-65535)")
            .int("port", 1, 65535, |n| self.port = n as u16);
        f.int("weight", 1, 1_000_000, |n| self.weight = n as u32);
        f.text("health_check_path", |p, at| match check_probe_path(p) {
            Ok(p) => self.health_check_path = Some(p),
            Err(e) => at.fail(e),
        });
    }
}

/// Reads a route's `backends`: the valid ones (each problem of the others reported).
pub(super) fn read_all(v: &Value, at: &mut At) -> Vec<Backend> {
    let list = match v {
        Value::Array(list) if !list.is_empty() => list,
        Value::Array(_) => {
            at.fail("must list at least one backend");
            return Vec::new();
        }
        other => {
            at.fail(format_args!("must be an array, found {}", kind(other)));
            return Vec::new();
        }
    };
    let read_one = |(j, v): (usize, &Value)| {
        let b: Backend = read(v, &mut at.child(&format!("backends[{j}].")))?;
        (!b.host.is_empty() && b.port != 0).then_some(b)
    };
    list.iter().enumerate().filter_map(read_one).collect()
}

/// `ws://name` or `wss://name` -> (tls, name). A port or path in the host is refused, since
/// `port` and `internal_path` are separate fields.
pub fn parse_host(text: &str) -> Result<(bool, String), String> {
    let (tls, rest) = if let Some(r) = text.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = text.strip_prefix("wss://") {
        if !cfg!(feature = "tls-backend") {
            return Err(format!("{text:?}: {}", super::tls::FEATURE_TLS_BACKEND));
        }
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

/// A health check path must be an origin-form target: `/`, then visible ASCII.
fn check_probe_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{:?} must start with /",
            path.escape_debug().to_string()
        ));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{:?} contains {:?}; use only visible ASCII (percent-encode the rest)",
            path.escape_debug().to_string(),
            c
        ));
    }
    Ok(path.to_string())
}
