//! `message_transform` end to end: a real gateway between a real client and a backend that
//! records what it received. Each rule is checked on the direction it applies to, and what the
//! client sent is compared with what the backend got (and the other way).

mod common;

use std::net::SocketAddr;

use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;
use serde_json::{json, Value};

const SECRET: &str = "transform-test-secret-0123456789abcdef";

/// A backend that sends `greeting` (when given) on each new connection, reports every data
/// message it receives on the channel, and echoes it.
fn recorder(greeting: Option<Message>) -> (SocketAddr, smol::channel::Receiver<Message>) {
    let (tx, rx) = smol::channel::unbounded();
    let addr = spawn_backend(move |mut s| {
        let (tx, greeting) = (tx.clone(), greeting.clone());
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            if let Some(g) = greeting {
                let _ = ws.send(g).await;
            }
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    let _ = tx.send(m).await;
                    break;
                }
                if (m.is_text() || m.is_binary()) && tx.send(m.clone()).await.is_ok() {
                    let _ = ws.send(m).await;
                }
            }
        }
    });
    (addr, rx)
}

/// A gateway with a `jwt` block and one route `/ws/chat` to `backend` with `route_extra`.
fn gateway(backend: SocketAddr, route_extra: &str) -> SocketAddr {
    let jwt = format!(r#""jwt": {{ "secret": "{SECRET}", "algorithms": ["HS256"] }},"#);
    start_gateway(&config_json(backend, &jwt, route_extra))
}

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(unix_now() + 600);
    hs256_token(SECRET, &claims)
}

/// The path with alice's token in the query.
fn as_alice() -> String {
    format!("/ws/chat?access_token={}", token(json!({"sub": "alice"})))
}

async fn recorded(rx: &smol::channel::Receiver<Message>) -> Message {
    within(STEP, rx.recv())
        .await
        .expect("the backend got nothing in time")
        .expect("recorder gone")
}

fn text(m: &Message) -> &str {
    m.to_text().expect("a text message")
}

/// The code of the close frame the backend got next (it must get one).
async fn backend_close(rx: &smol::channel::Receiver<Message>) -> u16 {
    match recorded(rx).await {
        Message::Close(Some(c)) => u16::from(c.code),
        other => panic!("the backend got {other:?} instead of a close"),
    }
}

async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match next_msg(ws).await {
            Message::Close(Some(c)) => return (u16::from(c.code), c.reason.to_string()),
            Message::Close(None) => return (1005, String::new()),
            _ => continue,
        }
    }
}

