//! A leg whose close handshake is complete gets its TCP connection closed at once, even while
//! the other leg is still closing or keeps its connection open: a client never waits for a
//! silent backend (up to the 5 s grace) for the end of a close it completed.

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};

/// How soon the client's connection must end once it answered the close.
const AT_ONCE: Duration = Duration::from_millis(600);

/// A backend that accepts the upgrade, writes `first` (raw bytes, maybe none), then reads and
/// ignores everything: it never answers a close and keeps its connection open until the
/// gateway closes it.
fn silent_backend(first: &'static [u8]) -> std::net::SocketAddr {
    spawn_backend(move |mut s| async move {
        let head = read_head(&mut s).await;
        let _ws = accept_after_head(s.clone(), &head, "").await; // never polled: raw from here
        let _ = s.write_all(first).await;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    })
}

/// Waits for the gateway's close (the client answers it, as tungstenite does by itself), then
/// returns how long the client's connection took to end after that.
async fn end_after_close(ws: &mut Ws, code: u16) -> Duration {
    match next_data(ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), code, "{f:?}"),
        other => panic!("expected a close {code}, got {other:?}"),
    }
    let answered = Instant::now();
    let ended = within(STEP, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(ended.is_some(), "the client's connection never ended");
    answered.elapsed()
}

#[test]
fn a_client_that_completed_the_close_is_closed_while_a_silent_backend_is_still_closing() {
    // The idle timeout closes both legs with 1001; the backend never answers.
    let backend = silent_backend(b"");
    let gw = start_gateway(&config_json(
        backend,
        r#""limits": { "idle_timeout_ms": 200 },"#,
        "",
    ));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let took = end_after_close(&mut ws, 1001).await;
        assert!(took < AT_ONCE, "client closed {took:?} after its close");
    });
}

#[test]
fn a_client_that_answered_the_backends_close_is_closed_while_the_backend_keeps_its_connection() {
    // The backend closes (1000), the client answers; the backend then keeps TCP open.
    let backend = silent_backend(&[0x88, 0x02, 0x03, 0xe8]);
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let took = end_after_close(&mut ws, 1000).await;
        assert!(took < AT_ONCE, "client closed {took:?} after its close");
    });
}
