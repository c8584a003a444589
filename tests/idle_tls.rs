//! An idle connection holds no relay buffer whatever its legs' transports (issue 13, item 7),
//! measured with `wss://` on both legs: a client of the TLS listener (`server.tls`) and a
//! `wss://` backend. What an idle connection then costs the gateway beyond a plain one is its
//! two TLS sessions' own state, after one echo as after one 8 KiB message.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use common::tls::{
    default_client, tls_echo_backend, wss_backend_json, wss_both_legs_json, wss_connect,
};
use common::*;
use futures_lite::{AsyncRead, AsyncWrite, StreamExt};
use kairos_gateway::relay;

/// Connections held per measurement.
const HELD: usize = 1000;

/// Connections opened concurrently.
const BATCH: usize = 25;

/// The next data message (pings and pongs skipped), within [`STEP`].
async fn next_data_of<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    loop {
        match within(STEP, ws.next()).await {
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Some(Some(Ok(m))) => return m,
            other => panic!("no data message: {other:?}"),
        }
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, m: Message) {
    ws.send(m.clone()).await.unwrap();
    assert!(next_data_of(ws).await == m, "echo differs");
}

/// What one idle connection costs the gateway, in bytes of its RSS.
#[derive(Debug)]
struct PerConnection {
    /// Held after one small echo.
    echoed: u64,
    /// Held after one 8 KiB message more.
    after_8k: u64,
}

/// Opens [`HELD`] connections with `connect` (each echoes once) and holds them; then sends one
/// 8 KiB message on each, one connection after the other (a measure of what is held, not of
/// a peak). RSS growth per connection after each step.
async fn per_connection<S, F, Fut>(gw: &GatewayProcess, connect: F) -> PerConnection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = WebSocketStream<S>> + Send + 'static,
{
    let open = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let connecting = connect();
                smol::spawn(async move {
                    let mut ws = connecting.await;
                    echo(&mut ws, Message::text("hello")).await;
                    ws
                })
            })
            .collect();
        async move {
            let mut held = Vec::with_capacity(n);
            for t in tasks {
                held.push(t.await);
            }
            held
        }
    };
    // What is made once per process (or per batch) exists before counting.
    let mut warm = open(BATCH).await;
    for ws in &mut warm {
        echo(ws, Message::binary(vec![7u8; 8192])).await;
    }
    let before = gw.rss_kib();
    let mut held = Vec::with_capacity(HELD);
    while held.len() < HELD {
        held.extend(open(BATCH.min(HELD - held.len())).await);
    }
    let echoed = gw.rss_kib();
    for ws in &mut held {
        echo(ws, Message::binary(vec![7u8; 8192])).await;
    }
    let after_8k = gw.rss_kib();
    let per = |kib: u64| kib.saturating_sub(before) * 1024 / HELD as u64;
    let figures = PerConnection {
        echoed: per(echoed),
        after_8k: per(after_8k),
    };
    drop((warm, held));
    figures
}

#[test]
fn idle_connections_with_wss_on_both_legs_hold_no_relay_buffer() {
    let (backend, backend_ca) = tls_echo_backend();
    let listener = pki();
    let (json, _files) = wss_both_legs_json(&listener, backend, &backend_ca, "");
    let gw = start_gateway(&json);
    let client = default_client(&listener.ca_pem);
    run(async {
        let mut held = Vec::new();
        for _ in 0..20 {
            let mut ws = wss_connect(gw, client.clone(), "/ws/chat").await;
            echo(&mut ws, Message::text("hello")).await;
            held.push(ws);
        }
        let none = || relay::buffers_held() == 0;
        assert!(
            wait_until(STEP, none).await,
            "20 idle connections that echoed once hold {} relay buffers",
            relay::buffers_held()
        );
        for ws in &mut held {
            echo(ws, Message::binary(vec![7u8; 8192])).await;
        }
        assert!(
            wait_until(STEP, none).await,
            "20 idle connections that echoed 8 KiB hold {} relay buffers",
            relay::buffers_held()
        );
    });
}

/// Measures [`per_connection`] on a gateway process for `json`, with clients made by
/// `connect(gateway address)`.
fn measure<S, F, Fut>(json: &str, connect: F) -> PerConnection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = WebSocketStream<S>> + Send + 'static,
{
    raise_open_files(4 * HELD as u64 + 1000);
    let gw = GatewayProcess::start(json, Some(4 * HELD as u32 + 1000));
    let addr = gw.addr();
    run_for(
        Duration::from_secs(600),
        per_connection(&gw, || connect(addr)),
    )
}

#[test]
fn an_idle_connection_with_wss_on_both_legs_costs_its_tls_sessions_only() {
    let ws = measure(&config_json(start_echo(), "", ""), |addr| async move {
        connect(addr, "/ws/chat").await
    });
    let (backend, backend_ca) = tls_echo_backend();
    let (json, _file) = wss_backend_json(backend, &backend_ca, "");
    let wss_backend = measure(&json, |addr| async move { connect(addr, "/ws/chat").await });
    let listener = pki();
    let (json, _files) = wss_both_legs_json(&listener, backend, &backend_ca, "");
    let client = default_client(&listener.ca_pem);
    let wss = measure(&json, |addr| wss_connect(addr, client.clone(), "/ws/chat"));
    eprintln!(
        "RSS per idle connection, {HELD} held (bytes): ws:// {ws:?}; wss:// backend {wss_backend:?}; \
         wss:// both legs {wss:?}"
    );
    // An 8 KiB message leaves no relay buffer (16 KiB once a read filled the small one) behind.
    // What it still adds is the allocator's holes: with every allocation from 4 KiB up mmapped
    // (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4096) it adds about 1 KB.
    for (legs, m) in [("wss:// backend", &wss_backend), ("wss:// both legs", &wss)] {
        let left = m.after_8k.saturating_sub(m.echoed);
        assert!(
            left < 16 * 1024,
            "{legs}: {left} bytes more per idle connection after an 8 KiB message: {m:?}"
        );
    }
    // Beyond a plain connection: each TLS session's own state (rustls's 4 KiB read buffer,
    // keys, the session), not a relay buffer.
    let tls_state = 10 * 1024;
    assert!(
        wss_backend.echoed < ws.echoed + tls_state,
        "wss:// backend: {wss_backend:?}, ws:// {ws:?}"
    );
    assert!(
        wss.echoed < ws.echoed + 2 * tls_state,
        "wss:// both legs: {wss:?}, ws:// {ws:?}"
    );
}
