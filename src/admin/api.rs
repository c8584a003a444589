//! The admin listener's endpoints, their access rule, and the connection API.
//!
//! - `admin.token`: when set, every request but `/healthz`, `/readyz`, `/metrics` and the
//!   status page's own HTML (`/`) needs `Authorization: Bearer <token>` (401 otherwise).
//!   Without it, the rest is refused (403) unless the admin listener is on a loopback address.
//! - `GET /connections` (filters `route`, `user`, `backend` as `host:port`, `client`): the open
//!   relayed connections as a JSON array.
//! - `POST /connections/{id}/close`, `POST /connections/close?filters`: closes them (query
//!   `code`, `reason`, `spread_ms`), through the normal close handshake on both legs.
//! - `POST /backends/drain?route=&backend=` and `/backends/undrain`: [`super::Gateway`], and
//!   the backend's open connections closed with 1012 (spread over `spread_ms`).
//!
//! Every action (a POST) is logged at info with the peer who asked and what it matched.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::json::{self, Obj};
use super::{page, probe, Gateway, Reply, Status};
use crate::connections::{self, Entry};
use crate::error::GatewayClose;
use crate::handshake::{Head, Request};

/// The paths anyone who reaches the listener may ask (probes, scrapes, the page's HTML).
const OPEN: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/"];

/// The connection filters.
const FILTERS: [&str; 4] = ["route", "user", "backend", "client"];

/// The longest `spread_ms` an action takes: 10 minutes.
const MAX_SPREAD_MS: u64 = 600_000;

/// The answer to a request on the admin listener from `peer`.
pub(super) fn answer(request: &Request, peer: SocketAddr, gateway: &dyn Gateway) -> Reply {
    let (path, query) = crate::route::split_target(&request.target);
    let s = gateway.status();
    if let Some(refusal) = refused(request, path, &s) {
        if request.method == "POST" {
            let target = &request.target;
            log::info!("admin {peer}: POST {target} refused: {}", refusal.code);
        }
        return refusal;
    }
    let head_only = request.method == "HEAD";
    let mut reply = match (request.method.as_str(), path) {
        ("GET" | "HEAD", "/") => page::html(request.header("Accept-Encoding")),
        ("GET" | "HEAD", _) => read(path, query, &s),
        ("POST", _) => {
            let (reply, matched) = act(path, query, gateway, &s);
            let said = matched.unwrap_or_else(|| reply.body.trim_end().to_string());
            let target = &request.target;
            log::info!("admin {peer}: POST {target} -> {}: {said}", reply.code);
            reply
        }
        _ => Reply::text(405, "use GET, or POST for the actions\n"),
    };
    reply.head_only = head_only;
    reply
}

/// A GET.
fn read(path: &str, query: Option<&str>, s: &Status) -> Reply {
    if let Some(reply) = probe(path, s) {
        return reply;
    }
    match path {
        "/status" => page::status(s),
        "/connections" => match filters(query, &[]) {
            Ok((keep, _)) => json_reply(
                200,
                json::array(connections::list(&keep).iter().map(describe)),
            ),
            Err(why) => Reply::text(400, &format!("{why}\n")),
        },
        _ if path.starts_with("/connections/") || path.starts_with("/backends/") => {
            Reply::text(405, "use POST for the actions\n")
        }
        _ => Reply::text(
            404,
            "not found: the admin endpoints are /, /status, /metrics, /healthz, /readyz, \
             /connections, and POST /connections/{id}/close, /connections/close, \
             /backends/drain, /backends/undrain\n",
        ),
    }
}

