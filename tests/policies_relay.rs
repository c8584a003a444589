//! Policies inside the relay: message filters (`allow_types`, per-direction
//! `max_message_bytes`, `require_json`), message and byte rates (throttle and close), and the
//! token's lifetime. Each rule is shown from both sides of its line.

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;

/// A gateway with one route `/ws/chat` to an echo backend, with `route_extra` fields and
/// `extra` top-level members.
fn gateway(route_extra: &str, extra: &str) -> std::net::SocketAddr {
    start_gateway(&config_json(start_echo(), extra, route_extra))
}

/// The close code the client got next (data messages before it are skipped).
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match next_msg(ws).await {
            Message::Close(Some(c)) => return u16::from(c.code),
            Message::Close(None) => return 1005,
            _ => continue,
        }
    }
}

#[test]
fn allow_types_passes_the_listed_type_and_closes_1003_on_another() {
    let gw = gateway(r#""message_filter": { "allow_types": ["text"] },"#, "");
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("text is fine")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("text is fine"));
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1003);
    });
}

#[test]
fn max_message_bytes_per_direction() {
    let up = gateway(
        r#""message_filter": { "max_message_bytes": { "client_to_backend": 100 } },"#,
        "",
    );
    let down = gateway(
        r#""message_filter": { "max_message_bytes": { "backend_to_client": 50 } },"#,
        "",
    );
    run(async {
        // Client to backend: 100 bytes pass, 101 get 1009.
        let mut ws = connect(up, "/ws/chat").await;
        ws.send(Message::text("a".repeat(100))).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("a".repeat(100)));
        ws.send(Message::text("a".repeat(101))).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1009);
        // Backend to client: an echo of 50 passes; of 51, the backend gets 1009 and the
        // client 1001.
        let mut ws = connect(down, "/ws/chat").await;
        ws.send(Message::text("b".repeat(50))).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("b".repeat(50)));
        ws.send(Message::text("b".repeat(51))).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1001);
    });
}

