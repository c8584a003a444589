//! Hostile load on the resolver (issue 13, item 3): one backend name that never resolves must
//! not delay the connects of any other backend, its route must refuse (503) past a bounded
//! number of waiting connections, and answers are reused for `limits.dns_cache_ms`.
//!
//! The gateway runs in a mount namespace of its own whose resolv.conf names a DNS server of
//! this test, on a random loopback address (glibc asks port 53 only): it answers some names
//! and never answers the others. That needs root (`unshare -m`, port 53), as in CI.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Connections that may wait for one name's lookup (`MAX_WAITING_PER_NAME`, in docs/limits.md).
const MAX_WAITING: usize = 128;

/// A DNS server on 127.x.y.z:53 that answers A queries for its names with 127.0.0.1 (other
/// types with no record), never answers other names, and counts the queries per name.
struct FakeDns {
    /// A resolv.conf that names it.
    resolv_conf: PathBuf,
    queries: Arc<Mutex<HashMap<String, usize>>>,
}

impl FakeDns {
    fn start(answered: &[&str]) -> FakeDns {
        let socket = (0..20)
            .find_map(|_| {
                let ip = [
                    127,
                    rand::random_range(1..255),
                    rand::random(),
                    rand::random(),
                ];
                UdpSocket::bind(SocketAddr::from((ip, 53))).ok()
            })
            .expect("cannot bind a UDP socket on port 53 of 127.x.y.z (run the tests as root)");
        let ip = socket.local_addr().expect("DNS address").ip();
        let dir = std::env::temp_dir().join(format!("kairos-dns-{}-{ip}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the resolv.conf directory");
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(&resolv_conf, format!("nameserver {ip}\n")).expect("write resolv.conf");
        let queries: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (seen, answered) = (queries.clone(), answered.iter().map(|s| s.to_string()));
        let answered: Vec<String> = answered.collect();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let Some((name, qtype, end)) = question(&buf[..n]) else {
                    continue;
                };
                *seen.lock().unwrap().entry(name.clone()).or_default() += 1;
                if answered.contains(&name) {
                    let _ = socket.send_to(&answer(&buf[..end], qtype == 1), from);
                }
            }
        });
        FakeDns {
            resolv_conf,
            queries,
        }
    }

    fn queries(&self, name: &str) -> usize {
        self.queries.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// The name, type and end of the question of a DNS query.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + len)?).to_string());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    Some((labels.join(".").to_lowercase(), qtype, at + 4))
}

/// The answer to `query` (its header and question): 127.0.0.1 when `a_record`, else none.
fn answer(query: &[u8], a_record: bool) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81; // a response, recursion desired
    r[3] = 0x80; // recursion available, no error
    r[4..12].copy_from_slice(&[0, 1, 0, u8::from(a_record), 0, 0, 0, 0]);
    if a_record {
        // The name (a pointer to the question's), A, IN, TTL 60, 4 bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    r
}

/// A config with one route per (path, backend host), all to `port`, and `limits`.
fn routes_json(routes: &[(&str, &str)], port: u16, limits: &str) -> String {
    let routers: Vec<String> = routes
        .iter()
        .map(|(path, host)| {
            format!(
                r#"{{ "protocol": "websocket", "methods": ["GET"], "external_path": "{path}",
                      "internal_path": "/ws", "backends": [{{ "host": "{host}", "port": {port} }}] }}"#
            )
        })
        .collect();
    format!(
        r#"{{ "version": 1, "limits": {{ {limits} }}, "routers": [ {} ] }}"#,
        routers.join(", ")
    )
}

