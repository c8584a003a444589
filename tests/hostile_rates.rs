//! Control frames and the rate limits (issue 13): pings and pongs cost the other side as much
//! as data does, so `rate_limit.messages_per_second` and `bytes_per_second` count them, in
//! both modes, and what reaches the backend over any window T stays within rate x T + burst.
//! A victim on another route of the same one-worker gateway keeps its service.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// How long each flood runs.
const FLOOD: Duration = Duration::from_secs(2);

/// A backend that completes the upgrade and counts every byte it receives after it.
fn counting_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    let addr = spawn_backend(move |mut s| {
        let counter = counter.clone();
        async move {
            let head = read_head(&mut s).await;
            let key = Head::parse(&head).one("Sec-WebSocket-Key").to_string();
            let accept =
                async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    });
    (addr, bytes)
}

/// A backend that counts the pings it receives, and answers a close (tungstenite does).
fn ping_counting_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let pings = Arc::new(AtomicU64::new(0));
    let counter = pings.clone();
    let addr = spawn_backend(move |mut s| {
        let counter = counter.clone();
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            while let Some(Ok(m)) = futures_lite::StreamExt::next(&mut ws).await {
                if m.is_ping() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    (addr, pings)
}

/// A masked control frame (`opcode` 0x9 ping or 0xA pong) with a 125-byte payload: 131 bytes.
fn control_frame(opcode: u8) -> Vec<u8> {
    let mut f = vec![0x80 | opcode, 0x80 | 125, 7, 7, 7, 7];
    f.extend(std::iter::repeat_n(b'p' ^ 7, 125));
    f
}

/// Routes: `/ws/limited` (to `limited`, with `rate`) and `/ws/chat` (to an echo backend).
fn gateway(limited: SocketAddr, rate: &str) -> GatewayProcess {
    let echo = start_echo();
    let json = format!(
        r#"{{ "version": 1, "routers": [ {}, {} ] }}"#,
        router(limited, "/ws/limited", "/ws", rate),
        router(echo, "/ws/chat", "/ws", "")
    );
    GatewayProcess::start(&json, None)
}

/// Writes `frame` as fast as the gateway takes it for [`FLOOD`]; frames written.
fn flood(s: &mut TcpStream, frame: &[u8]) -> u64 {
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    let batch: Vec<u8> = frame.repeat(64);
    let end = Instant::now() + FLOOD;
    let mut written = 0u64;
    while Instant::now() < end {
        match s.write(&batch) {
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => break,
        }
    }
    written / frame.len() as u64
}

#[test]
fn pings_and_pongs_are_throttled_by_the_rates() {
    const RATE: &str = r#""rate_limit": { "messages_per_second": 1, "bytes_per_second": 1024 },"#;
    for opcode in [0x9, 0xA] {
        let (backend, received) = counting_backend();
        let gw = gateway(backend, RATE);
        let addr = gw.addr();
        let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
        let mut s = raw_upgraded(addr, "/ws/limited");
        let started = Instant::now();
        let sent = flood(&mut s, &control_frame(opcode));
        let elapsed = started.elapsed().as_secs_f64();
        // One message a second, a burst of one: at most elapsed + 1 frames, plus the one a
        // throttled direction may have started as the window closed.
        let frames = (elapsed + 2.0).floor() as u64;
        let bound = frames * 131;
        let got = received.load(Ordering::Relaxed);
        assert!(
            got <= bound,
            "opcode {opcode:#x}: {got} bytes reached the backend in {elapsed:.1} s \
             (bound {bound}); the client wrote {sent} frames"
        );
        assert!(got >= 131, "nothing passed at all");
        victim.assert_served(50);
        assert_new_client_served(addr, "/ws/chat");
    }
}

#[test]
fn pings_over_the_rate_close_the_sender_with_1008() {
    const RATE: &str = r#""rate_limit": { "messages_per_second": 1, "bytes_per_second": 1024,
                            "on_exceed": "close" },"#;
    let (backend, pings) = ping_counting_backend();
    let gw = gateway(backend, RATE);
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    let mut s = raw_upgraded(addr, "/ws/limited");
    // Ten pings at once: the first is the burst, the second is over the rate.
    s.write_all(&control_frame(0x9).repeat(10)).expect("write");
    // The gateway's close: 1008 "rate limit".
    let _ = s.set_read_timeout(Some(STEP));
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let close = answer
        .windows(2)
        .position(|w| w[0] == 0x88)
        .map(|at| &answer[at..]);
    let code = close
        .and_then(|f| f.get(2..4))
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    assert_eq!(code, Some(1008), "answer: {answer:?}");
    // The burst (one message) passed, nothing after it.
    assert_eq!(
        pings.load(Ordering::Relaxed),
        1,
        "pings that reached the backend"
    );
    smol::block_on(wait_until(STEP, || victim.echoes() >= 50));
    victim.assert_served(50);
}
