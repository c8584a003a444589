//! Stage 5 end to end: what the backend sees of the client's upgrade request, what the client
//! sees of the backend's answer, and how each way a backend can fail before the upgrade reaches
//! the client. Real gateway, real backends (plain and TLS), real clients, all on port 0.
// Helpers of the tests a build without every feature leaves out.
#![cfg_attr(not(full), allow(dead_code, unused_imports))]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::channel::{Receiver, Sender};
use smol::net::TcpStream;

/// The key of [`upgrade_request`] and the accept value that goes with it (RFC 6455 1.3).
const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const CLIENT_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A config with one route `external` -> `{host_url}:{port}{internal}`, plus `extra` top-level
/// members (each ending in a comma).
fn route_json(host_url: &str, port: u16, external: &str, internal: &str, extra: &str) -> String {
    format!(
        r#"{{ {extra} "version": 1, "routers": [ {{
            "protocol": "websocket",
            "backends": [{{ "host": "{host_url}", "port": {port}, "weight": 1 }}],
            "external_path": "{external}", "internal_path": "{internal}",
            "methods": ["GET"] }} ] }}"#
    )
}

/// Gateway with the route `/rooms/{room}` -> `ws://backend/ws/{room}`.
fn rooms_gateway(backend: SocketAddr) -> SocketAddr {
    start_gateway(&route_json(
        "ws://127.0.0.1",
        backend.port(),
        "/rooms/{room}",
        "/ws/{room}",
        "",
    ))
}

/// Checks that the gateway refuses an upgrade of `path` with `status`, both for a WebSocket
/// client and for a raw request, and that the error response is a short text body whose length
/// matches `Content-Length`, with no 101 before it.
async fn assert_refused(gw: SocketAddr, path: &str, status: u16) -> RawResponse {
    assert_eq!(
        refused_status(gw, path, &[]).await,
        status,
        "status for {path}"
    );
    let res = raw_http(gw, upgrade_request(path, "").as_bytes()).await;
    assert_eq!(res.status, status, "first status line for {path}: {res:?}");
    assert!(
        res.head.starts_with(&format!("HTTP/1.1 {status} ")),
        "the answer must start with the error status line (no 101 before it): {res:?}"
    );
    let length: usize = res
        .header("Content-Length")
        .unwrap_or_else(|| panic!("no Content-Length: {res:?}"))
        .parse()
        .expect("numeric Content-Length");
    assert_eq!(length, res.body.len(), "Content-Length vs body: {res:?}");
    assert!(
        !res.body.trim().is_empty() && res.body.len() < 1024,
        "expected a short text body: {res:?}"
    );
    assert!(
        res.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "expected a text/plain body: {res:?}"
    );
    res
}

