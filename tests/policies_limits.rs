//! Connection limits (issue 7): `limits.max_connections`, a route's `max_connections`,
//! `rate_limit.connections_per_ip` and `rate_limit.handshakes_per_second_per_ip`, with
//! `server.trusted_proxies`. Each rule on both sides of its line: exactly N pass, the next is
//! refused with its status and `Retry-After`, and a place given back lets the next one in.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_lite::StreamExt;

/// A gateway in front of one echo backend with the routes `paths`, each with `route` fields,
/// and `top` fields.
fn gateway(top: &str, paths: &[&str], route: &str) -> SocketAddr {
    start_gateway(&routes_json(start_echo(), top, paths, route))
}

fn routes_json(backend: SocketAddr, top: &str, paths: &[&str], route: &str) -> String {
    let routers: Vec<String> = paths
        .iter()
        .map(|p| {
            format!(
                r#"{{ "protocol": "websocket", "external_path": "{p}", "internal_path": "/ws",
                    "methods": ["GET"], {route}
                    "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }}"#,
                backend.port()
            )
        })
        .collect();
    format!(
        r#"{{ {top} "version": 1, "routers": [{}] }}"#,
        routers.join(",")
    )
}

/// An upgrade of `path` with `extra` header lines, which the gateway must refuse with
/// `status` and a `Retry-After`; the answer.
async fn refusal(addr: SocketAddr, path: &str, extra: &str, status: u16) -> RawResponse {
    let r = raw_http(addr, upgrade_request(path, extra).as_bytes()).await;
    assert_eq!(r.status, status, "{}\n{}", r.head, r.body);
    assert!(r.header("Retry-After").is_some(), "{}", r.head);
    r
}

fn retry_after(r: &RawResponse) -> u64 {
    let v = r.header("Retry-After").expect("Retry-After");
    v.parse().unwrap_or_else(|_| panic!("Retry-After {v:?}"))
}

