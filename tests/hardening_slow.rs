//! Slow clients: a head trickled a byte a second is cut at `limits.handshake_timeout_ms`, and
//! hundreds of clients holding half a head do not keep a normal client from being served.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

/// A normal client connects through `gw` and gets its message echoed.
async fn assert_serves(gw: SocketAddr) {
    let mut ws = connect(gw, "/ws/chat").await;
    ws.send(Message::text("still serving")).await.expect("send");
    assert_eq!(next_data(&mut ws).await, Message::text("still serving"));
}

fn gateway_with_handshake_timeout(ms: u64) -> SocketAddr {
    let limits = format!(r#""limits": {{"handshake_timeout_ms": {ms}}},"#);
    start_gateway(&config_json(start_echo(), &limits, ""))
}

#[test]
fn slowloris_is_cut_at_the_handshake_timeout() {
    let gw = gateway_with_handshake_timeout(500);
    run(async {
        let mut s = TcpStream::connect(gw).await.expect("tcp connect");
        let start = Instant::now();
        let mut answer = Vec::new();
        let mut closed_at = None;
        // Three bytes (three seconds) at most: the gateway must have closed long before.
        for b in upgrade_request("/ws/chat", "").bytes().take(3) {
            if s.write_all(&[b]).await.is_err() {
                closed_at = Some(start.elapsed());
                break;
            }
            // One byte a second; the gateway's close shows as the end of the stream.
            let mut buf = [0u8; 512];
            match within(Duration::from_secs(1), s.read(&mut buf)).await {
                None => {}
                Some(Ok(0)) | Some(Err(_)) => {
                    closed_at = Some(start.elapsed());
                    break;
                }
                Some(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let at = closed_at.expect("the gateway never closed a slowloris client");
        assert!(at >= Duration::from_millis(450), "closed too early: {at:?}");
        assert!(at < Duration::from_secs(2), "closed too late: {at:?}");
        // A timeout is answered by closing, without an HTTP answer and without an upgrade.
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty(), "expected a bare close, got {answer:?}");
        assert_serves(gw).await;
    });
}

/// How many sockets of this process are the gateway's accepted side of a connection to `gw`
/// (local port = the gateway's port): counted from /proc, so a socket still in the kernel's
/// accept queue (not yet accepted by the gateway) does not count.
fn accepted_by_gateway(gw: SocketAddr) -> usize {
    let ours: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/self/net/tcp").expect("read /proc/self/net/tcp");
    let port = format!(":{:04X}", gw.port());
    tcp.lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // f[1]: local address, f[3]: state (01 = established), f[9]: inode.
            f.len() > 9 && f[1].ends_with(&port) && f[3] == "01" && ours.contains(f[9])
        })
        .count()
}

#[test]
fn five_hundred_slowloris_clients_do_not_block_a_normal_client() {
    const SLOW: usize = 500;
    // This process holds both ends of every connection, plus the backend legs of the check.
    let limit = raise_open_files(2 * SLOW as u64 + 256);
    assert!(
        limit >= 2 * SLOW as u64 + 64,
        "RLIMIT_NOFILE {limit} is too low"
    );
    let gw = gateway_with_handshake_timeout(30_000);
    run(async {
        let mut slow = Vec::with_capacity(SLOW);
        for _ in 0..SLOW {
            let mut s = TcpStream::connect(gw).await.expect("slow client connect");
            s.write_all(b"GET /ws/chat HTTP/1.1\r\nHost: gw.test\r\nUpgr")
                .await
                .expect("partial head");
            slow.push(s);
        }
        let all_in = wait_until(STEP, || accepted_by_gateway(gw) >= SLOW).await;
        assert!(
            all_in,
            "the gateway accepted {} of {SLOW}",
            accepted_by_gateway(gw)
        );
        let start = Instant::now();
        let served = within(Duration::from_secs(1), assert_serves(gw)).await;
        let took = start.elapsed();
        assert!(
            served.is_some(),
            "a normal client was not served within 1 s ({took:?})"
        );
        eprintln!("normal client: connect + echo in {took:?} beside {SLOW} slow clients");
        // The slow clients are still held (30 s timeout): none was dropped to make room.
        assert!(accepted_by_gateway(gw) >= SLOW, "slow clients were dropped");
        for s in slow.iter_mut().step_by(25) {
            let mut buf = [0u8; 16];
            let read = within(Duration::from_millis(5), s.read(&mut buf)).await;
            assert!(read.is_none(), "a slow client got {read:?}");
        }
    });
}
