//! The HTTP-level policies of issue 7, end to end: `allowed_origins` and `require_origin` per
//! route, and the `jwt` block's `forward_claims` and `strip_authorization`. A real gateway on
//! port 0, a real backend that records each request head it gets, real clients. Every rule is
//! shown from both sides of its line.

mod common;

use std::net::SocketAddr;

use async_tungstenite::tungstenite::Message;
use common::*;
use serde_json::{json, Value};
use smol::channel::Receiver;

/// The HMAC secret of the `jwt` blocks.
const SECRET: &str = "kairos-policies-secret-0123456789";

/// The route that needs a token, and the one that does not (same gateway, same backend).
const AUTH: &str = "/ws/chat";
const OPEN: &str = "/open";

// ---------------------------------------------------------------------------------------------
// Harness: a recording backend, configs, tokens, and the two outcomes.
// ---------------------------------------------------------------------------------------------

/// A gateway with two routes to `backend`: [`AUTH`] (auth required) and [`OPEN`], both with
/// the router fields `route_extra` (members with a trailing comma, or empty), and the
/// top-level `jwt` block `jwt` (a JSON object).
fn gateway(backend: SocketAddr, jwt: &str, route_extra: &str) -> SocketAddr {
    let route = |path: &str, auth: bool| {
        format!(
            r#"{{ "protocol": "websocket",
                  "backends": [{{ "host": "ws://127.0.0.1", "port": {port} }}],
                  "external_path": "{path}", "internal_path": "/ws", {route_extra}
                  "auth_required": {auth}, "methods": ["GET"] }}"#,
            port = backend.port()
        )
    };
    start_gateway(&format!(
        r#"{{ "version": 1, "jwt": {jwt}, "routers": [ {}, {} ] }}"#,
        route(AUTH, true),
        route(OPEN, false)
    ))
}

/// The `jwt` block with [`SECRET`] and `extra` members (e.g. `, "strip_authorization": true`).
fn jwt(extra: &str) -> String {
    format!(r#"{{ "secret": "{SECRET}" {extra} }}"#)
}

/// An HS256 token for `sub: alice`, valid for an hour, with the members of `extra` merged in.
fn token(extra: Value) -> String {
    let mut claims = json!({ "sub": "alice", "exp": unix_now() + 3600 });
    if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        c.extend(extra);
    }
    hs256_token(SECRET, &claims)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Connects to `path` with `headers`, checks that a message comes back through the backend,
/// and returns the head the backend received.
async fn pass(gw: SocketAddr, rx: &Receiver<Head>, path: &str, headers: &[(&str, &str)]) -> Head {
    let mut ws = match try_connect(gw, path, headers).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("{path} with {headers:?} was refused: {e}"),
    };
    ws.send(Message::text("through")).await.expect("send");
    assert_eq!(next_data(&mut ws).await, Message::text("through"));
    next_request(rx).await
}

/// Sends a raw upgrade for `path` with `extra` header lines (each ending in `\r\n`) and checks
/// the answer's status and that its body says `why`.
async fn refused(gw: SocketAddr, path: &str, extra: &str, status: u16, why: &str) {
    let res = raw_http(gw, upgrade_request(path, extra).as_bytes()).await;
    assert_eq!(res.status, status, "{path} {extra:?}: {res:?}");
    assert!(
        res.body.contains(why),
        "{path} {extra:?}: body {:?} does not say {why:?}",
        res.body
    );
}

/// Route fields listing two origins.
const TWO_ORIGINS: &str = r#""allowed_origins": ["https://app.example", "http://localhost:8080"],"#;

// ---------------------------------------------------------------------------------------------
// allowed_origins and require_origin
// ---------------------------------------------------------------------------------------------

#[test]
fn listed_origin_passes_and_unlisted_origin_gets_403() {
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(""), TWO_ORIGINS);
    run(async {
        for origin in ["https://app.example", "http://localhost:8080"] {
            let head = pass(gw, &rx, OPEN, &[("Origin", origin)]).await;
            assert_eq!(head.one("Origin"), origin, "the Origin is passed on");
        }
        refused(
            gw,
            OPEN,
            "Origin: https://evil.example\r\n",
            403,
            r#"origin "https://evil.example" is not allowed for this route"#,
        )
        .await;
        // Near misses are other origins: exact comparison, no prefix or suffix matching, and a
        // trailing slash or an explicit default port is not the listed text.
        for near in [
            "https://app.example.evil",
            "https://evil.app.example",
            "http://app.example",
            "https://app.example:443",
            "https://app.example/",
            "http://localhost:8081",
            "https://app.examp",
        ] {
            let extra = format!("Origin: {near}\r\n");
            refused(gw, OPEN, &extra, 403, "is not allowed for this route").await;
        }
        // The body says why in words a browser developer can act on.
        refused(gw, OPEN, "Origin: https://x.example\r\n", 403, "hijacking").await;
        // None of the refused requests reached the backend: the next head it sees is this one.
        let head = pass(gw, &rx, OPEN, &[("Origin", "https://app.example")]).await;
        assert_eq!(head.one("Origin"), "https://app.example");
    });
}

