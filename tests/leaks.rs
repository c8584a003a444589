//! Nothing is leaked: after thousands of connections opened, used and ended in every way (clean
//! close, client drop, backend drop, handshake timeout, idle timeout), the process's open file
//! descriptors, the gateway's connection tasks, registered sockets, armed timers and relay
//! buffers are back to their start values.
//!
//! `KAIROS_LEAK_CONNECTIONS` sets the count (default 2000; `bench/leaks.sh` runs 10 000).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use kairos_gateway::{reactor, relay, server};

/// Echoes; with `?drop` in the path, drops TCP after the first message instead of echoing.
fn backend() -> SocketAddr {
    spawn_backend(|mut s| async move {
        let head = read_head(&mut s).await;
        let drop_it = head.lines().next().is_some_and(|l| l.contains("?drop"));
        let mut ws = accept_after_head(s, &head, "").await;
        while let Some(Ok(m)) = ws.next().await {
            if drop_it {
                return; // the socket closes without a close frame
            }
            if m.is_text() && ws.send(m).await.is_err() {
                return;
            }
        }
    })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn state() -> (usize, usize, usize, usize, usize) {
    let (sockets, timers) = reactor::counts();
    let buffers = relay::buffers_held();
    (
        open_fds(),
        server::open_connections(),
        sockets,
        timers,
        buffers,
    )
}

/// Reads until the peer closes; false if it did not within [`STEP`].
async fn read_to_end(s: &mut smol::net::TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match within(STEP, s.read(&mut buf)).await {
            Some(Ok(0)) | Some(Err(_)) => return true,
            Some(Ok(_)) => continue,
            None => return false,
        }
    }
}

/// One connection, ended in way `way`.
async fn one(gw: SocketAddr, way: usize) {
    match way {
        0 => {
            let mut ws = connect(gw, "/ws/chat").await;
            ws.send(Message::text("hi")).await.unwrap();
            assert_eq!(next_data(&mut ws).await, Message::text("hi"));
            ws.close(None).await.unwrap();
            while let Some(Some(Ok(_))) = within(STEP, ws.next()).await {}
        }
        1 => {
            let mut ws = connect(gw, "/ws/chat").await;
            ws.send(Message::text("hi")).await.unwrap();
            assert_eq!(next_data(&mut ws).await, Message::text("hi"));
            drop(ws); // no close frame
        }
        2 => {
            let mut ws = connect(gw, "/ws/chat?drop").await;
            ws.send(Message::text("hi")).await.unwrap();
            let m = next_msg(&mut ws).await;
            assert!(m.is_close(), "expected the gateway's close, got {m:?}");
        }
        3 => {
            // Half a head, then silence: cut at handshake_timeout_ms.
            let mut s = smol::net::TcpStream::connect(gw).await.unwrap();
            s.write_all(b"GET /ws/chat HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            assert!(read_to_end(&mut s).await, "half a head was never cut");
        }
        _ => {
            // Upgraded, then silence: cut at idle_timeout_ms.
            let mut ws = connect(gw, "/ws/chat").await;
            let m = next_msg(&mut ws).await;
            assert!(m.is_close(), "expected the idle close, got {m:?}");
        }
    }
}

#[test]
fn connections_ended_every_way_leave_no_fd_task_socket_or_timer_behind() {
    let n: usize = std::env::var("KAIROS_LEAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let limits = r#""limits": { "handshake_timeout_ms": 200, "idle_timeout_ms": 300 },"#;
    let gw = start_gateway(&config_json(backend(), limits, ""));
    run_for(Duration::from_secs(600), async {
        // One of each first, so that what is made once per process exists before counting.
        for way in 0..5 {
            one(gw, way).await;
        }
        assert!(wait_until(STEP, || server::open_connections() == 0).await);
        let start = state();
        const BATCH: usize = 100;
        for b in 0..n.div_ceil(BATCH) {
            let tasks: Vec<_> = (0..BATCH)
                .map(|i| smol::spawn(one(gw, (b * BATCH + i) % 5)))
                .collect();
            for t in tasks {
                t.await;
            }
        }
        // Connections end on their own schedule (close grace, drain): wait, with a deadline.
        let settled = wait_until(Duration::from_secs(15), || state() == start).await;
        assert!(
            settled,
            "after {n} connections: (fds, connections, sockets, timers, relay buffers) = {:?}, \
             at start {start:?}",
            state()
        );
    });
}
