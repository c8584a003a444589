//! The admin listener's connection API and its access rule.
//!
//! - `admin.token`: when set, every request but `/healthz`, `/readyz` and `/metrics` needs
//!   `Authorization: Bearer <token>` (401 otherwise). Without it, the API is refused (403)
//!   unless the admin listener is on a loopback address.
//! - `GET /connections` (filters `route`, `user`, `backend` as `host:port`, `client`): the open
//!   relayed connections as a JSON array.

use serde_json::{json, Value};

use super::{Reply, Status};
use crate::connections::{self, Entry};
use crate::handshake::{Head, Request};

/// The paths anyone who reaches the listener may ask (probes and scrapes).
const OPEN: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// `Some(refusal)` when `request` for `path` may not be answered.
pub(super) fn refused(request: &Request, path: &str, s: &Status) -> Option<Reply> {
    if OPEN.contains(&path) {
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
        false => Some(Reply {
            code: 401,
            kind: "text/plain; charset=utf-8",
            body: "unauthorized: Authorization: Bearer <admin.token>\n".into(),
            head_only: false,
        }),
    }
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let diff = (a.iter().zip(b)).fold(0u8, |d, (x, y)| d | (x ^ y));
    a.len() == b.len() && diff == 0
}

/// `GET /connections?route=&user=&backend=&client=`.
pub(super) fn connections(query: Option<&str>) -> Reply {
    let filters: Vec<(String, String)> =
        query.map_or(Vec::new(), |q| crate::route::query_pairs(q).collect());
    for (k, _) in &filters {
        if !["route", "user", "backend", "client"].contains(&k.as_str()) {
            let msg =
                format!("unknown filter {k:?}: the filters are route, user, backend, client\n");
            return Reply::text(400, &msg);
        }
    }
    let keep = |e: &Entry| {
        filters.iter().all(|(k, v)| match k.as_str() {
            "route" => e.route() == v,
            "user" => e.user.as_deref() == Some(v.as_str()),
            "backend" => e.backend() == *v,
            _ => e.client.to_string() == *v,
        })
    };
    let list: Vec<Value> = connections::list(keep)
        .iter()
        .map(|e| describe(e))
        .collect();
    Reply {
        code: 200,
        kind: "application/json",
        body: Value::from(list).to_string() + "\n",
        head_only: false,
    }
}

/// One connection as the API shows it.
fn describe(e: &Entry) -> Value {
    let [(up_m, up_b), (down_m, down_b)] = e.counts();
    json!({
        "id": e.id,
        "route": e.route(),
        "client": e.client.to_string(),
        "backend": e.backend(),
        "user": e.user.as_deref(),
        "opened_at": crate::clock::rfc3339(e.opened_at_ms as i64),
        "client_to_backend_messages": up_m,
        "client_to_backend_bytes": up_b,
        "backend_to_client_messages": down_m,
        "backend_to_client_bytes": down_b,
    })
}
