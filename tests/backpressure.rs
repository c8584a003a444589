//! A reader that stops reading slows its sender through TCP, in both directions, and the
//! gateway's memory stays bounded (measured on the binary's RSS while 64 MiB are pushed at a
//! leg that does not read).

mod common;

use std::time::Duration;

use async_tungstenite::tungstenite::{Bytes, Message};
use common::*;
use futures_lite::StreamExt;

/// Pushes 1 MiB messages into `ws` until a send stalls for a second; returns the bytes sent.
async fn push_until_stalled(ws: &mut Ws) -> usize {
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    let mut sent = 0;
    while within(
        Duration::from_secs(1),
        ws.send(Message::Binary(chunk.clone())),
    )
    .await
    .is_some_and(|r| r.is_ok())
    {
        sent += chunk.len();
        assert!(sent < 64 << 20, "64 MiB accepted: no backpressure");
    }
    sent
}

/// The gateway binary, a backend running `backend`, one client; returns the client.
fn setup<F, Fut>(backend: F) -> (GatewayProcess, std::net::SocketAddr)
where
    F: Fn(Ws) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = spawn_backend(move |mut s| {
        let backend = backend.clone();
        async move {
            let head = read_head(&mut s).await;
            backend(accept_after_head(s, &head, "").await).await;
        }
    });
    let gw = GatewayProcess::start(&config_json(addr, "", ""), None);
    let gw_addr = gw.addr();
    (gw, gw_addr)
}

#[test]
fn backend_that_stops_reading_stalls_the_client_and_gateway_memory_stays_bounded() {
    let (gw, addr) = setup(|ws| async move {
        smol::Timer::after(Duration::from_secs(30)).await; // never reads
        drop(ws);
    });
    let before = gw.rss_kib();
    run(async {
        let mut ws = connect(addr, "/ws/chat").await;
        let sent = push_until_stalled(&mut ws).await;
        let grew = gw.rss_kib().saturating_sub(before);
        // What is in flight sits in the kernel's socket buffers, not in the gateway.
        assert!(
            grew < 4096,
            "gateway RSS grew {grew} KiB after {sent} bytes pushed"
        );
    });
}

#[test]
fn client_that_stops_reading_stalls_the_backend_and_gateway_memory_stays_bounded() {
    let (tx, rx) = smol::channel::bounded::<usize>(1);
    let (gw, addr) = setup(move |mut ws| {
        let tx = tx.clone();
        async move {
            let _ = ws.next().await; // the client's "go"
            let sent = push_until_stalled(&mut ws).await;
            let _ = tx.send(sent).await;
            smol::Timer::after(Duration::from_secs(30)).await;
        }
    });
    let before = gw.rss_kib();
    run(async {
        let mut ws = connect(addr, "/ws/chat").await;
        ws.send(Message::text("go")).await.unwrap();
        // The client never reads again: the backend's sends stall.
        let sent = within(Duration::from_secs(60), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let grew = gw.rss_kib().saturating_sub(before);
        assert!(
            grew < 4096,
            "gateway RSS grew {grew} KiB after {sent} bytes pushed"
        );
        assert!(sent > 0);
        drop(ws);
    });
}
