//! Table-driven tests of config parsing and validation: every problem is one line naming where
//! it is (router index, its external_path, the field), and all of them are reported at once.
// Helpers of the tests a build without every feature leaves out.
#![cfg_attr(not(full), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Backend, Config, ConfigError, Limits, Loaded};

/// [`super::parse_with`] the check of the `jwt` block `control::load` passes for `--check`, the
/// start and a reload: the token verifier `auth` builds from it.
fn parse(text: &str, base: &Path) -> Result<Loaded, ConfigError> {
    super::parse_with(text, base, &|jwt| {
        crate::auth::JwtVerifier::from_config(jwt).map(drop)
    })
}

/// A file under the temp dir with a unique name (pid + counter), removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "kairos-config-test-{}-{n}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a JSON string value.
    fn json(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn base() -> PathBuf {
    std::env::temp_dir()
}

fn ok(text: &str) -> Loaded {
    parse(text, &base()).unwrap_or_else(|e| panic!("config should load, got:\n{e}\n---\n{text}"))
}

pub(super) fn ok_value(v: &Value) -> Loaded {
    ok(&v.to_string())
}

fn errors(text: &str) -> Vec<String> {
    match parse(text, &base()) {
        Ok(l) => panic!(
            "config should be refused, it loaded with {} routes\n---\n{text}",
            l.config.routes.len()
        ),
        Err(e) => e.problems,
    }
}

pub(super) fn errors_value(v: &Value) -> Vec<String> {
    errors(&v.to_string())
}

/// Exactly one problem, returned.
pub(super) fn one_error(v: &Value) -> String {
    let errs = errors_value(v);
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got {errs:#?}\n---\n{v:#}"
    );
    errs.into_iter().next().unwrap()
}

/// A change to a router, for the tables.
type Edit = fn(&mut Value);

pub(super) fn router(external: &str) -> Value {
    json!({
        "protocol": "websocket",
        "backends": [{ "host": "ws://localhost", "port": 3000, "weight": 1 }],
        "external_path": external,
        "internal_path": "/ws",
        "methods": ["GET"],
        "auth_required": false
    })
}

pub(super) fn config(routers: Vec<Value>) -> Value {
    json!({ "version": 1, "routers": routers })
}

/// One valid router, with `top` merged into the top level.
pub(super) fn config_with(top: Value) -> Value {
    let mut c = config(vec![router("/ws/chat")]);
    for (k, v) in top.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn assert_default_limits(l: &Limits) {
    assert_eq!(l.handshake_timeout, Duration::from_millis(10_000));
    assert_eq!(l.backend_connect_timeout, Duration::from_millis(10_000));
    assert_eq!(l.max_message_bytes, 16 * 1024 * 1024);
    assert_eq!(l.max_frame_bytes, 16 * 1024 * 1024);
    assert_eq!(l.max_request_head_bytes, 8192);
    assert_eq!(l.dns_cache, Duration::from_millis(10_000));
}

#[test]
fn shipped_example_loads_with_defaults() {
    let loaded = ok(include_str!("../../config.json"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    assert_eq!(c.host, "0.0.0.0");
    assert_eq!(c.port, 5900);
    assert_default_limits(&c.limits);
    assert!(c.jwt.is_none());
    assert!(c.backend_tls.is_none(), "no wss:// backend, no TLS config");
    assert_eq!(c.routes.len(), 1);
    let r = &c.routes[0];
    assert_eq!(r.index, 0);
    assert_eq!(r.external.as_str(), "/ws/chat");
    assert_eq!(r.internal.as_str(), "/ws");
    assert!(!r.auth_required);
    assert_eq!(
        r.backends,
        vec![Backend {
            tls: false,
            host: "localhost".into(),
            port: 3000,
            weight: 1,
            health_check_path: None,
        }]
    );
    assert_eq!(r.backends[0].origin(), "ws://localhost:3000");
}

#[test]
fn optional_router_fields_default() {
    let mut r = router("/ws/chat");
    r["backends"][0].as_object_mut().unwrap().remove("weight");
    r.as_object_mut().unwrap().remove("auth_required");
    let c = ok_value(&config(vec![r])).config;
    assert_eq!(c.routes[0].backends[0].weight, 1);
    assert!(!c.routes[0].auth_required);
    assert_eq!(c.routes[0].strategy, super::Strategy::RoundRobin);
    assert_eq!(c.routes[0].max_retries, 2);
}

#[test]
fn balancing_fields() {
    for name in ["round_robin", "least_connections", "random", "ip_hash"] {
        let mut r = router("/ws/chat");
        r["load_balancing_strategy"] = json!(name);
        r["retry"] = json!({ "max_retries": 0 });
        let c = ok_value(&config(vec![r])).config;
        assert_eq!(c.routes[0].strategy.name(), name);
        assert_eq!(c.routes[0].max_retries, 0);
    }
    let mut r = router("/ws/chat");
    r["load_balancing_strategy"] = json!("fastest");
    let e = one_error(&config(vec![r]));
    assert!(e.contains("load_balancing_strategy: \"fastest\" is not one of round_robin, least_connections, random, ip_hash"), "{e}");
    let mut r = router("/ws/chat");
    r["retry"] = json!({ "max_retries": 1000 });
    let e = one_error(&config(vec![r]));
    assert!(e.contains("retry.max_retries"), "{e}");
}

#[test]
fn sticky_keys() {
    use super::Sticky;
    for (key, want) in [
        ("ip", Sticky::Ip),
        ("header:X-Session", Sticky::Header("X-Session".into())),
        ("cookie:sid", Sticky::Cookie("sid".into())),
        ("query:room", Sticky::Query("room".into())),
    ] {
        let mut r = router("/ws/chat");
        r["sticky"] = json!({ "key": key });
        assert_eq!(
            ok_value(&config(vec![r])).config.routes[0].sticky,
            Some(want)
        );
    }
    for (key, says) in [
        ("header:", "is not ip, header:NAME"),
        ("session", "is not ip, header:NAME"),
        ("claim:sub", "need auth_required: true"),
    ] {
        let mut r = router("/ws/chat");
        r["sticky"] = json!({ "key": key });
        let e = one_error(&config(vec![r]));
        assert!(e.contains("sticky.key: ") && e.contains(says), "{key}: {e}");
    }
}

#[test]
fn circuit_breaker_defaults_and_fields() {
    use super::CircuitBreaker;
    use std::time::Duration;
    let one = ok_value(&config(vec![router("/ws/chat")])).config;
    assert_eq!(
        one.routes[0].circuit.failure_threshold, 0,
        "off with one backend"
    );
    let mut r = router("/ws/chat");
    r["backends"] = json!([
        { "host": "ws://a", "port": 1 },
        { "host": "ws://b", "port": 2 }
    ]);
    let two = ok_value(&config(vec![r.clone()])).config;
    assert_eq!(two.routes[0].circuit, CircuitBreaker::default());
    assert_eq!(two.routes[0].circuit.failure_threshold, 5);
    assert_eq!(two.routes[0].circuit.open, Duration::from_millis(30_000));
    let mut lone = router("/ws/chat");
    lone["circuit_breaker"] = json!({ "failure_threshold": 2, "open_ms": 500 });
    let c = ok_value(&config(vec![lone])).config;
    assert_eq!(
        c.routes[0].circuit,
        CircuitBreaker {
            failure_threshold: 2,
            open: Duration::from_millis(500)
        },
        "an explicit block applies to a lone backend too"
    );
    for (block, says) in [
        (
            json!({ "open_ms": 0 }),
            "circuit_breaker.open_ms: must be an integer from 10",
        ),
        (
            json!({ "failure_threshold": -1 }),
            "circuit_breaker.failure_threshold: must be",
        ),
        (json!(true), "circuit_breaker: must be a JSON object"),
    ] {
        r["circuit_breaker"] = block;
        let e = one_error(&config(vec![r.clone()]));
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn health_check_defaults_and_fields() {
    use super::HealthCheck;
    use std::time::Duration;
    let off = ok_value(&config(vec![router("/ws/chat")])).config;
    assert_eq!(off.routes[0].health, None);
    let mut r = router("/ws/chat");
    r["health_check"] = json!({});
    let c = ok_value(&config(vec![r])).config;
    assert_eq!(c.routes[0].health, Some(HealthCheck::default()));
    let mut r = router("/ws/chat");
    r["backends"][0]["health_check_path"] = json!("/healthz?full=1");
    let c = ok_value(&config(vec![r])).config;
    assert_eq!(
        c.routes[0].health,
        Some(HealthCheck::default()),
        "a path turns checks on"
    );
    assert_eq!(
        c.routes[0].backends[0].health_check_path.as_deref(),
        Some("/healthz?full=1")
    );
    let mut r = router("/ws/chat");
    r["health_check"] = json!({ "interval_ms": 500, "unhealthy_threshold": 1,
        "healthy_threshold": 4 });
    let h = ok_value(&config(vec![r])).config.routes[0].health.unwrap();
    assert_eq!(h.interval, Duration::from_millis(500));
    assert_eq!(
        h.timeout,
        Duration::from_millis(500),
        "timeout defaults to min(2000, interval)"
    );
    assert_eq!((h.unhealthy_threshold, h.healthy_threshold), (1, 4));
}

#[test]
fn health_check_timeout_may_be_longer_than_the_interval() {
    let mut r = router("/ws/chat");
    r["health_check"] = json!({ "interval_ms": 100, "timeout_ms": 5000 });
    let h = ok_value(&config(vec![r])).config.routes[0].health.unwrap();
    assert_eq!(
        (h.interval, h.timeout),
        (Duration::from_millis(100), Duration::from_millis(5000))
    );
}

#[test]
fn health_check_errors() {
    let cases = [
        (
            json!({ "healthy_threshold": 0 }),
            None,
            "/ws",
            "health_check.healthy_threshold: must be an integer from 1 to 1000",
        ),
        (
            json!({ "interval_ms": 5 }),
            None,
            "/ws",
            "health_check.interval_ms: must be an integer from 10",
        ),
        (
            json!({}),
            Some(json!("health")),
            "/ws",
            "backends[0].health_check_path: \"health\" must start with /",
        ),
        (
            json!({}),
            Some(json!("/a b")),
            "/ws",
            "contains ' '; use only visible ASCII",
        ),
        (
            json!({}),
            None,
            "/rooms/{id}",
            "health_check: internal_path /rooms/{id} has {name} parameters",
        ),
    ];
    for (block, path, internal, says) in cases {
        let mut r = router("/ws/{id}");
        r["internal_path"] = json!(internal);
        r["health_check"] = block;
        if let Some(p) = path {
            r["backends"][0]["health_check_path"] = p;
        }
        let e = one_error(&config(vec![r]));
        assert!(e.contains(says), "want {says:?} in {e}");
    }
    // With a health_check_path on every backend, a parameterised internal_path is fine.
    let mut r = router("/ws/{id}");
    r["internal_path"] = json!("/rooms/{id}");
    r["health_check"] = json!({});
    r["backends"][0]["health_check_path"] = json!("/health");
    ok_value(&config(vec![r]));
}

#[test]
fn server_and_limits_blocks() {
    let c = ok_value(&config_with(json!({
        "server": { "host": "127.0.0.1", "port": 8080 },
        "limits": {
            "handshake_timeout_ms": 2500,
            "backend_connect_timeout_ms": 3000,
            "max_message_bytes": 65536,
            "max_frame_bytes": 4096,
            "max_request_head_bytes": 256,
            "dns_cache_ms": 0
        }
    })))
    .config;
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 8080));
    assert_eq!(c.limits.handshake_timeout, Duration::from_millis(2500));
    assert_eq!(
        c.limits.backend_connect_timeout,
        Duration::from_millis(3000)
    );
    assert_eq!(c.limits.max_message_bytes, 65536);
    assert_eq!(c.limits.max_frame_bytes, 4096);
    assert_eq!(c.limits.max_request_head_bytes, 256);
    assert_eq!(c.limits.dns_cache, Duration::ZERO);

    // Port 0 (any free port) is allowed for the listener, and a partial block keeps defaults.
    let c = ok_value(&config_with(
        json!({ "server": { "port": 0 }, "limits": {} }),
    ))
    .config;
    assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 0));
    assert_default_limits(&c.limits);
}

#[test]
#[cfg(feature = "tls-backend")]
fn accepted_backend_hosts() {
    let cases: &[(&str, bool, &str, &str)] = &[
        ("ws://localhost", false, "localhost", "ws://localhost:3000"),
        ("ws://localhost/", false, "localhost", "ws://localhost:3000"),
        (
            "wss://api.example.com",
            true,
            "api.example.com",
            "wss://api.example.com:3000",
        ),
        ("ws://10.0.0.5", false, "10.0.0.5", "ws://10.0.0.5:3000"),
        ("ws://[::1]", false, "::1", "ws://[::1]:3000"),
        (
            "ws://my_backend-1",
            false,
            "my_backend-1",
            "ws://my_backend-1:3000",
        ),
    ];
    for (host, tls, name, origin) in cases {
        let mut r = router("/ws/chat");
        r["backends"][0]["host"] = json!(host);
        let c = ok_value(&config(vec![r])).config;
        let b = &c.routes[0].backends[0];
        assert_eq!((b.tls, b.host.as_str()), (*tls, *name), "{host}");
        assert_eq!(b.origin(), *origin, "{host}");
        assert_eq!(
            c.backend_tls.is_some(),
            *tls,
            "{host}: TLS config only for wss://"
        );
    }
}

#[test]
fn accepted_router_variants() {
    let cases: &[(&str, Edit)] = &[
        ("methods in lower case", |r| r["methods"] = json!(["get"])),
        ("more methods", |r| r["methods"] = json!(["POST", "GET"])),
        ("param substituted", |r| {
            r["external_path"] = json!("/rooms/{room}");
            r["internal_path"] = json!("/ws/{room}");
        }),
        ("param dropped", |r| {
            r["external_path"] = json!("/rooms/{room}")
        }),
        ("several backends", |r| {
            r["backends"] = json!([
                { "host": "ws://a", "port": 1 },
                { "host": "ws://b", "port": 65535, "weight": 1000000 }
            ])
        }),
    ];
    for (what, edit) in cases {
        let mut r = router("/ws/chat");
        edit(&mut r);
        let loaded = ok_value(&config(vec![r]));
        assert_eq!(loaded.config.routes.len(), 1, "{what}");
        assert!(loaded.warnings.is_empty(), "{what}: {:?}", loaded.warnings);
    }
}

/// Each edit breaks `routers[2]` (two valid routers before it) in one way; the one error must
/// name the index, the external_path and the field.
#[test]
#[cfg(feature = "tls-backend")]
fn router_errors_name_index_path_and_field() {
    let cases: &[(Edit, &str)] = &[
        (
            |r| r["backends"][0]["host"] = json!("http://x"),
            r#"routers[2] (/ws/chat): backends[0].host: "http://x" must start with ws:// or wss://"#,
        ),
        (
            |r| r["backends"][0]["host"] = json!("x"),
            r#"routers[2] (/ws/chat): backends[0].host: "x" must start with ws:// or wss://"#,
        ),
        (
            |r| r["backends"][0]["host"] = json!("ws://x:3000"),
            r#"routers[2] (/ws/chat): backends[0].host: "ws://x:3000": put the port in the port field, not in host"#,
        ),
        (
            |r| r["backends"][0]["host"] = json!("ws://x/ws"),
            r#"routers[2] (/ws/chat): backends[0].host: "ws://x/ws": the host must be a plain name or IP address (no path, user or query)"#,
        ),
        (
            |r| r["backends"][0]["host"] = json!("ws://user@x"),
            r#"routers[2] (/ws/chat): backends[0].host: "ws://user@x": the host must be a plain name or IP address (no path, user or query)"#,
        ),
        (
            |r| r["backends"][0]["host"] = json!("ws://"),
            r#"routers[2] (/ws/chat): backends[0].host: "ws://": the host must be a plain name or IP address (no path, user or query)"#,
        ),
        (
            |r| r["backends"][0]["host"] = json!("ws://[::1]:80"),
            r#"routers[2] (/ws/chat): backends[0].host: "ws://[::1]:80": bad IPv6 address"#,
        ),
        (
            |r| r["backends"][0]["host"] = json!(3000),
            "routers[2] (/ws/chat): backends[0].host: must be a string, found a number",
        ),
        (
            |r| {
                r["backends"][0].as_object_mut().unwrap().remove("host");
            },
            "routers[2] (/ws/chat): backends[0].host: is required",
        ),
        (
            |r| r["backends"][0]["port"] = json!(0),
            "routers[2] (/ws/chat): backends[0].port: must be an integer from 1 to 65535, found 0",
        ),
        (
            |r| r["backends"][0]["port"] = json!(70000),
            "routers[2] (/ws/chat): backends[0].port: must be an integer from 1 to 65535, found 70000",
        ),
        (
            |r| r["backends"][0]["port"] = json!("abc"),
            r#"routers[2] (/ws/chat): backends[0].port: must be an integer from 1 to 65535, found "abc""#,
        ),
        (
            |r| r["backends"][0]["port"] = json!(-1),
            "routers[2] (/ws/chat): backends[0].port: must be an integer from 1 to 65535, found -1",
        ),
        (
            |r| r["backends"][0]["port"] = json!(80.5),
            "routers[2] (/ws/chat): backends[0].port: must be an integer from 1 to 65535, found 80.5",
        ),
        (
            |r| {
                r["backends"][0].as_object_mut().unwrap().remove("port");
            },
            "routers[2] (/ws/chat): backends[0].port: is required (1-65535)",
        ),
        (
            |r| r["backends"][0]["weight"] = json!(0),
            "routers[2] (/ws/chat): backends[0].weight: must be an integer from 1 to 1000000, found 0",
        ),
        (
            |r| {
                r["backends"] = json!([
                    { "host": "ws://a", "port": 1 },
                    { "host": "wss://b:443", "port": 443 }
                ])
            },
            r#"routers[2] (/ws/chat): backends[1].host: "wss://b:443": put the port in the port field, not in host"#,
        ),
        (
            |r| r["backends"][0] = json!("ws://x"),
            "routers[2] (/ws/chat): backends[0]: must be a JSON object, found a string",
        ),
        (
            |r| r["backends"] = json!([]),
            "routers[2] (/ws/chat): backends: must list at least one backend",
        ),
        (
            |r| {
                r.as_object_mut().unwrap().remove("backends");
            },
            "routers[2] (/ws/chat): backends: is required (at least one backend)",
        ),
        (
            |r| r["backends"] = json!({ "host": "ws://x", "port": 1 }),
            "routers[2] (/ws/chat): backends: must be an array, found an object",
        ),
        (
            |r| r["external_path"] = json!("ws/chat"),
            r#"routers[2] (ws/chat): external_path: "ws/chat" must start with /"#,
        ),
        (
            |r| r["external_path"] = json!("/ws/chat?x=1"),
            r#"routers[2] (/ws/chat?x=1): external_path: "/ws/chat?x=1" must be a plain path (no query, fragment, space or control character)"#,
        ),
        (
            |r| {
                r.as_object_mut().unwrap().remove("external_path");
            },
            "routers[2] (?): external_path: is required",
        ),
        (
            |r| r["internal_path"] = json!("ws"),
            r#"routers[2] (/ws/chat): internal_path: "ws" must start with /"#,
        ),
        (
            |r| {
                r.as_object_mut().unwrap().remove("internal_path");
            },
            "routers[2] (/ws/chat): internal_path: is required",
        ),
        (
            |r| r["internal_path"] = json!("/ws/{room}"),
            "routers[2] (/ws/chat): internal_path: uses {room}, which external_path does not have",
        ),
        (
            |r| r["methods"] = json!(["POST"]),
            r#"routers[2] (/ws/chat): methods: ["POST"] must contain "GET" (a WebSocket upgrade is a GET)"#,
        ),
        (
            |r| r["methods"] = json!([]),
            r#"routers[2] (/ws/chat): methods: [] must contain "GET" (a WebSocket upgrade is a GET)"#,
        ),
        (
            |r| {
                r.as_object_mut().unwrap().remove("methods");
            },
            r#"routers[2] (/ws/chat): methods: is required and must contain "GET""#,
        ),
        (
            |r| r["methods"] = json!("GET"),
            r#"routers[2] (/ws/chat): methods: must be an array of strings, found "GET""#,
        ),
        (
            |r| r["auth_required"] = json!(true),
            "routers[2] (/ws/chat): auth_required: is true but there is no valid jwt block",
        ),
        (
            |r| r["auth_required"] = json!("yes"),
            "routers[2] (/ws/chat): auth_required: must be true or false, found a string",
        ),
        (
            |r| {
                r.as_object_mut().unwrap().remove("protocol");
            },
            "routers[2] (/ws/chat): protocol: is required",
        ),
        (
            |r| r["protocol"] = json!(1),
            "routers[2] (/ws/chat): protocol: must be a string, found a number",
        ),
        (
            |r| *r = json!("/ws/chat"),
            "routers[2] (?): must be a JSON object, found a string",
        ),
    ];
    for (edit, want) in cases {
        let mut bad = router("/ws/chat");
        edit(&mut bad);
        let c = config(vec![router("/a"), router("/b"), bad]);
        assert_eq!(one_error(&c), *want);
    }
}

#[test]
fn top_level_errors() {
    let cases: &[(Value, &str)] = &[
        (
            config(vec![router("/ws/chat"), router("/x"), router("/ws/chat")]),
            "routers[2] (/ws/chat): external_path: duplicate of routers[0]",
        ),
        (
            config_with(json!({ "version": 2 })),
            "version: must be 1, found 2",
        ),
        (
            config_with(json!({ "version": "1" })),
            r#"version: must be an integer from 0 to 18446744073709551615, found "1""#,
        ),
        (
            json!({ "version": 1 }),
            "routers: is required (an array of routes)",
        ),
        (
            json!({ "version": 1, "routers": router("/ws/chat") }),
            "routers: must be an array, found an object",
        ),
        (
            json!([router("/ws/chat")]),
            "the config: must be a JSON object, found an array",
        ),
        (
            config_with(json!({ "server": "0.0.0.0:5900" })),
            "server: must be a JSON object, found a string",
        ),
        (
            config_with(json!({ "server": { "host": 1 } })),
            "server.host: must be a string, found a number",
        ),
        (
            config_with(json!({ "server": { "port": 70000 } })),
            "server.port: must be an integer from 0 to 65535, found 70000",
        ),
        (
            config_with(json!({ "limits": [] })),
            "limits: must be a JSON object, found an array",
        ),
        (
            config_with(json!({ "limits": { "handshake_timeout_ms": 0 } })),
            "limits.handshake_timeout_ms: must be an integer from 1 to 86400000, found 0",
        ),
        (
            config_with(json!({ "limits": { "backend_connect_timeout_ms": 0 } })),
            "limits.backend_connect_timeout_ms: must be an integer from 1 to 86400000, found 0",
        ),
        (
            config_with(json!({ "limits": { "max_message_bytes": 0 } })),
            "limits.max_message_bytes: must be an integer from 16 to 1073741824, found 0",
        ),
        (
            config_with(json!({ "limits": { "max_frame_bytes": 0 } })),
            "limits.max_frame_bytes: must be an integer from 16 to 1073741824, found 0",
        ),
        (
            config_with(json!({ "limits": { "max_request_head_bytes": 10 } })),
            "limits.max_request_head_bytes: must be an integer from 256 to 1048576, found 10",
        ),
        (
            config_with(json!({ "limits": { "max_request_head_bytes": 0 } })),
            "limits.max_request_head_bytes: must be an integer from 256 to 1048576, found 0",
        ),
        (
            config_with(json!({ "limits": { "dns_cache_ms": 3600001 } })),
            "limits.dns_cache_ms: must be an integer from 0 to 3600000, found 3600001",
        ),
        (
            config_with(json!({ "tls": "ca.pem" })),
            "tls: must be a JSON object, found a string",
        ),
    ];
    for (c, want) in cases {
        assert_eq!(one_error(c), *want);
    }
}

#[test]
fn all_errors_reported_at_once() {
    let mut bad_backend = router("/ws/chat");
    bad_backend["backends"] = json!([
        { "host": "http://x", "port": 0, "weight": 0 },
        { "host": "ws://ok", "port": 1 }
    ]);
    let mut no_methods = router("/ws/other");
    no_methods.as_object_mut().unwrap().remove("methods");
    no_methods["internal_path"] = json!("/ws/{id}");
    let mut c = config(vec![
        router("/fine"),
        bad_backend,
        no_methods,
        json!({ "protocol": "http", "external_path": "/skipped" }),
        router("/fine"),
    ]);
    c["version"] = json!(2);
    c["limits"] = json!({ "max_request_head_bytes": 10, "handshake_timeout_ms": 0 });
    c["server"] = json!({ "port": "x" });
    let errs = errors_value(&c);
    let want = [
        "version: must be 1, found 2",
        r#"server.port: must be an integer from 0 to 65535, found "x""#,
        "limits.handshake_timeout_ms: must be an integer from 1 to 86400000, found 0",
        "limits.max_request_head_bytes: must be an integer from 256 to 1048576, found 10",
        r#"routers[1] (/ws/chat): backends[0].host: "http://x" must start with ws:// or wss://"#,
        "routers[1] (/ws/chat): backends[0].port: must be an integer from 1 to 65535, found 0",
        "routers[1] (/ws/chat): backends[0].weight: must be an integer from 1 to 1000000, found 0",
        "routers[2] (/ws/other): internal_path: uses {id}, which external_path does not have",
        r#"routers[2] (/ws/other): methods: is required and must contain "GET""#,
        "routers[4] (/fine): external_path: duplicate of routers[0]",
    ];
    for w in want {
        assert!(errs.iter().any(|e| e == w), "missing {w:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[test]
fn other_protocols_are_skipped_with_a_warning() {
    let c = config(vec![
        json!({ "protocol": "http", "external_path": "/api", "backends": "anything" }),
        router("/ws/chat"),
        json!({ "protocol": "ftp" }),
    ]);
    let loaded = ok_value(&c);
    assert_eq!(loaded.config.routes.len(), 1);
    assert_eq!(
        loaded.config.routes[0].index, 1,
        "index is the position in the file"
    );
    assert_eq!(
        loaded.warnings,
        vec![
            r#"routers[0] (/api): protocol "http" is not served by this gateway: router skipped"#,
            r#"routers[2] (?): protocol "ftp" is not served by this gateway: router skipped"#,
        ]
    );
    // A skipped router does not count as a duplicate.
    let c = config(vec![
        json!({ "protocol": "http", "external_path": "/ws/chat" }),
        router("/ws/chat"),
    ]);
    assert_eq!(ok_value(&c).config.routes.len(), 1);
}

#[test]
fn invalid_json_names_line_and_column() {
    let cases: &[(&str, &str)] = &[
        (
            "{\n  \"version\": 1,\n  \"routers\": [,]\n}",
            "line 3 column 15",
        ),
        ("{ \"version\": 1, }", "line 1 column 17"),
        ("", "line 1 column 0"),
        ("{\n\"a\": 1\n", "line 3 column 0"),
    ];
    for (text, at) in cases {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!("invalid JSON at {at}: ")),
            "{text:?}: {}",
            errs[0]
        );
    }
}

fn jwt_config(jwt: Value) -> Value {
    let mut r = router("/ws/chat");
    r["auth_required"] = json!(true);
    let mut c = config(vec![r]);
    c["jwt"] = jwt;
    c
}

#[test]
fn jwt_block_accepted() {
    let c = ok_value(&jwt_config(json!({ "secret": "s3cret" }))).config;
    let jwt = c.jwt.unwrap();
    assert_eq!(jwt.query_param.as_deref(), Some("access_token"), "default");
    assert!(c.routes[0].auth_required);

    let c = ok_value(&jwt_config(json!({ "secret": "s", "query_param": null }))).config;
    assert_eq!(c.jwt.unwrap().query_param, None, "null: header only");

    let c = ok_value(&jwt_config(json!({
        "secret": "s",
        "algorithms": ["HS256", "HS512"],
        "issuer": "me",
        "audience": "you",
        "required_claims": ["sub"],
        "leeway_seconds": 0,
        "query_param": "token"
    })))
    .config;
    assert_eq!(c.jwt.unwrap().query_param.as_deref(), Some("token"));
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn jwt_public_key_file_relative_to_config_dir() {
    let key = rcgen::KeyPair::generate().unwrap();
    let file = TempFile::new("key.pem", key.public_key_pem().as_bytes());
    let name = file.path().file_name().unwrap().to_str().unwrap();
    let c = jwt_config(json!({ "public_key_file": name, "algorithms": ["ES256"] }));
    let dir = file.path().parent().unwrap();
    let loaded = parse(&c.to_string(), dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.config.jwt.is_some());
    // From another directory the same relative name is not found.
    let elsewhere = dir.join("kairos-no-such-dir");
    let errs = parse(&c.to_string(), &elsewhere).unwrap_err().problems;
    assert!(
        errs[0].starts_with(&format!(
            "jwt.public_key_file: {}: ",
            elsewhere.join(name).display()
        )),
        "{errs:?}"
    );
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn jwt_errors() {
    let not_pem = TempFile::new("not-a-key.pem", b"hello, I am not a key\n");
    let missing = not_pem.path().with_extension("missing");
    let cases: Vec<(Value, String)> = vec![
        (
            json!({ "secret": "s", "public_key_file": not_pem.json() }),
            "jwt.secret: give either secret or public_key_file, not both".into(),
        ),
        (
            json!({ "algorithms": ["HS256"] }),
            "jwt.secret: the jwt block needs secret or public_key_file".into(),
        ),
        (
            json!({ "public_key_file": missing.display().to_string(), "algorithms": ["RS256"] }),
            format!("jwt.public_key_file: {}: ", missing.display()),
        ),
        (
            json!({ "public_key_file": not_pem.json(), "algorithms": ["RS256"] }),
            format!(
                "jwt.public_key_file: {}: not an RSA public key in PEM format",
                not_pem.path().display()
            ),
        ),
        (
            json!({ "public_key_file": not_pem.json(), "algorithms": ["ES256"] }),
            format!(
                "jwt.public_key_file: {}: not an EC public key in PEM format",
                not_pem.path().display()
            ),
        ),
        (
            json!({ "public_key_file": not_pem.json() }),
            format!(
                "jwt.public_key_file: {}: HMAC algorithms need jwt.secret",
                not_pem.path().display()
            ),
        ),
        (
            json!({ "secret": "s", "algorithms": ["none"] }),
            r#"jwt.algorithms: "none" is never allowed"#.into(),
        ),
        (
            json!({ "secret": "s", "algorithms": ["NONE"] }),
            r#"jwt.algorithms: "none" is never allowed"#.into(),
        ),
        (
            json!({ "secret": "s", "algorithms": ["HS999"] }),
            r#"jwt.algorithms: unknown algorithm "HS999""#.into(),
        ),
        (
            json!({ "secret": "s", "algorithms": [] }),
            "jwt.algorithms: must name at least one algorithm".into(),
        ),
        (
            json!({ "secret": "s", "algorithms": ["RS256"] }),
            r#"jwt.algorithms: ["RS256"] needs public_key_file, not secret"#.into(),
        ),
        (
            json!({ "secret": "s", "algorithms": "HS256" }),
            r#"jwt.algorithms: must be an array of strings, found "HS256""#.into(),
        ),
        (
            json!({ "secret": "" }),
            "jwt.secret: must not be empty".into(),
        ),
        (
            json!({ "secret": "s", "query_param": "a=b" }),
            r#"jwt.query_param: must be a parameter name or null, found "a=b""#.into(),
        ),
        (
            json!({ "secret": "s", "query_param": "" }),
            r#"jwt.query_param: must be a parameter name or null, found """#.into(),
        ),
        (
            json!({ "secret": "s", "leeway_seconds": 100000 }),
            "jwt.leeway_seconds: must be an integer from 0 to 86400, found 100000".into(),
        ),
        (
            json!("s3cret"),
            "jwt: must be a JSON object, found a string".into(),
        ),
    ];
    for (jwt, want) in &cases {
        // Without a route that needs it, the jwt block's own error is the only one.
        let mut c = config_with(json!({}));
        c["jwt"] = jwt.clone();
        let err = one_error(&c);
        assert!(
            err.starts_with(want.as_str()),
            "{jwt}:\n got  {err}\n want {want}"
        );
        // With auth_required, the route also says why it cannot be served when no verifier
        // could be built (a bad optional field falls back to its default, so no extra error).
        let errs = errors_value(&jwt_config(jwt.clone()));
        assert!(errs[0].starts_with(want.as_str()), "{errs:#?}");
        let route_err =
            "routers[0] (/ws/chat): auth_required: is true but there is no valid jwt block";
        assert!(
            errs[1..].is_empty() || errs[1..] == [route_err],
            "{errs:#?}"
        );
    }
}

fn wss_config(tls: Value) -> Value {
    let mut r = router("/ws/chat");
    r["backends"][0]["host"] = json!("wss://backend.example");
    let mut c = config(vec![r]);
    c["tls"] = tls;
    c
}

#[test]
#[cfg(feature = "tls-backend")]
fn tls_ca_file() {
    // A real CA file is added to the roots.
    let cert = rcgen::generate_simple_self_signed(vec!["backend.example".into()]).unwrap();
    let ca = TempFile::new("ca.pem", cert.cert.pem().as_bytes());
    let c = ok_value(&wss_config(json!({ "ca_file": ca.json() }))).config;
    assert!(c.backend_tls.is_some());

    // Missing: the error names the file.
    let missing = ca.path().with_extension("missing");
    let err = one_error(&wss_config(
        json!({ "ca_file": missing.display().to_string() }),
    ));
    assert!(
        err.starts_with(&format!("tls.ca_file: {}: ", missing.display())),
        "{err}"
    );

    // Not PEM.
    let junk = TempFile::new("junk.pem", b"not a certificate\n");
    let err = one_error(&wss_config(json!({ "ca_file": junk.json() })));
    assert_eq!(
        err,
        format!(
            "tls.ca_file: {}: no PEM certificate in it",
            junk.path().display()
        )
    );

    // Not a string.
    let err = one_error(&wss_config(json!({ "ca_file": 1 })));
    assert_eq!(err, "tls.ca_file: must be a string, found a number");
}

/// Current behaviour: with only ws:// backends the CA file is never opened, so a wrong path is
/// not reported until a wss:// backend is added.
#[test]
#[cfg(feature = "tls-backend")]
fn tls_ca_file_checked_even_without_a_wss_backend() {
    let missing =
        std::env::temp_dir().join(format!("kairos-no-such-ca-{}.pem", std::process::id()));
    let mut c = config_with(json!({}));
    c["tls"] = json!({ "ca_file": missing.display().to_string() });
    let e = one_error(&c);
    assert!(
        e.starts_with("tls.ca_file:") && e.contains("kairos-no-such-ca"),
        "{e}"
    );
}

#[test]
fn routes_differing_only_in_parameter_names_are_duplicates() {
    let mut a = router("/rooms/{a}");
    a["internal_path"] = json!("/ws");
    let mut b = router("/rooms/{b}");
    b["internal_path"] = json!("/ws");
    let e = one_error(&config(vec![a, b]));
    assert!(e.contains("duplicate of routers[0]"), "{e}");
}

fn example() -> Config {
    ok(include_str!("../../config.json")).config
}

#[test]
fn listen_env_overrides_server_block() {
    type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<(&'a str, u16)>);
    let cases: &[Case] = &[
        (None, None, Some(("0.0.0.0", 5900))),
        (Some("127.0.0.1"), None, Some(("127.0.0.1", 5900))),
        (None, Some("8080"), Some(("0.0.0.0", 8080))),
        (Some("::1"), Some("0"), Some(("::1", 0))),
        (Some(""), Some(""), Some(("0.0.0.0", 5900))),
        (None, Some("65535"), Some(("0.0.0.0", 65535))),
        (None, Some("65536"), None),
        (None, Some("-1"), None),
        (None, Some("abc"), None),
        (None, Some(" 80"), None),
    ];
    for (host, port, want) in cases {
        let mut c = example();
        let got = c.apply_listen_env(host.map(String::from), port.map(String::from));
        match want {
            Some((h, p)) => {
                assert!(got.is_ok(), "{host:?} {port:?}: {got:?}");
                assert_eq!((c.host.as_str(), c.port), (*h, *p), "{host:?} {port:?}");
            }
            None => {
                let e = got.unwrap_err();
                assert_eq!(
                    e.problems,
                    vec![format!(
                        "KAIROS_PORT: {:?} is not a port number (0-65535)",
                        port.unwrap()
                    )]
                );
            }
        }
    }
}

#[test]
fn listen_env_overrides_file_values() {
    let mut c = ok_value(&config_with(
        json!({ "server": { "host": "10.1.1.1", "port": 1 } }),
    ))
    .config;
    c.apply_listen_env(Some("127.0.0.1".into()), Some("0".into()))
        .unwrap();
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 0));
}

/// Regression: text from the file is escaped, so every problem stays on one line.
#[test]
fn messages_stay_on_one_line() {
    let mut r = router("/ws/chat\nerror: forged");
    r["retry\nx"] = json!(1);
    let errs = errors_value(&config(vec![r.clone()]));
    assert_eq!(
        errs,
        vec![
            r#"routers[0] (/ws/chat\nerror: forged): external_path: "/ws/chat\nerror: forged" must be a plain path (no query, fragment, space or control character)"#,
            r#"routers[0] (/ws/chat\nerror: forged): retry\nx: unknown field; did you mean "retry"?"#,
        ]
    );
    r["external_path"] = json!("/ws/chat");
    assert_eq!(
        one_error(&config(vec![r])),
        r#"routers[0] (/ws/chat): retry\nx: unknown field; did you mean "retry"?"#
    );
}

#[test]
fn server_shutdown_and_reload_poll() {
    let c = example();
    assert_eq!(c.shutdown_timeout, Duration::from_millis(20_000));
    assert_eq!(c.close_spread, Duration::from_millis(10_000));
    assert_eq!(c.reload_poll, Some(Duration::from_millis(2000)));
    assert!(c.listener_tls.is_none());
    assert!(c.admin.is_none());

    let server = |s: Value| ok_value(&config_with(json!({ "server": s }))).config;
    let c = server(json!({ "shutdown_timeout_ms": 0, "reload_poll_ms": 0 }));
    assert_eq!(c.shutdown_timeout, Duration::ZERO);
    assert_eq!(c.reload_poll, None, "0 turns polling off");
    let c = server(json!({ "shutdown_timeout_ms": 3_600_000, "reload_poll_ms": 86_400_000 }));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(3600));
    assert_eq!(c.reload_poll, Some(Duration::from_secs(86_400)));
    let c = server(json!({ "shutdown_timeout_ms": 1500, "reload_poll_ms": 250 }));
    assert_eq!(c.shutdown_timeout, Duration::from_millis(1500));
    assert_eq!(
        c.close_spread,
        Duration::from_millis(750),
        "half the timeout by default"
    );
    assert_eq!(c.reload_poll, Some(Duration::from_millis(250)));
    let c = server(json!({ "shutdown_timeout_ms": 60_000, "close_spread_ms": 0 }));
    assert_eq!(
        (c.shutdown_timeout, c.close_spread),
        (Duration::from_secs(60), Duration::ZERO)
    );
    let c = server(json!({ "shutdown_timeout_ms": 60_000 }));
    assert_eq!(
        c.close_spread,
        Duration::from_secs(10),
        "at most 10 s by default"
    );
    let long = config_with(json!({ "server": { "close_spread_ms": 30_000 } }));
    assert!(one_error(&long).contains(
        "server.close_spread_ms: 30000 ms is longer than server.shutdown_timeout_ms (20000 ms)"
    ));

    let cases = [
        (
            json!({ "shutdown_timeout_ms": 3_600_001 }),
            "server.shutdown_timeout_ms: must be an integer from 0 to 3600000, found 3600001",
        ),
        (
            json!({ "shutdown_timeout_ms": "10s" }),
            r#"server.shutdown_timeout_ms: must be an integer from 0 to 3600000, found "10s""#,
        ),
        (
            json!({ "reload_poll_ms": 86_400_001 }),
            "server.reload_poll_ms: must be an integer from 0 to 86400000, found 86400001",
        ),
        (
            json!({ "reload_poll_ms": -1 }),
            "server.reload_poll_ms: must be an integer from 0 to 86400000, found -1",
        ),
    ];
    for (s, want) in cases {
        assert_eq!(one_error(&config_with(json!({ "server": s }))), want);
    }
}

#[test]
#[cfg(feature = "admin")]
fn admin_block() {
    let admin = |a: Value, s: Value| config_with(json!({ "admin": a, "server": s }));
    let c = ok_value(&admin(json!({}), json!({}))).config;
    assert_eq!(c.admin, Some(("127.0.0.1".to_string(), 9900)));
    let c = ok_value(&admin(json!({ "host": "0.0.0.0", "port": 0 }), json!({}))).config;
    assert_eq!(c.admin, Some(("0.0.0.0".to_string(), 0)));
    // Same port on another host, or port 0 for both, is no clash.
    let c = ok_value(&admin(
        json!({ "host": "127.0.0.1", "port": 5900 }),
        json!({ "host": "10.0.0.1" }),
    ))
    .config;
    assert_eq!(c.admin, Some(("127.0.0.1".to_string(), 5900)));
    ok_value(&admin(
        json!({ "port": 0 }),
        json!({ "host": "127.0.0.1", "port": 0 }),
    ));

    // The public listener's own address: the admin endpoints share it.
    let shared = ok_value(&admin(
        json!({ "port": 5900 }),
        json!({ "host": "127.0.0.1" }),
    ));
    assert!(shared.config.admin_on_public());
    let apart = ok_value(&admin(
        json!({ "port": 9900 }),
        json!({ "host": "127.0.0.1" }),
    ));
    assert!(!apart.config.admin_on_public());
    let cases = [
        (
            admin(json!({ "port": 70000 }), json!({})),
            "admin.port: must be an integer from 0 to 65535, found 70000",
        ),
        (
            admin(json!({ "host": 1 }), json!({})),
            "admin.host: must be a string, found a number",
        ),
        (
            admin(json!("127.0.0.1:9900"), json!({})),
            "admin: must be a JSON object, found a string",
        ),
    ];
    for (c, want) in cases {
        assert_eq!(one_error(&c), want, "{c}");
    }
    assert_eq!(
        one_error(&admin(json!({ "prot": 1 }), json!({}))),
        r#"admin.prot: unknown field; did you mean "port"?"#
    );
}

#[test]
#[cfg(feature = "admin")]
fn admin_shares_the_public_port_when_the_environment_moves_it_there() {
    let mut c = ok_value(&config_with(
        json!({ "admin": { "host": "127.0.0.1", "port": 9900 } }),
    ))
    .config;
    c.apply_listen_env(Some("127.0.0.1".into()), None).unwrap();
    assert!(!c.admin_on_public());
    c.apply_listen_env(None, Some("9900".into())).unwrap();
    assert!(c.admin_on_public());
}

/// A certificate for `localhost` and its key, as PEM.
fn cert_and_key() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn listener_tls(tls: Value) -> Value {
    config_with(json!({ "server": { "tls": tls } }))
}

#[test]
#[cfg(feature = "tls-listener")]
fn listener_tls_loads_with_http11_alpn() {
    let (cert, key) = cert_and_key();
    let cert = TempFile::new("cert.pem", cert.as_bytes());
    let key = TempFile::new("key.pem", key.as_bytes());
    let c = ok_value(&listener_tls(
        json!({ "cert_file": cert.json(), "key_file": key.json() }),
    ))
    .config;
    let tls = c.listener_tls.expect("a TLS listener config");
    assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);

    // Relative paths are from the config file's directory (`base()` here).
    let name = |f: &TempFile| f.path().file_name().unwrap().to_str().unwrap().to_string();
    let c = ok_value(&listener_tls(
        json!({ "cert_file": name(&cert), "key_file": name(&key) }),
    ))
    .config;
    assert!(c.listener_tls.is_some());

    // A chain (leaf, then more) and a key file that also holds the certificate are fine.
    let (ca, _) = cert_and_key();
    let chain = TempFile::new("chain.pem", format!("{}{ca}", cert_pem(&cert)).as_bytes());
    let both = TempFile::new(
        "both.pem",
        format!("{}{}", cert_pem(&cert), cert_pem(&key)).as_bytes(),
    );
    ok_value(&listener_tls(
        json!({ "cert_file": chain.json(), "key_file": both.json() }),
    ));
}

fn cert_pem(f: &TempFile) -> String {
    std::fs::read_to_string(f.path()).unwrap()
}

#[test]
#[cfg(feature = "tls-listener")]
fn listener_tls_errors_name_field_file_and_problem() {
    let (cert_text, key_text) = cert_and_key();
    let cert = TempFile::new("cert.pem", cert_text.as_bytes());
    let key = TempFile::new("key.pem", key_text.as_bytes());
    let (_, other_key_text) = cert_and_key();
    let other_key = TempFile::new("other-key.pem", other_key_text.as_bytes());
    let junk = TempFile::new("junk.pem", b"not PEM at all\n");
    let bad_der = TempFile::new(
        "bad-der.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let encrypted = TempFile::new(
        "enc.pem",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let missing = cert.path().with_extension("missing");
    let shown = |p: &Path| p.display().to_string();
    let (c, k) = (shown(cert.path()), shown(key.path()));
    type Case = (String, String, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            shown(&missing),
            k.clone(),
            vec![format!(
                "server.tls.cert_file: {}: cannot read it: No such file or directory (os error 2)",
                shown(&missing)
            )],
        ),
        (
            shown(&base()),
            k.clone(),
            vec![format!(
                "server.tls.cert_file: {}: cannot read it: Is a directory (os error 21)",
                shown(&base())
            )],
        ),
        (
            shown(junk.path()),
            k.clone(),
            vec![format!(
                "server.tls.cert_file: {}: no certificate in it (want PEM -----BEGIN CERTIFICATE-----)",
                shown(junk.path())
            )],
        ),
        (
            k.clone(),
            k.clone(),
            vec![format!(
                "server.tls.cert_file: {k}: no certificate in it (want PEM -----BEGIN CERTIFICATE-----) (it holds a private key: is it the key file?)"
            )],
        ),
        (
            c.clone(),
            c.clone(),
            vec![format!(
                "server.tls.key_file: {c}: no private key in it (want PEM -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
            )],
        ),
        (
            c.clone(),
            shown(encrypted.path()),
            vec![format!(
                "server.tls.key_file: {}: the private key is encrypted: give it unencrypted (openssl pkey -in KEY -out PLAIN.pem)",
                shown(encrypted.path())
            )],
        ),
        (
            c.clone(),
            shown(other_key.path()),
            vec![format!(
                "server.tls.key_file: {}: does not match the certificate in {c} (the first certificate there must be the server's own, followed by its chain)",
                shown(other_key.path())
            )],
        ),
        // Both files wrong: both reported.
        (
            shown(&missing),
            shown(junk.path()),
            vec![
                format!(
                    "server.tls.cert_file: {}: cannot read it: No such file or directory (os error 2)",
                    shown(&missing)
                ),
                format!(
                    "server.tls.key_file: {}: no private key in it (want PEM -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
                    shown(junk.path())
                ),
            ],
        ),
    ];
    for (cert_file, key_file, want) in cases {
        let v = listener_tls(json!({ "cert_file": cert_file, "key_file": key_file }));
        assert_eq!(errors_value(&v), want, "{v}");
    }

    // A key block that is not a usable key.
    let bad_key = TempFile::new(
        "bad-key.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let e = one_error(&listener_tls(
        json!({ "cert_file": c, "key_file": bad_key.json() }),
    ));
    assert!(
        e.starts_with(&format!(
            "server.tls.key_file: {}: unusable private key (",
            shown(bad_key.path())
        )),
        "{e}"
    );

    // A certificate block that is not a certificate.
    let e = one_error(&listener_tls(
        json!({ "cert_file": bad_der.json(), "key_file": k }),
    ));
    assert!(
        e.starts_with(&format!(
            "server.tls.cert_file: {}: the first certificate cannot be parsed: ",
            shown(bad_der.path())
        )),
        "{e}"
    );
}

#[test]
#[cfg(feature = "tls-listener")]
fn listener_tls_block_shape() {
    let (cert, _) = cert_and_key();
    let cert = TempFile::new("cert.pem", cert.as_bytes());
    let cases = [
        (
            json!({}),
            vec![
                "server.tls.cert_file: is required",
                "server.tls.key_file: is required",
            ],
        ),
        (
            json!({ "cert_file": cert.json() }),
            vec!["server.tls.key_file: is required"],
        ),
        (
            json!({ "cert_file": 1, "key_file": [] }),
            vec![
                "server.tls.cert_file: must be a string, found a number",
                "server.tls.key_file: must be a string, found an array",
            ],
        ),
        (
            json!(true),
            vec!["server.tls: must be a JSON object, found a boolean"],
        ),
    ];
    for (tls, want) in cases {
        assert_eq!(errors_value(&listener_tls(tls.clone())), want, "{tls}");
    }
    let (cert_text, key_text) = cert_and_key();
    let cert = TempFile::new("cert.pem", cert_text.as_bytes());
    let key = TempFile::new("key.pem", key_text.as_bytes());
    let c =
        listener_tls(json!({ "cert_file": cert.json(), "key_file": key.json(), "ca_file": "x" }));
    assert_eq!(
        one_error(&c),
        "server.tls.ca_file: unknown field; known fields: cert_file, key_file"
    );
}

#[test]
fn policy_fields_default_to_nothing_limited() {
    let c = ok_value(&config(vec![router("/ws/chat")])).config;
    let r = &c.routes[0];
    assert_eq!(c.limits.max_connections, None);
    assert_eq!(r.max_connections, None);
    assert_eq!(r.rate_limit, super::RateLimit::default());
    assert_eq!(r.rate_limit.max_tracked_clients, 100_000);
    assert_eq!((r.origins.clone(), r.require_origin), (None, false));
    assert_eq!(r.filter, None);
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.ipv6_prefix, 64);
}

