//! A WebSocket echo server: text and binary messages are sent back as received; pings are
//! answered and the close handshake completed (by tungstenite). Protocol errors are answered
//! with the RFC's close code. Used by `--demo`, `examples/echo_backend.rs`, the tests and the
//! benchmarks. If the client offers subprotocols, the first one is chosen. [`serve_greeting`]
//! first sends each client one text message of its own (so that a client behind a balancer can
//! tell which backend it reached).

use std::io;
use std::net::SocketAddr;

use async_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Message, Utf8Bytes};
use std::net::TcpListener;
use std::sync::Arc;

use async_executor::LocalExecutor;
use futures_lite::{AsyncRead, AsyncWrite, StreamExt};

use crate::net::Stream;
use crate::reactor::{self, Listener, Timer};

use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Accepts connections on `listener` forever, one task each, on this thread (with its own
/// I/O driver).
pub fn serve(listener: TcpListener) -> io::Result<()> {
    serve_greeting(listener, None)
}

/// [`serve`], sending `greeting` (when there is one) as a text message right after each
/// handshake, before echoing.
pub fn serve_greeting(listener: TcpListener, greeting: Option<String>) -> io::Result<()> {
    let greeting = greeting.map(Utf8Bytes::from);
    listener.set_nonblocking(true)?;
    let listener = Arc::new(listener);
    reactor::block_on(async {
        let listener = Listener::new(listener)?;
        let tasks = LocalExecutor::new();
        tasks
            .run(async {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => tasks
                            .spawn(handle_tcp(stream, peer, greeting.clone()))
                            .detach(),
                        Err(e) => {
                            log::warn!("echo backend: accept failed: {e}");
                            Timer::after(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            })
            .await
    })
}

/// Binds `addr` and serves echo there on a background thread; returns the bound address.
pub fn start(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("echo-backend".into())
        .spawn(move || {
            if let Err(e) = serve(listener) {
                log::error!("echo backend: {e}");
            }
        })?;
    Ok(local)
}

async fn handle_tcp(stream: std::net::TcpStream, peer: SocketAddr, greeting: Option<Utf8Bytes>) {
    let _ = stream.set_nodelay(true);
    log::debug!("echo backend: connection from {peer}");
    match Stream::accepted(stream) {
        Ok(stream) => handle_greeting(stream, greeting).await,
        Err(e) => log::warn!("echo backend: {peer}: {e}"),
    }
}

/// Performs the server handshake on `stream` and echoes until the client closes.
pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    handle_greeting(stream, None).await
}

/// [`handle`], sending `greeting` (when there is one) first.
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
async fn handle_greeting<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    greeting: Option<Utf8Bytes>,
) {
    let choose_protocol =
        |req: &WsRequest, mut res: WsResponse| -> Result<WsResponse, ErrorResponse> {
            let first = req
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .and_then(|p| HeaderValue::from_str(p).ok());
            if let Some(p) = first {
                res.headers_mut().insert("Sec-WebSocket-Protocol", p);
            }
            Ok(res)
        };
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let mut ws =
        match async_tungstenite::accept_hdr_async_with_config(stream, choose_protocol, Some(cfg))
            .await
        {
            Ok(ws) => ws,
            Err(e) => {
                log::debug!("echo backend: handshake failed: {e}");
                return;
            }
        };
    if let Some(text) = greeting {
        if ws.send(Message::Text(text)).await.is_err() {
            return;
        }
    }
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                if let Some((code, reason)) = close_for_ws_error(&e) {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                }
                log::debug!("echo backend: {e}");
                return;
            }
        };
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

/// The close code (and a short reason) for a tungstenite error, for the tungstenite-based echo
/// backend; `None` when the peer is gone and cannot be told.
fn close_for_ws_error(err: &WsError) -> Option<(CloseCode, &'static str)> {
    match err {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((CloseCode::Size, "message too big"))
        }
        WsError::Capacity(_) => Some((CloseCode::Size, "frame too big")),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8 in text message")),
        WsError::Protocol(ProtocolError::InvalidCloseSequence) => {
            Some((CloseCode::Protocol, "invalid close frame"))
        }
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => None,
        _ => Some((CloseCode::Error, "internal error")),
    }
}
