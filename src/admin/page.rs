//! The status page: `GET /` is one self-contained HTML page (no external asset: it works on a
//! device with no internet), which refreshes itself from `GET /status` (below) and
//! `GET /connections` every 2 s. The HTML holds no data, so it is served without the token;
//! the page sends the token (from the address's `#token=` fragment, or typed in) with its
//! fetches.

use serde_json::{json, Value};

use super::api::json_reply;
use super::{Reply, Status};

/// The page (`src/admin/status.html`).
const PAGE: &str = include_str!("status.html");

/// `GET /`.
pub(super) fn html() -> Reply {
    Reply {
        code: 200,
        kind: "text/html; charset=utf-8",
        body: PAGE.to_string(),
        head_only: false,
    }
}

/// `GET /status`: the routes, each with its open connections, data messages and bytes each
/// way (cumulative: the page computes the rates), and its backends with their state and open
/// connections.
pub(super) fn status(s: &Status) -> Reply {
    let open = crate::connections::list(|_| true);
    let mut routes: Vec<Value> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for b in &s.backends {
        if !names.contains(&b.route.as_str()) {
            names.push(&b.route);
        }
    }
    for name in names {
        let f = crate::metrics::figures(name);
        let backends: Vec<Value> = (s.backends.iter())
            .filter(|b| b.route == name)
            .map(|b| {
                let on_it = (open.iter())
                    .filter(|e| e.route() == name && e.backend() == b.address)
                    .count();
                json!({"backend": b.address, "state": b.state.as_str(), "open_connections": on_it})
            })
            .collect();
        let (messages, bytes) = f
            .as_ref()
            .map_or(([0; 2], [0; 2]), |f| (f.messages, f.bytes));
        routes.push(json!({
            "route": name,
            "open_connections": open.iter().filter(|e| e.route() == name).count(),
            "messages": {"client_to_backend": messages[0], "backend_to_client": messages[1]},
            "bytes": {"client_to_backend": bytes[0], "backend_to_client": bytes[1]},
            "backends": backends,
        }));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    json_reply(
        200,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "time": crate::clock::rfc3339(now),
            "shutting_down": s.shutting_down,
            "open_connections": open.len(),
            "routes": routes,
        }),
    )
}