#[test]
fn policy_fields_are_read() {
    use super::OnExceed;
    use crate::bucket::Bucket;
    let mut r = router("/ws/chat");
    r["max_connections"] = json!(100);
    r["rate_limit"] = json!({
        "connections_per_ip": 4,
        "handshakes_per_second_per_ip": { "rate": 2, "burst": 5 },
        "messages_per_second": 50,
        "bytes_per_second": { "rate": 1024 },
        "on_exceed": "close",
        "max_tracked_clients": 5000
    });
    r["allowed_origins"] = json!(["https://App.example.com", "http://localhost:8080"]);
    r["require_origin"] = json!(true);
    r["message_filter"] = json!({
        "allow_types": ["text"],
        "max_message_bytes": { "client_to_backend": 4096 },
        "require_json": true
    });
    let c = ok_value(&json!({
        "version": 1, "routers": [r],
        "limits": { "max_connections": 1000 },
        "server": { "trusted_proxies": ["10.0.0.0/8", "::1"], "ipv6_prefix": 56 }
    }))
    .config;
    let r = &c.routes[0];
    assert_eq!(c.limits.max_connections, Some(1000));
    assert_eq!(r.max_connections, Some(100));
    let rl = &r.rate_limit;
    assert_eq!(rl.connections_per_ip, Some(4));
    assert_eq!(
        rl.handshakes_per_ip,
        Some(Bucket {
            rate: 2.0,
            burst: 5.0
        })
    );
    assert_eq!(
        rl.messages,
        Some(Bucket {
            rate: 50.0,
            burst: 50.0
        })
    );
    assert_eq!(
        rl.bytes,
        Some(Bucket {
            rate: 1024.0,
            burst: 1024.0
        })
    );
    assert_eq!(rl.on_exceed, OnExceed::Close);
    assert_eq!(rl.max_tracked_clients, 5000);
    assert_eq!(
        r.origins.as_deref(),
        Some(
            &[
                "https://app.example.com".to_string(),
                "http://localhost:8080".to_string()
            ][..]
        )
    );
    assert!(r.require_origin);
    let f = r.filter.as_ref().unwrap();
    assert_eq!(
        (f.allow_text, f.allow_binary, f.require_json),
        (true, false, true)
    );
    assert_eq!((f.max_up, f.max_down), (Some(4096), None));
    assert_eq!((c.trusted_proxies.len(), c.ipv6_prefix), (2, 56));
    let mut any = router("/ws/chat");
    any["allowed_origins"] = json!(["*"]);
    assert_eq!(ok_value(&config(vec![any])).config.routes[0].origins, None);
}

