//! The access log: one line at info for every connection that ends and every handshake
//! refused, under the log target `kairos_gateway::access` (so that
//! `RUST_LOG=info,kairos_gateway::access=off` silences it, and a logger can route it alone).
//! `key=value` text by default; one JSON object per line with `"access_log": {"format": "json"}`.
//! The fields are the same in both, in this order (a field with nothing to say is `-` in text
//! and absent in JSON):
//!
//! `time`, `connection_id`, `client_address` (as `trusted_proxies` decides it), `route`,
//! `backend`, `status` (101, or the refusal's status; `-` when no answer was written),
//! `handshake_ms` (accept to 101, backend connect included), `duration_ms` (accept to end),
//! `client_close_code`, `client_close_reason`, `backend_close_code`, `backend_close_reason`,
//! `gateway_close_code`, `gateway_close_reason` (the first close the gateway chose itself),
//! `closed_first` (`client`, `backend` or `gateway`), `client_to_backend_messages`,
//! `client_to_backend_bytes`, `backend_to_client_messages`, `backend_to_client_bytes`, `user`
//! (the token's `sub`), `error` (why a handshake was refused or a connection ended abnormally).
//!
//! Never a token: the route is its pattern, the backend its origin, and no header is logged.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::relay::Ending;

/// What one line says.
pub struct Entry<'a> {
    /// `connection_id`.
    pub id: u64,
    /// `client_address`.
    pub client: IpAddr,
    /// `route`: the route's `external_path`.
    pub route: Option<&'a str>,
    /// `backend`: its origin (`ws://host:port`).
    pub backend: Option<String>,
    /// `status`.
    pub status: Option<u16>,
    /// `handshake_ms`.
    pub handshake: Option<Duration>,
    /// `duration_ms`.
    pub duration: Duration,
    /// The close codes and reasons, and `closed_first`.
    pub ending: Option<&'a Ending>,
    /// Data messages and wire bytes, client to backend then backend to client.
    pub traffic: Option<[(u64, u64); 2]>,
    /// `user`.
    pub user: Option<&'a str>,
    /// `error`.
    pub error: Option<String>,
}

/// Logs `entry` as text, or as JSON when `json`.
pub fn log(entry: &Entry<'_>, json: bool) {
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    let fields = fields(entry);
    let line = match json {
        true => {
            let map: Map<String, Value> = (fields.into_iter())
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect();
            Value::Object(map).to_string()
        }
        false => text(&fields),
    };
    log::info!("{line}");
}

/// The fields in their order, `None` where there is nothing to say.
fn fields(e: &Entry<'_>) -> Vec<(&'static str, Option<Value>)> {
    let ms = |d: Duration| Value::from(d.as_millis() as u64);
    let string = |s: &str| Value::from(s);
    let close = |c: Option<&(u16, Option<Box<str>>)>| {
        let code = c.map(|(code, _)| Value::from(*code));
        (code, c.and_then(|(_, r)| r.as_deref()).map(string))
    };
    let ending = e.ending;
    let (client_code, client_reason) = close(ending.and_then(|x| x.client.as_ref()));
    let (backend_code, backend_reason) = close(ending.and_then(|x| x.backend.as_ref()));
    let gateway = ending.and_then(|x| x.gateway);
    let first = ending.and_then(|x| x.first).map(|s| string(s.label()));
    let flow = |i: usize| {
        let flow = e.traffic.map(|t| t[i]);
        (
            flow.map(|f| Value::from(f.0)),
            flow.map(|f| Value::from(f.1)),
        )
    };
    let (c2b_messages, c2b_bytes) = flow(0);
    let (b2c_messages, b2c_bytes) = flow(1);
    vec![
        ("time", Some(Value::from(crate::clock::rfc3339_now()))),
        ("connection_id", Some(Value::from(e.id))),
        ("client_address", Some(Value::from(e.client.to_string()))),
        ("route", e.route.map(string)),
        ("backend", e.backend.as_deref().map(string)),
        ("status", e.status.map(Value::from)),
        ("handshake_ms", e.handshake.map(ms)),
        ("duration_ms", Some(ms(e.duration))),
        ("client_close_code", client_code),
        ("client_close_reason", client_reason),
        ("backend_close_code", backend_code),
        ("backend_close_reason", backend_reason),
        ("gateway_close_code", gateway.map(|g| Value::from(g.code()))),
        ("gateway_close_reason", gateway.map(|g| string(g.reason()))),
        ("closed_first", first),
        ("client_to_backend_messages", c2b_messages),
        ("client_to_backend_bytes", c2b_bytes),
        ("backend_to_client_messages", b2c_messages),
        ("backend_to_client_bytes", b2c_bytes),
        ("user", e.user.map(string)),
        ("error", e.error.as_deref().map(string)),
    ]
}

/// `key=value ...`: numbers bare, strings quoted and escaped as JSON strings (a client's
/// reason or a token's `sub` can hold anything, and must not start a line of its own).
fn text(fields: &[(&'static str, Option<Value>)]) -> String {
    let mut line = String::with_capacity(400);
    for (i, (key, value)) in fields.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = match value {
            None => write!(line, "{sep}{key}=-"),
            Some(Value::String(s)) if *key == "time" => write!(line, "{sep}{key}={s}"),
            Some(v) => write!(line, "{sep}{key}={v}"),
        };
    }
    line
}
