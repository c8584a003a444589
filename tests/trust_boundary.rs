//! The trust boundary, tried as an attacker would (issue 12): what a client sends can reach a
//! backend only on a route that lets it, only as the user its token says, and without its
//! token; the backend's view is compared with what the client sent. Real gateway, real
//! backend, real sockets.
// Helpers of the tests a build without every feature leaves out.
#![cfg_attr(not(full), allow(dead_code, unused_imports))]

mod common;

use std::net::SocketAddr;

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::AsyncWriteExt;
use serde_json::json;

const SECRET: &str = "trust-boundary-secret";

fn token(sub: &str) -> String {
    hs256_token(SECRET, &json!({ "sub": sub, "exp": unix_now() + 600 }))
}

/// `/ws/{room}` (public) and `/ws/admin` (`auth_required`) on the same recording backend, and
/// `/rooms/{room}` -> `/api/rooms/{room}/socket`.
fn confusable_gateway() -> (SocketAddr, smol::channel::Receiver<Head>) {
    let (backend, rx) = request_recorder();
    let json = format!(
        r#"{{ "version": 1, "jwt": {{ "secret": "{SECRET}" }}, "routers": [ {}, {}, {} ] }}"#,
        router(backend, "/ws/{room}", "/public/{room}", ""),
        router(backend, "/ws/admin", "/admin", r#""auth_required": true,"#),
        router(backend, "/rooms/{room}", "/api/rooms/{room}/socket", ""),
    );
    (start_gateway(&json), rx)
}

/// The status line's code of a raw upgrade request for `target` with `extra` header lines.
async fn status_of(gw: SocketAddr, target: &str, extra: &str) -> u16 {
    raw_http(gw, upgrade_request(target, extra).as_bytes())
        .await
        .status
}

#[test]
fn an_encoded_or_decorated_admin_path_never_reaches_the_backend_unauthenticated() {
    let (gw, rx) = confusable_gateway();
    run(async {
        // Each is /ws/admin to Go's net/http, Spring and others: the admin route or nothing.
        for target in ["/ws/%61dmin", "/ws/%61%64%6D%69%6E", "/ws/admi%6e"] {
            assert_eq!(status_of(gw, target, "").await, 401, "{target}");
        }
        for target in [
            "/ws/admin;x=1",
            "/ws/admin%3Bx=1",
            "/ws/admin%3bx=1",
            "/ws/x%2Fadmin",
            "/ws/x%5Cadmin",
            "/ws/admin%23",
            "/ws/admin%3F",
            "/ws/%2e%2e",
            "/ws/%00admin",
            "/rooms/x#",
            "/rooms/x%23y",
        ] {
            assert_eq!(status_of(gw, target, "").await, 404, "{target}");
        }
        assert_eq!(status_of(gw, "/ws/%zz", "").await, 400);
        // With a token, the admin route is reached, and the backend gets the normal form.
        let auth = format!("Authorization: Bearer {}\r\n", token("alice"));
        let (mut s, head) = raw_upgrade(gw, upgrade_request("/ws/%61dmin", &auth).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert_eq!(next_request(&rx).await.request_line, "GET /admin HTTP/1.1");
        let _ = s.close().await;
        // Public rooms get the normal form too (unreserved escapes decoded, others in
        // upper case, raw bytes that may not stand in a URI encoded).
        for (target, want) in [
            ("/ws/%7Eblue", "/public/~blue"),
            ("/ws/caf%c3%a9", "/public/caf%C3%A9"),
            ("/rooms/r%2d1?x=%3d", "/api/rooms/r-1/socket?x=%3D"),
        ] {
            let (mut s, head) = raw_upgrade(gw, upgrade_request(target, "").as_bytes()).await;
            assert!(head.starts_with("HTTP/1.1 101 "), "{target}: {head}");
            let line = next_request(&rx).await.request_line;
            assert_eq!(line, format!("GET {want} HTTP/1.1"), "{target}");
            let _ = s.close().await;
        }
        // Case is significant (RFC 3986): /ws/ADMIN is a public room, as documented.
        let (_s, head) = raw_upgrade(gw, upgrade_request("/ws/ADMIN", "").as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert_eq!(
            next_request(&rx).await.request_line,
            "GET /public/ADMIN HTTP/1.1"
        );
        assert!(rx.is_empty(), "a refused request reached the backend");
    });
}

/// Headers a client sends to pose as someone else, to smuggle a hop-by-hop header, or to steer
/// the backend.
const FORGED: &str = "X_User_Id: admin\r\nX-User-Id: admin\r\nx-user_id: admin\r\n\
    Forwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\n\
    X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
    X-Forwarded-Prefix: /admin\r\nExpect: 100-continue\r\nTE: trailers\r\nTrailer: X-Late\r\n\
    Proxy-Authorization: Basic YTpi\r\nContent-Length: 0\r\nX-Hop: 1\r\n\
    Connection: Upgrade, X-Hop\r\nX-Kept: yes\r\n";

fn identity_gateway(trusted: bool) -> (SocketAddr, smol::channel::Receiver<Head>) {
    let (backend, rx) = request_recorder();
    let proxies = if trusted {
        r#""server": { "trusted_proxies": ["127.0.0.1"] },"#
    } else {
        ""
    };
    let json = format!(
        r#"{{ {proxies} "version": 1,
              "jwt": {{ "secret": "{SECRET}", "forward_claims": {{ "sub": "X-User-Id" }} }},
              "routers": [ {} ] }}"#,
        router(backend, "/ws/chat", "/ws", r#""auth_required": true,"#)
    );
    (start_gateway(&json), rx)
}

#[test]
fn forged_identity_and_forwarding_headers_never_reach_the_backend() {
    let (gw, rx) = identity_gateway(false);
    run(async {
        let extra = format!("Authorization: Bearer {}\r\n{FORGED}", token("alice"));
        let (_s, head) = raw_upgrade(gw, upgrade_request("/ws/chat", &extra).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let seen = next_request(&rx).await;
        assert_eq!(seen.values("X-User-Id"), ["alice"], "{}", seen.text);
        for name in [
            "X_User_Id",
            "x-user_id",
            "X-Forwarded-Prefix",
            "Expect",
            "TE",
            "Trailer",
            "Proxy-Authorization",
            "Content-Length",
            "X-Hop",
        ] {
            seen.assert_absent(name);
        }
        let names = seen.text.lines().skip(1).filter_map(|l| l.split_once(':'));
        for (name, _) in names {
            assert!(!name.contains('_'), "a name with _ passed: {}", seen.text);
        }
        assert!(!seen.text.contains("6.6.6.6"), "{}", seen.text);
        assert!(!seen.text.contains("evil.example"), "{}", seen.text);
        assert_eq!(seen.one("X-Forwarded-For"), "127.0.0.1");
        assert_eq!(seen.one("X-Real-IP"), "127.0.0.1");
        assert_eq!(seen.one("X-Forwarded-Proto"), "http");
        assert_eq!(seen.one("X-Forwarded-Host"), "gw.test");
        assert_eq!(
            seen.one("Forwarded"),
            r#"for=127.0.0.1;host="gw.test";proto=http"#
        );
        assert_eq!(seen.one("X-Kept"), "yes", "end-to-end headers still pass");
    });
}

#[test]
fn a_trusted_proxy_keeps_its_forwarding_headers_and_this_hop_is_appended() {
    let (gw, rx) = identity_gateway(true);
    run(async {
        let extra = format!(
            "Authorization: Bearer {}\r\nX-Forwarded-For: 203.0.113.5\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example\r\n\
             X-Forwarded-Port: 443\r\nX-Real-IP: 203.0.113.5\r\n\
             Forwarded: for=203.0.113.5;proto=https\r\nX_User_Id: admin\r\n",
            token("alice")
        );
        let (_s, head) = raw_upgrade(gw, upgrade_request("/ws/chat", &extra).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let seen = next_request(&rx).await;
        assert_eq!(seen.one("X-Forwarded-For"), "203.0.113.5, 127.0.0.1");
        assert_eq!(seen.one("X-Forwarded-Proto"), "https");
        assert_eq!(seen.one("X-Forwarded-Host"), "app.example");
        assert_eq!(seen.one("X-Forwarded-Port"), "443");
        assert_eq!(seen.one("X-Real-IP"), "203.0.113.5");
        assert_eq!(
            seen.one("Forwarded"),
            r#"for=203.0.113.5;proto=https, for=127.0.0.1;host="gw.test";proto=http"#
        );
        // Identity is still the gateway's alone, whoever the peer is.
        assert_eq!(seen.values("X-User-Id"), ["alice"]);
        seen.assert_absent("X_User_Id");
    });
}

#[test]
fn a_host_header_that_is_not_a_host_is_refused() {
    let (gw, rx) = identity_gateway(false);
    run(async {
        let bad = b"GET /ws/chat HTTP/1.1\r\nHost: gw\"; for=6.6.6.6\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(raw_http(gw, bad).await.status, 400);
        assert!(rx.is_empty());
    });
}

#[test]
#[cfg(feature = "admin")]
fn interim_answers_are_skipped_and_never_open_a_breaker() {
    // One backend answers a 100 Continue before its 101 (aiohttp's way), the other two
    // interim answers.
    let (a, seen_a) = request_recorder_after("HTTP/1.1 100 Continue\r\n\r\n", "");
    let (b, seen_b) = request_recorder_after(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
        "",
    );
    let json = format!(
        r#"{{ "version": 1, "admin": {{ "host": "127.0.0.1", "port": 0 }},
              "routers": [ {{ "protocol": "websocket", "methods": ["GET"],
                "backends": [{{ "host": "ws://127.0.0.1", "port": {} }},
                             {{ "host": "ws://127.0.0.1", "port": {} }}],
                "circuit_breaker": {{ "failure_threshold": 2, "open_ms": 30000 }},
                "external_path": "/ws/chat", "internal_path": "/ws" }} ] }}"#,
        a.port(),
        b.port()
    );
    let gw = GatewayProcess::start(&json, None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        // Far more than the breaker's threshold, each asking for a 100 Continue.
        for i in 0..12 {
            let headers = [("Expect", "100-continue")];
            let (mut ws, _) = try_connect(addr, "/ws/chat", &headers)
                .await
                .unwrap_or_else(|e| panic!("client {i} refused: {e}"));
            ws.send(Message::text(format!("m{i}"))).await.expect("send");
            assert_eq!(next_data(&mut ws).await, Message::text(format!("m{i}")));
            let _ = ws.close(None).await;
        }
        let mut heads = Vec::new();
        for rx in [&seen_a, &seen_b] {
            while let Ok(head) = rx.try_recv() {
                heads.push(head);
            }
        }
        assert_eq!(heads.len(), 12, "both backends served, no retry needed");
        for head in &heads {
            head.assert_absent("Expect");
        }
        let ready = http_get(admin, "/readyz").await;
        assert_eq!(ready.status, 200, "{}", ready.body);
        let metrics = http_get(admin, "/metrics").await.body;
        assert!(!metrics.contains("status=\"502\""), "{metrics}");
    });
}

#[test]
fn no_token_reaches_a_log_line_or_a_backend_that_did_not_ask_for_it() {
    let (backend, rx) = request_recorder();
    // A closed port: every attempt on /ws/down fails and is logged at warn, URL and all.
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down_addr = down.local_addr().expect("addr");
    drop(down);
    let auth = r#""auth_required": true,"#;
    let json = format!(
        r#"{{ "version": 1, "jwt": {{ "secret": "{SECRET}" }}, "routers": [ {}, {}, {}, {} ] }}"#,
        router(backend, "/ws/chat", "/ws", auth),
        router(
            backend,
            "/ws/pass",
            "/ws",
            r#""auth_required": true, "pass_token_param": true,"#
        ),
        router(down_addr, "/ws/down", "/ws", auth),
        router(backend, "/ws/open", "/ws", ""),
    );
    let gw = GatewayProcess::start_with_log(&json, None, "trace");
    let addr = gw.addr();
    let t = token("alice");
    let signature = t.rsplit('.').next().expect("a signature").to_string();
    let forged = format!("{}.{}", &t[..t.rfind('.').expect("dot")], "c2lnbmF0dXJl");
    run(async {
        let (_a, head) = raw_upgrade(
            addr,
            upgrade_request(&format!("/ws/chat?room=1&access_token={t}"), "").as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let seen = next_request(&rx).await;
        assert_eq!(
            seen.request_line, "GET /ws?room=1 HTTP/1.1",
            "removed by default"
        );
        let bearer = format!("Authorization: Bearer {t}\r\n");
        let (_b, head) = raw_upgrade(addr, upgrade_request("/ws/chat", &bearer).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        next_request(&rx).await;
        // The route that asks for the parameter gets it; the logs still do not.
        let (_c, head) = raw_upgrade(
            addr,
            upgrade_request(&format!("/ws/pass?access_token={t}"), "").as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let want = format!("GET /ws?access_token={t} HTTP/1.1");
        assert_eq!(next_request(&rx).await.request_line, want);
        let down = format!("/ws/down?access_token={t}&x=1");
        assert_eq!(status_of(addr, &down, "").await, 502);
        let forged_auth = format!("Authorization: Bearer {forged}\r\n");
        assert_eq!(status_of(addr, "/ws/chat", &forged_auth).await, 401);
        let forged_query = format!("/ws/chat?access_token={forged}");
        assert_eq!(status_of(addr, &forged_query, "").await, 401);
        let (_d, head) = raw_upgrade(
            addr,
            upgrade_request(&format!("/ws/open?access_token={t}"), "").as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        next_request(&rx).await;
    });
    let log = gw.stop_and_collect().join("\n");
    let failed = format!("backend ws://{down_addr}/ws?x=1 unreachable");
    assert!(
        log.contains(&failed),
        "the failing attempt was logged:\n{log}"
    );
    assert!(
        log.contains("access_token=[redacted]"),
        "URLs are logged redacted:\n{log}"
    );
    for secret in [&t, &signature, &forged, "c2lnbmF0dXJl", SECRET] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
