//! Bad input before the upgrade: each malformed, oversized or odd request gets a defined answer
//! (an exact status, or a defined WebSocket outcome), and the same gateway keeps serving: after
//! every bad client, a normal client connects and gets an echo.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use smol::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A normal client still connects through `gw` and gets its message echoed.
async fn assert_serves(gw: SocketAddr) {
    let mut ws = connect(gw, "/ws/chat").await;
    ws.send(Message::text("still serving")).await.expect("send");
    assert_eq!(next_data(&mut ws).await, Message::text("still serving"));
}

/// `req` gets exactly `status` with a body saying why, then the gateway still serves.
async fn assert_status(gw: SocketAddr, what: &str, req: &[u8], status: u16) {
    let r = raw_http_while_writing(gw, req).await;
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(!r.body.trim().is_empty(), "{what}: the body must say why");
    assert_serves(gw).await;
}

/// A valid upgrade request for `/ws/chat` with `insert` (raw header lines, each ending in
/// `\r\n`) placed before the final empty line.
fn upgrade_with(insert: &[u8]) -> Vec<u8> {
    let mut req = upgrade_request("/ws/chat", "").into_bytes();
    let at = req.len() - 2;
    req.splice(at..at, insert.iter().copied());
    req
}

/// A masked client frame (FIN set) with a payload under 126 bytes.
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads an answer head from `s`; returns its status, the stream, and what was read past it.
async fn read_answer_head(mut s: TcpStream) -> (u16, TcpStream, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = within(STEP, s.read(&mut chunk))
            .await
            .expect("no answer head in time")
            .expect("read answer");
        assert!(n > 0, "closed before an answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    (parse_raw(&buf[..end]).status, s, buf[end..].to_vec())
}

/// `req` with the first `from` replaced by `to` (bytes: `to` need not be UTF-8).
fn replace_bytes(req: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = req
        .windows(from.len())
        .position(|w| w == from)
        .expect("text to replace");
    [&req[..at], to, &req[at + from.len()..]].concat()
}

/// Sends `bytes`, expects 101, and returns the client WebSocket over that connection.
async fn upgraded(gw: SocketAddr, bytes: &[u8]) -> Ws {
    let mut s = TcpStream::connect(gw).await.expect("tcp connect");
    s.write_all(bytes).await.expect("write");
    let (status, s, rest) = read_answer_head(s).await;
    assert_eq!(status, 101, "{:?}", String::from_utf8_lossy(bytes));
    WebSocketStream::from_partially_read(s, rest, Role::Client, None).await
}

// ---------------------------------------------------------------------------------------------
// Malformed heads: 400
// ---------------------------------------------------------------------------------------------

#[test]
fn request_line_garbage_is_400() {
    let gw = echo_gateway();
    run(async {
        let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
        let cases: [(&str, &[u8]); 6] = [
            ("TLS hello", tls_hello),
            ("no version", b"GET /ws/chat\r\nHost: x\r\n\r\n"),
            ("bad version", b"GET /ws/chat HTTP/9.9\r\nHost: x\r\n\r\n"),
            ("extra word", b"GET /ws/chat HTTP/1.1 x\r\nHost: x\r\n\r\n"),
            (
                "leading space",
                b" GET /ws/chat HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            ("two spaces", b"GET  /ws/chat HTTP/1.1\r\nHost: x\r\n\r\n"),
        ];
        for (what, req) in cases {
            assert_status(gw, what, req, 400).await;
        }
    });
}

#[test]
fn header_garbage_is_400() {
    let gw = echo_gateway();
    run(async {
        let cases: [(&str, &[u8]); 6] = [
            ("no colon", b"X-No-Colon websocket\r\n"),
            ("control in name", b"X-\x01Bad: v\r\n"),
            ("space before colon", b"X-Space : v\r\n"),
            ("empty name", b": v\r\n"),
            ("obs-fold", b"X-Fold: a\r\n  b\r\n"),
            ("bare CR in value", b"X-Cr: a\rb\r\n"),
        ];
        for (what, line) in cases {
            assert_status(gw, what, &upgrade_with(line), 400).await;
        }
    });
}

#[test]
fn nul_bytes_are_400() {
    let gw = echo_gateway();
    run(async {
        let line = upgrade_request("/ws/\0chat", "").into_bytes();
        assert_status(gw, "NUL in the target", &line, 400).await;
        let line = upgrade_request("/ws/chat", "").replacen("GET", "G\0T", 1);
        assert_status(gw, "NUL in the method", line.as_bytes(), 400).await;
        let req = upgrade_with(b"X-Nul: a\0b\r\n");
        assert_status(gw, "NUL in a header value", &req, 400).await;
    });
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    // RFC 9112 2.2: a recipient MAY recognise a single LF as a line terminator (and ignore a
    // preceding CR). httparse does, so an all-LF head, or a mixed one, is a valid upgrade.
    let gw = echo_gateway();
    run(async {
        let crlf = upgrade_request("/ws/chat", "");
        let lf = crlf.replace("\r\n", "\n");
        let mixed = crlf.replacen("\r\n", "\n", 2);
        for req in [lf, mixed] {
            let mut ws = upgraded(gw, req.as_bytes()).await;
            ws.send(Message::text("lf")).await.expect("send");
            assert_eq!(next_data(&mut ws).await, Message::text("lf"));
        }
        // A bare CR is no line end (RFC 9112 2.2: invalid, or replaced by SP).
        let bare_cr = crlf.replacen("\r\n", "\r", 2);
        assert_status(gw, "bare CR line end", bare_cr.as_bytes(), 400).await;
    });
}

#[test]
fn duplicate_websocket_key_is_400() {
    let gw = echo_gateway();
    run(async {
        let same = upgrade_with(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
        let other = upgrade_with(b"sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n");
        for (what, req) in [("same key twice", same), ("two keys", other)] {
            let r = raw_http_while_writing(gw, &req).await;
            assert_eq!(r.status, 400, "{what}: {r:?}");
            assert!(r.body.contains("Sec-WebSocket-Key"), "{what}: {r:?}");
            assert_serves(gw).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Sizes: 431
// ---------------------------------------------------------------------------------------------

#[test]
fn ten_thousand_headers_are_431() {
    let gw = echo_gateway();
    run(async {
        let lines: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_status(gw, "10 000 headers", &upgrade_with(lines.as_bytes()), 431).await;
        // Over 100 headers is 431 even when the head is well under max_request_head_bytes.
        let lines = "a:b\r\n".repeat(150);
        assert!(lines.len() < 4096);
        assert_status(
            gw,
            "150 small headers",
            &upgrade_with(lines.as_bytes()),
            431,
        )
        .await;
    });
}

#[test]
fn one_mib_header_is_431() {
    let gw = echo_gateway();
    run(async {
        let line = format!("X-Big: {}\r\n", "a".repeat(1 << 20));
        assert_status(gw, "1 MiB header", &upgrade_with(line.as_bytes()), 431).await;
    });
}

// ---------------------------------------------------------------------------------------------
// Method, version, target
// ---------------------------------------------------------------------------------------------

#[test]
fn method_version_and_target_forms() {
    let gw = echo_gateway();
    run(async {
        let req = upgrade_request("/ws/chat", "");
        let post = req.replacen("GET", "POST", 1);
        assert_status(gw, "POST with Upgrade", post.as_bytes(), 405).await;
        let http10 = req.replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_status(gw, "HTTP/1.0", http10.as_bytes(), 400).await;
        // RFC 9112 3.2.2: a server must accept the absolute form; its path is what routes.
        for target in [
            "http://gw.test/ws/chat",
            "HTTP://gw.test:80/ws/chat",
            "ws://x/ws/chat",
        ] {
            let mut ws = upgraded(gw, upgrade_request(target, "").as_bytes()).await;
            ws.send(Message::text(target)).await.expect("send");
            assert_eq!(next_data(&mut ws).await, Message::text(target));
        }
        let elsewhere = upgrade_request("http://gw.test/ws/other", "");
        assert_status(gw, "absolute-form, unknown path", elsewhere.as_bytes(), 404).await;
        let no_path = upgrade_request("http://gw.test", "");
        assert_status(gw, "absolute-form without a path", no_path.as_bytes(), 404).await;
        let star = upgrade_request("*", "");
        assert_status(gw, "asterisk-form", star.as_bytes(), 400).await;
        let options = star.replacen("GET", "OPTIONS", 1);
        assert_status(gw, "OPTIONS *", options.as_bytes(), 400).await;
        // RFC 9112 2.2: an empty line before the request line may be ignored (httparse does).
        let mut ws = upgraded(gw, format!("\r\n{req}").as_bytes()).await;
        ws.send(Message::text("after CRLF")).await.expect("send");
        assert_eq!(next_data(&mut ws).await, Message::text("after CRLF"));
    });
}

/// `/ws/chat` and `/rooms/{room}` to an echo backend, `/ws/admin` to a backend that counts
/// the connections it gets.
fn dots_gateway() -> (SocketAddr, Arc<AtomicUsize>) {
    let echo = start_echo();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let admin = spawn_backend(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() && ws.send(m).await.is_err() {
                    break;
                }
            }
        }
    });
    let route = |backend: SocketAddr, ext: &str, int: &str| {
        format!(
            r#"{{ "protocol": "websocket", "methods": ["GET"],
                 "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}],
                 "external_path": "{ext}", "internal_path": "{int}" }}"#,
            backend.port()
        )
    };
    let json = format!(
        r#"{{ "version": 1, "routers": [ {}, {}, {} ] }}"#,
        route(echo, "/ws/chat", "/ws"),
        route(admin, "/ws/admin", "/ws"),
        route(echo, "/rooms/{room}", "/ws/{room}"),
    );
    (start_gateway(&json), hits)
}

#[test]
fn dot_and_percent_encoded_paths_are_404() {
    let (gw, admin_hits) = dots_gateway();
    run(async {
        for path in [
            "/ws/%2e%2e/admin",
            "/ws/%2E%2e/ws/admin",
            "/ws/chat/../admin",
            "/ws/chat/../chat",
            "/ws/./chat",
            "/ws/chat/%2e%2e/admin",
            "/rooms/..",
            "/rooms/%2e%2E",
            "/rooms/.",
        ] {
            let req = upgrade_request(path, "");
            assert_status(gw, path, req.as_bytes(), 404).await;
        }
        assert_eq!(
            admin_hits.load(Ordering::SeqCst),
            0,
            "a refused path reached /ws/admin"
        );
        // The admin route itself works (so the counter above is live), and `%61dmin` is
        // `admin` (RFC 3986 6.2.2.2): the same route, not a miss.
        for (n, path) in ["/ws/admin", "/ws/%61dmin"].into_iter().enumerate() {
            let mut ws = connect(gw, path).await;
            ws.send(Message::text("admin")).await.expect("send");
            assert_eq!(next_data(&mut ws).await, Message::text("admin"));
            assert_eq!(admin_hits.load(Ordering::SeqCst), n + 1, "{path}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Header values that are not UTF-8
// ---------------------------------------------------------------------------------------------

#[test]
fn non_utf8_header_values() {
    let gw = echo_gateway();
    run(async {
        // obs-text in an end-to-end header (RFC 9110 5.5: opaque bytes) is no reason to refuse:
        // the upgrade works (the raw bytes are copied to the backend's request).
        let req = upgrade_with(b"X-Latin1: caf\xe9 \xff\xfe\r\n");
        let mut ws = upgraded(gw, &req).await;
        ws.send(Message::text("obs-text")).await.expect("send");
        assert_eq!(next_data(&mut ws).await, Message::text("obs-text"));
        // In a header the gateway must read, it is no valid value.
        let req = upgrade_request("/ws/chat", "").into_bytes();
        let bad_key = replace_bytes(&req, b"jZQ==", b"jZ\xff==");
        assert_status(gw, "non-UTF-8 key", &bad_key, 400).await;
        let bad_host = replace_bytes(&req, b"gw.test", b"gw.t\xffst");
        assert_status(gw, "non-UTF-8 Host", &bad_host, 400).await;
        let bad_upgrade = replace_bytes(&req, b"websocket", b"websock\xf4t");
        assert_status(gw, "non-UTF-8 Upgrade", &bad_upgrade, 426).await;
    });
}

// ---------------------------------------------------------------------------------------------
// Bytes after the head
// ---------------------------------------------------------------------------------------------

#[test]
fn bytes_pipelined_after_the_head_are_websocket_bytes() {
    // The gateway hands whatever follows the head to the relay as the client's first WebSocket
    // bytes. A second HTTP request or junk is no valid client frame ("GE": RSV1, reserved
    // opcode 7, no mask bit; "\0\x01": continuation without a start, no mask bit): the client
    // gets a protocol close, 1002, after its 101.
    let gw = echo_gateway();
    run(async {
        let head = upgrade_request("/ws/chat", "");
        for extra in [
            &b"GET /ws/chat HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\x00\x01junk",
        ] {
            let req = [head.as_bytes(), extra].concat();
            let mut ws = upgraded(gw, &req).await;
            match next_msg(&mut ws).await {
                Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Protocol, "{f:?}"),
                m => panic!("expected close 1002 after {extra:?}, got {m:?}"),
            }
            assert_serves(gw).await;
        }
    });
}

#[test]
fn first_frame_before_the_101_is_relayed() {
    let gw = echo_gateway();
    run(async {
        let head = upgrade_request("/ws/chat", "");
        // Head and two frames in one write.
        let req = [
            head.as_bytes(),
            &masked(1, b"early"),
            &masked(2, b"\x01\x02"),
        ]
        .concat();
        let mut ws = upgraded(gw, &req).await;
        assert_eq!(next_data(&mut ws).await, Message::text("early"));
        assert_eq!(next_data(&mut ws).await, Message::binary(vec![1u8, 2]));
        // Head, then the frame in a second write, before reading anything.
        let mut s = TcpStream::connect(gw).await.expect("tcp connect");
        s.write_all(head.as_bytes()).await.expect("write head");
        s.write_all(&masked(1, b"right after"))
            .await
            .expect("write frame");
        let (status, s, rest) = read_answer_head(s).await;
        assert_eq!(status, 101);
        let mut ws = WebSocketStream::from_partially_read(s, rest, Role::Client, None).await;
        assert_eq!(next_data(&mut ws).await, Message::text("right after"));
        assert_serves(gw).await;
    });
}
