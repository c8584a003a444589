//! Spread drains (issue 16): on SIGTERM the open connections get their 1001 at moments spread
//! evenly over `server.close_spread_ms`, in random order, so that their clients do not all
//! reconnect in the same second; the process exits 0 once they are closed.

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;
use rustix::process::Signal;

/// Connections held when the signal comes.
const N: usize = 1000;
/// `server.close_spread_ms`.
const SPREAD: Duration = Duration::from_millis(2000);
/// The slices the closes are counted in.
const SLICE: Duration = Duration::from_millis(100);

#[test]
fn a_shutdown_spreads_its_closes_over_close_spread_ms() {
    // Client and backend sockets of N connections in this process, as many in the gateway's.
    let limit = raise_open_files(2 * N as u64 + 256);
    assert!(
        limit >= 2 * N as u64 + 256,
        "open-files limit {limit} too low"
    );
    let json = config_json(
        start_echo(),
        r#""server": { "close_spread_ms": 2000, "shutdown_timeout_ms": 5000 },"#,
        "",
    );
    let mut gw = GatewayProcess::start(&json, Some(2 * N as u32 + 256));
    let addr = gw.addr();
    let clients = run(async {
        let mut clients = Vec::with_capacity(N);
        for _ in 0..N {
            clients.push(connect(addr, "/ws/chat").await);
        }
        clients
    });
    let (tx, rx) = smol::channel::unbounded();
    for mut ws in clients {
        let tx = tx.clone();
        smol::spawn(async move {
            let got = match within(Duration::from_secs(10), ws.next()).await {
                Some(Some(Ok(Message::Close(Some(c))))) => Some((c.code, c.reason.to_string())),
                _ => None,
            };
            let _ = tx.send((Instant::now(), got)).await;
            // Answer the close, as a client does; the gateway then finishes the connection.
            let _ = within(Duration::from_secs(5), ws.next()).await;
        })
        .detach();
    }
    drop(tx);
    let signalled = Instant::now();
    gw.signal(Signal::TERM);
    let closes: Vec<_> = run(async { rx.collect::<Vec<_>>().await });
    assert_eq!(closes.len(), N);
    let mut slices = vec![0usize; (SPREAD.as_millis() / SLICE.as_millis()) as usize + 3];
    for (at, got) in &closes {
        let (code, reason) = got.clone().expect("every client gets a close frame");
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Away, "gateway shutting down")
        );
        let after = at.duration_since(signalled);
        assert!(
            after < SPREAD + SLICE * 2,
            "a close came {after:?} after the signal"
        );
        slices[(after.as_millis() / SLICE.as_millis()) as usize] += 1;
    }
    let share = N * SLICE.as_millis() as usize / SPREAD.as_millis() as usize;
    assert!(
        slices.iter().all(|&n| n <= 2 * share),
        "closes per {SLICE:?} after the signal: {slices:?} (each at most {} expected)",
        2 * share
    );
    eprintln!("closes per 100 ms slice: {slices:?}");
    let status = gw.wait_exit(STEP).expect("the gateway did not exit");
    assert_eq!(status.code(), Some(0));
}

/// A backend that holds each upgrade until `release` says so, then accepts it and echoes;
/// every request it got is reported on the returned channel.
fn held_backend(
    release: smol::channel::Receiver<()>,
) -> (std::net::SocketAddr, smol::channel::Receiver<()>) {
    let (got, requests) = smol::channel::unbounded();
    let addr = spawn_backend(move |mut s| {
        let (got, release) = (got.clone(), release.clone());
        async move {
            let head = read_head(&mut s).await;
            let _ = got.send(()).await;
            let _ = release.recv().await;
            echo_ws(accept_after_head(s, &head, "").await).await;
        }
    });
    (addr, requests)
}

#[test]
fn a_handshake_under_way_at_sigterm_finishes_and_is_then_drained_with_1001() {
    let (release, released) = smol::channel::unbounded();
    let (backend, requests) = held_backend(released);
    let json = config_json(
        backend,
        r#""server": { "close_spread_ms": 300, "shutdown_timeout_ms": 5000 },"#,
        "",
    );
    let mut gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    run(async {
        // The client's handshake waits on the backend when the signal comes.
        let client = smol::spawn(try_connect(addr, "/ws/chat", &[]));
        within(STEP, requests.recv())
            .await
            .expect("the backend got the request")
            .ok();
        gw.signal(Signal::TERM);
        gw.wait_for("shutting down", STEP).expect("the drain began");
        release.send(()).await.expect("release the backend");
        let (mut ws, response) = within(STEP, client)
            .await
            .expect("the handshake ends")
            .expect("a handshake under way at the signal finishes (no 503)");
        assert_eq!(response.status(), 101);
        let close = within(STEP, ws.next()).await;
        match close {
            Some(Some(Ok(Message::Close(Some(c))))) => assert_eq!(c.code, CloseCode::Away),
            other => panic!("expected 1001 after the handshake, got {other:?}"),
        }
        let _ = within(STEP, ws.next()).await;
    });
    assert_eq!(gw.wait_exit(STEP).and_then(|s| s.code()), Some(0));
}