#[test]
fn a_spoofed_from_is_overwritten_with_the_tokens_sub() {
    let (backend, rx) = recorder(None);
    let gw = gateway(
        backend,
        r#""auth_required": true, "message_transform": { "client_to_backend": [
            { "set": "/from", "from_claim": "sub" },
            { "set": "/meta/conn", "from": "connection_id" },
            { "set": "/meta/ip", "from": "client_address" },
            { "set": "/meta/route", "from": "route" },
            { "set": "/meta/at", "from": "received_at" },
            { "set": "/v", "value": 2 } ] },"#,
    );
    run(async {
        let mut ws = connect(gw, &as_alice()).await;
        ws.send(Message::text(r#"{"text": "hi", "from": "bob", "n": 1.50}"#))
            .await
            .unwrap();
        let got = recorded(&rx).await;
        let v: Value = serde_json::from_str(text(&got)).unwrap();
        assert_eq!(v["from"], "alice", "{got:?}");
        assert!(
            text(&got).starts_with(r#"{"text":"hi","from":"alice","n":1.5,"meta":{"conn":"#),
            "order and text of untouched members kept: {got:?}"
        );
        assert!(v["meta"]["conn"].is_u64());
        assert_eq!(
            (&v["meta"]["ip"], &v["meta"]["route"], &v["v"]),
            (&json!("127.0.0.1"), &json!("/ws/chat"), &json!(2))
        );
        let at = v["meta"]["at"].as_str().unwrap();
        assert!(
            at.len() == 24 && at.ends_with('Z') && &at[10..11] == "T",
            "{at}"
        );
        // The client gets the echo as the backend sent it (no backend_to_client rules).
        assert_eq!(next_data(&mut ws).await, got);
        // What is not a JSON object passes unchanged, text or binary.
        for m in [
            Message::text("hello, not JSON"),
            Message::text(r#"[{"from": "bob"}]"#),
            Message::binary(br#"{"from": "bob"}"#.to_vec()),
        ] {
            ws.send(m.clone()).await.unwrap();
            assert_eq!(recorded(&rx).await, m);
            assert_eq!(next_data(&mut ws).await, m);
        }
    });
}

#[test]
fn a_removed_field_never_reaches_the_client() {
    let greeting = Message::text(r#"{"internal": {"secret": 1}, "a": 1, "keep": "x"}"#);
    let (backend, rx) = recorder(Some(greeting));
    let gw = gateway(
        backend,
        r#""message_transform": { "backend_to_client": [
            { "remove": "/internal" }, { "rename": "/a", "to": "/b/c" } ] },"#,
    );
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        assert_eq!(
            next_data(&mut ws).await,
            Message::text(r#"{"keep":"x","b":{"c":1}}"#)
        );
        // The client's own messages reach the backend as sent (no client_to_backend rules),
        // and its echo is transformed on the way back.
        let sent = r#"{"internal": 2, "z": 0}"#;
        ws.send(Message::text(sent)).await.unwrap();
        assert_eq!(recorded(&rx).await, Message::text(sent));
        assert_eq!(next_data(&mut ws).await, Message::text(r#"{"z":0}"#));
    });
}

#[test]
fn fragmented_json_messages_are_transformed_whole() {
    let (backend, rx) = recorder(None);
    let gw = gateway(
        backend,
        r#""auth_required": true, "message_transform": { "client_to_backend": [
            { "set": "/from", "from_claim": "sub" } ] },"#,
    );
    let frame = |t: &str, op: Data, fin: bool| {
        Message::Frame(Frame::message(t.as_bytes().to_vec(), OpCode::Data(op), fin))
    };
    run(async {
        let mut ws = connect(gw, &as_alice()).await;
        // Three fragments, the first only blanks, a ping between two of them.
        ws.send(frame("  ", Data::Text, false)).await.unwrap();
        ws.send(frame(r#"{"from": "bo"#, Data::Continue, false))
            .await
            .unwrap();
        ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
        ws.send(frame(r#"b", "n": [1, 2]}"#, Data::Continue, true))
            .await
            .unwrap();
        assert_eq!(
            recorded(&rx).await,
            Message::text(r#"{"from":"alice","n":[1,2]}"#)
        );
        // A fragmented message that is not JSON streams through unchanged.
        ws.send(frame("hel", Data::Text, false)).await.unwrap();
        ws.send(frame("lo", Data::Continue, true)).await.unwrap();
        assert_eq!(recorded(&rx).await, Message::text("hello"));
        // Larger than the relay's 16 KiB buffer, in two fragments.
        let pad = "x".repeat(40_000);
        ws.send(frame(&format!(r#"{{"pad": "{pad}"#), Data::Text, false))
            .await
            .unwrap();
        ws.send(frame(r#"", "from": 7}"#, Data::Continue, true))
            .await
            .unwrap();
        let want = format!(r#"{{"pad":"{pad}","from":"alice"}}"#);
        assert_eq!(recorded(&rx).await, Message::text(want));
    });
}

#[test]
fn a_message_the_rules_cannot_apply_to_closes_its_sender_with_1007() {
    let (backend, rx) = recorder(None);
    let gw = gateway(
        backend,
        r#""message_transform": { "client_to_backend": [
            { "set": "/meta/conn", "from": "connection_id" } ] },"#,
    );
    run(async {
        for (bad, why) in [
            (
                r#"{"meta": "a string"}"#,
                "goes through a value that is not an object",
            ),
            (r#"{"from": "bob""#, "must be a JSON object"),
            (r#"{"from": "bob"} {}"#, "must be a JSON object"),
        ] {
            let mut ws = connect(gw, "/ws/chat").await;
            ws.send(Message::text(bad)).await.unwrap();
            let (code, reason) = close_of(&mut ws).await;
            assert_eq!(code, 1007, "{bad}");
            assert!(reason.contains(why), "{bad}: {reason}");
            // The backend never got the message, only the gateway's close (1001).
            assert_eq!(backend_close(&rx).await, 1001, "{bad}");
        }
    });
}

#[test]
fn a_result_over_the_message_limit_closes_with_1009() {
    let (backend, rx) = recorder(None);
    let gw = gateway(
        backend,
        r#""message_filter": { "max_message_bytes": { "client_to_backend": 64 } },
           "message_transform": { "client_to_backend": [
            { "set": "/pad", "value": "0123456789012345678901234567890123456789" } ] },"#,
    );
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text(r#"{"a":1}"#)).await.unwrap();
        assert_eq!(
            text(&recorded(&rx).await),
            r#"{"a":1,"pad":"0123456789012345678901234567890123456789"}"#
        );
        assert!(next_data(&mut ws).await.is_text());
        ws.send(Message::text(r#"{"a": "a longer message"}"#))
            .await
            .unwrap();
        assert_eq!(close_of(&mut ws).await.0, 1009);
        assert_eq!(backend_close(&rx).await, 1001);
    });
}

#[test]
fn a_token_without_the_claim_is_refused_and_deflate_is_not_offered() {
    let (backend, heads) = request_recorder();
    let gw = gateway(
        backend,
        r#""auth_required": true, "message_transform": { "client_to_backend": [
            { "set": "/tenant", "from_claim": "tenant" } ] },"#,
    );
    run(async {
        let no_tenant = format!("/ws/chat?access_token={}", token(json!({"sub": "a"})));
        assert_eq!(refused_status(gw, &no_tenant, &[]).await, 401);
        let with = format!("/ws/chat?access_token={}", token(json!({"tenant": 7})));
        let offer = [("Sec-WebSocket-Extensions", "permessage-deflate")];
        let (mut ws, _) = try_connect(gw, &with, &offer).await.expect("connect");
        let head = next_request(&heads).await;
        head.assert_absent("Sec-WebSocket-Extensions");
        ws.send(Message::text("{}")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text(r#"{"tenant":7}"#));
    });
}

#[test]
fn a_backend_message_the_rules_cannot_apply_to_gives_the_client_1011() {
    let (backend, rx) = recorder(Some(Message::text(r#"{"meta": 5}"#)));
    let gw = gateway(
        backend,
        r#""message_transform": { "backend_to_client": [
            { "set": "/meta/route", "from": "route" } ] },"#,
    );
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        assert_eq!(close_of(&mut ws).await.0, 1011);
        assert_eq!(backend_close(&rx).await, 1007);
    });
}

/// Two clients that send the largest JSON messages the rules take (1 MiB, the default
/// `max_message_bytes`), one after another as fast as the echoes come back, on a one-worker
/// gateway: every one is parsed and written again on the worker, and a victim on the same
/// worker keeps its service. A larger one is refused with 1009 before it is parsed.
///
/// The debug build's relay (unmasking, UTF-8 checks) is many times slower per byte than the
/// release build's, so under `cargo test` the attackers send 64 KiB messages; under
/// `cargo test --release` they send 1 MiB (2026-12-05: 809 transformed in 3 s, victim p99
/// 11 ms).
#[test]
fn clients_sending_the_largest_transformed_messages_leave_a_victim_its_service() {
    use std::time::{Duration, Instant};
    let gw = GatewayProcess::start(
        &config_json(
            start_echo(),
            "",
            r#""message_transform": { "client_to_backend": [
                { "set": "/meta/conn", "from": "connection_id" }, { "remove": "/internal" } ] },"#,
        ),
        None,
    );
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    let size = if cfg!(debug_assertions) {
        64 << 10
    } else {
        1 << 20
    };
    let pad = |n: usize| "x".repeat(n);
    let big = format!(r#"{{"internal": 1, "pad": "{}"}}"#, pad(size - 64));
    let over = format!(r#"{{"pad": "{}"}}"#, pad(1 << 20));
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let (big, over) = (big.clone(), over.clone());
            std::thread::spawn(move || {
                run(async move {
                    let mut ws = connect(addr, "/ws/chat").await;
                    let (end, mut sent) = (Instant::now() + Duration::from_secs(3), 0);
                    while Instant::now() < end {
                        ws.send(Message::text(big.clone())).await.unwrap();
                        let echo = next_data(&mut ws).await;
                        assert!(text(&echo).starts_with(r#"{"pad":"xxx"#));
                        sent += 1;
                    }
                    ws.send(Message::text(over)).await.unwrap();
                    assert_eq!(close_of(&mut ws).await.0, 1009);
                    sent
                })
            })
        })
        .collect();
    let sent: u32 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    let report = victim.assert_served(100);
    eprintln!("attackers had {sent} messages of {size} B transformed; victim {report:?}");
}

/// Every rule on both directions: the backend gets the client's message with the
/// client-to-backend rules applied, the client gets the backend's with the backend-to-client
/// ones (here the same list).
#[test]
fn every_rule_works_on_both_directions() {
    let greeting = Message::text(r#"{"a": 5, "internal": 1, "from": "mallory"}"#);
    let (backend, rx) = recorder(Some(greeting));
    let rules = r#"[ { "set": "/from", "from_claim": "sub" },
        { "set": "/meta/conn", "from": "connection_id" },
        { "set": "/meta/ip", "from": "client_address" },
        { "set": "/meta/route", "from": "route" },
        { "set": "/meta/at", "from": "received_at" },
        { "set": "/v", "value": [2, {"k": null}] },
        { "remove": "/internal" }, { "rename": "/a", "to": "/b" } ]"#;
    let gw = gateway(
        backend,
        &format!(
            r#""auth_required": true, "message_transform": {{
                "client_to_backend": {rules}, "backend_to_client": {rules} }},"#
        ),
    );
    let check = |m: &Message, b: i64| {
        let v: Value = serde_json::from_str(text(m)).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["from", "meta", "v", "b"], "{m:?}");
        assert_eq!((&v["from"], &v["b"]), (&json!("alice"), &json!(b)), "{m:?}");
        assert_eq!(v["v"], json!([2, {"k": null}]));
        let meta = &v["meta"];
        assert!(meta["conn"].is_u64() && meta["at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(
            (&meta["ip"], &meta["route"]),
            (&json!("127.0.0.1"), &json!("/ws/chat"))
        );
    };
    run(async {
        let mut ws = connect(gw, &as_alice()).await;
        check(&next_data(&mut ws).await, 5);
        ws.send(Message::text(r#"{"internal": "x", "a": 1, "from": "bob"}"#))
            .await
            .unwrap();
        check(&recorded(&rx).await, 1);
        check(&next_data(&mut ws).await, 1);
    });
}