#[test]
fn policy_field_errors_name_the_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("max_connections", json!(0), "max_connections: must be an integer from 1"),
        ("rate_limit", json!({ "messages_per_second": -1 }), "rate_limit.messages_per_second: must be a positive number"),
        ("rate_limit", json!({ "bytes_per_second": { "rate": 10, "burst": 0.5 } }), "rate_limit.bytes_per_second: must be a positive number, or {\"rate\": N, \"burst\": M} with M >= 1"),
        ("rate_limit", json!({ "on_exceed": "drop" }), "rate_limit.on_exceed: \"drop\" is not \"throttle\" or \"close\""),
        ("rate_limit", json!({ "connections_per_ip": 0 }), "rate_limit.connections_per_ip: must be an integer from 1"),
        ("rate_limit", json!({ "max_tracked_clients": 15 }), "rate_limit.max_tracked_clients: must be an integer from 16 to 1000000"),
        ("allowed_origins", json!(["example.com"]), "allowed_origins: \"example.com\" is not an origin"),
        ("allowed_origins", json!(["https://a.com/path"]), "is not an origin"),
        ("message_filter", json!({ "allow_types": ["ping"] }), "message_filter.allow_types: \"ping\" is not \"text\" or \"binary\""),
        ("message_filter", json!({ "max_message_bytes": 5 }), "message_filter.max_message_bytes: must be {"),
        ("message_filter", json!({ "max_message_bytes": { "client_to_backend": 1 } }), "message_filter.max_message_bytes.client_to_backend: must be an integer from 16"),
    ];
    for (key, value, says) in cases {
        let mut r = router("/ws/chat");
        r[key] = value;
        let e = one_error(&config(vec![r]));
        assert!(e.contains(says), "{key}: want {says:?} in {e}");
    }
    let e = one_error(&json!({ "version": 1, "routers": [router("/ws/chat")],
        "server": { "trusted_proxies": ["10.0.0.0/40"] } }));
    assert!(
        e.contains("server.trusted_proxies: \"10.0.0.0/40\": the prefix must be 0 to 32"),
        "{e}"
    );
    let e = one_error(&json!({ "version": 1, "routers": [router("/ws/chat")],
        "server": { "ipv6_prefix": 129 } }));
    assert!(
        e.contains("server.ipv6_prefix: must be an integer from 32 to 128"),
        "{e}"
    );
}

