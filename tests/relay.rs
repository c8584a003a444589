//! After the upgrade: messages, fragments, control frames, close codes, drops, limits,
//! backpressure and concurrency.

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::{Bytes, Message};
use common::*;
use futures_lite::StreamExt;
use smol::channel;

/// A backend that accepts the upgrade and hands the socket to `f`.
fn ws_backend<F, Fut>(f: F) -> std::net::SocketAddr
where
    F: Fn(Ws) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    spawn_backend(move |mut s| {
        let f = f.clone();
        async move {
            let head = read_head(&mut s).await;
            let ws = accept_after_head(s, &head, "").await;
            f(ws).await
        }
    })
}

#[test]
fn text_and_binary_keep_their_type() {
    let gw = echo_gateway();
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("héllo")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("héllo"));
        let bin = Bytes::from(vec![0u8, 255, 1, 2, 3]);
        ws.send(Message::Binary(bin.clone())).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::Binary(bin));
        ws.send(Message::text("")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text(""));
    });
}

#[test]
fn fragmented_messages_arrive_whole() {
    let gw = echo_gateway();
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let parts: [&[u8]; 3] = [b"frag", b"men", b"ted"];
        for (i, p) in parts.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = Frame::message(Bytes::copy_from_slice(p), op, i == parts.len() - 1);
            ws.send(Message::Frame(frame)).await.unwrap();
        }
        assert_eq!(next_data(&mut ws).await, Message::text("fragmented"));
        // A ping between fragments is answered and does not break the message.
        let f1 = Frame::message(
            Bytes::from_static(&[1, 2]),
            OpCode::Data(Data::Binary),
            false,
        );
        ws.send(Message::Frame(f1)).await.unwrap();
        ws.send(Message::Ping(Bytes::from_static(b"mid")))
            .await
            .unwrap();
        let f2 = Frame::message(Bytes::from_static(&[3]), OpCode::Data(Data::Continue), true);
        ws.send(Message::Frame(f2)).await.unwrap();
        assert_eq!(
            next_msg(&mut ws).await,
            Message::Pong(Bytes::from_static(b"mid"))
        );
        assert_eq!(
            next_data(&mut ws).await,
            Message::Binary(Bytes::from_static(&[1, 2, 3]))
        );
    });
}

#[test]
fn four_mib_message_round_trips() {
    let gw = echo_gateway();
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let data: Vec<u8> = (0..4 << 20).map(|i| (i * 7 % 251) as u8).collect();
        ws.send(Message::Binary(data.clone().into())).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::Binary(data.into()));
    });
}

#[test]
fn client_ping_gets_exactly_one_pong() {
    let gw = echo_gateway();
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        for i in 0..20 {
            ws.send(Message::Ping(Bytes::from(format!("p{i}"))))
                .await
                .unwrap();
        }
        for i in 0..20 {
            assert_eq!(
                next_msg(&mut ws).await,
                Message::Pong(Bytes::from(format!("p{i}")))
            );
        }
        // No stray pong (e.g. the backend's answer to a forwarded ping) comes after.
        ws.send(Message::text("after")).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("after"));
    });
}

#[test]
fn pings_are_forwarded_and_backend_sees_one_pong() {
    let (tx, rx) = channel::unbounded::<Message>();
    let backend = ws_backend(move |mut ws| {
        let tx = tx.clone();
        async move {
            ws.send(Message::Ping(Bytes::from_static(b"from-backend")))
                .await
                .unwrap();
            while let Some(Ok(m)) = ws.next().await {
                let _ = tx.send(m).await;
            }
        }
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        assert_eq!(
            next_msg(&mut ws).await,
            Message::Ping(Bytes::from_static(b"from-backend"))
        );
        ws.send(Message::Ping(Bytes::from_static(b"from-client")))
            .await
            .unwrap();
        ws.send(Message::text("done")).await.unwrap();
        let mut seen = Vec::new();
        loop {
            let m = within(STEP, rx.recv())
                .await
                .expect("backend saw messages")
                .unwrap();
            let end = m == Message::text("done");
            seen.push(m);
            if end {
                break;
            }
        }
        let pongs = seen.iter().filter(|m| m.is_pong()).count();
        assert_eq!(pongs, 1, "backend saw {seen:?}");
        assert!(seen.contains(&Message::Ping(Bytes::from_static(b"from-client"))));
        // The client's own pong arrived too.
        assert_eq!(
            next_msg(&mut ws).await,
            Message::Pong(Bytes::from_static(b"from-client"))
        );
    });
}