/// A POST: one of the actions; its answer, and what it matched (for the log).
fn act(
    path: &str,
    query: Option<&str>,
    gateway: &dyn Gateway,
    s: &Status,
) -> (Reply, Option<String>) {
    let result = match path {
        "/connections/close" => close(query, None),
        "/backends/drain" => drain(query, gateway, true, s),
        "/backends/undrain" => drain(query, gateway, false, s),
        _ => match path
            .strip_prefix("/connections/")
            .and_then(|p| p.strip_suffix("/close"))
        {
            Some(id) => match id.parse::<u64>() {
                Ok(id) => close(query, Some(id)),
                Err(_) => Err((404, format!("no connection {id:?}: ids are numbers"))),
            },
            None if ["/status", "/connections"].contains(&path) || OPEN.contains(&path) => {
                Err((405, format!("{path} is read with GET")))
            }
            None => Err((404, format!("no action {path}"))),
        },
    };
    match result {
        Ok(done) => {
            let first: Vec<String> = done.ids.iter().take(20).map(u64::to_string).collect();
            let more = if done.ids.len() > 20 { ", ..." } else { "" };
            let (n, first) = (done.ids.len(), first.join(", "));
            let said = format!("{}matched {n} connections [{first}{more}]", done.what);
            (json_reply(200, done.body), Some(said))
        }
        Err((code, why)) => (Reply::text(code, &format!("{why}\n")), None),
    }
}

/// A done action: its answer, the connections it matched, and what it was about (for the
/// log line).
struct Done {
    body: String,
    ids: Vec<u64>,
    what: String,
}

/// `[id,...]`.
fn id_list(ids: &[u64]) -> String {
    json::array(ids.iter().map(u64::to_string))
}

/// `POST /connections/{id}/close` (`id`) or `POST /connections/close?filters`.
fn close(query: Option<&str>, id: Option<u64>) -> Result<Done, (u16, String)> {
    let (keep, opts) = filters(query, &["code", "reason", "spread_ms"]).map_err(|w| (400, w))?;
    if id.is_none() && !opts.filtered {
        let why = "name the connections to close: route, user, backend or client (all of them \
                   would be every connection)";
        return Err((400, why.into()));
    }
    let code = match opts.get("code") {
        Some(c) => c.parse().map_err(|_| {
            (
                400,
                format!("code {c:?}: use 1000-1003, 1007-1013 or 3000-4999"),
            )
        })?,
        None => 1008,
    };
    let reason = opts.get("reason").unwrap_or("closed by operator");
    let close = GatewayClose::operator(code, reason).map_err(|w| (400, w))?;
    let spread = spread(&opts, Duration::ZERO)?;
    let matched = connections::list(&|e| id.is_none_or(|id| e.id == id) && keep(e));
    if let (Some(id), true) = (id, matched.is_empty()) {
        return Err((404, format!("no open connection {id}")));
    }
    let ids = ask(&matched, Some(close), spread);
    let body = Obj::new()
        .num("matched", ids.len() as u64)
        .raw("ids", &id_list(&ids))
        .num("code", u64::from(code))
        .str("reason", reason)
        .num("spread_ms", spread.as_millis() as u64)
        .end();
    let what = String::new();
    Ok(Done { body, ids, what })
}

/// `POST /backends/drain` (`on`) or `/backends/undrain`, `?route=&backend=host:port`.
fn drain(
    query: Option<&str>,
    gateway: &dyn Gateway,
    on: bool,
    s: &Status,
) -> Result<Done, (u16, String)> {
    let (on_it, opts) = filters(query, &["spread_ms"]).map_err(|w| (400, w))?;
    let (Some(route), Some(backend), None, None) = (
        opts.get("route"),
        opts.get("backend"),
        opts.get("user"),
        opts.get("client"),
    ) else {
        let why = "name the route (its external_path) and the backend (host:port), and nothing \
                   else but spread_ms";
        return Err((400, why.into()));
    };
    let spread = spread(&opts, s.close_spread)?;
    gateway
        .set_drained(route, backend, on)
        .map_err(|w| (404, w))?;
    let open = connections::list(&on_it);
    let ids = match on {
        true => ask(&open, Some(GatewayClose::Drained), spread),
        // Undrained: the drain's closes not carried out yet are called off.
        false => {
            let pending: Vec<_> = (open.into_iter())
                .filter(|e| e.asked().is_some_and(|(c, _)| c == GatewayClose::Drained))
                .collect();
            ask(&pending, None, Duration::ZERO)
        }
    };
    let key = if on { "closing" } else { "kept" };
    let body = Obj::new()
        .str("route", route)
        .str("backend", backend)
        .bool("drained", on)
        .num("matched", ids.len() as u64)
        .raw(key, &id_list(&ids))
        .num("spread_ms", spread.as_millis() as u64)
        .end();
    let what = format!("backend {backend} of route {route} ");
    Ok(Done { body, ids, what })
}

