//! Table-driven tests of the strict rules: an unknown field anywhere is an error naming its
//! full path and the closest known field (or every known field of that object), a `protocol`
//! is `websocket` or a known Kairos protocol this gateway skips, and a config must serve at
//! least one websocket route.

use serde_json::{json, Value};

use super::tests::{config, config_with, errors_value, ok_value, one_error, router};

/// A change to a whole config, for the tables.
type Edit = fn(&mut Value);

/// The config with one valid router `/ws/chat`, changed by `edit`: it must be refused, with
/// `want` among its problems.
fn refused_with(what: &str, edit: Edit, want: &str) -> Vec<String> {
    let mut c = config(vec![router("/ws/chat")]);
    edit(&mut c);
    let errs = errors_value(&c);
    assert!(
        errs.iter().any(|e| e == want),
        "{what}: missing {want:?} in {errs:#?}"
    );
    errs
}

#[test]
#[cfg(full)]
fn a_misspelt_field_at_any_level_is_an_error_suggesting_the_known_one() {
    // (the misspelt field's path, the edit that puts it there, the field meant)
    let r = "routers[0] (/ws/chat): ";
    let cases: Vec<(String, Edit, &str)> = vec![
        ("limit".into(), |c| c["limit"] = json!({}), "limits"),
        (
            "server.hots".into(),
            |c| c["server"] = json!({ "hots": "127.0.0.1" }),
            "host",
        ),
        (
            "server.tls.key_flie".into(),
            |c| c["server"] = json!({ "tls": { "cert_file": "c.pem", "key_flie": "k.pem" } }),
            "key_file",
        ),
        (
            "admin.prot".into(),
            |c| c["admin"] = json!({ "prot": 9900 }),
            "port",
        ),
        (
            "limits.max_conections".into(),
            |c| c["limits"] = json!({ "max_conections": 10 }),
            "max_connections",
        ),
        (
            "jwt.algorithm".into(),
            |c| c["jwt"] = json!({ "secret": "s", "algorithm": ["HS256"] }),
            "algorithms",
        ),
        (
            "tls.ca_fille".into(),
            |c| c["tls"] = json!({ "ca_fille": "x.pem" }),
            "ca_file",
        ),
        (
            format!("{r}auth_requried"),
            |c| c["routers"][0]["auth_requried"] = json!(true),
            "auth_required",
        ),
        (
            format!("{r}backends[0].wieght"),
            |c| c["routers"][0]["backends"][0]["wieght"] = json!(2),
            "weight",
        ),
        (
            format!("{r}retry.max_retry"),
            |c| c["routers"][0]["retry"] = json!({ "max_retry": 1 }),
            "max_retries",
        ),
        (
            format!("{r}sticky.kye"),
            |c| c["routers"][0]["sticky"] = json!({ "kye": "ip" }),
            "key",
        ),
        (
            format!("{r}circuit_breaker.open_msec"),
            |c| c["routers"][0]["circuit_breaker"] = json!({ "open_msec": 100 }),
            "open_ms",
        ),
        (
            format!("{r}health_check.intervall_ms"),
            |c| c["routers"][0]["health_check"] = json!({ "intervall_ms": 1000 }),
            "interval_ms",
        ),
        (
            format!("{r}rate_limit.on_exceeded"),
            |c| c["routers"][0]["rate_limit"] = json!({ "on_exceeded": "close" }),
            "on_exceed",
        ),
        (
            format!("{r}rate_limit.messages_per_second.burts"),
            |c| {
                c["routers"][0]["rate_limit"] =
                    json!({ "messages_per_second": { "rate": 5, "burts": 9 } })
            },
            "burst",
        ),
        (
            format!("{r}message_filter.require_jsn"),
            |c| c["routers"][0]["message_filter"] = json!({ "require_jsn": true }),
            "require_json",
        ),
        (
            format!("{r}message_filter.max_message_bytes.client_to_backends"),
            |c| {
                c["routers"][0]["message_filter"] =
                    json!({ "max_message_bytes": { "client_to_backends": 64 } })
            },
            "client_to_backend",
        ),
    ];
    for (path, edit, known) in cases {
        let want = format!("{path}: unknown field; did you mean \"{known}\"?");
        let errs = refused_with(&path, edit, &want);
        let unknown = errs.iter().filter(|e| e.contains("unknown field")).count();
        assert_eq!(unknown, 1, "{path}: {errs:#?}");
    }
}

#[test]
fn a_field_in_the_wrong_case_is_an_error_naming_the_right_one() {
    let cases: [(&str, Edit, &str); 3] = [
        (
            "router",
            |c| c["routers"][0]["Auth_Required"] = json!(true),
            r#"routers[0] (/ws/chat): Auth_Required: unknown field; did you mean "auth_required"?"#,
        ),
        (
            "server",
            |c| c["server"] = json!({ "PORT": 80 }),
            r#"server.PORT: unknown field; did you mean "port"?"#,
        ),
        (
            "root",
            |c| {
                let routers = c["routers"].take();
                c["Routers"] = routers;
                c.as_object_mut().unwrap().remove("routers");
            },
            r#"Routers: unknown field; did you mean "routers"?"#,
        ),
    ];
    for (what, edit, want) in cases {
        refused_with(what, edit, want);
    }
}

