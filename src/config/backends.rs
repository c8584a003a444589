//! `routers[].backends[]`: where a route's connections go.

use serde_json::Value;

use super::fields::{kind, Fields, Report};

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

    /// The `Host` header value for this backend.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub fn read_backends(f: &mut Fields, report: &mut Report) -> Vec<Backend> {
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
            let health_check_path = b.string(report, "health_check_path").and_then(|p| {
                check_probe_path(p)
                    .map_err(|e| b.error(report, "health_check_path", e))
                    .ok()
            });
            let parsed =
                host.and_then(|h| parse_host(h).map_err(|e| b.error(report, "host", e)).ok());
            b.finish(report);
            let (tls, host) = parsed?;
            (port != 0).then_some(Backend {
                tls,
                host,
                port,
                weight,
                health_check_path,
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
