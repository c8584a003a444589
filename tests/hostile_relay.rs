//! Hostile load on the relay (issue 13): one client (or backend) that breaks the protocol and
//! then writes as fast as it can, or floods control frames, must not freeze a worker or get
//! past a rate limit, while a victim on the same one-worker gateway keeps its service.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// How long each attack runs.
const ATTACK: Duration = Duration::from_secs(3);

/// Writes `chunk` again and again for [`ATTACK`] (or until the gateway stops taking it);
/// the bytes written.
fn flood(mut s: TcpStream, chunk: &[u8], stop: &AtomicBool) -> u64 {
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let end = Instant::now() + ATTACK;
    let mut sent = 0u64;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        match s.write(chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => break,
        }
    }
    sent
}

/// A one-worker gateway process in front of the echo backend, `/ws/chat`, with `route_extra`.
fn one_worker_gateway(route_extra: &str) -> GatewayProcess {
    let echo = start_echo();
    GatewayProcess::start(&config_json(echo, "", route_extra), None)
}

#[test]
fn a_client_that_breaks_the_protocol_then_floods_never_freezes_the_worker() {
    let gw = one_worker_gateway("");
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let mut s = raw_upgraded(addr, "/ws/chat");
            // An unmasked text frame: a protocol violation, so the leg is closed and drained.
            s.write_all(&[0x81, 0x02, b'h', b'i']).expect("write");
            let stop = stop.clone();
            std::thread::spawn(move || flood(s, &[0x5a; 64 * 1024], &stop))
        })
        .collect();
    let start = Instant::now();
    while start.elapsed() < ATTACK {
        assert_new_client_served(addr, "/ws/chat");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = attackers.into_iter().map(|a| a.join().unwrap_or(0)).sum();
    let report = victim.assert_served(100);
    eprintln!("attackers sent {sent} bytes; victim {report:?}");
}

#[test]
fn a_backend_that_closes_then_streams_never_freezes_the_worker() {
    // The backend sends a close frame, then writes garbage as fast as it can.
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    let streaming = spawn_backend(move |mut s| {
        let counter = counter.clone();
        async move {
            use futures_lite::AsyncWriteExt;
            let head = read_head(&mut s).await;
            let ws = accept_after_head(s.clone(), &head, "").await;
            drop(ws);
            let close = [0x88, 0x02, 0x03, 0xe8];
            if s.write_all(&close).await.is_err() {
                return;
            }
            let junk = vec![0x5au8; 64 * 1024];
            let end = Instant::now() + ATTACK;
            while Instant::now() < end {
                match s.write(&junk).await {
                    Ok(n) => {
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        }
    });
    let echo = start_echo();
    let json = format!(
        r#"{{ "version": 1, "routers": [ {}, {} ] }}"#,
        router(echo, "/ws/chat", "/ws", ""),
        router(streaming, "/ws/stream", "/ws", "")
    );
    let gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    let start = Instant::now();
    let mut opened = 0;
    while start.elapsed() < ATTACK {
        let mut s = raw_upgraded(addr, "/ws/stream");
        // A close of its own (masked, code 1000), so that both legs are closed at once and the
        // gateway drains the backend's leg.
        s.write_all(&[0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2])
            .expect("write close");
        opened += 1;
        std::thread::spawn(move || {
            // Read whatever comes, for as long as it comes.
            let mut s = s;
            let mut buf = [0u8; 65536];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        assert_new_client_served(addr, "/ws/chat");
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = victim.assert_served(100);
    eprintln!(
        "{opened} streaming backends sent {} bytes; victim {report:?}",
        bytes.load(Ordering::Relaxed)
    );
}
