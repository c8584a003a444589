use std::path::Path;

use super::*;

/// A config of `routes` (`(external_path, extra router fields)`) and `top` fields.
fn config(top: &str, routes: &[(&str, &str)]) -> Config {
    let routers: Vec<String> = routes
        .iter()
        .map(|(path, extra)| {
            format!(
                r#"{{ "protocol": "websocket", "methods": ["GET"], {extra}
                   "backends": [{{ "host": "ws://127.0.0.1", "port": 9 }}],
                   "external_path": "{path}", "internal_path": "/" }}"#
            )
        })
        .collect();
    let json = format!(
        r#"{{ {top} "version": 1, "routers": [{}] }}"#,
        routers.join(",")
    );
    crate::config::parse(&json, Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn route_and_gateway_limits_admit_exactly_their_number() {
    let c = config(
        r#""limits": { "max_connections": 3 },"#,
        &[("/a", r#""max_connections": 2,"#), ("/b", "")],
    );
    let admission = Admission::new();
    let gates = admission.gates(&c);
    let client = ip("192.0.2.1");
    let a1 = gates.enter(&c, 0, client).unwrap();
    let _a2 = gates.enter(&c, 0, client).unwrap();
    let err = gates.enter(&c, 0, client).err().unwrap();
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.rejection_reason(), Some("route_max_connections"));
    assert_eq!(err.headers().unwrap(), ("Retry-After", "1".into()));
    assert!(
        err.to_string().contains("route /a has 2 open connections"),
        "{err}"
    );
    // The refused attempt took nothing: /b gets the gateway's third place, and no fourth.
    let _b1 = gates.enter(&c, 1, client).unwrap();
    let err = gates.enter(&c, 1, client).err().unwrap();
    assert_eq!(err.rejection_reason(), Some("max_connections"));
    assert!(err.to_string().contains("limits.max_connections"), "{err}");
    assert_eq!(admission.open.load(Relaxed), 3);
    drop(a1);
    assert_eq!(admission.open.load(Relaxed), 2);
    let _b2 = gates.enter(&c, 1, client).unwrap();
}

#[test]
fn concurrent_entries_never_pass_the_limit() {
    let c = Arc::new(config("", &[("/a", r#""max_connections": 5,"#)]));
    let admission = Admission::new();
    let gates = Arc::new(admission.gates(&c));
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (c, gates, barrier) = (c.clone(), gates.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let tickets: Vec<Ticket> = (0..100)
                    .filter_map(|_| gates.enter(&c, 0, ip("192.0.2.1")).ok())
                    .collect();
                tickets
            })
        })
        .collect();
    let held: Vec<Vec<Ticket>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(held.iter().map(Vec::len).sum::<usize>(), 5);
    drop(held);
    assert_eq!(gates.routes[0].open.load(Relaxed), 0);
    assert_eq!(admission.open.load(Relaxed), 0);
}

#[test]
fn a_reload_keeps_the_counts_of_routes_that_stay() {
    let old = config("", &[("/a", r#""max_connections": 2,"#), ("/gone", "")]);
    let admission = Admission::new();
    let old_gates = admission.gates(&old);
    let held = [
        old_gates.enter(&old, 0, ip("192.0.2.1")).unwrap(),
        old_gates.enter(&old, 1, ip("192.0.2.1")).unwrap(),
    ];
    // The new config lowers /a's limit to 1: the connection the old one admitted fills it.
    let new = config(
        r#""limits": { "max_connections": 2 },"#,
        &[("/new", ""), ("/a", r#""max_connections": 1,"#)],
    );
    let new_gates = admission.gates(&new);
    let err = new_gates.enter(&new, 1, ip("192.0.2.1")).err().unwrap();
    assert_eq!(err.rejection_reason(), Some("route_max_connections"));
    // The gateway's count is the gateway's: the two old connections fill max_connections.
    let err = new_gates.enter(&new, 0, ip("192.0.2.1")).err().unwrap();
    assert_eq!(err.rejection_reason(), Some("max_connections"));
    drop(held);
    drop(old_gates);
    let _ok = new_gates.enter(&new, 1, ip("192.0.2.1")).unwrap();
    assert_eq!(
        lock(&admission.routes).len(),
        3,
        "/gone is still known until the next reload"
    );
    drop(admission.gates(&new));
    assert_eq!(lock(&admission.routes).len(), 2, "/gone is forgotten");
}

#[test]
fn per_address_limits_answer_429_with_the_wait() {
    let c = config(
        "",
        &[(
            "/a",
            r#""rate_limit": { "connections_per_ip": 1,
                "handshakes_per_second_per_ip": { "rate": 0.5, "burst": 2 } },"#,
        )],
    );
    let admission = Admission::new();
    let gates = admission.gates(&c);
    let (x, y) = (ip("192.0.2.1"), ip("192.0.2.2"));
    let first = gates.enter(&c, 0, x).unwrap();
    let err = gates.enter(&c, 0, x).err().unwrap();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.rejection_reason(), Some("connections_per_ip"));
    assert_eq!(err.headers().unwrap(), ("Retry-After", "1".into()));
    assert!(
        err.to_string().contains("192.0.2.1 has 1 open connections"),
        "{err}"
    );
    drop(first);
    // Two handshakes spent the burst; the third waits for a token: 2 s at 0.5/s.
    let err = gates.enter(&c, 0, x).err().unwrap();
    assert_eq!(err.rejection_reason(), Some("handshakes_per_ip"));
    assert_eq!(err.headers().unwrap(), ("Retry-After", "2".into()));
    assert!(err.to_string().contains("0.5 a second, 2 at once"), "{err}");
    // Another address has its own limits; a refused one holds no place in the counts.
    let _other = gates.enter(&c, 0, y).unwrap();
    assert_eq!(gates.routes[0].open.load(Relaxed), 1);
    assert_eq!(admission.open.load(Relaxed), 1);
}

#[test]
fn an_address_without_connections_or_spent_tokens_leaves_the_table() {
    let c = config(
        "",
        &[("/a", r#""rate_limit": { "connections_per_ip": 3 },"#)],
    );
    let gates = Admission::new().gates(&c);
    let t = gates.enter(&c, 0, ip("192.0.2.1")).unwrap();
    assert_eq!(lock(&gates.routes[0].clients).len(), 1);
    drop(t);
    assert_eq!(lock(&gates.routes[0].clients).len(), 0);
    // Routes without a per-address rule keep no table at all.
    let plain = config("", &[("/b", "")]);
    let gates = Admission::new().gates(&plain);
    let _t = gates.enter(&plain, 0, ip("192.0.2.1")).unwrap();
    assert_eq!(lock(&gates.routes[0].clients).len(), 0);
}

#[test]
fn an_ipv6_client_is_counted_by_its_prefix() {
    let route = [("/a", r#""rate_limit": { "connections_per_ip": 1 },"#)];
    let c = config("", &route);
    let gates = Admission::new().gates(&c);
    let _first = gates.enter(&c, 0, ip("2001:db8:1:2::1")).unwrap();
    let err = gates
        .enter(&c, 0, ip("2001:db8:1:2:ffff::9"))
        .err()
        .unwrap();
    assert_eq!(err.status(), Some(429));
    assert!(
        err.to_string()
            .contains("2001:db8:1:2::/64 has 1 open connections"),
        "{err}"
    );
    let _other = gates.enter(&c, 0, ip("2001:db8:1:3::1")).unwrap();
    // server.ipv6_prefix: 128 counts every address apart.
    let c = config(r#""server": { "ipv6_prefix": 128 },"#, &route);
    let gates = Admission::new().gates(&c);
    let _first = gates.enter(&c, 0, ip("2001:db8:1:2::1")).unwrap();
    let _second = gates.enter(&c, 0, ip("2001:db8:1:2::2")).unwrap();
}

#[test]
fn a_full_table_admits_a_stranger_untracked() {
    let route = [(
        "/a",
        r#""rate_limit": { "connections_per_ip": 1, "max_tracked_clients": 16 },"#,
    )];
    let c = config("", &route);
    let gates = Admission::new().gates(&c);
    let held: Vec<Ticket> = (0..16)
        .map(|i| gates.enter(&c, 0, ip(&format!("192.0.2.{i}"))).unwrap())
        .collect();
    let stranger = gates.enter(&c, 0, ip("198.51.100.1")).unwrap();
    assert!(stranger.client.is_none(), "untracked");
    assert_eq!(lock(&gates.routes[0].clients).len(), 16);
    drop(stranger);
    drop(held);
    assert_eq!(lock(&gates.routes[0].clients).len(), 0);
}
