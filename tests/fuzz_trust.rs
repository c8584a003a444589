//! Differential fuzzing of the trust boundary (issue 12): random request heads (paths with
//! escapes, dot segments, `;` and `#`; duplicate, underscored and reserved headers; tokens,
//! good and forged, in the header and the query) go through a real gateway process to a
//! recording backend, and what the backend received must satisfy the rules whatever the
//! client sent:
//! - an `auth_required` route's backend path is reached only with exactly one valid token;
//! - no client header with `_` or a reserved name arrives, and identity and client-address
//!   headers are the gateway's own;
//! - the path is in RFC 3986 normal form, without dot segments;
//! - no token parameter arrives on an `auth_required` route;
//! - the gateway's log (at trace) holds no token.
//!
//! Each case carries `X-Case: N`, which the backend reports back: a request that reached the
//! backend without a 101 for its client would show up as a mismatch at the next one.

mod common;

use std::cell::Cell;
use std::net::SocketAddr;

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::json;
use smol::net::TcpStream;

const SECRET: &str = "fuzz-trust-secret";

/// The routes: external path, internal path, auth_required.
const ROUTES: &[(&str, &str, bool)] = &[
    ("/ws/{room}", "/public/{room}", false),
    ("/ws/admin", "/admin", true),
    ("/rooms/{room}/{user}", "/r/{room}/{user}", false),
    ("/secure/{x}", "/secure/{x}", true),
];

fn gateway() -> (GatewayProcess, smol::channel::Receiver<Head>) {
    let (backend, rx) = request_recorder();
    let routes: Vec<String> = ROUTES
        .iter()
        .map(|(ext, int, auth)| {
            format!(
                r#"{{ "protocol": "websocket", "methods": ["GET"], "auth_required": {auth},
                      "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}],
                      "external_path": "{ext}", "internal_path": "{int}" }}"#,
                backend.port()
            )
        })
        .collect();
    let json = format!(
        r#"{{ "version": 1, "routers": [ {} ],
              "jwt": {{ "secret": "{SECRET}", "forward_claims": {{ "sub": "X-User-Id" }} }} }}"#,
        routes.join(", ")
    );
    (GatewayProcess::start_with_log(&json, None, "trace"), rx)
}

fn good() -> String {
    hs256_token(SECRET, &json!({ "sub": "alice", "exp": unix_now() + 3600 }))
}

fn forged() -> String {
    let t = good();
    format!("{}.Zm9yZ2Vk", &t[..t.rfind('.').unwrap_or(0)])
}

const SEGMENTS: &[&str] = &[
    "ws",
    "admin",
    "%61dmin",
    "ADMIN",
    "admin;x=1",
    "admin%3B",
    "rooms",
    "secure",
    "r1",
    "..",
    ".",
    "%2e%2E",
    "a%2Fb",
    "a%5cb",
    "x#",
    "x%23",
    "%00",
    "caf%c3%a9",
    "%7e",
    "%41",
    "",
    "a;b",
    "%3f",
    "%zz",
    "b%20c",
];
/// First segments: mostly the routes' own, in several spellings.
const FIRST: &[&str] = &[
    "ws", "ws", "ws", "rooms", "rooms", "secure", "secure", "%77s", "WS", "..",
];
const PAIRS: &[&str] = &[
    "access_token=GOOD",
    "access_token=FORGED",
    "access%5Ftoken=GOOD",
    "access%5ftoken=GOOD",
    "a=1",
    "b=%41",
    "c=%3d",
    "access_token=",
    "x=#frag",
];
const HEADERS: &[&str] = &[
    "Authorization: Bearer GOOD",
    "Authorization: Bearer FORGED",
    "authorization: bearer GOOD",
    "X_User_Id: admin",
    "X-User-Id: mallory",
    "x-user_id: admin",
    "Forwarded: for=6.6.6.6",
    "X-Real-IP: 6.6.6.6",
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-Host: evil.example",
    "Expect: 100-continue",
    "TE: trailers",
    "Trailer: X-Late",
    "Transfer-Encoding: chunked",
    "Content-Length: 0",
    "Proxy-Authorization: Basic YTpi",
    "Connection: X-Drop",
    "X-Drop: 1",
    "X-Dup: 1",
    "X-Dup: 2",
];
/// Header names that may never reach the backend from a client.
const RESERVED: &[&str] = &[
    "expect",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "proxy-authorization",
];

/// One request: path segments, query pairs, extra header lines.
#[derive(Debug, Clone)]
struct Case {
    segments: Vec<&'static str>,
    query: Vec<&'static str>,
    headers: Vec<&'static str>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        select(FIRST),
        prop::collection::vec(select(SEGMENTS), 1..3),
        prop::collection::vec(select(PAIRS), 0..3),
        prop::collection::vec(select(HEADERS), 0..6),
    )
        .prop_map(|(first, mut segments, query, headers)| {
            segments.insert(0, first);
            Case {
                segments,
                query,
                headers,
            }
        })
}