#[test]
fn a_name_that_never_resolves_delays_no_other_backend() {
    raise_open_files(8192);
    let dns = FakeDns::start(&["fast.example"]);
    let echo = start_echo();
    let routes = [
        ("/ws/chat", "ws://127.0.0.1"),
        ("/local", "ws://localhost"),
        ("/named", "ws://fast.example"),
        ("/stall", "ws://stalls.example"),
    ];
    let limits = r#""backend_connect_timeout_ms": 3000"#;
    let gw = GatewayProcess::start_with_resolv_conf(
        &routes_json(&routes, echo.port(), limits),
        &dns.resolv_conf,
    );
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    // More upgrades to the stalled name than smol's blocking pool has threads (500).
    let attackers = 600;
    let refused = Arc::new(AtomicUsize::new(0));
    let answers: Vec<_> = (0..attackers)
        .map(|_| {
            let refused = refused.clone();
            smol::spawn(async move {
                let started = Instant::now();
                let res = raw_http(addr, upgrade_request("/stall", "").as_bytes()).await;
                if res.status == 503 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                (res, started.elapsed())
            })
        })
        .collect();
    let enough = attackers - MAX_WAITING;
    let at_once = smol::block_on(wait_until(STEP, || {
        refused.load(Ordering::Relaxed) >= enough
    }));
    assert!(
        at_once,
        "{} of {attackers} upgrades to the stalled route got 503, not {enough}",
        refused.load(Ordering::Relaxed)
    );
    // While the others still wait for the stalled lookup, every other backend connects.
    for path in ["/ws/chat", "/local", "/named"] {
        let took = assert_new_client_served(addr, path);
        eprintln!("{path}: 101 in {took:?} during the stall");
    }
    let answers: Vec<_> = smol::block_on(async {
        let mut all = Vec::new();
        for a in answers {
            all.push(a.await);
        }
        all
    });
    check_stalled_route_answers(&answers);
    let report = victim.assert_served(50);
    let lookups = dns.queries("stalls.example");
    eprintln!("victim {report:?}; {lookups} queries for the stalled name");
    // One lookup (glibc asks A and AAAA, and asks again after 5 s): not one per connection.
    assert!(lookups <= 4, "{lookups} queries for the stalled name");
}

/// Past the cap the stalled route answered 503 at once, with `Retry-After: 1`; the connections
/// that waited got 504 at the connect timeout.
fn check_stalled_route_answers(answers: &[(RawResponse, Duration)]) {
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for (res, took) in answers {
        *counts.entry(res.status).or_default() += 1;
        match res.status {
            503 => {
                assert_eq!(res.header("Retry-After").as_deref(), Some("1"), "{res:?}");
                assert!(*took < Duration::from_secs(1), "503 after {took:?}");
            }
            504 => assert!(*took >= Duration::from_secs(3), "504 after {took:?}"),
            _ => panic!("unexpected answer from the stalled route: {res:?}"),
        }
    }
    assert_eq!(counts.get(&504), Some(&MAX_WAITING), "{counts:?}");
}

#[test]
fn a_resolved_name_is_reused_for_dns_cache_ms_then_looked_up_again() {
    let dns = FakeDns::start(&["cached.example"]);
    let echo = start_echo();
    let json = routes_json(
        &[("/cached", "ws://cached.example")],
        echo.port(),
        r#""dns_cache_ms": 1000"#,
    );
    let gw = GatewayProcess::start_with_resolv_conf(&json, &dns.resolv_conf);
    let addr = gw.addr();
    let started = Instant::now();
    assert_new_client_served(addr, "/cached");
    let first = dns.queries("cached.example");
    assert!(first > 0, "the gateway did not ask the test's DNS server");
    for _ in 0..5 {
        assert_new_client_served(addr, "/cached");
    }
    assert_eq!(
        dns.queries("cached.example"),
        first,
        "the answer was not reused"
    );
    // Connections go on (paced) until one looks the name up again.
    while dns.queries("cached.example") == first && started.elapsed() < STEP {
        assert_new_client_served(addr, "/cached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = started.elapsed();
    assert!(after < STEP, "the answer was never looked up again");
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_secs(3),
        "looked up again after {after:?}, for a 1000 ms dns_cache_ms"
    );
}
