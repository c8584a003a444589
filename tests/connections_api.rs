//! The connection API on the admin listener (issue 17): `admin.token` (401 without it, the
//! probes and `/metrics` open), the API refused without a token off loopback (403), and
//! `GET /connections` with its filters and live counts.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "connections-api-secret";
const TOKEN: &str = "an-admin-token-of-32-characters!";

/// Two routes, `/a` to `a` and `/b` to `b`, tokens required; `admin` is the admin block.
fn config(a: SocketAddr, b: SocketAddr, admin: &str) -> String {
    let route = |path: &str, backend: SocketAddr| {
        format!(
            r#"{{ "protocol": "websocket", "external_path": "{path}", "internal_path": "/ws",
                "methods": ["GET"], "auth_required": true,
                "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }}"#,
            backend.port()
        )
    };
    format!(
        r#"{{ "version": 1, "admin": {admin},
            "jwt": {{ "secret": "{SECRET}", "algorithms": ["HS256"] }},
            "routers": [{}, {}] }}"#,
        route("/a", a),
        route("/b", b)
    )
}

async fn open_as(addr: SocketAddr, path: &str, user: &str) -> Ws {
    let token = hs256_token(SECRET, &json!({ "sub": user, "exp": unix_now() + 600 }));
    let bearer = format!("Bearer {token}");
    let (ws, _) = try_connect(addr, path, &[("Authorization", &bearer)])
        .await
        .expect("connect");
    ws
}

/// `GET path` on the admin listener with `token` as a bearer token (or none).
async fn get(admin: SocketAddr, path: &str, token: Option<&str>) -> RawResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}\r\n");
    raw_http(admin, req.as_bytes()).await
}

/// `GET /connections?query`, as JSON.
async fn connections(admin: SocketAddr, query: &str) -> Vec<Value> {
    let r = get(admin, &format!("/connections{query}"), Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("Content-Type").as_deref(),
        Some("application/json")
    );
    serde_json::from_str::<Vec<Value>>(&r.body).expect("a JSON array")
}

fn users(list: &[Value]) -> Vec<&str> {
    let mut u: Vec<&str> = list.iter().filter_map(|c| c["user"].as_str()).collect();
    u.sort();
    u
}

#[test]
fn the_token_guards_the_api_and_not_the_probes() {
    let admin_block = format!(r#"{{ "host": "127.0.0.1", "port": 0, "token": "{TOKEN}" }}"#);
    let gw = GatewayProcess::start(&config(start_echo(), start_echo(), &admin_block), None);
    let admin = gw.admin_addr();
    run(async {
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(get(admin, path, None).await.status, 200, "{path}");
        }
        let none = get(admin, "/connections", None).await;
        assert_eq!(none.status, 401, "{}", none.body);
        let wrong = get(
            admin,
            "/connections",
            Some("an-admin-token-of-32-characters?"),
        )
        .await;
        assert_eq!(wrong.status, 401);
        let short = get(admin, "/connections", Some("an-admin")).await;
        assert_eq!(short.status, 401);
        assert_eq!(get(admin, "/connections", Some(TOKEN)).await.status, 200);
        assert_eq!(get(admin, "/nothing", Some(TOKEN)).await.status, 404);
    });
    let lines = gw.stop_and_collect();
    assert!(
        !lines.iter().any(|l| l.contains(TOKEN)),
        "the admin token was logged"
    );
}

#[test]
fn without_a_token_the_api_is_refused_off_loopback_and_open_on_it() {
    let open_admin = r#"{ "host": "0.0.0.0", "port": 0 }"#;
    let gw = GatewayProcess::start(&config(start_echo(), start_echo(), open_admin), None);
    let admin = SocketAddr::from(([127, 0, 0, 1], gw.admin_addr().port()));
    run(async {
        let r = get(admin, "/connections", None).await;
        assert_eq!(r.status, 403);
        assert!(r.body.contains("admin.token"), "{}", r.body);
        assert_eq!(get(admin, "/status", None).await.status, 403);
        // The actions too: nobody who reaches 0.0.0.0 closes connections or drains backends.
        for action in [
            "/connections/close?user=alice",
            "/connections/1/close",
            "/backends/drain?route=/a&backend=127.0.0.1:1",
            "/backends/undrain?route=/a&backend=127.0.0.1:1",
        ] {
            let req = format!("POST {action} HTTP/1.1\r\nHost: admin\r\n\r\n");
            assert_eq!(
                raw_http(admin, req.as_bytes()).await.status,
                403,
                "{action}"
            );
        }
        assert_eq!(get(admin, "/healthz", None).await.status, 200);
    });
    let local = r#"{ "host": "127.0.0.1", "port": 0 }"#;
    let gw = GatewayProcess::start(&config(start_echo(), start_echo(), local), None);
    let admin = gw.admin_addr();
    run(async { assert_eq!(get(admin, "/connections", None).await.status, 200) });
}

#[test]
fn connections_are_listed_with_their_fields_filters_and_live_counts() {
    let (a, b) = (start_echo(), start_echo());
    let admin_block = format!(r#"{{ "host": "127.0.0.1", "port": 0, "token": "{TOKEN}" }}"#);
    let gw = GatewayProcess::start(&config(a, b, &admin_block), None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        let mut alice = open_as(addr, "/a", "alice").await;
        let _bob = open_as(addr, "/a", "bob").await;
        let _carol = open_as(addr, "/b", "carol").await;
        let all = connections(admin, "").await;
        assert_eq!(users(&all), ["alice", "bob", "carol"]);
        let first = all.iter().find(|c| c["user"] == "alice").expect("alice");
        assert_eq!(first["route"], "/a");
        assert_eq!(first["client"], "127.0.0.1");
        assert_eq!(first["backend"], format!("127.0.0.1:{}", a.port()));
        assert!(first["id"].as_u64().is_some());
        assert!(first["opened_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert_eq!(
            users(&connections(admin, "?route=/a").await),
            ["alice", "bob"]
        );
        assert_eq!(users(&connections(admin, "?route=%2Fb").await), ["carol"]);
        assert_eq!(users(&connections(admin, "?user=bob").await), ["bob"]);
        let by_backend = format!("?backend=127.0.0.1:{}", b.port());
        assert_eq!(users(&connections(admin, &by_backend).await), ["carol"]);
        assert_eq!(
            connections(admin, "?client=127.0.0.1&user=alice")
                .await
                .len(),
            1
        );
        assert!(connections(admin, "?client=10.0.0.1").await.is_empty());
        let bad = get(admin, "/connections?colour=blue", Some(TOKEN)).await;
        assert_eq!(bad.status, 400);
        // Alice's messages show up while her connection is open (within 10 s).
        for _ in 0..3 {
            alice.send(Message::text("ping")).await.expect("send");
            assert_eq!(next_data(&mut alice).await, Message::text("ping"));
        }
        let start = Instant::now();
        let counted = loop {
            let mine = connections(admin, "?user=alice").await;
            if mine[0]["client_to_backend_messages"] == 3
                || start.elapsed() > Duration::from_secs(10)
            {
                break mine[0].clone();
            }
            smol::Timer::after(Duration::from_millis(200)).await;
        };
        assert_eq!(counted["client_to_backend_messages"], 3, "{counted}");
        assert_eq!(counted["backend_to_client_messages"], 3);
        assert_eq!(counted["backend_to_client_bytes"], 3 * 6);
        // A connection leaves the table when it ends.
        drop(alice);
        let deadline = Instant::now() + STEP;
        while !connections(admin, "?user=alice").await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "alice's connection is still listed"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert_eq!(users(&connections(admin, "").await), ["bob", "carol"]);
    });
}