/// A masked client text frame (RFC 6455 5.3).
fn masked_text(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// An unmasked server frame with `opcode`, FIN set.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A valid `Sec-WebSocket-Key`: the base64 of 16 bytes.
fn is_ws_key(k: &str) -> bool {
    k.len() == 24
        && k.ends_with("==")
        && k[..22]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

// ---------------------------------------------------------------------------------------------
// A backend that misbehaves as its path asks: `/b/{case}`.
// ---------------------------------------------------------------------------------------------

/// What the scripted backend does for `case` once it has read the gateway's request head.
async fn misbehave(mut s: TcpStream, head: String, case: &str) {
    let key = Head::parse(&head).one("Sec-WebSocket-Key").to_string();
    let accept = derive_accept_key(key.as_bytes());
    let ok_101 = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    let answer = match case {
        "status-403" => "HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nno way\n".into(),
        "status-404" => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        "status-401" => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\
                         Content-Length: 0\r\n\r\n"
            .into(),
        "two-protocols" => {
            format!("{ok_101}Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n\r\n")
        }
        "status-500" => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".into(),
        "status-503" => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
        "garbage" => "hello\r\n\r\n".to_string(),
        "close-before-answer" => String::new(),
        "close-mid-head" => "HTTP/1.1 101 Switching Protocols\r\nUpgrade: web".into(),
        // The accept value for the client's own key: what a proxy that forwarded the key
        // would see, and wrong for the gateway's fresh key.
        "wrong-accept" => format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {CLIENT_ACCEPT}\r\n\r\n"
        ),
        "missing-accept" => {
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .into()
        }
        "wrong-upgrade" => format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ),
        "extension" => format!("{ok_101}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
        "protocol-not-offered" => format!("{ok_101}Sec-WebSocket-Protocol: other\r\n\r\n"),
        other => panic!("scripted backend: unknown case {other:?}"),
    };
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.flush().await;
    // Dropping `s` closes the connection.
}

/// One gateway (default limits) in front of the scripted backend, shared by the tests.
fn scripted_gateway() -> SocketAddr {
    static GW: OnceLock<SocketAddr> = OnceLock::new();
    *GW.get_or_init(|| {
        let backend = spawn_backend(|mut s| async move {
            let head = read_head(&mut s).await;
            let target = head.split_whitespace().nth(1).unwrap_or_default();
            let case = target.rsplit('/').next().unwrap_or_default().to_string();
            misbehave(s, head, &case).await;
        });
        start_gateway(&route_json(
            "ws://127.0.0.1",
            backend.port(),
            "/b/{case}",
            "/b/{case}",
            "",
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// 1. What the backend sees
// ---------------------------------------------------------------------------------------------

/// A raw upgrade carrying every kind of header, sent to `/rooms/blue?x=1`.
const FULL_REQUEST: &str = "GET /rooms/blue?x=1 HTTP/1.1\r\n\
    Host: gw.example:8443\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade, X-Hop\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: https://app.example\r\n\
    Cookie: session=abc; theme=dark\r\n\
    Authorization: Bearer opaque-token\r\n\
    User-Agent: kairos-test/1.0\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Extensions: x-private-ext\r\n\
    X-Custom: 1\r\n\
    X-Forwarded-For: 10.1.2.3\r\n\
    X-Forwarded-Proto: https\r\n\
    X-Forwarded-Host: spoofed.example\r\n\
    X-Hop: 1\r\n\
    Keep-Alive: timeout=5\r\n\
    Proxy-Connection: keep-alive\r\n\
    TE: trailers\r\n\
    Trailer: X-Checksum\r\n\
    Transfer-Encoding: chunked\r\n\
    \r\n";

/// Sends [`FULL_REQUEST`] through a rooms gateway; returns what the backend saw, the gateway's
/// answer to the client, and the backend's port.
fn full_request_as_seen_by_backend() -> (Head, String, u16) {
    let (backend, rx) = request_recorder_with("Sec-WebSocket-Protocol: superchat\r\n");
    let gw = rooms_gateway(backend);
    run(async {
        let (_client, answer) = raw_upgrade(gw, FULL_REQUEST.as_bytes()).await;
        (next_request(&rx).await, answer, backend.port())
    })
}

#[test]
fn backend_sees_substituted_path_query_and_its_own_host() {
    let (head, answer, port) = full_request_as_seen_by_backend();
    assert_eq!(head.request_line, "GET /ws/blue?x=1 HTTP/1.1");
    assert_eq!(head.one("Host"), format!("127.0.0.1:{port}"));
    assert_eq!(head.one("Upgrade"), "websocket");
    assert_eq!(head.one("Sec-WebSocket-Version"), "13");
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
    assert!(
        answer.contains(&format!("Sec-WebSocket-Accept: {CLIENT_ACCEPT}\r\n")),
        "the client's accept must be derived from the client's key:\n{answer}"
    );
}

#[test]
fn backend_sees_end_to_end_headers_of_the_client() {
    let (head, _, _) = full_request_as_seen_by_backend();
    assert_eq!(head.one("Origin"), "https://app.example");
    assert_eq!(head.one("Cookie"), "session=abc; theme=dark");
    assert_eq!(head.one("Authorization"), "Bearer opaque-token");
    assert_eq!(head.one("User-Agent"), "kairos-test/1.0");
    assert_eq!(head.one("Sec-WebSocket-Protocol"), "chat, superchat");
    assert_eq!(head.one("X-Custom"), "1");
}

#[test]
fn backend_sees_forwarded_headers_set_by_the_gateway() {
    // The client (not a trusted proxy) sent X-Forwarded-For itself: it is replaced, not
    // extended (tests/trust_boundary.rs has the rest of the forwarding rules).
    let (head, _, _) = full_request_as_seen_by_backend();
    assert_eq!(head.one("X-Forwarded-For"), "127.0.0.1");
    assert_eq!(head.one("X-Forwarded-Proto"), "http");
    assert_eq!(head.one("X-Forwarded-Host"), "gw.example:8443");
    assert_eq!(head.one("X-Real-IP"), "127.0.0.1");
    assert_eq!(
        head.one("Forwarded"),
        r#"for=127.0.0.1;host="gw.example:8443";proto=http"#
    );
}

#[test]
fn backend_does_not_see_hop_by_hop_headers_or_unknown_extensions() {
    let (head, _, _) = full_request_as_seen_by_backend();
    assert_eq!(head.values("Connection"), ["Upgrade"], "{}", head.text);
    for name in [
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "X-Hop",
        "Sec-WebSocket-Extensions",
    ] {
        head.assert_absent(name);
    }
}

#[test]
fn ipv6_backend_gets_a_bracketed_host_header() {
    let Ok(listener) = smol::block_on(smol::net::TcpListener::bind("[::1]:0")) else {
        eprintln!("skipped: IPv6 loopback unavailable");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = smol::channel::unbounded();
    smol::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let head = read_head(&mut s).await;
            let _ = tx.send(Head::parse(&head)).await;
            smol::spawn(echo_ws(accept_after_head(s, &head, "").await)).detach();
        }
    })
    .detach();
    let gw = start_gateway(&route_json("ws://[::1]", port, "/ws/chat", "/ws", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        assert_eq!(next_request(&rx).await.one("Host"), format!("[::1]:{port}"));
        ws.send(Message::text("v6")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("v6"));
    });
}

#[test]
fn backend_gets_a_fresh_key_per_connection() {
    let (backend, rx) = request_recorder_with("");
    let gw = rooms_gateway(backend);
    run(async {
        let mut keys = Vec::new();
        for _ in 0..2 {
            let req = upgrade_request("/rooms/k", "");
            let (_client, answer) = raw_upgrade(gw, req.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
            keys.push(next_request(&rx).await.one("Sec-WebSocket-Key").to_string());
        }
        for k in &keys {
            assert!(is_ws_key(k), "not a valid key: {k:?}");
            assert_ne!(k, CLIENT_KEY, "the client's key was forwarded");
        }
        assert_ne!(keys[0], keys[1], "the same key was used twice");
    });
}

#[test]
fn websocket_client_without_forwarded_for_and_without_query() {
    let (backend, rx) = request_recorder_with("");
    let gw = rooms_gateway(backend);
    run(async {
        let (mut ws, _) = try_connect(gw, "/rooms/red", &[("X-Custom", "1")])
            .await
            .expect("upgrade through the gateway");
        let head = next_request(&rx).await;
        assert_eq!(head.request_line, "GET /ws/red HTTP/1.1");
        assert_eq!(head.one("X-Forwarded-For"), "127.0.0.1");
        assert_eq!(head.one("X-Forwarded-Proto"), "http");
        assert_eq!(head.one("X-Forwarded-Host"), gw.to_string());
        assert_eq!(head.one("X-Custom"), "1");
        ws.send(Message::text("ping?")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("ping?"));
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Subprotocol
// ---------------------------------------------------------------------------------------------

#[test]
fn backend_subprotocol_is_returned_to_the_client() {
    let (backend, rx) = request_recorder_with("Sec-WebSocket-Protocol: superchat\r\n");
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let offer = [("Sec-WebSocket-Protocol", "chat, superchat")];
        let (mut ws, res) = try_connect(gw, "/ws/chat", &offer)
            .await
            .expect("upgrade through the gateway");
        assert_eq!(
            next_request(&rx).await.one("Sec-WebSocket-Protocol"),
            "chat, superchat"
        );
        let chosen: Vec<_> = res
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(chosen, ["superchat"]);
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("hi"));
    });
}

#[test]
fn backend_choosing_a_subprotocol_not_offered_is_502() {
    let gw = scripted_gateway();
    run(async {
        let offer = [("Sec-WebSocket-Protocol", "chat, superchat")];
        assert_eq!(
            refused_status(gw, "/b/protocol-not-offered", &offer).await,
            502
        );
        // And when the client offered none at all.
        assert_refused(gw, "/b/protocol-not-offered", 502).await;
    });
}

#[test]
fn backend_101_hop_by_hop_headers_are_not_returned_to_the_client() {
    let (backend, rx) = request_recorder_with(
        "Connection: X-Internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=5\r\n\
         X-Backend: yes\r\n",
    );
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let req = upgrade_request("/ws/chat", "");
        let (_client, answer) = raw_upgrade(gw, req.as_bytes()).await;
        next_request(&rx).await;
        let answer = Head::parse(&answer);
        assert!(
            answer.request_line.starts_with("HTTP/1.1 101 "),
            "{answer:?}"
        );
        assert_eq!(answer.one("X-Backend"), "yes");
        assert_eq!(answer.one("Upgrade"), "websocket");
        assert_eq!(answer.values("Connection"), ["Upgrade"], "{}", answer.text);
        answer.assert_absent("Keep-Alive");
        answer.assert_absent("X-Internal");
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Backend failures before the upgrade
// ---------------------------------------------------------------------------------------------

#[test]
fn closed_backend_port_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // dropped: nothing listens there any more
    let gw = start_gateway(&config_json(([127, 0, 0, 1], port).into(), "", ""));
    run(async {
        assert_refused(gw, "/ws/chat", 502).await;
    });
}

/// A backend that accepts TCP and never answers; reports on the channel when the gateway closes
/// the connection.
fn silent_backend() -> (SocketAddr, Receiver<()>) {
    let (tx, closed) = smol::channel::unbounded::<()>();
    let backend = spawn_backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = [0u8; 256];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(()).await;
        }
    });
    (backend, closed)
}

const SHORT_CONNECT_TIMEOUT: &str = r#""limits": {"backend_connect_timeout_ms": 300},"#;

#[test]
fn silent_backend_is_504_after_the_connect_timeout() {
    let (backend, closed) = silent_backend();
    let gw = start_gateway(&config_json(backend, SHORT_CONNECT_TIMEOUT, ""));
    run(async {
        let start = Instant::now();
        assert_eq!(refused_status(gw, "/ws/chat", &[]).await, 504);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "504 after {took:?}; expected just after the 300 ms backend_connect_timeout_ms"
        );
        within(STEP, closed.recv())
            .await
            .expect("the gateway kept the silent backend connection open")
            .unwrap();
        let res = assert_refused(gw, "/ws/chat", 504).await;
        assert!(!res.head.contains(" 101 "), "{res:?}");
    });
}

#[test]
#[cfg(feature = "tls-backend")]
fn wss_backend_that_never_completes_tls_is_504() {
    let (backend, closed) = silent_backend();
    let gw = start_gateway(&route_json(
        "wss://localhost",
        backend.port(),
        "/ws/chat",
        "/ws",
        SHORT_CONNECT_TIMEOUT,
    ));
    run(async {
        assert_refused(gw, "/ws/chat", 504).await;
        within(STEP, closed.recv())
            .await
            .expect("the gateway kept the stalled TLS connection open")
            .unwrap();
    });
}

#[test]
fn backend_403_is_passed_to_the_client() {
    run(assert_refused(scripted_gateway(), "/b/status-403", 403));
}

#[test]
fn backend_404_is_passed_to_the_client() {
    run(assert_refused(scripted_gateway(), "/b/status-404", 404));
}

#[test]
fn backend_401_is_passed_with_its_www_authenticate() {
    let res = run(assert_refused(scripted_gateway(), "/b/status-401", 401));
    assert_eq!(
        res.header("WWW-Authenticate").as_deref(),
        Some("Basic realm=\"x\"")
    );
}

#[test]
fn backend_choosing_two_subprotocols_is_502() {
    let gw = scripted_gateway();
    run(async {
        let status = refused_status(
            gw,
            "/b/two-protocols",
            &[("Sec-WebSocket-Protocol", "chat")],
        );
        assert_eq!(status.await, 502);
    });
}

#[test]
fn error_bodies_do_not_reveal_the_backend_address() {
    let res = run(assert_refused(scripted_gateway(), "/b/garbage", 502));
    assert!(!res.body.contains("127.0.0.1"), "{res:?}");
    assert!(!res.body.contains("ws://"), "{res:?}");
}

#[test]
fn backend_500_is_502() {
    run(assert_refused(scripted_gateway(), "/b/status-500", 502));
}

#[test]
fn backend_503_is_502() {
    run(assert_refused(scripted_gateway(), "/b/status-503", 502));
}

#[test]
fn backend_garbage_answer_is_502() {
    run(assert_refused(scripted_gateway(), "/b/garbage", 502));
}

#[test]
fn backend_closing_before_answering_is_502() {
    run(assert_refused(
        scripted_gateway(),
        "/b/close-before-answer",
        502,
    ));
}

#[test]
fn backend_closing_mid_response_head_is_502() {
    run(assert_refused(scripted_gateway(), "/b/close-mid-head", 502));
}

#[test]
fn backend_101_with_wrong_accept_is_502() {
    run(assert_refused(scripted_gateway(), "/b/wrong-accept", 502));
}

#[test]
fn backend_101_without_accept_is_502() {
    run(assert_refused(scripted_gateway(), "/b/missing-accept", 502));
}

#[test]
fn backend_101_upgrading_to_another_protocol_is_502() {
    run(assert_refused(scripted_gateway(), "/b/wrong-upgrade", 502));
}

#[test]
fn backend_101_with_unoffered_extension_is_502() {
    run(assert_refused(scripted_gateway(), "/b/extension", 502));
}

// ---------------------------------------------------------------------------------------------
// 4. Bytes in the same write as a handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn backend_frames_in_the_same_write_as_its_101_reach_the_client() {
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let frames = [server_frame(0x1, b"early"), server_frame(0x2, &big)].concat();
    let backend = spawn_backend(move |mut s| {
        let frames = frames.clone();
        async move {
            let head = Head::parse(&read_head(&mut s).await);
            let accept = derive_accept_key(head.one("Sec-WebSocket-Key").as_bytes());
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            out.extend_from_slice(&frames);
            s.write_all(&out).await.expect("write 101 and frames");
            let ws = async_tungstenite::WebSocketStream::from_raw_socket(
                s,
                async_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            echo_ws(ws).await;
        }
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        assert_eq!(next_data(&mut ws).await, Message::text("early"));
        assert_eq!(next_data(&mut ws).await, Message::binary(big.clone()));
        ws.send(Message::text("after")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("after"));
    });
}

#[test]
fn client_frame_in_the_same_write_as_its_upgrade_reaches_the_backend() {
    let gw = echo_gateway();
    run(async {
        let mut req = upgrade_request("/ws/chat", "").into_bytes();
        req.extend_from_slice(&masked_text(b"hello", [0x37, 0xfa, 0x21, 0x3d]));
        let (mut s, answer) = raw_upgrade(gw, &req).await;
        assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
        let mut frame = [0u8; 7];
        within(STEP, s.read_exact(&mut frame))
            .await
            .expect("no echo of the early frame in time")
            .expect("read echoed frame");
        assert_eq!(frame, *b"\x81\x05hello");
    });
}

// ---------------------------------------------------------------------------------------------
// 5. wss:// backends
// ---------------------------------------------------------------------------------------------

/// A TLS echo backend for `localhost` with a fresh CA. Each TLS handshake's outcome is reported
/// on `handshakes`.
struct TlsBackend {
    addr: SocketAddr,
    ca_pem: String,
    handshakes: Receiver<Result<(), String>>,
}

fn tls_echo_backend() -> TlsBackend {
    let pki = pki();
    let acceptor = pki.acceptor();
    let (tx, handshakes) = smol::channel::unbounded();
    let addr = spawn_backend(move |tcp| {
        let acceptor = acceptor.clone();
        let tx: Sender<Result<(), String>> = tx.clone();
        async move {
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    let _ = tx.send(Ok(())).await;
                    kairos_gateway::echo::handle(tls).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                }
            }
        }
    });
    TlsBackend {
        addr,
        ca_pem: pki.ca_pem,
        handshakes,
    }
}

