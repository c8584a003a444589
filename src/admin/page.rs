//! The status page: `GET /` is one self-contained HTML page (no external asset: it works on a
//! device with no internet), which refreshes itself from `GET /status` (below) and
//! `GET /connections` every 2 s. The HTML holds no data, so it is served without the token;
//! the page sends the token (from the address's `#token=` fragment, or typed in) with its
//! fetches. The binary holds it gzip-compressed (`status.html.gz`, 4.7 KB against 12 KB; every
//! browser accepts it): a client that does not accept gzip gets 406 and where to look.

use super::api::json_reply;
use super::json::{self, Obj};
use super::{Reply, Status};

/// The page, `gzip -9 -n src/admin/status.html` (the test below checks that it is).
const PAGE_GZ: &[u8] = include_bytes!("status.html.gz");

/// `GET /`, for a client whose `Accept-Encoding` is `accept`.
pub(super) fn html(accept: Option<&str>) -> Reply {
    let gzip = accept.is_some_and(|a| {
        a.split(',').any(|c| {
            c.split(';')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("gzip"))
        })
    });
    if !gzip {
        let why = "the status page is sent gzip-compressed: open it in a browser, or use \
                   `curl --compressed`; its figures are at /status (JSON)\n";
        return Reply::text(406, why);
    }
    Reply {
        code: 200,
        kind: "text/html; charset=utf-8",
        body: String::new(),
        head_only: false,
        gzipped: Some(PAGE_GZ),
    }
}

/// `GET /status`: the routes, each with its open connections, data messages and bytes each
/// way (cumulative: the page computes the rates), and its backends with their state and open
/// connections.
pub(super) fn status(s: &Status) -> Reply {
    let open = crate::connections::list(&|_| true);
    let mut names: Vec<&str> = Vec::new();
    for b in &s.backends {
        if !names.contains(&b.route.as_str()) {
            names.push(&b.route);
        }
    }
    // One pass over the open connections: how many on each backend of each route (a few
    // pairs: a list, not a map).
    let mut on: Vec<(&str, String, u64)> = Vec::new();
    for e in &open {
        let (route, backend) = (e.route(), e.backend());
        match on.iter_mut().find(|(r, b, _)| *r == route && *b == backend) {
            Some(n) => n.2 += 1,
            None => on.push((route, backend, 1)),
        }
    }
    let routes = names.into_iter().map(|name| {
        let f = crate::metrics::figures(name);
        let backends = (s.backends.iter()).filter(|b| b.route == name).map(|b| {
            let on_it = (on.iter())
                .find(|(r, a, _)| *r == name && *a == b.address)
                .map_or(0, |n| n.2);
            Obj::new()
                .str("backend", &b.address)
                .str("state", b.state.as_str())
                .num("open_connections", on_it)
                .end()
        });
        let (m, b) = f
            .as_ref()
            .map_or(([0; 2], [0; 2]), |f| (f.messages, f.bytes));
        let ways = |n: [u64; 2]| {
            (Obj::new().num("client_to_backend", n[0]))
                .num("backend_to_client", n[1])
                .end()
        };
        let open_here = open.iter().filter(|e| e.route() == name).count();
        Obj::new()
            .str("route", name)
            .num("open_connections", open_here as u64)
            .raw("messages", &ways(m))
            .raw("bytes", &ways(b))
            .raw("backends", &json::array(backends))
            .end()
    });
    let routes = json::array(routes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let body = Obj::new()
        .str("version", env!("CARGO_PKG_VERSION"))
        .str("time", &crate::clock::rfc3339(now))
        .bool("shutting_down", s.shutting_down)
        .num("open_connections", open.len() as u64)
        .raw("routes", &routes)
        .end();
    json_reply(200, body)
}

#[cfg(test)]
mod tests {
    /// The compressed page is the page: `gzip -dc` gives `status.html` back, byte for byte.
    #[test]
    fn the_compressed_page_is_status_html() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin");
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(dir.join("status.html.gz"))
            .output()
            .expect("gzip");
        assert!(out.status.success());
        let page = std::fs::read(dir.join("status.html")).unwrap();
        assert!(
            out.stdout == page,
            "src/admin/status.html.gz is stale: gzip -9 -n -c src/admin/status.html > src/admin/status.html.gz"
        );
        assert!(page.len() < 30 * 1024, "{} bytes", page.len());
        let text = String::from_utf8(page).unwrap();
        for external in [
            "src=\"http",
            "href=\"http",
            "url(http",
            "@import",
            "src='http",
            "//cdn",
        ] {
            assert!(!text.contains(external), "the page loads {external}...");
        }
    }
}
