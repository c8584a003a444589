//! Operations: the admin endpoints and metrics, graceful shutdown on signals, and config
//! reload, against the real binary.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;
use rustix::process::Signal;

/// A config with one route `/ws/chat` per backend list entry (`path`, backend), an `admin`
/// listener, and `server` fields.
fn ops_config(routes: &[(&str, SocketAddr)], server: &str, extra_route: &str) -> String {
    let routers: Vec<String> = routes
        .iter()
        .map(|(path, b)| {
            format!(
                r#"{{ "protocol": "websocket", "external_path": "{path}", "internal_path": "/ws",
                    "methods": ["GET"], {extra_route}
                    "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }}"#,
                b.port()
            )
        })
        .collect();
    format!(
        r#"{{ "server": {{ {server} }}, "version": 1,
            "admin": {{ "host": "127.0.0.1", "port": 0 }},
            "jwt": {{ "secret": "operations-test-secret" }},
            "routers": [{}] }}"#,
        routers.join(",")
    )
}

#[test]
fn admin_endpoints_report_health_readiness_and_metrics() {
    let (backend, _) = id_backend(0);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut json = ops_config(
        &[("/ws/chat", backend)],
        r#""shutdown_timeout_ms": 5000"#,
        "",
    );
    // A second route, health-checked, whose only backend is dead; and a route with a token.
    json = json.replace(
        r#""routers": ["#,
        &format!(
            r#""routers": [{{ "protocol": "websocket", "external_path": "/ws/dead",
                "internal_path": "/ws", "methods": ["GET"],
                "health_check": {{ "interval_ms": 100, "timeout_ms": 100, "unhealthy_threshold": 1 }},
                "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }},
              {{ "protocol": "websocket", "external_path": "/ws/secure", "internal_path": "/ws",
                "methods": ["GET"], "auth_required": true,
                "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }},"#,
            dead.port(),
            backend.port()
        ),
    );
    let gw = GatewayProcess::start(&json, None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        let health = http_get(admin, "/healthz").await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        // Traffic to count: an echo, a 404, a refused token.
        let (mut ws, _) = connect_id(addr, "/ws/chat").await;
        ws.send(Message::text("count me")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("count me"));
        let normal = async_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        ws.close(Some(normal)).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        assert_eq!(refused_status(addr, "/nowhere", &[]).await, 404);
        assert_eq!(refused_status(addr, "/ws/secure", &[]).await, 401);
        // The dead route's backend is marked down: not ready, and it says why.
        let deadline = std::time::Instant::now() + STEP;
        let ready = loop {
            let r = http_get(admin, "/readyz").await;
            if r.status == 503 || std::time::Instant::now() > deadline {
                break r;
            }
            smol::Timer::after(Duration::from_millis(10)).await; // poll, not spin
        };
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert!(ready.body.contains("/ws/dead"), "{}", ready.body);
        let metrics = http_get(admin, "/metrics").await;
        assert_eq!(metrics.status, 200);
        assert_eq!(
            metrics.header("Content-Type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let m = &metrics.body;
        let chat = r#"route="/ws/chat""#;
        for (series, want) in [
            (
                format!("kairos_handshakes_total{{{chat},status=\"101\"}}"),
                1.0,
            ),
            (
                r#"kairos_handshakes_total{route="none",status="404"}"#.to_string(),
                1.0,
            ),
            (
                r#"kairos_handshakes_total{route="/ws/secure",status="401"}"#.to_string(),
                1.0,
            ),
            (
                r#"kairos_auth_failures_total{route="/ws/secure",reason="missing"}"#.to_string(),
                1.0,
            ),
            (format!("kairos_connections_total{{{chat}}}"), 1.0),
            (format!("kairos_connections_active{{{chat}}}"), 0.0),
            (
                format!(
                    "kairos_messages_total{{{chat},direction=\"client_to_backend\",type=\"text\"}}"
                ),
                1.0,
            ),
            (
                format!(
                    "kairos_messages_total{{{chat},direction=\"backend_to_client\",type=\"text\"}}"
                ),
                2.0,
            ),
            (
                format!("kairos_closes_total{{{chat},side=\"client\",code=\"1000\"}}"),
                1.0,
            ),
            (
                format!(
                    "kairos_backend_connect_seconds_count{{{chat},backend=\"ws://127.0.0.1:{}\"}}",
                    backend.port()
                ),
                1.0,
            ),
            (
                format!(
                    "kairos_backend_up{{route=\"/ws/dead\",backend=\"ws://127.0.0.1:{}\"}}",
                    dead.port()
                ),
                0.0,
            ),
            (
                format!(
                    "kairos_backend_up{{{chat},backend=\"ws://127.0.0.1:{}\"}}",
                    backend.port()
                ),
                1.0,
            ),
        ] {
            assert_eq!(metric(m, &series), Some(want), "{series} in\n{m}");
        }
        assert!(m.contains(&format!(
            "kairos_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        let bytes = format!("kairos_bytes_total{{{chat},direction=\"client_to_backend\"}}");
        assert!(
            metric(m, &bytes).is_some_and(|b| b > 0.0),
            "{bytes} in\n{m}"
        );
        promtool_check(m);
        assert_eq!(http_get(admin, "/nope").await.status, 404);
        let post = raw_http(admin, b"POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(post.status, 405);
    });
}

#[test]
fn sigterm_closes_every_connection_with_1001_on_both_legs_and_exits_0() {
    let (backend, closes) = id_backend(0);
    let json = ops_config(
        &[("/ws/chat", backend)],
        r#""shutdown_timeout_ms": 10000"#,
        "",
    );
    let mut gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    let mut clients = run(async {
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(connect_id(addr, "/ws/chat").await.0);
        }
        clients
    });
    gw.signal(Signal::TERM);
    run(async {
        for ws in &mut clients {
            match next_msg(ws).await {
                Message::Close(Some(c)) => assert_eq!(c.code, CloseCode::Away, "{c:?}"),
                other => panic!("expected a 1001 close, got {other:?}"),
            }
            // The close handshake completes; no reset.
            match within(STEP, ws.next()).await {
                Some(None) => {}
                Some(Some(Err(e))) => panic!("after the close: {e}"),
                other => panic!("after the close: {other:?}"),
            }
        }
    });
    let status = gw.wait_exit(STEP).expect("the gateway did not exit");
    assert_eq!(status.code(), Some(0));
    let closes = closes.lock().unwrap().clone();
    assert_eq!(closes, vec![1001; 20], "the backend's legs");
}

/// A client that completed its upgrade and then neither reads nor answers.
async fn stubborn_client(addr: SocketAddr) -> smol::net::TcpStream {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut s = smol::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(upgrade_request("/ws/chat", "").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed before the 101");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

#[test]
fn shutdown_stops_accepting_and_ends_at_its_timeout_or_a_second_signal() {
    let (backend, _) = id_backend(0);
    let json = ops_config(
        &[("/ws/chat", backend)],
        r#""shutdown_timeout_ms": 1500"#,
        "",
    );
    let mut gw = GatewayProcess::start(&json, None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    let _held = run(stubborn_client(addr));
    assert_eq!(run(http_get(admin, "/readyz")).status, 200);
    gw.signal(Signal::TERM);
    assert!(gw.wait_for("shutting down", STEP).is_some());
    let started = std::time::Instant::now();
    // Not ready any more, and it says why.
    let ready = run(http_get(admin, "/readyz"));
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (503, "not ready: shutting down\n")
    );
    // No new connections while draining.
    let refused = run(async {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if smol::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            smol::Timer::after(Duration::from_millis(10)).await; // poll, not spin
        }
    });
    assert!(
        refused,
        "the gateway still accepts connections while shutting down"
    );
    let status = gw.wait_exit(STEP).expect("the gateway did not exit");
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1200), "exited after {took:?}");

    // A second signal does not wait for the (long) timeout.
    let json = ops_config(
        &[("/ws/chat", backend)],
        r#""shutdown_timeout_ms": 60000"#,
        "",
    );
    let mut gw = GatewayProcess::start(&json, None);
    let _held = run(stubborn_client(gw.addr()));
    gw.signal(Signal::INT);
    assert!(gw.wait_for("shutting down", STEP).is_some());
    gw.signal(Signal::INT);
    let status = gw
        .wait_exit(STEP)
        .expect("the second signal did not end it");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn reload_applies_to_new_connections_and_keeps_open_ones_and_bad_configs_are_rejected() {
    let (a, _) = id_backend(0);
    let (b, _) = id_backend(1);
    let poll = r#""reload_poll_ms": 50"#;
    let gw = GatewayProcess::start(&ops_config(&[("/ws/chat", a)], poll, ""), None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        let (mut before, id) = connect_id(addr, "/ws/chat").await;
        assert_eq!(id, 0);
        // The file changes: /ws/chat now goes to b, and /ws/new exists.
        gw.rewrite(&ops_config(&[("/ws/chat", b), ("/ws/new", a)], poll, ""));
        assert!(gw
            .wait_for("applied to new connections (2 routes)", STEP)
            .is_some());
        assert_eq!(connect_id(addr, "/ws/chat").await.1, 1);
        assert_eq!(connect_id(addr, "/ws/new").await.1, 0);
        // The connection opened before still runs on its backend.
        before.send(Message::text("still a")).await.unwrap();
        assert_eq!(next_data(&mut before).await, Message::text("still a"));
        // A broken config is rejected, with its problems, and the one in force stays.
        gw.rewrite(r#"{ "version": 1, "routers": [ { "protocol": "websocket" } ] }"#);
        assert!(gw.wait_for("external_path: is required", STEP).is_some());
        assert!(gw.wait_for("the config in force stays", STEP).is_some());
        assert_eq!(connect_id(addr, "/ws/new").await.1, 0);
        let m = http_get(admin, "/metrics").await.body;
        let ok = r#"kairos_config_reloads_total{result="success"}"#;
        let failed = r#"kairos_config_reloads_total{result="failure"}"#;
        assert_eq!(
            (metric(&m, ok), metric(&m, failed)),
            (Some(1.0), Some(1.0)),
            "{m}"
        );
    });
}

/// A reload whose config has a misspelt field (here the `auth_required` it was meant to turn
/// on) is refused: the running config keeps serving, and the failure is logged and counted.
#[test]
fn a_reload_with_a_misspelt_field_keeps_the_running_config() {
    let (a, _) = id_backend(0);
    let (b, _) = id_backend(1);
    let poll = r#""reload_poll_ms": 50"#;
    let gw = GatewayProcess::start(&ops_config(&[("/ws/chat", a)], poll, ""), None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        assert_eq!(connect_id(addr, "/ws/chat").await.1, 0);
        let typo = r#""auth_requried": true,"#;
        gw.rewrite(&ops_config(&[("/ws/chat", b)], poll, typo));
        let want =
            r#"routers[0] (/ws/chat): auth_requried: unknown field; did you mean "auth_required"?"#;
        let line = gw.wait_for(want, STEP);
        assert!(
            line.is_some_and(|l| l.contains("reload")),
            "no reload error naming it"
        );
        assert!(gw.wait_for("the config in force stays", STEP).is_some());
        // Still the old route: backend a, and no token asked for.
        assert_eq!(connect_id(addr, "/ws/chat").await.1, 0);
        let m = http_get(admin, "/metrics").await.body;
        let ok = r#"kairos_config_reloads_total{result="success"}"#;
        let failed = r#"kairos_config_reloads_total{result="failure"}"#;
        assert_eq!(metric(&m, failed), Some(1.0), "{m}");
        assert_eq!(metric(&m, ok).unwrap_or(0.0), 0.0, "{m}");
    });
}

#[test]
fn sighup_reloads_and_a_listen_change_asks_for_a_restart() {
    let (a, _) = id_backend(0);
    let (b, _) = id_backend(1);
    let off = r#""reload_poll_ms": 0"#;
    let gw = GatewayProcess::start(&ops_config(&[("/ws/chat", a)], off, ""), None);
    let addr = gw.addr();
    run(async {
        assert_eq!(connect_id(addr, "/ws/chat").await.1, 0);
        let moved = r#""reload_poll_ms": 0, "workers": 2"#;
        gw.rewrite(&ops_config(&[("/ws/chat", b)], moved, ""));
        gw.signal(Signal::HUP);
        assert!(gw.wait_for("server.workers changed", STEP).is_some());
        assert!(gw.wait_for("applied to new connections", STEP).is_some());
        assert_eq!(connect_id(addr, "/ws/chat").await.1, 1);
    });
}

#[test]
fn admin_endpoints_can_share_the_public_listener() {
    use kairos_gateway::config;
    let (backend, _) = id_backend(0);
    // A free port from the OS, for both the public listener and `admin`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = config_json(
        backend,
        &format!(r#""admin": {{ "host": "127.0.0.1", "port": {port} }},"#),
        "",
    );
    let mut cfg = config::parse(&json, std::path::Path::new("."))
        .expect("config")
        .config;
    cfg.host = "127.0.0.1".into();
    cfg.port = port;
    assert!(cfg.admin_on_public());
    let addr = kairos_gateway::server::start(std::sync::Arc::new(cfg), 1).expect("start");
    run(async {
        // WebSocket upgrades still reach the route; plain GETs of the admin paths are answered.
        let (mut ws, id) = connect_id(addr, "/ws/chat").await;
        assert_eq!(id, 0);
        ws.send(Message::text("shared")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("shared"));
        let health = http_get(addr, "/healthz").await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        let metrics = http_get(addr, "/metrics").await;
        assert!(
            metrics.body.contains("kairos_build_info"),
            "{}",
            metrics.body
        );
        assert_eq!(http_get(addr, "/readyz").await.status, 200);
        // Other plain GETs are the WebSocket route's business: 426 on a route, 404 elsewhere.
        assert_eq!(http_get(addr, "/ws/chat").await.status, 426);
        assert_eq!(http_get(addr, "/other").await.status, 404);
    });
}

/// An HS256 token for `secret`, valid for an hour.
fn token(secret: &str) -> String {
    hs256_token(
        secret,
        &serde_json::json!({ "sub": "ops", "exp": unix_now() + 3600 }),
    )
}

#[test]
fn reload_changes_jwt_settings_and_limits_for_new_connections_only() {
    let (backend, _) = id_backend(0);
    let config = |secret: &str, max: usize| {
        format!(
            r#"{{ "server": {{ "reload_poll_ms": 50 }}, "version": 1,
                "jwt": {{ "secret": "{secret}" }},
                "limits": {{ "max_message_bytes": {max} }},
                "routers": [{{ "protocol": "websocket", "external_path": "/ws/chat",
                  "internal_path": "/ws", "methods": ["GET"], "auth_required": true,
                  "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }}] }}"#,
            backend.port()
        )
    };
    let gw = GatewayProcess::start(&config("first-secret", 1024), None);
    let addr = gw.addr();
    let with = |secret: &str| format!("Bearer {}", token(secret));
    run(async {
        let (mut old, _) = try_connect(
            addr,
            "/ws/chat",
            &[("Authorization", &with("first-secret"))],
        )
        .await
        .expect("connect with the first secret");
        assert!(matches!(next_data(&mut old).await, Message::Text(_)));
        gw.rewrite(&config("second-secret", 64));
        assert!(gw.wait_for("applied to new connections", STEP).is_some());
        // New connections: the new secret, the new limit.
        let first = [("Authorization", with("first-secret"))];
        let first: Vec<(&str, &str)> = first.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(refused_status(addr, "/ws/chat", &first).await, 401);
        let (mut new, _) = try_connect(
            addr,
            "/ws/chat",
            &[("Authorization", &with("second-secret"))],
        )
        .await
        .expect("connect with the second secret");
        assert!(matches!(next_data(&mut new).await, Message::Text(_)));
        let big = "x".repeat(100);
        new.send(Message::text(big.clone())).await.unwrap();
        match next_msg(&mut new).await {
            Message::Close(Some(c)) => assert_eq!(u16::from(c.code), 1009),
            other => panic!("expected 1009 for 100 bytes over a 64-byte limit, got {other:?}"),
        }
        // The connection opened before keeps its config: 100 bytes are under its 1024.
        old.send(Message::text(big.clone())).await.unwrap();
        assert_eq!(next_data(&mut old).await, Message::text(big));
    });
}