/// Starts a gateway for `json` after writing `backend`'s CA to a file that its
/// `"tls": {"ca_file": ...}` member (given for `CA` in `json`) names.
fn with_ca_file(backend: &TlsBackend, json: &str) -> SocketAddr {
    static N: AtomicU64 = AtomicU64::new(0);
    let ca_path = std::env::temp_dir().join(format!(
        "kairos-upstream-test-{}-{}-ca.pem",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&ca_path, &backend.ca_pem).unwrap();
    let path_json = serde_json::to_string(ca_path.to_str().unwrap()).unwrap();
    let gw = start_gateway(&json.replace("CA", &format!(r#""tls": {{"ca_file": {path_json}}},"#)));
    // The CA is loaded with the config; the file is not needed any more.
    let _ = std::fs::remove_file(&ca_path);
    gw
}

fn wss_route(backend: &TlsBackend, route_extra: &str) -> String {
    route_json(
        "wss://localhost",
        backend.addr.port(),
        "/ws/chat",
        "/ws",
        "CA",
    )
    .replace(
        r#""methods": ["GET"] }"#,
        &format!(r#""methods": ["GET"] {route_extra} }}"#),
    )
}

#[test]
#[cfg(feature = "tls-backend")]
fn wss_backend_with_ca_file_echoes() {
    let backend = tls_echo_backend();
    let gw = with_ca_file(&backend, &wss_route(&backend, ""));
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        let tls = within(STEP, backend.handshakes.recv()).await.unwrap();
        assert_eq!(tls, Ok(Ok(())));
        ws.send(Message::text("over tls")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("over tls"));
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::binary(vec![1u8, 2, 3]));
    });
}

#[test]
#[cfg(feature = "tls-backend")]
fn wss_backend_with_unknown_ca_is_502() {
    let backend = tls_echo_backend();
    let gw = start_gateway(&wss_route(&backend, "").replace("CA", ""));
    run(async {
        assert_refused(gw, "/ws/chat", 502).await;
        // The refusal came from the TLS handshake, which the gateway broke off.
        for _ in 0..2 {
            let tls = within(STEP, backend.handshakes.recv())
                .await
                .expect("the backend saw no TLS handshake")
                .unwrap();
            assert!(tls.is_err(), "TLS handshake unexpectedly succeeded");
        }
    });
}

#[test]
#[cfg(feature = "tls-backend")]
fn wss_backends_are_health_checked_over_tls() {
    let checks = r#", "health_check": { "interval_ms": 100, "timeout_ms": 100,
        "unhealthy_threshold": 1, "healthy_threshold": 1 }"#;
    let trusted = tls_echo_backend();
    let gw = with_ca_file(&trusted, &wss_route(&trusted, checks));
    let untrusted = tls_echo_backend();
    let gw_untrusted = start_gateway(&wss_route(&untrusted, checks).replace("CA", ""));
    run(async {
        // With no client at all, the probes' TLS handshakes reach the backends.
        for _ in 0..2 {
            let tls = within(STEP, trusted.handshakes.recv()).await;
            assert_eq!(tls, Some(Ok(Ok(()))), "a probe's TLS handshake failed");
        }
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("checked")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("checked"));
        // A backend whose certificate the gateway does not trust fails its check: 503.
        let tls = within(STEP, untrusted.handshakes.recv()).await;
        assert!(matches!(tls, Some(Ok(Err(_)))), "{tls:?}");
        let deadline = std::time::Instant::now() + STEP;
        while refused_status(gw_untrusted, "/ws/chat", &[]).await != 503 {
            assert!(std::time::Instant::now() < deadline, "never marked down");
        }
    });
}

