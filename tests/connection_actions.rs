//! The admin actions (issue 17): closing connections by id and by filter (code, reason,
//! spread), draining and undraining a backend of a route (no new connections, its open ones
//! closed with 1012, `/readyz`, the metrics and `/status` show it, a reload keeps it), the
//! status page's HTML and JSON, and each action's log line. Real gateway process, real
//! backends, real clients.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;
use serde_json::{json, Value};

const SECRET: &str = "connection-actions-secret";
const TOKEN: &str = "another-admin-token-of-32-chars!";

/// The close frames a backend received: (code, reason), by the backend's id.
type Seen = Arc<Mutex<Vec<(usize, u16, String)>>>;

/// A backend that sends `id` first, echoes, and records each close frame it gets.
fn backend(id: usize, seen: &Seen) -> SocketAddr {
    let seen = seen.clone();
    spawn_backend(move |mut s| {
        let seen = seen.clone();
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            if ws.send(Message::text(id.to_string())).await.is_err() {
                return;
            }
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(c) = &m {
                    let (code, reason) = c.as_ref().map_or((1005, String::new()), |c| {
                        (u16::from(c.code), c.reason.to_string())
                    });
                    seen.lock().unwrap().push((id, code, reason));
                } else if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// `/a` (backends `a`) and `/b` (backend `b`), tokens required, round robin; `admin` is the
/// admin block, `server` the server block's fields.
fn config(a: &[SocketAddr], b: SocketAddr, admin: &str, server: &str) -> String {
    let list = |addrs: &[SocketAddr]| {
        let each: Vec<String> = (addrs.iter())
            .map(|x| format!(r#"{{ "host": "ws://127.0.0.1", "port": {} }}"#, x.port()))
            .collect();
        each.join(", ")
    };
    let route = |path: &str, backends: String| {
        format!(
            r#"{{ "protocol": "websocket", "external_path": "{path}", "internal_path": "/ws",
                "methods": ["GET"], "auth_required": true, "backends": [{backends}] }}"#
        )
    };
    let server = match server {
        "" => String::new(),
        fields => format!(r#""server": {{ {fields} }}, "#),
    };
    format!(
        r#"{{ "version": 1, {server}"admin": {admin},
            "jwt": {{ "secret": "{SECRET}", "algorithms": ["HS256"] }},
            "access_log": {{ "format": "json" }},
            "routers": [{}, {}] }}"#,
        route("/a", list(a)),
        route("/b", list(&[b]))
    )
}

/// Opens `path` as `user`; the connection and the backend id it reached.
async fn open_as(addr: SocketAddr, path: &str, user: &str) -> (Ws, usize) {
    let token = hs256_token(SECRET, &json!({ "sub": user, "exp": unix_now() + 600 }));
    let bearer = format!("Bearer {token}");
    let (mut ws, _) = try_connect(addr, path, &[("Authorization", &bearer)])
        .await
        .expect("connect");
    match next_data(&mut ws).await {
        Message::Text(id) => (ws, id.parse().expect("backend id")),
        other => panic!("expected the backend's id, got {other:?}"),
    }
}

/// `METHOD target` on the admin listener, with `token` as a bearer token (or none).
async fn admin_req(
    admin: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> RawResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("{method} {target} HTTP/1.1\r\nHost: admin\r\n{auth}\r\n");
    raw_http(admin, req.as_bytes()).await
}

/// `POST target` with the token; the JSON answer (the status must be 200).
async fn post(admin: SocketAddr, target: &str) -> Value {
    let r = admin_req(admin, "POST", target, Some(TOKEN)).await;
    assert_eq!(r.status, 200, "POST {target}: {}", r.body);
    serde_json::from_str(&r.body).expect("JSON")
}

/// The close frame `ws` gets next (after any data); the client answers it (its close
/// handshake completes).
async fn closed_with(ws: &mut Ws) -> (u16, String) {
    let got = loop {
        match next_msg(ws).await {
            Message::Close(Some(c)) => break (u16::from(c.code), c.reason.to_string()),
            Message::Close(None) => break (1005, String::new()),
            _ => continue,
        }
    };
    // Sends the answer queued by the close, and reads to the end.
    let end = within(STEP, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(
        end.is_some(),
        "the connection did not end after its close handshake"
    );
    got
}

/// Whether `ws` still echoes.
async fn echoes(ws: &mut Ws) -> bool {
    if ws.send(Message::text("still there?")).await.is_err() {
        return false;
    }
    within(STEP, next_data(ws)).await == Some(Message::text("still there?"))
}

/// Waits until `seen` holds `n` closes.
async fn backend_closes(seen: &Seen, n: usize) -> Vec<(usize, u16, String)> {
    assert!(
        wait_until(STEP, || seen.lock().unwrap().len() >= n).await,
        "the backends got {:?}, not {n} closes",
        seen.lock().unwrap()
    );
    seen.lock().unwrap().clone()
}

/// A gateway with `admin.token`, `/a` to backend 0 and `/b` to backend 1: the gateway, the
/// closes the backends get, and backend 0's address.
fn with_token() -> (GatewayProcess, Seen, SocketAddr) {
    let seen = Seen::default();
    let (a, b) = (backend(0, &seen), backend(1, &seen));
    let admin_block = format!(r#"{{ "host": "127.0.0.1", "port": 0, "token": "{TOKEN}" }}"#);
    let gw = GatewayProcess::start(&config(&[a], b, &admin_block, ""), None);
    (gw, seen, a)
}

#[test]
fn operators_close_connections_by_id_and_by_filter_through_both_close_handshakes() {
    let (gw, seen, _) = with_token();
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    let alice_id = run(async {
        let (mut alice, _) = open_as(addr, "/a", "alice").await;
        let (mut bob, _) = open_as(addr, "/a", "bob").await;
        let (mut carol, _) = open_as(addr, "/b", "carol").await;
        let list = admin_req(admin, "GET", "/connections?user=alice", Some(TOKEN)).await;
        let list: Vec<Value> = serde_json::from_str(&list.body).unwrap();
        let alice_id = list[0]["id"].as_u64().unwrap();
        let by_id = format!("/connections/{alice_id}/close");
        // Actions need the token; a GET of an action is not one.
        assert_eq!(admin_req(admin, "POST", &by_id, None).await.status, 401);
        let wrong = Some("another-admin-token-of-32-chars?");
        assert_eq!(admin_req(admin, "POST", &by_id, wrong).await.status, 401);
        assert_eq!(
            admin_req(admin, "GET", &by_id, Some(TOKEN)).await.status,
            405
        );
        for action in [
            "/connections/close?user=alice",
            "/backends/drain?route=/a&backend=127.0.0.1:1",
            "/backends/undrain?route=/a&backend=127.0.0.1:1",
        ] {
            assert_eq!(admin_req(admin, "POST", action, None).await.status, 401);
            assert_eq!(admin_req(admin, "POST", action, wrong).await.status, 401);
        }
        assert!(echoes(&mut alice).await, "a refused action closed alice");
        // By id: 1008 "closed by operator" to both legs, through their close handshakes.
        let answer = post(admin, &by_id).await;
        assert_eq!(answer["matched"], 1, "{answer}");
        assert_eq!(answer["ids"], json!([alice_id]));
        assert_eq!(answer["code"], 1008);
        assert_eq!(
            closed_with(&mut alice).await,
            (1008, "closed by operator".into())
        );
        let got = backend_closes(&seen, 1).await;
        assert_eq!(got[0], (0, 1008, "closed by operator".into()));
        // No such connection, bad parameters: refused, nothing closed.
        let missing = admin_req(admin, "POST", "/connections/99999999/close", Some(TOKEN)).await;
        assert_eq!(missing.status, 404, "{}", missing.body);
        for bad in [
            "/connections/close",
            "/connections/close?code=1008",
            "/connections/close?user=bob&code=1005",
            "/connections/close?user=bob&code=999999",
            "/connections/close?user=bob&spread_ms=soon",
            "/connections/close?user=bob&spread_ms=600001",
            "/connections/close?user=bob&colour=blue",
            &format!("/connections/close?user=bob&reason={}", "x".repeat(124)),
        ] {
            let r = admin_req(admin, "POST", bad, Some(TOKEN)).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.body);
        }
        assert!(echoes(&mut bob).await && echoes(&mut carol).await);
        // By filter, with a code and reason of the operator's.
        let answer = post(
            admin,
            "/connections/close?user=bob&code=4001&reason=moving%20you",
        )
        .await;
        assert_eq!(answer["matched"], 1, "{answer}");
        assert_eq!(closed_with(&mut bob).await, (4001, "moving you".into()));
        let got = backend_closes(&seen, 2).await;
        assert_eq!(got[1], (0, 4001, "moving you".into()));
        // Filters that match nothing close nothing; carol is untouched.
        let none = post(admin, "/connections/close?route=/a&user=carol").await;
        assert_eq!(none["matched"], 0);
        assert!(echoes(&mut carol).await, "carol was closed");
        alice_id
    });
    let lines = gw.stop_and_collect();
    assert!(
        !lines.iter().any(|l| l.contains(TOKEN)),
        "the token was logged"
    );
    // Each action is logged at info, with who asked and what it matched.
    let action = (lines.iter())
        .find(|l| l.contains(&format!("POST /connections/{alice_id}/close -> 200")))
        .expect("the close action's log line");
    assert!(
        action.contains("INFO") && action.contains("admin 127.0.0.1:"),
        "{action}"
    );
    assert!(
        action.contains(&format!("matched 1 connections [{alice_id}]")),
        "{action}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("POST /connections/close -> 400")),
        "refused actions are logged too"
    );
    // The access log says who closed alice's connection and with what.
    let access = (lines.iter())
        .filter_map(|l| l.find('{').map(|i| &l[i..]))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .find(|v| v["connection_id"] == alice_id && v["status"] == 101)
        .expect("alice's access log line");
    assert_eq!(access["gateway_close_code"], 1008, "{access}");
    assert_eq!(access["gateway_close_reason"], "closed by operator");
    assert_eq!(access["closed_first"], "gateway");
    assert_eq!(access["client_close_code"], 1008);
    assert_eq!(access["backend_close_code"], 1008);
}

#[test]
fn a_close_spread_over_spread_ms_closes_each_connection_at_its_own_moment() {
    let (gw, _, _) = with_token();
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        let mut all = Vec::new();
        for _ in 0..8 {
            all.push(open_as(addr, "/b", "dave").await.0);
        }
        let start = Instant::now();
        // Each connection on a task of its own: the moment its close arrives.
        let watchers: Vec<_> = (all.into_iter())
            .map(|mut ws| {
                smol::spawn(async move {
                    let code = closed_with(&mut ws).await.0;
                    (code, start.elapsed())
                })
            })
            .collect();
        let answer = post(admin, "/connections/close?user=dave&spread_ms=1500").await;
        assert_eq!(answer["matched"], 8, "{answer}");
        assert_eq!(answer["spread_ms"], 1500);
        let mut at = Vec::new();
        for w in watchers {
            let (code, when) = w.await;
            assert_eq!(code, 1008);
            at.push(when.as_millis());
        }
        at.sort();
        let (first, last) = (at[0], at[at.len() - 1]);
        assert!(last <= 1500 + STEP.as_millis(), "{at:?}");
        assert!(
            last - first >= 100,
            "8 closes within {} ms: {at:?}",
            last - first
        );
    });
}

#[test]
fn a_drained_backend_gets_no_new_connections_its_open_ones_get_1012_and_undrain_puts_it_back() {
    let seen = Seen::default();
    let (a0, a1, b) = (backend(0, &seen), backend(1, &seen), backend(2, &seen));
    // Loopback admin without a token: the actions are open there.
    let admin_block = r#"{ "host": "127.0.0.1", "port": 0 }"#;
    let poll = r#""reload_poll_ms": 50"#;
    let gw = GatewayProcess::start(&config(&[a0, a1], b, admin_block, poll), None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    let first = format!("127.0.0.1:{}", a0.port());
    run(async {
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(open_as(addr, "/a", "erin").await);
        }
        let on_first = open.iter().filter(|(_, id)| *id == 0).count();
        assert_eq!(on_first, 2, "round robin over two backends");
        let drain = format!("/backends/drain?route=/a&backend={first}&spread_ms=0");
        let r = admin_req(admin, "POST", &drain, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let answer: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(answer["matched"], 2, "{answer}");
        assert_eq!(answer["drained"], true);
        let logged = gw
            .wait_for("POST /backends/drain", STEP)
            .expect("the drain's log line");
        assert!(
            logged.contains("INFO") && logged.contains("admin 127.0.0.1:"),
            "{logged}"
        );
        assert!(logged.contains("matched 2 connections"), "{logged}");
        for (ws, id) in &mut open {
            match id {
                0 => assert_eq!(closed_with(ws).await, (1012, "backend drained".into())),
                _ => assert!(
                    echoes(ws).await,
                    "a connection on the other backend was closed"
                ),
            }
        }
        let got = backend_closes(&seen, 2).await;
        assert!(
            got.iter()
                .all(|c| *c == (0, 1012, "backend drained".into())),
            "{got:?}"
        );
        // The access log says who ended them and how.
        let access = gw
            .wait_for(r#""gateway_close_reason":"backend drained""#, STEP)
            .expect("a drained connection's access log line");
        for field in [
            r#""gateway_close_code":1012"#,
            r#""closed_first":"gateway""#,
            r#""client_close_code":1012"#,
            r#""backend_close_code":1012"#,
        ] {
            assert!(access.contains(field), "{field} not in {access}");
        }
        // New connections go to the other backend only.
        for _ in 0..6 {
            assert_eq!(open_as(addr, "/a", "erin").await.1, 1);
        }
        // /readyz, the metrics and /status show it.
        let ready = http_get(admin, "/readyz").await;
        assert_eq!(ready.status, 200);
        assert!(
            ready
                .body
                .contains(&format!("drained: route /a backend {first}")),
            "{}",
            ready.body
        );
        let m = http_get(admin, "/metrics").await.body;
        let series = |state: &str| {
            format!(
                "kairos_backend_state{{route=\"/a\",backend=\"ws://{first}\",state=\"{state}\"}}"
            )
        };
        assert_eq!(metric(&m, &series("drained")), Some(1.0), "{m}");
        assert_eq!(metric(&m, &series("up")), Some(0.0));
        let up = format!("kairos_backend_up{{route=\"/a\",backend=\"ws://{first}\"}}");
        assert_eq!(metric(&m, &up), Some(0.0));
        promtool_check(&m);
        let status: Value = serde_json::from_str(&http_get(admin, "/status").await.body).unwrap();
        let route_a = &status["routes"][0];
        assert_eq!(route_a["route"], "/a");
        assert_eq!(route_a["backends"][0]["state"], "drained", "{status}");
        assert_eq!(route_a["backends"][1]["state"], "up");
        // A reload keeps the drain.
        gw.rewrite(&config(
            &[a0, a1],
            b,
            admin_block,
            r#""reload_poll_ms": 60"#,
        ));
        assert!(gw.wait_for("applied to new connections", STEP).is_some());
        for _ in 0..4 {
            assert_eq!(
                open_as(addr, "/a", "erin").await.1,
                1,
                "a reload undid the drain"
            );
        }
        // Both drained: the route has no usable backend.
        let second = format!("127.0.0.1:{}", a1.port());
        let spread = format!("/backends/drain?route=/a&backend={second}&spread_ms=3000");
        let r = admin_req(admin, "POST", &spread, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(http_get(admin, "/readyz").await.status, 503);
        let token = hs256_token(SECRET, &json!({ "sub": "erin", "exp": unix_now() + 600 }));
        let bearer = format!("Bearer {token}");
        assert_eq!(
            refused_status(addr, "/a", &[("Authorization", &bearer)]).await,
            503
        );
        // Undrained before their moments: the second backend's connections stay.
        let undrain = format!("/backends/undrain?route=/a&backend={second}");
        let answer: Value =
            serde_json::from_str(&admin_req(admin, "POST", &undrain, None).await.body).unwrap();
        assert_eq!(answer["drained"], false, "{answer}");
        smol::Timer::after(Duration::from_millis(3500)).await;
        for (ws, id) in &mut open {
            if *id == 1 {
                assert!(
                    echoes(ws).await,
                    "an undrained backend's connection was closed"
                );
            }
        }
        let undrain = format!("/backends/undrain?route=/a&backend={first}");
        assert_eq!(admin_req(admin, "POST", &undrain, None).await.status, 200);
        assert_eq!(http_get(admin, "/readyz").await.body, "ready\n");
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(open_as(addr, "/a", "erin").await.1);
        }
        assert!(
            ids.contains(&0),
            "undrain did not put the backend back: {ids:?}"
        );
        // What cannot be drained.
        for (target, code) in [
            ("/backends/drain?route=/a&backend=127.0.0.1:1", 404),
            ("/backends/drain?route=/nope&backend=127.0.0.1:1", 404),
            ("/backends/drain?route=/a", 400),
            ("/backends/drain?route=/a&backend=x&colour=blue", 400),
        ] {
            let r = admin_req(admin, "POST", target, None).await;
            assert_eq!(r.status, code, "{target}: {}", r.body);
        }
    });
}

#[test]
fn the_status_page_is_open_small_and_self_contained_and_its_json_needs_the_token() {
    let (gw, _, a) = with_token();
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        // Gzip-compressed, as every browser accepts it; 406 to a client that does not.
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n";
        let page = raw_http(admin, req).await;
        assert_eq!(page.status, 200);
        assert_eq!(
            page.header("Content-Type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.header("Content-Encoding").as_deref(), Some("gzip"));
        let len: usize = page.header("Content-Length").unwrap().parse().unwrap();
        let source = include_bytes!("../src/admin/status.html.gz");
        assert_eq!(len, source.len());
        assert!(len < 30 * 1024);
        let plain = http_get(admin, "/").await;
        assert_eq!(plain.status, 406);
        assert!(plain.body.contains("--compressed"), "{}", plain.body);
        assert_eq!(http_get(admin, "/status").await.status, 401);
        let _held = open_as(addr, "/a", "frank").await;
        let r = admin_req(admin, "GET", "/status", Some(TOKEN)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let status: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(status["open_connections"], 1, "{status}");
        assert_eq!(status["shutting_down"], false);
        let route_a = &status["routes"][0];
        assert_eq!(route_a["route"], "/a");
        assert_eq!(route_a["open_connections"], 1);
        assert_eq!(
            route_a["backends"][0]["backend"],
            format!("127.0.0.1:{}", a.port())
        );
        assert_eq!(route_a["backends"][0]["open_connections"], 1);
        assert_eq!(route_a["backends"][0]["state"], "up");
        assert!(route_a["messages"]["backend_to_client"].is_u64());
        assert_eq!(status["routes"][1]["open_connections"], 0);
    });
}
