//! JWT authentication, end to end: a real gateway on port 0 with an auth route and an open
//! route, a real backend, a real client. Tokens are made here with `jsonwebtoken`; the
//! asymmetric keys are the test-only pairs in `tests/fixtures/`.

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::Message;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The HMAC secret of the HS* configs.
const SECRET: &str = "kairos-test-secret-0123456789abcdef";

/// The route that needs a token, and the one that does not (same gateway, same backend).
const AUTH: &str = "/ws/chat";
const OPEN: &str = "/open";

// ---------------------------------------------------------------------------------------------
// Harness for this file: configs, tokens, and the two outcomes (echo, or 401 with a reason).
// ---------------------------------------------------------------------------------------------

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A config with the `jwt` block `jwt` (a JSON object) and two routes to `backend`:
/// `/ws/chat` (auth required) and `/open` (no auth), both to the backend's `/ws`.
fn auth_config(backend: SocketAddr, jwt: &str) -> String {
    format!(
        r#"{{ "version": 1, "jwt": {jwt}, "routers": [
            {{ "protocol": "websocket",
               "backends": [{{ "host": "ws://127.0.0.1", "port": {port}, "weight": 1 }}],
               "external_path": "{AUTH}", "internal_path": "/ws",
               "auth_required": true, "methods": ["GET"] }},
            {{ "protocol": "websocket",
               "backends": [{{ "host": "ws://127.0.0.1", "port": {port}, "weight": 1 }}],
               "external_path": "{OPEN}", "internal_path": "/ws",
               "methods": ["GET"] }} ] }}"#,
        port = backend.port()
    )
}

/// A gateway with the `jwt` block `jwt` in front of a fresh echo backend.
fn gateway(jwt: &str) -> SocketAddr {
    start_gateway(&auth_config(start_echo(), jwt))
}

/// A gateway with `{"secret": SECRET}` plus `extra` members of the jwt block (e.g.
/// `, "issuer": "x"`): the HS256 default for everything else.
fn hs_gateway(extra: &str) -> SocketAddr {
    gateway(&format!(r#"{{ "secret": "{SECRET}" {extra} }}"#))
}

#[cfg_attr(not(feature = "jwt-asymmetric"), allow(dead_code))]
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign token")
}

/// An HS256 token with `SECRET`.
fn hs256(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims,
    )
}

/// Claims valid for the next hour, plus `extra` (an object whose members are merged in).
fn claims(extra: Value) -> Value {
    let mut c = json!({ "sub": "alice", "exp": now() + 3600 });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

/// A good HS256 token.
fn good_token() -> String {
    hs256(claims(json!({})))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Base64url without padding (to hand-craft tokens jsonwebtoken refuses to make).
fn b64url(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Connects through the gateway to `path` with `headers`, and checks that a message comes back
/// from the echo backend.
async fn assert_echo(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) {
    let mut ws = match try_connect(gw, path, headers).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("{path} with {headers:?} was refused: {e}"),
    };
    ws.send(Message::text("hello through auth"))
        .await
        .expect("send");
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("hello through auth")
    );
}

/// Sends a raw upgrade request for `path` with `extra` header lines (each ending in `\r\n`)
/// and checks the answer is 401, `WWW-Authenticate: Bearer`, and a body containing `why`.
async fn assert_401(gw: SocketAddr, path: &str, extra: &str, why: &str) {
    let res = raw_http(gw, upgrade_request(path, extra).as_bytes()).await;
    assert_eq!(res.status, 401, "{path} {extra:?}: {res:?}");
    assert_eq!(
        res.header("WWW-Authenticate").as_deref(),
        Some("Bearer"),
        "{res:?}"
    );
    assert!(
        res.body.contains(why),
        "{path} {extra:?}: body {:?} does not say {why:?}",
        res.body
    );
}

/// [`assert_401`] for a token sent as `Authorization: Bearer <token>` on the auth route.
async fn assert_token_401(gw: SocketAddr, token: &str, why: &str) {
    assert_401(gw, AUTH, &format!("Authorization: Bearer {token}\r\n"), why).await;
}

// ---------------------------------------------------------------------------------------------
// Success
// ---------------------------------------------------------------------------------------------

#[test]
fn header_token_is_accepted_and_relayed() {
    let gw = hs_gateway("");
    run(async {
        let t = good_token();
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
    });
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let gw = hs_gateway("");
    run(async {
        let t = good_token();
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} {t}");
            assert_echo(gw, AUTH, &[("Authorization", &value)]).await;
        }
    });
}