/// Asserts `m` is a close frame with `code`.
fn assert_close(m: &Message, code: CloseCode) {
    assert!(
        matches!(m, Message::Close(Some(f)) if f.code == code),
        "expected close {code}, got {m:?}"
    );
}

fn close_frame(code: u16, reason: &str) -> Option<CloseFrame> {
    Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    })
}

/// A backend that reports every message it receives, then `ENDED` when its stream ends (the
/// gateway closed the backend connection).
fn recording_backend() -> (std::net::SocketAddr, channel::Receiver<Message>) {
    let (tx, rx) = channel::unbounded::<Message>();
    let backend = ws_backend(move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(m)) = ws.next().await {
                let _ = tx.send(m).await;
            }
            let _ = tx.send(Message::text(ENDED)).await;
        }
    });
    (backend, rx)
}

const ENDED: &str = "<backend stream ended>";

#[test]
fn client_close_code_and_reason_reach_backend() {
    let (backend, rx) = recording_backend();
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.close(close_frame(4001, "bye")).await.unwrap();
        let got = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert_eq!(got, Message::Close(close_frame(4001, "bye")));
        // The client's handshake completes and the stream ends.
        let reply = next_msg(&mut ws).await;
        assert_close(&reply, CloseCode::from(4001));
        assert!(within(STEP, ws.next()).await.unwrap().is_none());
        // Nothing outlives its peer: the backend connection is closed too.
        let end = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert_eq!(end, Message::text(ENDED));
    });
}

#[test]
fn backend_close_code_and_reason_reach_client() {
    let backend = ws_backend(|mut ws| async move {
        let _ = ws.next().await;
        ws.close(close_frame(4002, "later")).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("go")).await.unwrap();
        assert_eq!(
            next_msg(&mut ws).await,
            Message::Close(close_frame(4002, "later"))
        );
        assert!(within(STEP, ws.next()).await.unwrap().is_none());
    });
}

#[test]
fn backend_drop_gives_client_1011_fast() {
    // Timed from the moment the backend's socket is closed to the client's close frame.
    let (dropped_tx, dropped_rx) = channel::bounded::<Instant>(1);
    let backend = spawn_backend(move |mut s| {
        let dropped_tx = dropped_tx.clone();
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            let _ = ws.next().await;
            drop(ws); // TCP closed without a close frame
            let _ = dropped_tx.send(Instant::now()).await;
        }
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("die")).await.unwrap();
        let m = next_msg(&mut ws).await;
        let got = Instant::now();
        assert_close(&m, CloseCode::Error);
        let dropped = within(STEP, dropped_rx.recv()).await.unwrap().unwrap();
        let took = got.saturating_duration_since(dropped);
        assert!(
            took < Duration::from_millis(100),
            "1011 came {took:?} after the drop"
        );
    });
}