#[test]
fn permessage_deflate_is_negotiated_end_to_end_and_rsv1_frames_pass() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = smol::channel::unbounded::<(String, Vec<u8>)>();
    let backend = spawn_backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let head = read_head(&mut s).await;
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .to_string();
            let accept =
                async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let res = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
            );
            s.write_all(res.as_bytes()).await.unwrap();
            let mut frame = vec![0u8; 2 + 4 + 3];
            s.read_exact(&mut frame).await.unwrap();
            let _ = tx.send((head, frame)).await;
        }
    });
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut s = smol::net::TcpStream::connect(gw).await.unwrap();
        let offer =
            "Sec-WebSocket-Extensions: x-unknown, permessage-deflate; client_max_window_bits\r\n";
        s.write_all(upgrade_request("/ws/chat", offer).as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            "{head}"
        );
        // A compressed (RSV1) text frame: passed through as is, payload untouched.
        let key = [1u8, 2, 3, 4];
        let payload = [0x4a ^ 1, 0x01 ^ 2, 3];
        let mut f = vec![0xc1, 0x83];
        f.extend_from_slice(&key);
        f.extend_from_slice(&payload);
        s.write_all(&f).await.unwrap();
        let (backend_head, got) = within(STEP, rx.recv()).await.unwrap().unwrap();
        assert!(
            backend_head.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            ),
            "{backend_head}"
        );
        assert!(!backend_head.contains("x-unknown"), "{backend_head}");
        assert_eq!(got[0], 0xc1, "RSV1 and opcode kept");
        assert_eq!(got[1], 0x83, "masked, 3 bytes");
        let mut plain = got[6..].to_vec();
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= got[2 + i % 4];
        }
        assert_eq!(plain, [0x4a, 0x01, 0x00]);
    });
}