#[test]
fn query_token_is_accepted_and_relayed() {
    let gw = hs_gateway("");
    run(async {
        let path = format!("{AUTH}?access_token={}", good_token());
        assert_echo(gw, &path, &[]).await;
    });
}

#[test]
fn open_route_on_the_same_gateway_needs_no_token() {
    let gw = hs_gateway("");
    run(async {
        assert_echo(gw, OPEN, &[]).await;
        // ...while the auth route on the very same gateway does.
        assert_eq!(refused_status(gw, AUTH, &[]).await, 401);
    });
}

#[test]
fn matching_issuer_and_audience_are_accepted() {
    let gw = hs_gateway(r#", "issuer": "https://id.test", "audience": "chat""#);
    run(async {
        let t = hs256(claims(json!({ "iss": "https://id.test", "aud": "chat" })));
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
        // `aud` may also be an array that contains the audience (RFC 7519 4.1.3).
        let t = hs256(claims(
            json!({ "iss": "https://id.test", "aud": ["other", "chat"] }),
        ));
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
    });
}

#[test]
fn required_claims_present_are_accepted() {
    let gw = hs_gateway(r#", "required_claims": ["sub", "room"]"#);
    run(async {
        let t = hs256(claims(json!({ "room": "lobby" })));
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
    });
}

#[test]
fn expired_within_leeway_is_accepted() {
    // Default leeway: 30 s. Ten seconds past `exp` is still fine.
    let gw = hs_gateway("");
    run(async {
        let t = hs256(json!({ "sub": "alice", "exp": now() - 10 }));
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
    });
}

#[test]
fn leeway_seconds_is_honoured() {
    // The same token as above, with leeway 0: expired. And a large leeway accepts older tokens.
    let strict = hs_gateway(r#", "leeway_seconds": 0"#);
    let lenient = hs_gateway(r#", "leeway_seconds": 600"#);
    run(async {
        let t = hs256(json!({ "sub": "alice", "exp": now() - 10 }));
        assert_token_401(strict, &t, "expired").await;
        let t = hs256(json!({ "sub": "alice", "exp": now() - 300 }));
        assert_echo(lenient, AUTH, &[("Authorization", &bearer(&t))]).await;
    });
}

/// A token signed with `key` under `alg` passes a gateway configured with the matching public
/// key file, and the same token with a tampered payload does not.
#[cfg(feature = "jwt-asymmetric")]
fn assert_public_key_accepted(public_file: &str, alg: Algorithm, key: EncodingKey) {
    let gw = gateway(&format!(
        r#"{{ "public_key_file": "tests/fixtures/{public_file}", "algorithms": ["{alg:?}"] }}"#
    ));
    run(async {
        let t = sign(alg, &key, &claims(json!({})));
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
        // A tampered payload under the real header and signature does not verify.
        assert_token_401(
            gw,
            &swap_payload(&t, &claims(json!({ "sub": "root" }))),
            "signature",
        )
        .await;
    });
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn rs256_with_public_key_file_is_accepted() {
    let key = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa key");
    assert_public_key_accepted("rsa_public.pem", Algorithm::RS256, key);
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn es256_with_public_key_file_is_accepted() {
    let key = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    assert_public_key_accepted("ec_public.pem", Algorithm::ES256, key);
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn eddsa_with_public_key_file_is_accepted() {
    let key = EncodingKey::from_ed_pem(&fixture("ed_private.pem")).expect("ed key");
    assert_public_key_accepted("ed_public.pem", Algorithm::EdDSA, key);
}

/// `token` with its payload replaced by `claims` (header and signature kept).
fn swap_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token has three parts");
    let payload = b64url(claims.to_string().as_bytes());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

// ---------------------------------------------------------------------------------------------
// What the backend sees
// ---------------------------------------------------------------------------------------------

#[test]
fn backend_gets_the_query_without_the_token() {
    // The token parameter is the gateway's: the backend gets the rest of the query, in order
    // (a route opts in to the parameter with `pass_token_param`, tests/policies_http.rs).
    let (backend, rx) = request_recorder();
    let gw = start_gateway(&auth_config(
        backend,
        &format!(r#"{{ "secret": "{SECRET}" }}"#),
    ));
    run(async {
        let t = good_token();
        let targets = [
            (
                format!("room=1&access_token={t}&lang=en"),
                "?room=1&lang=en",
            ),
            (format!("access_token={t}&room=2"), "?room=2"),
            (format!("access_token={t}"), ""),
            // A percent-encoded parameter name is the same parameter: checked, then removed.
            (format!("access%5Ftoken={t}&room=5"), "?room=5"),
        ];
        for (query, want) in &targets {
            assert_echo(gw, &format!("{AUTH}?{query}"), &[]).await;
            assert_eq!(
                next_request(&rx).await.request_line,
                format!("GET /ws{want} HTTP/1.1")
            );
        }
        // Token in the header: the query reaches the backend as it is.
        let target = format!("{AUTH}?room=4&lang=fr");
        assert_echo(gw, &target, &[("Authorization", &bearer(&t))]).await;
        assert_eq!(
            next_request(&rx).await.request_line,
            "GET /ws?room=4&lang=fr HTTP/1.1"
        );
        let target = format!("{AUTH}?access%5Ftoken=forged&room=6");
        assert_401(
            gw,
            &target,
            &format!("Authorization: Bearer {t}\r\n"),
            "both",
        )
        .await;
    });
}

#[test]
fn two_query_tokens_and_non_text_authorization_are_401() {
    let gw = hs_gateway("");
    run(async {
        let t = good_token();
        let target = format!("{AUTH}?access_token={t}&access_token={t}");
        assert_401(gw, &target, "", "more than one token").await;
        let mut req = upgrade_request(AUTH, "").into_bytes();
        let at = req.len() - 2;
        req.splice(
            at..at,
            b"Authorization: Bearer \xff\xfe\r\n".iter().copied(),
        );
        let res = raw_http(gw, &req).await;
        assert_eq!(res.status, 401, "{res:?}");
        assert!(res.body.contains("not valid text"), "{res:?}");
    });
}

#[test]
fn rejected_requests_never_reach_the_backend() {
    let (backend, rx) = request_recorder();
    let gw = start_gateway(&auth_config(
        backend,
        &format!(r#"{{ "secret": "{SECRET}" }}"#),
    ));
    run(async {
        let expired = hs256(json!({ "exp": now() - 3600 }));
        assert_eq!(refused_status(gw, AUTH, &[]).await, 401);
        assert_eq!(
            refused_status(gw, AUTH, &[("Authorization", &bearer(&expired))]).await,
            401
        );
        assert_eq!(
            refused_status(gw, &format!("{AUTH}?access_token=garbage&n=1"), &[]).await,
            401
        );
        // The first request line the backend ever sees is the accepted one.
        let target = format!("{AUTH}?n=2");
        assert_echo(gw, &target, &[("Authorization", &bearer(&good_token()))]).await;
        assert_eq!(next_request(&rx).await.request_line, "GET /ws?n=2 HTTP/1.1");
    });
}

// ---------------------------------------------------------------------------------------------
// 401: each reason
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_token_is_401() {
    let gw = hs_gateway("");
    run(async {
        assert_eq!(refused_status(gw, AUTH, &[]).await, 401);
        assert_401(gw, AUTH, "", "missing token").await;
        // An empty query parameter is no token either.
        assert_401(gw, &format!("{AUTH}?access_token="), "", "missing token").await;
    });
}

#[test]
fn expired_token_is_401() {
    let gw = hs_gateway("");
    run(async {
        let t = hs256(json!({ "sub": "alice", "exp": now() - 120 }));
        assert_eq!(
            refused_status(gw, AUTH, &[("Authorization", &bearer(&t))]).await,
            401
        );
        assert_token_401(gw, &t, "expired").await;
    });
}

#[test]
fn token_without_exp_is_401() {
    let gw = hs_gateway("");
    run(async {
        let t = hs256(json!({ "sub": "alice" }));
        assert_token_401(gw, &t, "missing the required claim \"exp\"").await;
    });
}

#[test]
fn not_yet_valid_token_is_401() {
    let gw = hs_gateway("");
    run(async {
        let t = hs256(claims(json!({ "nbf": now() + 600 })));
        assert_token_401(gw, &t, "not yet valid").await;
        // Within the leeway, nbf is fine.
        let t = hs256(claims(json!({ "nbf": now() + 5 })));
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
    });
}

#[test]
fn bad_signature_is_401() {
    let gw = hs_gateway("");
    run(async {
        let other = EncodingKey::from_secret(b"some-other-secret");
        let t = sign(Algorithm::HS256, &other, &claims(json!({})));
        assert_token_401(gw, &t, "bad token signature").await;
        // A good token whose payload was changed after signing.
        let t = swap_payload(&good_token(), &claims(json!({ "sub": "root" })));
        assert_token_401(gw, &t, "bad token signature").await;
    });
}

#[test]
fn wrong_or_missing_issuer_is_401() {
    let gw = hs_gateway(r#", "issuer": "https://id.test""#);
    run(async {
        let t = hs256(claims(json!({ "iss": "https://evil.test" })));
        assert_token_401(gw, &t, "issuer").await;
        let t = hs256(claims(json!({})));
        assert_token_401(gw, &t, "issuer").await;
    });
}

#[test]
fn wrong_or_missing_audience_is_401() {
    let gw = hs_gateway(r#", "audience": "chat""#);
    run(async {
        let t = hs256(claims(json!({ "aud": "billing" })));
        assert_token_401(gw, &t, "audience").await;
        let t = hs256(claims(json!({ "aud": ["billing", "admin"] })));
        assert_token_401(gw, &t, "audience").await;
        let t = hs256(claims(json!({})));
        assert_token_401(gw, &t, "audience").await;
    });
}

#[test]
fn missing_required_claim_is_401() {
    let gw = hs_gateway(r#", "required_claims": ["sub", "room"]"#);
    run(async {
        let t = hs256(claims(json!({})));
        assert_token_401(gw, &t, "missing the required claim \"room\"").await;
    });
}

#[test]
fn algorithm_not_in_the_list_is_401() {
    // Same secret, same family, but only HS256 is configured.
    let gw = hs_gateway("");
    run(async {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let t = sign(Algorithm::HS384, &key, &claims(json!({})));
        assert_token_401(gw, &t, "algorithm HS384 not allowed").await;
    });
}

#[test]
fn alg_none_token_is_401() {
    let gw = hs_gateway("");
    run(async {
        let payload = b64url(claims(json!({})).to_string().as_bytes());
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
            let head = b64url(header.as_bytes());
            // Unsigned (empty signature), and with a junk signature.
            for t in [
                format!("{head}.{payload}."),
                format!("{head}.{payload}.c2ln"),
            ] {
                assert_token_401(gw, &t, "not allowed").await;
                assert_401(gw, &format!("{AUTH}?access_token={t}"), "", "not allowed").await;
            }
        }
    });
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn hs256_signed_with_the_rsa_public_key_is_401() {
    // Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret.
    let gw = gateway(
        r#"{ "public_key_file": "tests/fixtures/rsa_public.pem", "algorithms": ["RS256"] }"#,
    );
    run(async {
        let pem = fixture("rsa_public.pem");
        let t = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&pem),
            &claims(json!({})),
        );
        assert_eq!(
            refused_status(gw, AUTH, &[("Authorization", &bearer(&t))]).await,
            401
        );
        assert_token_401(gw, &t, "algorithm HS256 not allowed").await;
    });
}

#[test]
fn two_authorization_headers_are_401() {
    let gw = hs_gateway("");
    run(async {
        let t = bearer(&good_token());
        // Both valid, or one valid and one not: never guessed between.
        let status =
            refused_status(gw, AUTH, &[("Authorization", &t), ("Authorization", &t)]).await;
        assert_eq!(status, 401);
        let lines = format!("Authorization: {t}\r\nauthorization: Bearer junk\r\n");
        assert_401(gw, AUTH, &lines, "more than one Authorization header").await;
    });
}

#[test]
fn token_in_both_header_and_query_is_401() {
    let gw = hs_gateway("");
    run(async {
        let t = good_token();
        let path = format!("{AUTH}?access_token={t}");
        let line = format!("Authorization: Bearer {t}\r\n");
        assert_401(gw, &path, &line, "both").await;
    });
}

#[test]
fn bearer_without_a_token_is_401() {
    let gw = hs_gateway("");
    run(async {
        assert_eq!(
            refused_status(gw, AUTH, &[("Authorization", "Bearer")]).await,
            401
        );
        assert_401(gw, AUTH, "Authorization: Bearer\r\n", "missing token").await;
        assert_401(gw, AUTH, "Authorization: Bearer   \r\n", "missing token").await;
    });
}

#[test]
fn other_authorization_scheme_is_401() {
    let gw = hs_gateway("");
    run(async {
        let line = format!("Authorization: Basic {}\r\n", b64url(b"alice:secret"));
        assert_401(gw, AUTH, &line, "Bearer").await;
        assert_401(gw, AUTH, &line, "malformed").await;
    });
}

#[test]
fn token_of_100_kb_is_never_accepted() {
    // A correctly signed token, padded to 100 KB: refused for its size alone.
    let t = hs256(claims(json!({ "pad": "x".repeat(100 * 1024) })));
    let header = format!("Authorization: Bearer {t}\r\n");
    let query = format!("{AUTH}?access_token={t}");
    // Default max_request_head_bytes (8192): the head is too large, 431, in either place.
    let gw = hs_gateway("");
    run(async {
        for (what, req) in [
            ("header", upgrade_request(AUTH, &header)),
            ("query", upgrade_request(&query, "")),
        ] {
            let res = raw_http_while_writing(gw, req.as_bytes()).await;
            assert_eq!(res.status, 431, "{what}: {res:?}");
            assert!(
                res.body.contains("max_request_head_bytes"),
                "{what}: {res:?}"
            );
        }
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&good_token()))]).await;
    });
    // A head limit that lets it through: the token itself is over 16 KiB, 401.
    // (`auth_config` writes its `jwt` argument as one member: a `limits` member rides along.)
    let gw = gateway(&format!(
        r#"{{ "secret": "{SECRET}" }}, "limits": {{ "max_request_head_bytes": 262144 }}"#
    ));
    run(async {
        let why = "longer than 16384 bytes";
        assert_401(gw, AUTH, &header, why).await;
        assert_401(gw, &query, "", why).await;
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&good_token()))]).await;
    });
}

#[test]
fn truncated_token_is_401() {
    let gw = hs_gateway("");
    run(async {
        let t = good_token();
        let (head_and_payload, _) = t.rsplit_once('.').expect("three parts");
        // Signature part gone entirely, empty, or cut short. (An HS256 signature is 43 base64
        // characters: 40 still decode, to the wrong bytes; 41 cannot be base64.)
        assert_token_401(gw, head_and_payload, "not a JWT").await;
        assert_token_401(gw, &format!("{head_and_payload}."), "bad token signature").await;
        assert_token_401(gw, &t[..t.len() - 3], "bad token signature").await;
        assert_token_401(gw, &t[..t.len() - 2], "bad base64").await;
        // Only the header.
        let (head, _) = t.split_once('.').expect("three parts");
        assert_token_401(gw, head, "not a JWT").await;
    });
}

#[test]
fn bad_base64_is_401() {
    let gw = hs_gateway("");
    run(async {
        let t = good_token();
        let parts: Vec<&str> = t.split('.').collect();
        assert_token_401(gw, &format!("!!!!.{}.{}", parts[1], parts[2]), "malformed").await;
        assert_token_401(gw, "not-a-jwt", "malformed").await;
        // Valid base64url, but the header is not JSON.
        let head = b64url(b"hello");
        assert_token_401(
            gw,
            &format!("{head}.{}.{}", parts[1], parts[2]),
            "malformed",
        )
        .await;
    });
}

#[test]
fn bad_header_field_is_malformed_not_a_refused_algorithm() {
    // `alg` is HS256 (allowed), `typ` has the wrong type: the body must not blame HS256.
    let gw = hs_gateway("");
    run(async {
        let t = good_token();
        let parts: Vec<&str> = t.split('.').collect();
        let head = b64url(br#"{"alg":"HS256","typ":5}"#);
        let t = format!("{head}.{}.{}", parts[1], parts[2]);
        assert_token_401(gw, &t, "malformed token: header").await;
    });
}

#[test]
fn query_param_null_ignores_the_query() {
    let gw = hs_gateway(r#", "query_param": null"#);
    run(async {
        let t = good_token();
        let path = format!("{AUTH}?access_token={t}");
        assert_eq!(refused_status(gw, &path, &[]).await, 401);
        assert_401(gw, &path, "", "missing token").await;
        // The header still works.
        assert_echo(gw, AUTH, &[("Authorization", &bearer(&t))]).await;
    });
}

#[test]
fn custom_query_param_name() {
    let gw = hs_gateway(r#", "query_param": "jwt""#);
    run(async {
        let t = good_token();
        assert_echo(gw, &format!("{AUTH}?jwt={t}"), &[]).await;
        // The default name is not used any more.
        assert_401(gw, &format!("{AUTH}?access_token={t}"), "", "missing token").await;
    });
}
