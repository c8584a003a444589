//! The access log (issue 17): one line at info under `kairos_gateway::access` for every
//! connection that ends and every refused handshake, field by field for each way a connection
//! ends, as JSON and as text; never a token; silenced by `kairos_gateway::access=off`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;
use serde_json::{json, Value};

const SECRET: &str = "access-log-secret";

/// A gateway with one route `/ws/chat` (JWT required) to `backend`, access log as `format`,
/// and `limits` (JSON members followed by a comma).
fn gateway(backend: SocketAddr, format: &str, limits: &str) -> GatewayProcess {
    let json = format!(
        r#"{{ "version": 1, "access_log": {{ "format": "{format}" }},
            "limits": {{ {limits} }},
            "jwt": {{ "secret": "{SECRET}", "algorithms": ["HS256"] }},
            "routers": [{{ "protocol": "websocket", "external_path": "/ws/chat",
              "internal_path": "/ws", "methods": ["GET"], "auth_required": true,
              "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }}] }}"#,
        backend.port()
    );
    GatewayProcess::start(&json.replace("\"limits\": {  },", ""), None)
}

fn token(sub: &str) -> String {
    hs256_token(SECRET, &json!({ "sub": sub, "exp": unix_now() + 600 }))
}

/// Connects with `token` as a bearer token.
async fn open(addr: SocketAddr, token: &str) -> Ws {
    let bearer = format!("Bearer {token}");
    let (ws, _) = try_connect(addr, "/ws/chat", &[("Authorization", &bearer)])
        .await
        .expect("connect");
    ws
}

/// The next access log line (its message: after `kairos_gateway::access] `).
fn next_line(gw: &GatewayProcess) -> String {
    let line = gw
        .wait_for("kairos_gateway::access]", STEP)
        .expect("an access log line");
    line.split_once("kairos_gateway::access] ")
        .expect("the message")
        .1
        .to_string()
}

/// The next access log line, as JSON.
fn next_json(gw: &GatewayProcess) -> Value {
    let line = next_line(gw);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Checks the fields every relayed connection has.
fn relayed(v: &Value, backend: SocketAddr, user: &str) {
    let time = v["time"].as_str().expect("time");
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    assert!(v["connection_id"].as_u64().is_some_and(|id| id > 0));
    assert_eq!(v["client_address"], "127.0.0.1");
    assert_eq!(v["route"], "/ws/chat");
    assert_eq!(v["backend"], format!("ws://127.0.0.1:{}", backend.port()));
    assert_eq!(v["status"], 101);
    let (hs, total) = (v["handshake_ms"].as_u64(), v["duration_ms"].as_u64());
    assert!(hs.is_some() && total.is_some() && hs <= total, "{v}");
    assert_eq!(v["user"], user);
}

#[test]
fn a_connection_the_client_closes_is_logged_field_by_field() {
    let backend = start_echo();
    let gw = gateway(backend, "json", "");
    let addr = gw.addr();
    let token = token("alice");
    run(async {
        let mut ws = open(addr, &token).await;
        for m in [
            Message::text("hello"),
            Message::text("hello"),
            Message::binary(vec![1, 2, 3]),
        ] {
            ws.send(m.clone()).await.expect("send");
            assert_eq!(next_data(&mut ws).await, m);
        }
        let bye = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        ws.close(Some(bye)).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
    });
    let v = next_json(&gw);
    relayed(&v, backend, "alice");
    assert_eq!(v["closed_first"], "client");
    assert_eq!(
        (
            v["client_close_code"].clone(),
            v["client_close_reason"].clone()
        ),
        (json!(1000), json!("bye"))
    );
    assert_eq!(v["backend_close_code"], 1000);
    assert!(
        v.get("gateway_close_code").is_none() && v.get("error").is_none(),
        "{v}"
    );
    // Wire bytes: to the backend masked (2 + 4 + payload), to the client not (2 + payload);
    // the close frames are counted as bytes, not as messages.
    assert_eq!(v["client_to_backend_messages"], 3);
    assert_eq!(v["backend_to_client_messages"], 3);
    assert_eq!(v["client_to_backend_bytes"], 11 + 11 + 9 + 11);
    let back_close = 2 + v["backend_close_reason"]
        .as_str()
        .map_or(2, |r| 2 + r.len());
    assert_eq!(v["backend_to_client_bytes"], 7 + 7 + 5 + back_close as u64);
    let all: Vec<String> = gw.stop_and_collect();
    assert!(
        !all.iter().any(|l| l.contains(&token)),
        "the token was logged"
    );
}

#[test]
fn a_connection_the_backend_closes_is_logged_with_its_close() {
    let backend = spawn_backend(|mut s| async move {
        let head = read_head(&mut s).await;
        let mut ws = accept_after_head(s, &head, "").await;
        let done = CloseFrame {
            code: CloseCode::Library(4000),
            reason: "done".into(),
        };
        let _ = ws.close(Some(done)).await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    let gw = gateway(backend, "json", "");
    let addr = gw.addr();
    run(async {
        let mut ws = open(addr, &token("bob")).await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    let v = next_json(&gw);
    relayed(&v, backend, "bob");
    assert_eq!(v["closed_first"], "backend");
    assert_eq!(
        (
            v["backend_close_code"].clone(),
            v["backend_close_reason"].clone()
        ),
        (json!(4000), json!("done"))
    );
    assert_eq!(v["client_close_code"], 4000);
    assert_eq!(
        (
            v["client_to_backend_messages"].clone(),
            v["backend_to_client_messages"].clone()
        ),
        (json!(0), json!(0))
    );
}

#[test]
fn a_connection_the_gateway_closes_names_its_close() {
    let backend = start_echo();
    let gw = gateway(backend, "json", r#""idle_timeout_ms": 300"#);
    let addr = gw.addr();
    run(async {
        let mut ws = open(addr, &token("carol")).await;
        while let Some(Ok(_)) = within(STEP, ws.next()).await.flatten() {}
    });
    let v = next_json(&gw);
    relayed(&v, backend, "carol");
    assert_eq!(v["closed_first"], "gateway");
    assert_eq!(
        (
            v["gateway_close_code"].clone(),
            v["gateway_close_reason"].clone()
        ),
        (json!(1001), json!("idle timeout"))
    );
    assert_eq!(v["client_close_code"], 1001);
}

#[test]
fn a_client_that_drops_its_tcp_connection_closed_first_without_a_close_frame() {
    let backend = start_echo();
    let gw = gateway(backend, "json", "");
    let addr = gw.addr();
    run(async {
        let ws = open(addr, &token("dave")).await;
        drop(ws);
    });
    let v = next_json(&gw);
    relayed(&v, backend, "dave");
    assert_eq!(v["closed_first"], "client");
    assert!(v.get("client_close_code").is_none(), "{v}");
    assert_eq!(
        v["gateway_close_code"], 1001,
        "the backend is told the client went away"
    );
    assert!(
        v["error"].as_str().is_some_and(|e| e.starts_with("client")),
        "{v}"
    );
}

#[test]
fn refused_handshakes_are_logged_with_their_status_and_never_a_token() {
    let backend = start_echo();
    let gw = gateway(backend, "json", "");
    let addr = gw.addr();
    let forged = hs256_token(
        "another-secret",
        &json!({ "sub": "mallory", "exp": unix_now() + 600 }),
    );
    run(async {
        assert_eq!(refused_status(addr, "/nowhere", &[]).await, 404);
        let bearer = format!("Bearer {forged}");
        assert_eq!(
            refused_status(addr, "/ws/chat", &[("Authorization", &bearer)]).await,
            401
        );
    });
    let v = next_json(&gw);
    assert_eq!(
        (v["status"].clone(), v.get("route").cloned()),
        (json!(404), None)
    );
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("/nowhere")),
        "{v}"
    );
    let v = next_json(&gw);
    assert_eq!(
        (v["status"].clone(), v["route"].clone()),
        (json!(401), json!("/ws/chat"))
    );
    assert!(v.get("user").is_none() && v.get("backend").is_none(), "{v}");
    let all = gw.stop_and_collect();
    assert!(
        !all.iter().any(|l| l.contains(&forged)),
        "the token was logged"
    );
}

#[test]
fn the_text_format_has_the_same_fields_and_the_target_can_be_silenced() {
    let backend = start_echo();
    let gw = gateway(backend, "text", "");
    let addr = gw.addr();
    run(async {
        let mut ws = open(addr, &token("eve \"quoted\"")).await;
        ws.close(None).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
    });
    let line = next_line(&gw);
    let keys: Vec<&str> = line
        .split(' ')
        .filter_map(|kv| Some(kv.split_once('=')?.0))
        .collect();
    assert_eq!(
        &keys[..4],
        ["time", "connection_id", "client_address", "route"],
        "{line}"
    );
    for want in [
        r#"route="/ws/chat""#,
        "status=101",
        "closed_first=\"client\"",
        "client_close_code=1005",
        "gateway_close_code=-",
        r#"user="eve \"quoted\"""#,
    ] {
        assert!(line.contains(want), "no {want} in {line}");
    }
    // RUST_LOG=info,kairos_gateway::access=off: the rest of the log, no access lines.
    let json = config_json(backend, "", "");
    let gw = GatewayProcess::start_with_log(&json, None, "info,kairos_gateway::access=off");
    let addr = gw.addr();
    run(async {
        let mut ws = connect(addr, "/ws/chat").await;
        ws.close(None).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
        assert_eq!(refused_status(addr, "/nowhere", &[]).await, 404);
    });
    assert_eq!(
        gw.count_for("kairos_gateway::access", Duration::from_millis(300)),
        0
    );
}