#[test]
fn origin_is_checked_before_the_token() {
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(""), TWO_ORIGINS);
    run(async {
        // No token and a foreign origin: the origin answers first (403, not 401).
        refused(
            gw,
            AUTH,
            "Origin: https://evil.example\r\n",
            403,
            "not allowed",
        )
        .await;
        let auth = format!("Authorization: {}\r\n", bearer(&token(json!({}))));
        let extra = format!("Origin: https://evil.example\r\n{auth}");
        refused(gw, AUTH, &extra, 403, "not allowed").await;
        // A listed origin goes on to the token check.
        refused(
            gw,
            AUTH,
            "Origin: https://app.example\r\n",
            401,
            "missing token",
        )
        .await;
        let t = bearer(&token(json!({})));
        let headers = [
            ("Origin", "https://app.example"),
            ("Authorization", t.as_str()),
        ];
        pass(gw, &rx, AUTH, &headers).await;
    });
}

#[test]
fn origin_match_is_case_insensitive() {
    let (backend, rx) = request_recorder();
    let origins = r#""allowed_origins": ["https://App.Example:8443"],"#;
    let gw = gateway(backend, &jwt(""), origins);
    run(async {
        for origin in [
            "https://app.example:8443",
            "HTTPS://APP.EXAMPLE:8443",
            "https://App.Example:8443",
        ] {
            pass(gw, &rx, OPEN, &[("Origin", origin)]).await;
        }
        refused(
            gw,
            OPEN,
            "Origin: https://APP.EXAMPLE\r\n",
            403,
            "not allowed",
        )
        .await;
    });
}

#[test]
fn star_allows_any_origin_and_no_list_allows_any_too() {
    for route_extra in [r#""allowed_origins": ["https://a.example", "*"],"#, ""] {
        let (backend, rx) = request_recorder();
        let gw = gateway(backend, &jwt(""), route_extra);
        run(async {
            for origin in [
                "https://evil.example",
                "http://a.example",
                "null",
                "anything",
            ] {
                pass(gw, &rx, OPEN, &[("Origin", origin)]).await;
            }
            pass(gw, &rx, OPEN, &[]).await;
        });
    }
}

#[test]
fn null_origin_is_refused_by_a_list() {
    // Sandboxed iframes and file: pages of any site send `Origin: null`: with a list it is
    // refused (it cannot be listed); only "*" (or no list) lets it through, as shown above.
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(""), TWO_ORIGINS);
    run(async {
        refused(
            gw,
            OPEN,
            "Origin: null\r\n",
            403,
            r#"origin "null" is not allowed"#,
        )
        .await;
        pass(gw, &rx, OPEN, &[("Origin", "https://app.example")]).await;
    });
}

#[test]
fn no_origin_passes_unless_require_origin() {
    // Without require_origin: non-browser clients (no Origin) pass, on a route with a list.
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(""), TWO_ORIGINS);
    run(async {
        let head = pass(gw, &rx, OPEN, &[]).await;
        head.assert_absent("Origin");
    });
    // With it: 403 without an Origin; a listed one passes, an unlisted one is still refused.
    let (backend, rx) = request_recorder();
    let extra = format!(r#"{TWO_ORIGINS} "require_origin": true,"#);
    let gw = gateway(backend, &jwt(""), &extra);
    run(async {
        refused(gw, OPEN, "", 403, "requires an Origin header").await;
        refused(
            gw,
            OPEN,
            "Origin: https://e.example\r\n",
            403,
            "not allowed",
        )
        .await;
        pass(gw, &rx, OPEN, &[("Origin", "http://localhost:8080")]).await;
    });
    // require_origin with any origin ("*"): any Origin passes, none is refused.
    let (backend, rx) = request_recorder();
    let extra = r#""allowed_origins": ["*"], "require_origin": true,"#;
    let gw = gateway(backend, &jwt(""), extra);
    run(async {
        pass(gw, &rx, OPEN, &[("Origin", "https://e.example")]).await;
        refused(gw, OPEN, "", 403, "requires an Origin header").await;
    });
}

