//! Unit tests of the rules on messages: set (each source), remove, rename, paths, order.
use super::*;
use crate::config::MessageTransform;
use serde_json::json;

fn rules(list: Value) -> Vec<Rule> {
    let cfg = json!({
        "version": 1,
        "jwt": {"secret": "0123456789abcdef0123456789abcdef", "algorithms": ["HS256"]},
        "routers": [{"protocol": "websocket", "external_path": "/ws/chat", "internal_path": "/",
            "methods": ["GET"], "auth_required": true,
            "backends": [{"host": "ws://127.0.0.1", "port": 9}],
            "message_transform": {"client_to_backend": list}}]
    });
    let loaded = crate::config::parse(&cfg.to_string(), std::path::Path::new(".")).expect("config");
    let t: &MessageTransform = loaded.config.routes[0].transform.as_ref().expect("rules");
    t.client_to_backend.clone()
}

fn claims() -> Map<String, Value> {
    json!({"sub": "alice", "tenant": {"id": 7}})
        .as_object()
        .cloned()
        .unwrap()
}

fn run(list: Value, msg: &str) -> Result<Option<String>, Violation> {
    let claims = claims();
    let cx = Context {
        claims: Some(&claims),
        id: 42,
        client: "10.0.0.9".parse().unwrap(),
        route: "/ws/chat",
    };
    let t = Transformer::new(&rules(list), 1 << 20, &cx).unwrap();
    t.apply(msg.as_bytes())
        .map(|o| o.map(|v| String::from_utf8(v).unwrap()))
}

#[test]
fn set_from_each_source_keeps_the_order_of_untouched_members() {
    let out = run(
        json!([{"set": "/from", "from_claim": "sub"}, {"set": "/meta/conn", "from": "connection_id"},
               {"set": "/meta/ip", "from": "client_address"}, {"set": "/meta/route", "from": "route"},
               {"set": "/v", "value": 2}, {"set": "/t", "from_claim": "tenant"}]),
        r#" {"z": 1, "from": "bob", "a": [1, 2.50, 12345678901234567890], "b": {"y": null}} "#,
    );
    assert_eq!(
        out.unwrap().unwrap(),
        r#"{"z":1,"from":"alice","a":[1,2.5,12345678901234567890],"b":{"y":null},"meta":{"conn":42,"ip":"10.0.0.9","route":"/ws/chat"},"v":2,"t":{"id":7}}"#
    );
}

#[test]
fn remove_and_rename() {
    let list =
        json!([{"remove": "/internal"}, {"rename": "/a", "to": "/b/c"}, {"remove": "/none/x"}]);
    let out = run(list, r#"{"internal": {"k": 1}, "a": 5, "keep": true}"#);
    assert_eq!(out.unwrap().unwrap(), r#"{"keep":true,"b":{"c":5}}"#);
    let list = json!([{"rename": "/missing", "to": "/b"}]);
    assert_eq!(run(list, r#"{"a":1}"#).unwrap().unwrap(), r#"{"a":1}"#);
}

#[test]
fn pointers_with_escapes_and_received_at() {
    let list = json!([{"set": "/a~1b/c~0d", "value": "x"}, {"set": "/at", "from": "received_at"}]);
    let out = run(list, "{}").unwrap().unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["a/b"]["c~d"], "x");
    let at = v["at"].as_str().unwrap();
    assert_eq!((at.len(), &at[10..11], &at[23..]), (24, "T", "Z"), "{at}");
}

#[test]
fn what_passes_unchanged_and_what_is_refused() {
    let list = || json!([{"set": "/from", "from_claim": "sub"}]);
    for same in [
        "hello",
        "[1, {\"from\": \"bob\"}]",
        "\"{\"",
        "42",
        "",
        "   ",
    ] {
        assert_eq!(run(list(), same).unwrap(), None, "{same:?}");
    }
    for bad in ["{", "{\"from\": \"bob\"} x", "{\"a\": 1,}"] {
        assert!(
            matches!(run(list(), bad), Err(Violation::Invalid(_))),
            "{bad:?}"
        );
    }
    let deep = format!(
        "{{\"from\":\"bob\",\"x\":{}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(matches!(run(list(), &deep), Err(Violation::Invalid(_))));
    let through = json!([{"set": "/meta/conn", "from": "connection_id"}]);
    assert!(matches!(
        run(through, r#"{"meta": "x"}"#),
        Err(Violation::Invalid(_))
    ));
    let t = Transformer::new(
        &[],
        1 << 20,
        &Context {
            claims: None,
            id: 1,
            client: [127, 0, 0, 1].into(),
            route: "/",
        },
    );
    assert!(matches!(
        t.unwrap().apply(b"{\"a\":\"\xff\"}"),
        Err(Violation::Utf8)
    ));
}

#[test]
fn a_missing_claim_is_named() {
    let empty = Map::new();
    let cx = Context {
        claims: Some(&empty),
        id: 1,
        client: [127, 0, 0, 1].into(),
        route: "/",
    };
    let err = Transformer::new(
        &rules(json!([{"set": "/from", "from_claim": "sub"}])),
        1 << 20,
        &cx,
    );
    assert_eq!(err.unwrap_err(), "sub");
}