/// Connects with `headers`, retrying while the gateway refuses, within [`STEP`].
async fn connect_when_admitted(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    let deadline = Instant::now() + STEP;
    loop {
        match try_connect(addr, path, headers).await {
            Ok((ws, _)) => return ws,
            Err(e) if Instant::now() > deadline => panic!("{path} never admitted again: {e}"),
            Err(_) => {
                smol::Timer::after(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Closes a client connection and waits for the gateway's close to come back.
async fn close(mut ws: Ws) {
    ws.close(None).await.expect("send close");
    while let Some(Ok(_)) = ws.next().await {}
}

/// `kairos_rejections_total{route, reason}` in this process's metrics.
fn rejections(route: &str, reason: &str) -> Option<f64> {
    let text = kairos_gateway::metrics::render("test", &[]);
    let series = format!("kairos_rejections_total{{route=\"{route}\",reason=\"{reason}\"}}");
    metric(&text, &series)
}

async fn open_n(addr: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<Ws> {
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(connect_when_admitted(addr, path, headers).await);
    }
    open
}

#[test]
fn route_max_connections_admits_exactly_n() {
    let path = "/limits/route-max";
    let gw = gateway("", &[path], r#""max_connections": 3,"#);
    run(async {
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(connect(gw, path).await);
        }
        let r = refusal(gw, path, "", 503).await;
        assert_eq!(retry_after(&r), 1);
        assert!(
            r.body
                .contains("route /limits/route-max has 3 open connections")
                && r.body.contains("(max_connections)"),
            "{}",
            r.body
        );
        assert_eq!(rejections(path, "route_max_connections"), Some(1.0));
        // The connections admitted work; closing one lets exactly one more in.
        close(open.remove(0)).await;
        open.push(connect_when_admitted(gw, path, &[]).await);
        refusal(gw, path, "", 503).await;
    });
}

#[test]
fn global_max_connections_counts_every_route() {
    let (a, b) = ("/limits/global-a", "/limits/global-b");
    let top = r#""limits": { "max_connections": 2 },"#;
    let gw = gateway(top, &[a, b], "");
    run(async {
        let first = connect(gw, a).await;
        let _second = connect(gw, b).await;
        for path in [a, b] {
            let r = refusal(gw, path, "", 503).await;
            assert_eq!(retry_after(&r), 1);
            assert!(r.body.contains("limits.max_connections"), "{}", r.body);
            assert_eq!(rejections(path, "max_connections"), Some(1.0));
        }
        close(first).await;
        let _third = connect_when_admitted(gw, b, &[]).await;
        refusal(gw, a, "", 503).await;
    });
}

#[test]
fn a_connection_counts_while_it_connects_and_gives_its_place_back_when_refused() {
    // A backend that holds each handshake until told, then refuses it with 500 (502 to the
    // client).
    let arrived = Arc::new(AtomicBool::new(false));
    let (go, wait) = smol::channel::unbounded::<()>();
    let seen = arrived.clone();
    let backend = spawn_backend(move |mut s| {
        let (seen, wait) = (seen.clone(), wait.clone());
        async move {
            let _ = read_head(&mut s).await;
            seen.store(true, Ordering::SeqCst);
            let _ = wait.recv().await;
            let no = b"HTTP/1.1 500 No\r\nContent-Length: 0\r\n\r\n";
            let _ = futures_lite::AsyncWriteExt::write_all(&mut s, no).await;
        }
    });
    let path = "/limits/connecting";
    let gw = start_gateway(&routes_json(
        backend,
        "",
        &[path],
        r#""max_connections": 1,"#,
    ));
    run(async {
        let req = upgrade_request(path, "");
        let first = smol::spawn(async move { raw_http(gw, req.as_bytes()).await });
        assert!(wait_until(STEP, || arrived.load(Ordering::SeqCst)).await);
        // The first is still connecting to the backend: it holds the route's one place.
        refusal(gw, path, "", 503).await;
        go.send(()).await.unwrap();
        assert_eq!(first.await.status, 502);
        // Refused by the backend, it gave its place back: the next one reaches the backend.
        go.send(()).await.unwrap();
        let again = raw_http(gw, upgrade_request(path, "").as_bytes()).await;
        assert_eq!(again.status, 502, "{}", again.body);
    });
}

#[test]
fn connections_per_ip_admits_exactly_n_per_address() {
    let path = "/limits/per-ip";
    let gw = gateway("", &[path], r#""rate_limit": { "connections_per_ip": 2 },"#);
    run(async {
        let mut open = open_n(gw, path, &[], 2).await;
        let r = refusal(gw, path, "", 429).await;
        assert_eq!(retry_after(&r), 1);
        assert!(
            r.body.contains("127.0.0.1 has 2 open connections")
                && r.body.contains("rate_limit.connections_per_ip"),
            "{}",
            r.body
        );
        assert_eq!(rejections(path, "connections_per_ip"), Some(1.0));
        close(open.remove(0)).await;
        open.push(connect_when_admitted(gw, path, &[]).await);
        refusal(gw, path, "", 429).await;
    });
}

#[test]
fn handshakes_per_ip_spends_the_burst_then_waits_for_the_refill() {
    let path = "/limits/handshakes";
    let rule = r#""rate_limit": { "handshakes_per_second_per_ip": { "rate": 1, "burst": 3 } },"#;
    let gw = gateway("", &[path], rule);
    run(async {
        // The burst at once.
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(connect(gw, path).await);
        }
        let r = refusal(gw, path, "", 429).await;
        assert!(retry_after(&r) >= 1, "{}", r.head);
        assert!(
            r.body.contains("1 a second, 3 at once")
                && r.body.contains("rate_limit.handshakes_per_second_per_ip"),
            "{}",
            r.body
        );
        assert_eq!(rejections(path, "handshakes_per_ip"), Some(1.0));
        // The rate counts handshakes, not connections: closing them gives nothing back.
        for ws in open {
            close(ws).await;
        }
        refusal(gw, path, "", 429).await;
        // A token is back within a second: the next handshake passes (refused tries spend
        // none), and the one after it is refused again.
        let started = Instant::now();
        let _ws = connect_when_admitted(gw, path, &[]).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        refusal(gw, path, "", 429).await;
    });
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let path = "/limits/trusted";
    let top = r#""server": { "trusted_proxies": ["127.0.0.1"] },"#;
    let gw = gateway(
        top,
        &[path],
        r#""rate_limit": { "connections_per_ip": 1 },"#,
    );
    let alice = [("X-Forwarded-For", "203.0.113.1")];
    // A client that forges an address left of what the proxy appended gains nothing.
    let alice_forging = [("X-Forwarded-For", "198.51.100.7, 203.0.113.1")];
    let bob = [("X-Forwarded-For", "203.0.113.2")];
    run(async {
        let _a = connect_when_admitted(gw, path, &alice).await;
        let r = refusal(gw, path, "X-Forwarded-For: 203.0.113.1\r\n", 429).await;
        assert!(r.body.contains("203.0.113.1 has 1 open"), "{}", r.body);
        assert!(try_connect(gw, path, &alice_forging).await.is_err());
        let _b = connect_when_admitted(gw, path, &bob).await;
        // The proxy itself, without the header, is a client of its own too.
        let _proxy = connect_when_admitted(gw, path, &[]).await;
        refusal(gw, path, "X-Forwarded-For: 203.0.113.2\r\n", 429).await;
    });
}

#[test]
fn without_trusted_proxies_forwarded_for_cannot_escape_the_limit() {
    let path = "/limits/untrusted";
    let gw = gateway("", &[path], r#""rate_limit": { "connections_per_ip": 1 },"#);
    run(async {
        let _a = connect_when_admitted(gw, path, &[("X-Forwarded-For", "203.0.113.1")]).await;
        let r = refusal(gw, path, "X-Forwarded-For: 203.0.113.2\r\n", 429).await;
        assert!(r.body.contains("127.0.0.1 has 1 open"), "{}", r.body);
    });
}

#[test]
fn rejection_metrics_pass_promtool() {
    let path = "/limits/promtool";
    let gw = gateway("", &[path], r#""max_connections": 1,"#);
    run(async {
        let _ws = connect(gw, path).await;
        refusal(gw, path, "", 503).await;
    });
    let text = kairos_gateway::metrics::render("test", &[]);
    assert!(text.contains("# TYPE kairos_rejections_total counter"));
    promtool_check(&text);
}

#[test]
fn a_reload_keeps_counting_the_connections_the_old_config_admitted() {
    let backend = start_echo();
    let path = "/limits/reload";
    let poll = r#""server": { "reload_poll_ms": 50 },"#;
    let limits = r#""limits": { "max_connections": 5 },"#;
    let gw = GatewayProcess::start(
        &routes_json(backend, poll, &[path], r#""max_connections": 2,"#),
        None,
    );
    let addr = gw.addr();
    run(async {
        let _held = open_n(addr, path, &[], 2).await;
        refusal(addr, path, "", 503).await;
        // A new config: the route's limit and a gateway-wide limit. The two connections the
        // old config admitted still count against both.
        let json = routes_json(
            backend,
            &format!("{poll} {limits}"),
            &[path, "/limits/other"],
            r#""max_connections": 3,"#,
        );
        gw.rewrite(&json);
        assert!(gw.wait_for("applied to new connections", STEP).is_some());
        let _third = connect(addr, path).await;
        let r = refusal(addr, path, "", 503).await;
        assert!(r.body.contains("has 3 open connections"), "{}", r.body);
        let _others = open_n(addr, "/limits/other", &[], 2).await;
        let r = refusal(addr, "/limits/other", "", 503).await;
        assert!(r.body.contains("limits.max_connections"), "{}", r.body);
    });
}
