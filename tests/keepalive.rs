//! `limits.idle_timeout_ms` and `limits.ping_interval_ms`: silent or vanished clients are
//! closed with 1001 on both legs; live ones are not; the gateway's pings and their pongs stay
//! between the gateway and the client.

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use smol::channel;

const ENDED: &str = "<backend stream ended>";

/// A backend that echoes data, reports everything it receives (then `ENDED`).
fn recording_backend() -> (std::net::SocketAddr, channel::Receiver<Message>) {
    let (tx, rx) = channel::unbounded::<Message>();
    let addr = spawn_backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            while let Some(Ok(m)) = ws.next().await {
                let _ = tx.send(m.clone()).await;
                if m.is_text() || m.is_binary() {
                    let _ = ws.send(m).await;
                }
            }
            let _ = tx.send(Message::text(ENDED)).await;
        }
    });
    (addr, rx)
}

fn gateway(backend: std::net::SocketAddr, limits: &str) -> std::net::SocketAddr {
    start_gateway(&config_json(
        backend,
        &format!(r#""limits": {{ {limits} }},"#),
        "",
    ))
}

/// Reads until a close frame; returns it and when it came.
async fn wait_close(ws: &mut Ws) -> (Message, Instant) {
    loop {
        match next_msg(ws).await {
            m @ Message::Close(_) => return (m, Instant::now()),
            _ => continue,
        }
    }
}

fn assert_close(m: &Message, code: u16, reason: &str) {
    assert!(
        matches!(m, Message::Close(Some(f)) if f.code == CloseCode::from(code) && f.reason == reason),
        "expected close {code} {reason:?}, got {m:?}"
    );
}

/// Everything the backend received until its stream ended.
async fn backend_log(rx: &channel::Receiver<Message>) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        match within(STEP, rx.recv()).await {
            Some(Ok(m)) if m == Message::text(ENDED) => return got,
            Some(Ok(m)) => got.push(m),
            _ => panic!("backend stream did not end; got {got:?}"),
        }
    }
}

#[test]
fn idle_connection_is_closed_1001_on_both_legs_and_traffic_keeps_it_open() {
    let (backend, rx) = recording_backend();
    let gw = gateway(backend, r#""idle_timeout_ms": 400"#);
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        // A message every 100 ms for 1 s (2.5 idle periods): never closed.
        let start = Instant::now();
        for i in 0..10 {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
            assert_eq!(next_data(&mut ws).await, Message::text(format!("m{i}")));
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        assert!(start.elapsed() > Duration::from_millis(900));
        // Then silence: closed after about 400 ms, not much later.
        let quiet = Instant::now();
        let (m, at) = wait_close(&mut ws).await;
        assert_close(&m, 1001, "idle timeout");
        let after = at - quiet;
        assert!(
            after >= Duration::from_millis(300) && after < Duration::from_millis(1500),
            "closed {after:?} after the last message"
        );
        let log = backend_log(&rx).await;
        let close = log
            .iter()
            .find(|m| m.is_close())
            .expect("backend got a close");
        assert_close(close, 1001, "idle timeout");
    });
}

#[test]
fn client_answering_pings_stays_and_the_backend_never_sees_them() {
    let (backend, rx) = recording_backend();
    let gw = gateway(backend, r#""ping_interval_ms": 100"#);
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        // tungstenite answers each ping while reading; read for 8 intervals.
        let mut pings = 0;
        let until = Instant::now() + Duration::from_millis(800);
        while let Some(m) = within(until - Instant::now(), ws.next()).await {
            match m {
                Some(Ok(Message::Ping(p))) => {
                    assert_eq!(&p[..], b"kairos-keepalive");
                    pings += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
            if Instant::now() >= until {
                break;
            }
        }
        assert!(pings >= 5, "only {pings} pings in 800 ms at 100 ms");
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("still here"));
        ws.close(None).await.unwrap();
        let _ = wait_close(&mut ws).await;
        let log = backend_log(&rx).await;
        assert!(
            log.iter().all(|m| !m.is_ping() && !m.is_pong()),
            "backend saw keepalive frames: {log:?}"
        );
        assert!(log.contains(&Message::text("still here")));
    });
}

#[test]
fn client_that_never_answers_is_closed_after_two_unanswered_pings() {
    let (backend, rx) = recording_backend();
    let gw = gateway(backend, r#""ping_interval_ms": 150"#);
    run(async {
        // A raw client: upgrades, then reads without ever answering.
        let mut s = smol::net::TcpStream::connect(gw).await.unwrap();
        s.write_all(upgrade_request("/ws/chat", "").as_bytes())
            .await
            .unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match within(STEP, s.read(&mut buf)).await {
                Some(Ok(0)) | Some(Err(_)) => break,
                Some(Ok(n)) => got.extend_from_slice(&buf[..n]),
                None => panic!("gateway never closed the silent client"),
            }
        }
        let took = start.elapsed();
        // Two pings, then (one interval later) a close 1001 "ping timeout".
        let pings = got
            .windows(18)
            .filter(|w| w[0] == 0x89 && &w[2..] == b"kairos-keepalive");
        assert_eq!(pings.count(), 2, "frames: {got:?}");
        let close = b"\x88\x0e\x03\xe9ping timeout";
        assert!(
            got.windows(close.len()).any(|w| w == close),
            "no close 1001 in {got:?}"
        );
        assert!(
            took >= Duration::from_millis(400),
            "closed too early: {took:?}"
        );
        let log = backend_log(&rx).await;
        let close = log
            .iter()
            .find(|m| m.is_close())
            .expect("backend got a close");
        assert_close(close, 1001, "ping timeout");
    });
}