#[test]
fn jwt_policy_fields() {
    let c = ok_value(&config_with(json!({ "jwt": { "secret": "s" } }))).config;
    let j = c.jwt.as_ref().unwrap();
    assert!(j.enforce_expiry && !j.strip_authorization && j.forward_claims.is_empty());
    let c = ok_value(&config_with(json!({ "jwt": { "secret": "s", "enforce_expiry": false,
        "strip_authorization": true, "forward_claims": { "sub": "X-User-Id", "tenant": "X-Tenant" } } })))
    .config;
    let j = c.jwt.as_ref().unwrap();
    assert!(!j.enforce_expiry && j.strip_authorization);
    assert_eq!(j.forward_claims.len(), 2);
    assert!(j
        .forward_claims
        .contains(&("sub".into(), "X-User-Id".into())));
    for (claims, says) in [
        (
            json!({ "sub": "Host" }),
            "\"Host\" is a header the gateway sets itself",
        ),
        (
            json!({ "sub": "Bad Name" }),
            "\"Bad Name\" is not a valid header name",
        ),
        (
            json!({ "sub": "X-A", "iss": "x-a" }),
            "is used for two claims",
        ),
        (json!({ "sub": 1 }), "the header name must be a string"),
        (json!(["sub"]), "jwt.forward_claims: must be an object"),
    ] {
        let e = one_error(&config_with(
            json!({ "jwt": { "secret": "s", "forward_claims": claims } }),
        ));
        assert!(e.contains(says), "want {says:?} in {e}");
    }
}