#[test]
fn two_origin_headers_are_400_on_every_route() {
    for route_extra in [TWO_ORIGINS, ""] {
        let (backend, rx) = request_recorder();
        let gw = gateway(backend, &jwt(""), route_extra);
        run(async {
            let two = "Origin: https://app.example\r\nOrigin: https://app.example\r\n";
            refused(gw, OPEN, two, 400, "more than one Origin header").await;
            let two = "Origin: https://evil.example\r\norigin: https://app.example\r\n";
            refused(gw, OPEN, two, 400, "more than one Origin header").await;
            // One is fine.
            pass(gw, &rx, OPEN, &[("Origin", "https://app.example")]).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// jwt.forward_claims
// ---------------------------------------------------------------------------------------------

/// `forward_claims` for the claim tests.
const FORWARD: &str = r#", "forward_claims": { "sub": "X-User-Id", "tenant": "X-Tenant",
    "level": "X-Level", "admin": "X-Admin", "roles": "X-Roles", "ctx": "X-Ctx" }"#;

#[test]
fn forwarded_claims_reach_the_backend_as_headers() {
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(FORWARD), "");
    run(async {
        let t = token(json!({
            "tenant": "acme", "level": 3, "admin": false, "roles": ["r1", "r2"],
            "ctx": { "region": "eu", "ids": [1, 2] }
        }));
        let head = pass(gw, &rx, AUTH, &[("Authorization", &bearer(&t))]).await;
        assert_eq!(head.one("X-User-Id"), "alice", "a string as it is");
        assert_eq!(head.one("X-Tenant"), "acme");
        assert_eq!(head.one("X-Level"), "3", "a number as its JSON text");
        assert_eq!(head.one("X-Admin"), "false", "a boolean as its JSON text");
        assert_eq!(head.one("X-Roles"), r#"["r1","r2"]"#, "compact JSON");
        let ctx: Value = serde_json::from_str(head.one("X-Ctx")).expect("X-Ctx is JSON");
        assert_eq!(ctx, json!({ "region": "eu", "ids": [1, 2] }));
        assert!(!head.one("X-Ctx").contains(' '), "compact: {}", head.text);
        // A claim the token lacks sets no header.
        let t = token(json!({}));
        let head = pass(gw, &rx, AUTH, &[("Authorization", &bearer(&t))]).await;
        assert_eq!(head.one("X-User-Id"), "alice");
        for absent in ["X-Tenant", "X-Level", "X-Admin", "X-Roles", "X-Ctx"] {
            head.assert_absent(absent);
        }
    });
}

#[test]
fn client_sent_claim_headers_are_removed_on_auth_and_open_routes() {
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(FORWARD), "");
    run(async {
        let t = bearer(&token(json!({})));
        // Spoofed in any case, and for a claim the token does not have (tenant).
        let spoofed = [
            ("X-User-Id", "mallory"),
            ("x-user-id", "mallory2"),
            ("X-TENANT", "victim-corp"),
            ("X-Other", "kept"),
        ];
        let mut headers = spoofed.to_vec();
        headers.push(("Authorization", t.as_str()));
        let head = pass(gw, &rx, AUTH, &headers).await;
        assert_eq!(head.one("X-User-Id"), "alice", "only the claim's value");
        head.assert_absent("X-Tenant");
        assert_eq!(head.one("X-Other"), "kept", "other headers are untouched");
        // On the open route there are no claims: the spoofed headers are simply gone.
        let head = pass(gw, &rx, OPEN, &spoofed).await;
        head.assert_absent("X-User-Id");
        head.assert_absent("X-Tenant");
        assert_eq!(head.one("X-Other"), "kept");
        assert!(!head.text.contains("mallory"), "{}", head.text);
    });
}

#[test]
fn without_forward_claims_client_headers_of_those_names_pass() {
    // The other side of the line: the removal comes with forward_claims, not before.
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(""), "");
    run(async {
        let head = pass(gw, &rx, OPEN, &[("X-User-Id", "whoever")]).await;
        assert_eq!(head.one("X-User-Id"), "whoever");
    });
}

#[test]
fn claim_with_control_characters_is_not_forwarded() {
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(FORWARD), "");
    run(async {
        let cases = [
            "alice\r\nX-Injected: 1",
            "alice\nX-Injected: 1",
            "alice\rX-Injected: 1",
            "nul\u{0}byte",
            "esc\u{1b}[31m",
            "del\u{7f}",
        ];
        for sub in cases {
            let t = token(json!({ "sub": sub, "tenant": "acme" }));
            let b = bearer(&t);
            let headers = [("Authorization", b.as_str()), ("X-User-Id", "mallory")];
            let head = pass(gw, &rx, AUTH, &headers).await;
            head.assert_absent("X-User-Id");
            head.assert_absent("X-Injected");
            assert!(!head.text.contains("mallory"), "{}", head.text);
            assert_eq!(head.one("X-Tenant"), "acme", "the other claims still go");
        }
        // A tab is not a control character here; non-ASCII text passes as UTF-8.
        let t = token(json!({ "sub": "al\tice", "tenant": "Zürich" }));
        let head = pass(gw, &rx, AUTH, &[("Authorization", &bearer(&t))]).await;
        assert_eq!(head.one("X-User-Id"), "al\tice");
        assert_eq!(head.one("X-Tenant"), "Zürich");
    });
}