#[test]
fn client_drop_gives_backend_1001() {
    let (backend, rx) = recording_backend();
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(
            within(STEP, rx.recv()).await.unwrap().unwrap(),
            Message::text("hi")
        );
        drop(ws);
        let t = Instant::now();
        let m = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert_close(&m, CloseCode::Away);
        assert!(t.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn oversized_message_closes_1009_and_1001() {
    let (backend, rx) = recording_backend();
    let limits = r#""limits": {"max_message_bytes": 1000, "max_frame_bytes": 1000},"#;
    let gw = start_gateway(&config_json(backend, limits, ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::Binary(vec![1u8; 1000].into()))
            .await
            .unwrap();
        let ok = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert_eq!(ok.len(), 1000, "a message at the limit passes");
        ws.send(Message::Binary(vec![1u8; 1001].into()))
            .await
            .unwrap();
        let m = next_msg(&mut ws).await;
        assert_close(&m, CloseCode::Size);
        let b = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert_close(&b, CloseCode::Away);
    });
}

#[test]
fn slow_backend_stops_the_gateway_reading_the_client() {
    // The backend accepts but never reads: the client's sends must stall with a bounded
    // amount in flight (socket buffers plus one message), not be queued in the gateway.
    let backend = ws_backend(|ws| async move {
        smol::Timer::after(Duration::from_secs(30)).await;
        drop(ws);
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        let mut sent = 0usize;
        loop {
            let send = within(
                Duration::from_millis(1500),
                ws.send(Message::Binary(chunk.clone())),
            );
            match send.await {
                Some(Ok(())) => sent += chunk.len(),
                Some(Err(e)) => panic!("send failed: {e}"),
                None => break, // stalled: backpressure reached the client
            }
            assert!(sent < 200 << 20, "200 MiB accepted without backpressure");
        }
        assert!(sent > 0);
    });
}

#[test]
fn close_completes_even_if_backend_never_answers() {
    // The backend ignores the close and keeps its socket open; the gateway still finishes the
    // client's close handshake and closes the client's TCP connection within its grace time.
    let backend = spawn_backend(|mut s| async move {
        let head = read_head(&mut s).await;
        let ws = accept_after_head(s.clone(), &head, "").await;
        smol::Timer::after(Duration::from_secs(30)).await;
        drop(ws);
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let t = Instant::now();
        ws.close(close_frame(1000, "")).await.unwrap();
        loop {
            match within(Duration::from_secs(8), ws.next()).await {
                Some(Some(Ok(_))) => continue,
                Some(_) => break,
                None => panic!("client connection still open after 8 s"),
            }
        }
        assert!(t.elapsed() < Duration::from_secs(8));
    });
}

#[test]
fn two_hundred_concurrent_connections_echo() {
    let gw = echo_gateway();
    run(async {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                smol::spawn(async move {
                    let mut ws = connect(gw, "/ws/chat").await;
                    for j in 0..5 {
                        let text = format!("conn {i} msg {j}");
                        ws.send(Message::text(text.clone())).await.unwrap();
                        assert_eq!(next_data(&mut ws).await, Message::text(text));
                    }
                    ws.close(None).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn invalid_utf8_from_client_closes_1007_and_backend_gets_1001() {
    let (backend, rx) = recording_backend();
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let bad = Frame::message(
            Bytes::from_static(&[0x68, 0xff]),
            OpCode::Data(Data::Text),
            true,
        );
        ws.send(Message::Frame(bad)).await.unwrap();
        let m = next_msg(&mut ws).await;
        assert_close(&m, CloseCode::Invalid);
        let b = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert_close(&b, CloseCode::Away);
    });
}

#[test]
fn oversized_message_from_backend_closes_it_1009_and_client_1001() {
    let (tx, rx) = channel::unbounded::<Message>();
    let backend = ws_backend(move |mut ws| {
        let tx = tx.clone();
        async move {
            let _ = ws.next().await;
            let _ = ws.send(Message::Binary(vec![0u8; 2000].into())).await;
            while let Some(Ok(m)) = ws.next().await {
                let _ = tx.send(m).await;
            }
        }
    });
    let limits = r#""limits": {"max_message_bytes": 1000},"#;
    let gw = start_gateway(&config_json(backend, limits, ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("send me too much")).await.unwrap();
        let m = next_msg(&mut ws).await;
        assert_close(&m, CloseCode::Away);
        let b = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert_close(&b, CloseCode::Size);
    });
}

#[test]
fn backend_protocol_error_gives_client_1011() {
    // The backend sends a masked frame, which a server must never do.
    let backend = spawn_backend(|mut s| async move {
        use futures_lite::AsyncWriteExt;
        let head = read_head(&mut s).await;
        let ws = accept_after_head(s.clone(), &head, "").await;
        let _ = s
            .write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
            .await;
        smol::Timer::after(Duration::from_secs(5)).await;
        drop(ws);
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let m = next_msg(&mut ws).await;
        assert_close(&m, CloseCode::Error);
    });
}

#[test]
fn fragmented_text_trickled_byte_by_byte_arrives_whole() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let gw = echo_gateway();
    run(async {
        let mut s = smol::net::TcpStream::connect(gw).await.unwrap();
        s.write_all(upgrade_request("/ws/chat", "").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let key = [0x11, 0x22, 0x33, 0x44];
        let frame = |first: u8, payload: &[u8]| {
            let mut f = vec![first, 0x80 | payload.len() as u8];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            f
        };
        let mut bytes = frame(0x01, "frag€".as_bytes()); // text, not final
        bytes.extend(frame(0x89, b"ping")); // a ping between the fragments
        bytes.extend(frame(0x80, b"ment")); // final continuation
        for b in bytes {
            s.write_all(&[b]).await.unwrap();
            s.flush().await.unwrap();
        }
        // The pong (from the backend) and the echoed message come back unmasked.
        let mut got = vec![0u8; 2 + 4 + 2 + 11];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..6], &[0x8a, 4, b'p', b'i', b'n', b'g']);
        assert_eq!(&got[6..8], &[0x81, 11]);
        assert_eq!(&got[8..], "frag€ment".as_bytes());
    });
}