#[test]
fn an_unknown_field_in_a_rate_is_an_error() {
    let mut r = router("/ws/chat");
    r["rate_limit"] = json!({ "messages_per_second": { "rate": 5, "burts": 9 } });
    assert_eq!(
        one_error(&config(vec![r])),
        r#"routers[0] (/ws/chat): rate_limit.messages_per_second.burts: unknown field; did you mean "burst"?"#
    );
}

/// The config holds the `jwt` settings (the verifier is built from them): printing it must not
/// print the secret.
#[test]
fn the_jwt_secret_never_shows_in_debug_output() {
    let c = ok_value(&config_with(json!({ "jwt": { "secret": "s3cret-value" } }))).config;
    let shown = format!("{c:?}");
    assert!(shown.contains("Secret(..)"), "{shown}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
}

/// A build without a feature refuses the config that asks for it, naming the feature (the edge
/// build: `--no-default-features`).
#[test]
#[cfg(not(full))]
fn a_build_without_a_feature_refuses_what_needs_it_and_names_the_feature() {
    let mut cases: Vec<(Value, &str)> = Vec::new();
    if !cfg!(feature = "admin") {
        cases.push((
            config_with(json!({ "admin": {} })),
            "admin: this build has no admin listener",
        ));
    }
    if !cfg!(feature = "tls-listener") {
        let tls = json!({ "tls": { "cert_file": "c.pem", "key_file": "k.pem" } });
        cases.push((
            config_with(json!({ "server": tls })),
            "server.tls: this build has no TLS listener",
        ));
    }
    if !cfg!(feature = "tls-backend") {
        let mut wss = config(vec![router("/ws/chat")]);
        wss["routers"][0]["backends"][0]["host"] = json!("wss://b.example");
        let want = r#"backends[0].host: "wss://b.example": this build has no TLS client"#;
        cases.push((wss, want));
        let ca = config_with(json!({ "tls": { "ca_file": "ca.pem" } }));
        cases.push((ca, "tls.ca_file: this build has no TLS client"));
    }
    if !cfg!(feature = "jwt-asymmetric") {
        let jwt = json!({ "jwt": { "secret": "s", "algorithms": ["RS256"] } });
        cases.push((
            config_with(jwt),
            "jwt.algorithms: RS256 needs a build with the jwt-asymmetric feature",
        ));
    }
    assert!(!cases.is_empty());
    for (v, want) in &cases {
        let errs = errors_value(v);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "want {want:?} in {errs:#?}"
        );
    }
}

#[test]
#[cfg(feature = "admin")]
fn admin_token_is_kept_and_a_weak_one_is_an_error() {
    let admin = |a: Value| config_with(json!({ "admin": a }));
    let strong = "0123456789abcdef-admin";
    let c = ok_value(&admin(json!({ "token": strong }))).config;
    assert_eq!(c.admin_token.as_deref(), Some(strong));
    assert_eq!(ok_value(&admin(json!({}))).config.admin_token, None);
    let e = errors_value(&admin(json!({ "token": "secret" }))).join("\n");
    assert!(
        e.contains("admin.token: must be at least 16 characters, found 6"),
        "{e}"
    );
    let e = errors_value(&admin(json!({ "token": "0123456789 abcdef" }))).join("\n");
    assert!(e.contains("admin.token: must not hold spaces"), "{e}");
    let e = errors_value(&config_with(json!({ "access_log": { "format": "xml" } }))).join("\n");
    assert!(
        e.contains(r#"access_log.format: must be "text" or "json", found "xml""#),
        "{e}"
    );
}