#[test]
fn require_json_passes_json_and_closes_1007_on_anything_else() {
    let gw = gateway(r#""message_filter": { "require_json": true },"#, "");
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text(r#"{"type": "hello", "n": [1, 2]}"#))
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut ws).await,
            Message::text(r#"{"type": "hello", "n": [1, 2]}"#)
        );
        // Larger than the relay's 16 KiB buffer, and in two fragments.
        let big = format!(r#"{{"data": "{}"}}"#, "x".repeat(40_000));
        ws.send(Message::text(big.clone())).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text(big));
        let (head, tail) = (r#"{"split": "#, r#"true}"#);
        let frame = |text: &str, op: Data, fin: bool| {
            Message::Frame(Frame::message(
                text.as_bytes().to_vec(),
                OpCode::Data(op),
                fin,
            ))
        };
        ws.send(frame(head, Data::Text, false)).await.unwrap();
        ws.send(frame(tail, Data::Continue, true)).await.unwrap();
        assert_eq!(
            next_data(&mut ws).await,
            Message::text(r#"{"split": true}"#)
        );
        // Binary messages are not JSON-checked.
        ws.send(Message::binary(b"not json".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut ws).await,
            Message::binary(b"not json".to_vec())
        );
        ws.send(Message::text("not json")).await.unwrap();
        match next_msg(&mut ws).await {
            Message::Close(Some(c)) => {
                assert_eq!(
                    (u16::from(c.code), c.reason.as_str()),
                    (1007, "invalid JSON")
                )
            }
            other => panic!("expected 1007, got {other:?}"),
        }
    });
}

/// The process's peak resident memory (VmHWM) in KiB.
fn peak_rss_kib(gw: &GatewayProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn require_json_holds_a_large_message_once_not_twice() {
    let route = r#""message_filter": { "require_json": true },"#;
    let gw = GatewayProcess::start(&config_json(start_echo(), "", route), None);
    let addr = gw.addr();
    let size: u64 = 12 << 20;
    let big = format!(r#"{{"data": "{}"}}"#, "x".repeat(size as usize));
    run(async {
        let mut ws = connect(addr, "/ws/chat").await;
        ws.send(Message::text("{}")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("{}"));
        let before = peak_rss_kib(&gw);
        ws.send(Message::text(big.clone())).await.unwrap();
        assert!(
            next_data(&mut ws).await == Message::text(big),
            "echo differs"
        );
        // The relay buffer holds the text frame whole (the message), and nothing else does.
        let grew = peak_rss_kib(&gw).saturating_sub(before);
        eprintln!("peak RSS grew {grew} KiB for a {} KiB message", size >> 10);
        assert!(
            grew < (size >> 10) * 3 / 2,
            "peak RSS grew {grew} KiB for a {} KiB message",
            size >> 10
        );
    });
}

#[test]
fn message_rate_with_close_passes_the_burst_and_closes_1008_past_it() {
    let rate = r#""rate_limit": { "messages_per_second": { "rate": 0.5, "burst": 5 },
        "on_exceed": "close" },"#;
    let gw = gateway(rate, "");
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        for i in 0..5 {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        for i in 0..5 {
            assert_eq!(next_data(&mut ws).await, Message::text(format!("m{i}")));
        }
        ws.send(Message::text("one too many")).await.unwrap();
        match next_msg(&mut ws).await {
            Message::Close(Some(c)) => {
                assert_eq!(
                    (c.code, c.reason.as_str()),
                    (CloseCode::Policy, "rate limit")
                )
            }
            other => panic!("expected 1008, got {other:?}"),
        }
    });
}

#[test]
fn message_rate_throttle_delays_past_the_burst_and_loses_nothing() {
    let rate = r#""rate_limit": { "messages_per_second": { "rate": 0.5, "burst": 5 } },"#;
    let gw = gateway(rate, "");
    run_for(Duration::from_secs(30), async {
        let mut ws = connect(gw, "/ws/chat").await;
        let start = Instant::now();
        for i in 0..7 {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        // The burst passes at once...
        for i in 0..5 {
            assert_eq!(next_data(&mut ws).await, Message::text(format!("m{i}")));
        }
        let burst = start.elapsed();
        assert!(
            burst < Duration::from_millis(1500),
            "the burst took {burst:?}"
        );
        // ...the rest at 0.5 a second: the 6th about 2 s in, the 7th about 4 s in.
        assert_eq!(next_data(&mut ws).await, Message::text("m5"));
        let sixth = start.elapsed();
        assert_eq!(next_data(&mut ws).await, Message::text("m6"));
        let seventh = start.elapsed();
        assert!(sixth >= Duration::from_millis(1800), "6th after {sixth:?}");
        assert!(
            seventh >= Duration::from_millis(3800),
            "7th after {seventh:?}"
        );
    });
}

#[test]
fn byte_rate_throttle_paces_large_messages_and_loses_nothing() {
    let rate = r#""rate_limit": { "bytes_per_second": { "rate": 4000, "burst": 4000 } },"#;
    let gw = gateway(rate, "");
    run_for(Duration::from_secs(30), async {
        let mut ws = connect(gw, "/ws/chat").await;
        let start = Instant::now();
        // 6 x ~2 KB = ~12 KB at 4 KB/s with 4 KB saved up: about 2 s.
        for i in 0..6u8 {
            ws.send(Message::binary(vec![i; 2000])).await.unwrap();
        }
        for i in 0..6u8 {
            assert_eq!(next_data(&mut ws).await, Message::binary(vec![i; 2000]));
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "12 KB at 4 KB/s took {took:?}"
        );
    });
}

/// An HS256 token for `secret` expiring `in_secs` from now.
fn token(secret: &str, in_secs: u64) -> String {
    hs256_token(
        secret,
        &serde_json::json!({ "sub": "t", "exp": unix_now() + in_secs }),
    )
}

#[test]
fn a_connection_is_closed_with_1008_when_its_token_expires() {
    let (backend, closes) = id_backend(0);
    let jwt = |enforce: bool| {
        format!(
            r#""jwt": {{ "secret": "expiry-secret", "leeway_seconds": 0,
                "enforce_expiry": {enforce} }},"#
        )
    };
    let enforced = start_gateway(&config_json(
        backend,
        &jwt(true),
        r#""auth_required": true,"#,
    ));
    let relaxed = start_gateway(&config_json(
        backend,
        &jwt(false),
        r#""auth_required": true,"#,
    ));
    run(async {
        let bearer = format!("Bearer {}", token("expiry-secret", 2));
        let auth = [("Authorization", bearer.as_str())];
        let (mut ws, _) = try_connect(enforced, "/ws/chat", &auth).await.unwrap();
        let (mut kept, _) = try_connect(relaxed, "/ws/chat", &auth).await.unwrap();
        assert!(matches!(next_data(&mut ws).await, Message::Text(_)));
        assert!(matches!(next_data(&mut kept).await, Message::Text(_)));
        // Before exp: the connection works.
        ws.send(Message::text("still valid")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("still valid"));
        // At exp: 1008 "token expired", with the close handshake.
        match next_msg(&mut ws).await {
            Message::Close(Some(c)) => {
                assert_eq!(
                    (u16::from(c.code), c.reason.as_str()),
                    (1008, "token expired")
                )
            }
            other => panic!("expected 1008, got {other:?}"),
        }
        assert!(matches!(within(STEP, ws.next()).await, Some(None)));
        assert!(wait_until(STEP, || closes.lock().unwrap().contains(&1008)).await);
        // With enforce_expiry false the other connection outlives its token.
        kept.send(Message::text("past exp")).await.unwrap();
        assert_eq!(next_data(&mut kept).await, Message::text("past exp"));
    });
}