impl Case {
    fn target(&self, good: &str, forged: &str) -> String {
        let mut t = format!("/{}", self.segments.join("/"));
        if !self.query.is_empty() {
            t.push('?');
            t.push_str(&self.query.join("&"));
        }
        t.replace("GOOD", good).replace("FORGED", forged)
    }

    /// Exactly one token, and the good one: the only way onto an `auth_required` route.
    fn one_good_token(&self) -> bool {
        let header: Vec<&&str> = self
            .headers
            .iter()
            .filter(|h| h.to_ascii_lowercase().starts_with("authorization:"))
            .collect();
        let query: Vec<&&str> = self
            .query
            .iter()
            .filter(|p| p.to_ascii_lowercase().starts_with("access") && !p.ends_with('='))
            .collect();
        let tokens: Vec<&str> = header.iter().chain(&query).map(|s| **s).collect();
        tokens.len() == 1 && tokens[0].ends_with("GOOD")
    }
}

/// Sends `case` as case number `n`; the status answered.
async fn send(gw: SocketAddr, case: &Case, n: u64, good: &str, forged: &str) -> u16 {
    let mut extra = format!("X-Case: {n}\r\n");
    for h in &case.headers {
        extra.push_str(&h.replace("GOOD", good).replace("FORGED", forged));
        extra.push_str("\r\n");
    }
    let req = upgrade_request(&case.target(good, forged), &extra);
    let mut s = TcpStream::connect(gw).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let head = within(STEP, read_head(&mut s))
        .await
        .expect("an answer in time");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status == 101 {
        let _ = s.close().await;
    } else {
        let mut rest = Vec::new();
        let _ = within(STEP, s.read_to_end(&mut rest)).await;
    }
    status
}

/// RFC 3986 6.2.2 normal form, written independently of the gateway's.
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |x: Option<&u8>| x.is_some_and(|x| matches!(x, b'0'..=b'9' | b'A'..=b'F'));
            if !hex(b.get(i + 1)) || !hex(b.get(i + 2)) {
                return false;
            }
            let v = u8::from_str_radix(&path[i + 1..i + 3], 16).unwrap_or(0);
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&c)) {
            return false;
        }
        i += 1;
    }
    true
}

fn check(head: &Head, case: &Case, good: &str) -> Result<(), TestCaseError> {
    let target = head
        .request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let auth_route = path == "/admin" || path.starts_with("/secure/");
    prop_assert!(
        !auth_route || case.one_good_token(),
        "{path} reached without exactly one good token: {case:?}"
    );
    prop_assert!(is_normal(path), "not normal: {path}");
    prop_assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "dot segment: {path}"
    );
    if auth_route {
        let lower = query.to_ascii_lowercase();
        prop_assert!(!lower.contains("access_token") && !lower.contains("access%5ftoken"));
        prop_assert!(!query.contains(good), "token in the query: {query}");
    }
    for line in head.text.lines().skip(1) {
        let Some((name, _)) = line.split_once(':') else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        prop_assert!(!lower.contains('_'), "{name} arrived");
        prop_assert!(!RESERVED.contains(&lower.as_str()), "{name} arrived");
        let listed = case.headers.contains(&"Connection: X-Drop");
        prop_assert!(
            !(listed && lower == "x-drop"),
            "{name}, listed in Connection, arrived"
        );
    }
    let users = head.values("X-User-Id");
    prop_assert!(
        users.is_empty() || (auth_route && users == ["alice"]),
        "X-User-Id {users:?} on {path}"
    );
    prop_assert_eq!(head.one("X-Forwarded-For"), "127.0.0.1");
    prop_assert_eq!(head.one("X-Real-IP"), "127.0.0.1");
    Ok(())
}

#[test]
fn whatever_a_client_sends_the_backend_sees_only_what_the_rules_allow() {
    let (gw, rx) = gateway();
    let addr = gw.addr();
    let (good, forged) = (good(), forged());
    let (n, passed) = (Cell::new(0u64), Cell::new(0u64));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1000),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&case(), |case| {
        n.set(n.get() + 1);
        let status = run(send(addr, &case, n.get(), &good, &forged));
        if status == 101 {
            passed.set(passed.get() + 1);
            let head = run(next_request(&rx));
            let want = n.get().to_string();
            prop_assert_eq!(head.one("X-Case"), want, "a refused request arrived");
            check(&head, &case, &good)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(rx.is_empty(), "a refused request reached the backend");
    let (n, passed) = (n.get(), passed.get());
    assert!(passed > 20, "too few cases got through ({passed} of {n})");
    let log = gw.stop_and_collect().join("\n");
    let signature = good.rsplit('.').next().unwrap_or_default();
    for secret in [
        good.as_str(),
        forged.as_str(),
        signature,
        "Zm9yZ2Vk",
        SECRET,
    ] {
        assert!(!log.contains(secret), "{secret} in the gateway log");
    }
    eprintln!("{n} cases, {passed} upgraded");
}
