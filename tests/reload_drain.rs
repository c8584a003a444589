//! Reloads that touch only what changed (issue 16): a reload that removes a route, or a backend
//! from a route, drains the connections that were using it with 1012 "service restart" within
//! `server.close_spread_ms`; every other open connection never notices.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;
use rustix::process::Signal;

/// `server.close_spread_ms`.
const SPREAD: Duration = Duration::from_millis(1000);

/// A route `external` to the backends `ports`.
fn route(external: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = (backends.iter())
        .map(|b| format!(r#"{{ "host": "ws://127.0.0.1", "port": {} }}"#, b.port()))
        .collect();
    format!(
        r#"{{ "protocol": "websocket", "methods": ["GET"], "external_path": "{external}",
              "internal_path": "/ws", "backends": [{}] }}"#,
        list.join(", ")
    )
}

fn config(routes: &[String]) -> String {
    format!(
        r#"{{ "version": 1, "server": {{ "close_spread_ms": 1000, "shutdown_timeout_ms": 5000,
              "reload_poll_ms": 0 }}, "routers": [ {} ] }}"#,
        routes.join(", ")
    )
}

/// What a connection saw until `limit` after `start`: a close (code, when), or nothing, and
/// then it still echoes.
async fn watch(mut ws: Ws, limit: Duration, start: Instant) -> Option<(u16, Duration)> {
    let end = start + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match within(left, ws.next()).await {
            None => {
                // Nothing for the whole window: it still echoes.
                ws.send(Message::text("after")).await.expect("send after");
                assert_eq!(next_data(&mut ws).await, Message::text("after"));
                return None;
            }
            Some(Some(Ok(Message::Close(c)))) => {
                let code = c.map_or(1005, |c| u16::from(c.code));
                return Some((code, start.elapsed()));
            }
            Some(Some(Ok(_))) => continue,
            Some(other) => panic!("the connection failed: {other:?}"),
        }
    }
}

#[test]
fn a_reload_drains_only_the_connections_of_what_it_removed() {
    let (a, _) = id_backend(1);
    let (b1, _) = id_backend(21);
    let (b2, _) = id_backend(22);
    let (c, _) = id_backend(3);
    let mut gw = GatewayProcess::start(
        &config(&[route("/a", &[a]), route("/b", &[b1, b2]), route("/c", &[c])]),
        None,
    );
    let addr = gw.addr();
    let conns = run(async {
        let mut conns = Vec::new();
        for path in ["/a", "/a", "/b", "/b", "/b", "/b", "/c", "/c"] {
            let (ws, id) = connect_id(addr, path).await;
            conns.push((path, id, ws));
        }
        conns
    });
    let ids: Vec<usize> = conns.iter().map(|c| c.1).collect();
    assert!(
        ids.contains(&21) && ids.contains(&22),
        "round robin: {ids:?}"
    );
    // Route /a removed, backend 22 removed from /b, /c unchanged (and a new route added).
    let (d, _) = id_backend(4);
    gw.rewrite(&config(&[
        route("/b", &[b1]),
        route("/c", &[c]),
        route("/d", &[d]),
    ]));
    let start = Instant::now();
    gw.signal(Signal::HUP);
    assert!(
        gw.wait_for("get 1012", STEP).is_some(),
        "the reload's log line"
    );
    let watched: Vec<_> = conns
        .into_iter()
        .map(|(path, id, ws)| {
            let task = smol::spawn(watch(ws, SPREAD * 3, start));
            (path, id, task)
        })
        .collect();
    run(async {
        for (path, id, task) in watched {
            let seen = task.await;
            eprintln!("{path} via backend {id}: {seen:?}");
            let drained = path == "/a" || id == 22;
            match seen {
                Some((code, after)) if drained => {
                    assert_eq!(code, 1012, "{path} via {id}");
                    assert!(
                        after < SPREAD + Duration::from_millis(500),
                        "{path}: {after:?}"
                    );
                }
                None if !drained => {}
                other => panic!("{path} via backend {id}: {other:?}"),
            }
        }
        // New connections see the new config.
        assert_eq!(connect_id(addr, "/d").await.1, 4);
        assert_eq!(connect_id(addr, "/b").await.1, 21);
    });
    gw.signal(Signal::TERM);
    assert_eq!(gw.wait_exit(STEP).and_then(|s| s.code()), Some(0));
}