#[test]
fn a_field_close_to_none_is_an_error_listing_the_known_ones() {
    let cases: [(&str, Edit, &str); 4] = [
        (
            "root",
            |c| c["colour"] = json!("blue"),
            "colour: unknown field; known fields: version, server, admin, limits, jwt, access_log, \
             tls, routers",
        ),
        (
            "null counts",
            |c| c["extra"] = json!(null),
            "extra: unknown field; known fields: version, server, admin, limits, jwt, access_log, \
             tls, routers",
        ),
        (
            "backend",
            |c| c["routers"][0]["backends"][0]["tls_verify"] = json!(false),
            "routers[0] (/ws/chat): backends[0].tls_verify: unknown field; known fields: host, \
             port, weight, health_check_path",
        ),
        (
            "a rate",
            |c| {
                c["routers"][0]["rate_limit"] = json!({ "bytes_per_second": { "rate": 5, "x": 1 } })
            },
            "routers[0] (/ws/chat): rate_limit.bytes_per_second.x: unknown field; known fields: \
             rate, burst",
        ),
    ];
    for (what, edit, want) in cases {
        let mut c = config(vec![router("/ws/chat")]);
        edit(&mut c);
        assert_eq!(one_error(&c), want, "{what}");
    }
}

#[test]
fn every_unknown_field_is_reported_at_once_with_the_other_problems() {
    let mut r = router("/ws/chat");
    r["rety"] = json!({ "max_retries": 3 });
    r["methods"] = json!(["POST"]);
    let mut c = config(vec![r]);
    c["server"] = json!({ "hots": "127.0.0.1", "port": "x" });
    c["jwt"] = json!({ "secret": "s3cret", "algorithm": "HS256" });
    let mut errs = errors_value(&c);
    errs.sort();
    let mut want = vec![
        r#"jwt.algorithm: unknown field; did you mean "algorithms"?"#,
        r#"routers[0] (/ws/chat): methods: ["POST"] must contain "GET" (a WebSocket upgrade is a GET)"#,
        r#"routers[0] (/ws/chat): rety: unknown field; did you mean "retry"?"#,
        r#"server.hots: unknown field; did you mean "host"?"#,
        r#"server.port: must be an integer from 0 to 65535, found "x""#,
    ];
    want.sort();
    assert_eq!(errs, want);
}

#[test]
fn a_missing_protocol_still_reports_the_misspelt_one() {
    let mut r = router("/ws/chat");
    let protocol = r["protocol"].take();
    r.as_object_mut().unwrap().remove("protocol");
    r["protocl"] = protocol;
    let mut errs = errors_value(&config(vec![r]));
    errs.sort();
    assert_eq!(
        errs,
        vec![
            r#"routers[0] (/ws/chat): protocl: unknown field; did you mean "protocol"?"#,
            "routers[0] (/ws/chat): protocol: is required",
        ]
    );
}

#[test]
fn a_protocol_other_than_websocket_or_a_known_kairos_one_is_an_error() {
    let r = "routers[0] (/ws/chat): protocol: ";
    let others = r#"want "websocket" (or "http", "ftp", "dns": other Kairos routers, which this gateway skips)"#;
    let cases = [
        (
            json!("websockets"),
            r#"did you mean "websocket"?"#.to_string(),
        ),
        (
            json!("WebSocket"),
            r#"did you mean "websocket"?"#.to_string(),
        ),
        (json!("htp"), r#"did you mean "http"?"#.to_string()),
        (json!("grpc"), others.to_string()),
        (json!(""), others.to_string()),
    ];
    for (protocol, says) in cases {
        let mut route = router("/ws/chat");
        route["protocol"] = protocol.clone();
        let want = format!("{r}{protocol} is not a known protocol; {says}");
        assert_eq!(one_error(&config(vec![route])), want);
    }
    let mut route = router("/ws/chat");
    route["protocol"] = json!(42);
    assert_eq!(
        one_error(&config(vec![route])),
        format!("{r}must be a string, found a number")
    );
}

#[test]
fn routers_of_known_other_protocols_are_skipped_unchecked() {
    let c = config(vec![
        json!({ "protocol": "ftp", "colour": 1, "external_path": 7 }),
        router("/ws/chat"),
        json!({ "protocol": "dns" }),
        json!({ "protocol": "http", "auth_requried": true, "backends": "anything" }),
    ]);
    let loaded = ok_value(&c);
    assert_eq!(loaded.config.routes.len(), 1);
    let skipped = |i: usize, p: &str| {
        format!("routers[{i}] (?): protocol \"{p}\" is not served by this gateway: router skipped")
    };
    assert_eq!(
        loaded.warnings,
        vec![skipped(0, "ftp"), skipped(2, "dns"), skipped(3, "http")]
    );
}

#[test]
fn a_config_without_a_websocket_route_is_an_error() {
    let want = |n: usize| {
        format!(
            "routers: no websocket route ({n} router(s), none with \"protocol\": \
             \"websocket\"): every request would get 404"
        )
    };
    assert_eq!(one_error(&config(vec![])), want(0));
    let others = vec![
        json!({ "protocol": "http", "external_path": "/api" }),
        json!({ "protocol": "dns" }),
    ];
    assert_eq!(one_error(&config(others)), want(2));
    // A websocket router with its own problem is not reported twice.
    let mut broken = router("/ws/chat");
    broken["methods"] = json!(["POST"]);
    let e = one_error(&config(vec![broken]));
    assert!(e.contains("methods"), "{e}");
    // With one route, the config loads.
    assert_eq!(ok_value(&config_with(json!({}))).config.routes.len(), 1);
}