// ---------------------------------------------------------------------------------------------
// jwt.strip_authorization
// ---------------------------------------------------------------------------------------------

#[test]
fn strip_authorization_removes_the_header() {
    let (backend, rx) = request_recorder();
    let gw = gateway(backend, &jwt(r#", "strip_authorization": true"#), "");
    run(async {
        let t = token(json!({}));
        let head = pass(
            gw,
            &rx,
            &format!("{AUTH}?room=4&lang=fr"),
            &[("Authorization", &bearer(&t))],
        )
        .await;
        head.assert_absent("Authorization");
        assert_eq!(head.request_line, "GET /ws?room=4&lang=fr HTTP/1.1");
        // The token parameter goes wherever it is (with or without strip_authorization); the
        // rest of the query stays, in order.
        let cases = [
            (
                format!("{AUTH}?room=1&access_token={t}&lang=en"),
                "/ws?room=1&lang=en",
            ),
            (format!("{AUTH}?access_token={t}&room=2"), "/ws?room=2"),
            (format!("{AUTH}?room=3&access_token={t}"), "/ws?room=3"),
            (format!("{AUTH}?access_token={t}"), "/ws"),
            // A percent-encoded name is the same parameter (a backend may decode it).
            (format!("{AUTH}?access%5Ftoken={t}&room=5"), "/ws?room=5"),
        ];
        for (target, want) in &cases {
            let head = pass(gw, &rx, target, &[]).await;
            assert_eq!(
                head.request_line,
                format!("GET {want} HTTP/1.1"),
                "{target}"
            );
            assert!(!head.text.contains(&t), "the token leaked: {}", head.text);
        }
        // The open route has no token to strip: what the client sends there is its own.
        let head = pass(
            gw,
            &rx,
            &format!("{OPEN}?access_token=x&a=1"),
            &[("Authorization", "Basic dXNlcjpwdw==")],
        )
        .await;
        assert_eq!(head.one("Authorization"), "Basic dXNlcjpwdw==");
        assert_eq!(head.request_line, "GET /ws?access_token=x&a=1 HTTP/1.1");
    });
}

#[test]
fn by_default_the_header_is_forwarded_and_the_query_token_is_not() {
    for extra in ["", r#", "strip_authorization": false"#] {
        let (backend, rx) = request_recorder();
        let gw = gateway(backend, &jwt(extra), "");
        run(async {
            let t = token(json!({}));
            let head = pass(
                gw,
                &rx,
                &format!("{AUTH}?room=4"),
                &[("Authorization", &bearer(&t))],
            )
            .await;
            assert_eq!(head.one("Authorization"), bearer(&t));
            assert_eq!(head.request_line, "GET /ws?room=4 HTTP/1.1");
            let target = format!("{AUTH}?room=1&access_token={t}&lang=en");
            let head = pass(gw, &rx, &target, &[]).await;
            assert_eq!(head.request_line, "GET /ws?room=1&lang=en HTTP/1.1");
        });
    }
}

#[test]
fn pass_token_param_keeps_the_query_token_for_the_backend() {
    let (backend, rx) = request_recorder();
    let route = |path: &str, extra: &str| {
        format!(
            r#"{{ "protocol": "websocket", "methods": ["GET"], "auth_required": true, {extra}
                  "backends": [{{ "host": "ws://127.0.0.1", "port": {port} }}],
                  "external_path": "{path}", "internal_path": "/ws" }}"#,
            port = backend.port()
        )
    };
    let gw = start_gateway(&format!(
        r#"{{ "version": 1, "jwt": {}, "routers": [ {}, {} ] }}"#,
        jwt(""),
        route(AUTH, r#""pass_token_param": true,"#),
        route("/ws/other", "")
    ));
    run(async {
        let t = token(json!({}));
        let target = format!("{AUTH}?room=1&access_token={t}&lang=en");
        let head = pass(gw, &rx, &target, &[]).await;
        let want = format!("GET /ws?room=1&access_token={t}&lang=en HTTP/1.1");
        assert_eq!(
            head.request_line, want,
            "kept on the route that asks for it"
        );
        let target = format!("/ws/other?room=1&access_token={t}");
        let head = pass(gw, &rx, &target, &[]).await;
        assert_eq!(
            head.request_line, "GET /ws?room=1 HTTP/1.1",
            "removed elsewhere"
        );
    });
}