/// Asks each of `entries` to close with `close` (`None`: to stay) at a random moment within
/// `spread`; their ids.
fn ask(
    entries: &[std::sync::Arc<Entry>],
    close: Option<GatewayClose>,
    spread: Duration,
) -> Vec<u64> {
    let now = Instant::now();
    for e in entries {
        e.ask(close.map(|c| (c, now + spread.mul_f64(rand::random::<f64>()))));
    }
    entries.iter().map(|e| e.id).collect()
}

/// The query's options beside the filters.
struct Options {
    pairs: Vec<(String, String)>,
    /// A filter was given.
    filtered: bool,
}

impl Options {
    fn get(&self, key: &str) -> Option<&str> {
        (self.pairs.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `spread_ms` (default `default`), at most [`MAX_SPREAD_MS`].
fn spread(opts: &Options, default: Duration) -> Result<Duration, (u16, String)> {
    let Some(ms) = opts.get("spread_ms") else {
        return Ok(default);
    };
    match ms.parse::<u64>() {
        Ok(ms) if ms <= MAX_SPREAD_MS => Ok(Duration::from_millis(ms)),
        _ => Err((
            400,
            format!("spread_ms {ms:?}: a number of milliseconds, at most {MAX_SPREAD_MS}"),
        )),
    }
}

/// The connection filters of `query` as a predicate, and the `options` it may carry beside
/// them; `Err` names an unknown parameter.
fn filters(
    query: Option<&str>,
    options: &[&str],
) -> Result<(impl Fn(&Entry) -> bool, Options), String> {
    let pairs: Vec<(String, String)> =
        query.map_or(Vec::new(), |q| crate::route::query_pairs(q).collect());
    for (k, _) in &pairs {
        if !FILTERS.contains(&k.as_str()) && !options.contains(&k.as_str()) {
            let known = [&FILTERS[..], options].concat().join(", ");
            return Err(format!("unknown parameter {k:?}: {known}"));
        }
    }
    let filters: Vec<(String, String)> = (pairs.iter())
        .filter(|(k, _)| FILTERS.contains(&k.as_str()))
        .cloned()
        .collect();
    let opts = Options {
        filtered: !filters.is_empty(),
        pairs,
    };
    let keep = move |e: &Entry| {
        filters.iter().all(|(k, v)| match k.as_str() {
            "route" => e.route() == v,
            "user" => e.user.as_deref() == Some(v.as_str()),
            "backend" => e.backend() == *v,
            _ => e.client.to_string() == *v,
        })
    };
    Ok((keep, opts))
}

/// `Some(refusal)` when `request` for `path` may not be answered.
fn refused(request: &Request, path: &str, s: &Status) -> Option<Reply> {
    if OPEN.contains(&path) && request.method != "POST" {
        return None;
    }
    let Some(token) = &s.token else {
        return (!s.loopback).then(|| {
            Reply::text(
                403,
                "forbidden: set admin.token to use the connection API on a listener that is not \
                 on a loopback address\n",
            )
        });
    };
    let given = request
        .header("Authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match same(given.as_bytes(), token.as_bytes()) {
        true => None,
        false => Some(Reply::text(
            401,
            "unauthorized: Authorization: Bearer <admin.token>\n",
        )),
    }
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let diff = (a.iter().zip(b)).fold(0u8, |d, (x, y)| d | (x ^ y));
    a.len() == b.len() && diff == 0
}

/// A JSON answer.
pub(super) fn json_reply(code: u16, body: String) -> Reply {
    Reply {
        code,
        kind: "application/json",
        body: body + "\n",
        head_only: false,
        gzipped: None,
    }
}

/// One connection as the API shows it.
fn describe(e: &std::sync::Arc<Entry>) -> String {
    let [(up_m, up_b), (down_m, down_b)] = e.counts();
    Obj::new()
        .num("id", e.id)
        .str("route", e.route())
        .str("client", &e.client.to_string())
        .str("backend", &e.backend())
        .opt("user", e.user.as_deref())
        .str("opened_at", &crate::clock::rfc3339(e.opened_at_ms as i64))
        .num("client_to_backend_messages", up_m)
        .num("client_to_backend_bytes", up_b)
        .num("backend_to_client_messages", down_m)
        .num("backend_to_client_bytes", down_b)
        .end()
}
