//! Load balancing across a route's backends (weights 3:2:1) and failover before the 101.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_lite::StreamExt;

/// A backend that accepts the upgrade, counts it, and holds the connection until the client
/// leaves.
fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let addr = spawn_backend(move |mut s| {
        let c = c.clone();
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            c.fetch_add(1, Ordering::Relaxed);
            while let Some(Ok(_)) = ws.next().await {}
        }
    });
    (addr, count)
}

/// A config routing `/ws/chat` to `backends` (address, weight) with `route_extra` fields.
fn config(backends: &[(SocketAddr, u32)], route_extra: &str, limits: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| {
            format!(
                r#"{{ "host": "ws://127.0.0.1", "port": {}, "weight": {w} }}"#,
                a.port()
            )
        })
        .collect();
    format!(
        r#"{{ "version": 1, {limits} "routers": [ {{ "protocol": "websocket",
            "backends": [{}], "external_path": "/ws/chat", "internal_path": "/ws",
            {route_extra} "methods": ["GET"] }} ] }}"#,
        list.join(",")
    )
}

/// A config for three counting backends with weights 3:2:1 and `strategy`, and their counts.
fn weighted_config(strategy: &str) -> (String, Vec<Arc<AtomicUsize>>) {
    let backends: Vec<_> = (0..3).map(|_| counting_backend()).collect();
    let list: Vec<(SocketAddr, u32)> = backends
        .iter()
        .zip([3, 2, 1])
        .map(|(b, w)| (b.0, w))
        .collect();
    let extra = format!(r#""load_balancing_strategy": "{strategy}","#);
    let json = config(&list, &extra, "");
    (json, backends.into_iter().map(|b| b.1).collect())
}

/// Three counting backends with weights 3:2:1 behind a gateway using `strategy`.
fn weighted(strategy: &str) -> (SocketAddr, Vec<Arc<AtomicUsize>>) {
    let (json, counts) = weighted_config(strategy);
    (start_gateway(&json), counts)
}

/// Opens `n` connections, `batch` at a time; each is closed at once, or kept when `hold`.
async fn open_many(gw: SocketAddr, n: usize, batch: usize, hold: bool) -> Vec<Ws> {
    let mut held = Vec::new();
    for _ in 0..n / batch {
        let tasks: Vec<_> = (0..batch)
            .map(|_| smol::spawn(async move { connect(gw, "/ws/chat").await }))
            .collect();
        for t in tasks {
            let mut ws = t.await;
            if hold {
                held.push(ws);
            } else {
                ws.close(None).await.unwrap();
            }
        }
    }
    held
}

/// Waits until the backends counted `n` upgrades; returns each one's share in percent.
async fn shares(counts: &[Arc<AtomicUsize>], n: usize) -> Vec<f64> {
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    assert!(
        wait_until(STEP, || total() == n).await,
        "backends saw {} of {n}",
        total()
    );
    counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as f64 * 100.0 / n as f64)
        .collect()
}

fn assert_within_3_points(got: &[f64], what: &str) {
    let want = [50.0, 100.0 / 3.0, 100.0 / 6.0];
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 3.0,
            "{what}: shares {got:?}, want {want:?} within 3 points"
        );
    }
}

#[test]
fn round_robin_honours_weights_exactly() {
    let (gw, counts) = weighted("round_robin");
    run_for(Duration::from_secs(300), async {
        open_many(gw, 6000, 100, false).await;
        let got = shares(&counts, 6000).await;
        assert_eq!(
            got,
            [50.0, 2000.0 * 100.0 / 6000.0, 1000.0 * 100.0 / 6000.0]
        );
    });
}

#[test]
fn random_honours_weights_within_3_points() {
    let (gw, counts) = weighted("random");
    run_for(Duration::from_secs(300), async {
        open_many(gw, 6000, 100, false).await;
        let got = shares(&counts, 6000).await;
        eprintln!("random, 6000 connections: shares {got:?}");
        assert_within_3_points(&got, "random");
    });
}

#[test]
fn least_connections_spreads_6000_held_connections_by_weight() {
    // Held open, so that "fewest open connections" decides. The gateway runs as its own
    // process (its 12 000 sockets count there); this process holds the 6 000 clients and the
    // backends' 6 000 sockets.
    let limit = raise_open_files(16_384);
    assert!(
        limit >= 13_000,
        "this test needs ulimit -n >= 13000 (hard limit), have {limit}"
    );
    let (json, counts) = weighted_config("least_connections");
    let gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    run_for(Duration::from_secs(600), async {
        let held = open_many(addr, 6000, 20, true).await;
        let got = shares(&counts, 6000).await;
        eprintln!("least_connections, 6000 held: shares {got:?}");
        assert_within_3_points(&got, "least_connections");
        drop(held);
    });
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend() {
    let (gw, counts) = weighted("ip_hash");
    run(async {
        open_many(gw, 300, 10, false).await;
        let got = shares(&counts, 300).await;
        assert_eq!(got.iter().filter(|&&s| s == 100.0).count(), 1, "{got:?}");
    });
}

#[test]
fn first_backend_down_every_client_still_connects() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (live, count) = counting_backend();
    let gw = start_gateway(&config(&[(dead, 5), (live, 1)], "", ""));
    run(async {
        for _ in 0..30 {
            let mut ws = connect(gw, "/ws/chat").await; // panics on a 502
            ws.close(None).await.unwrap();
        }
        assert!(wait_until(STEP, || count.load(Ordering::Relaxed) == 30).await);
    });
}

#[test]
fn all_backends_down_is_502_and_all_silent_is_504() {
    let dead: Vec<SocketAddr> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let list: Vec<(SocketAddr, u32)> = dead.iter().map(|a| (*a, 1)).collect();
    let gw = start_gateway(&config(&list, "", ""));
    // Backends that accept TCP and never answer.
    let silent: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let list: Vec<(SocketAddr, u32)> = silent
        .iter()
        .map(|l| (l.local_addr().unwrap(), 1))
        .collect();
    let limits = r#""limits": { "backend_connect_timeout_ms": 200 },"#;
    let gw_silent = start_gateway(&config(&list, "", limits));
    run(async {
        assert_eq!(refused_status(gw, "/ws/chat", &[]).await, 502);
        assert_eq!(refused_status(gw_silent, "/ws/chat", &[]).await, 504);
    });
    drop(silent);
}

/// Backends that record which session key (`X-Session` header) reached which of them.
type Seen = Arc<std::sync::Mutex<Vec<(String, usize)>>>;

fn session_backends(n: usize) -> (Vec<SocketAddr>, Seen) {
    let seen: Seen = Arc::default();
    let addrs = (0..n)
        .map(|id| {
            let seen = seen.clone();
            spawn_backend(move |mut s| {
                let seen = seen.clone();
                async move {
                    let head = read_head(&mut s).await;
                    let key = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("X-Session: ")
                                .or(l.strip_prefix("x-session: "))
                        })
                        .unwrap_or("-")
                        .trim()
                        .to_string();
                    let mut ws = accept_after_head(s, &head, "").await;
                    seen.lock().unwrap().push((key, id));
                    while let Some(Ok(_)) = ws.next().await {}
                }
            })
        })
        .collect();
    (addrs, seen)
}

fn sticky_config(backends: &[SocketAddr]) -> String {
    let list: Vec<(SocketAddr, u32)> = backends.iter().map(|a| (*a, 1)).collect();
    config(&list, r#""sticky": { "key": "header:X-Session" },"#, "")
}

/// Connects once per key (`rounds` times), `X-Session: <key>`; returns key -> backend ids.
async fn sessions(gw: SocketAddr, keys: usize, rounds: usize, seen: &Seen) -> Vec<Vec<usize>> {
    seen.lock().unwrap().clear();
    for _ in 0..rounds {
        for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|&k| {
                    smol::spawn(async move {
                        let key = format!("session-{k}");
                        let (mut ws, _) = try_connect(gw, "/ws/chat", &[("X-Session", &key)])
                            .await
                            .expect("connect");
                        ws.close(None).await.unwrap();
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
        }
    }
    assert!(wait_until(STEP, || seen.lock().unwrap().len() == keys * rounds).await);
    let mut by_key = vec![Vec::new(); keys];
    for (key, id) in seen.lock().unwrap().iter() {
        let k: usize = key
            .trim_start_matches("session-")
            .parse()
            .expect("session key");
        by_key[k].push(*id);
    }
    by_key
}

#[test]
fn sticky_keys_always_reach_the_same_backend_and_removal_moves_only_its_keys() {
    let (four, seen) = session_backends(4);
    let gw4 = start_gateway(&sticky_config(&four));
    let gw3 = start_gateway(&sticky_config(&four[..3]));
    run_for(Duration::from_secs(300), async {
        // 1000 keys, 5 connections each: every key on one backend, every time.
        let with4 = sessions(gw4, 1000, 5, &seen).await;
        for (k, ids) in with4.iter().enumerate() {
            assert!(ids.iter().all(|&i| i == ids[0]), "key {k} went to {ids:?}");
        }
        let on = |b| with4.iter().filter(|ids| ids[0] == b).count();
        assert!(
            (0..4).all(|b| (150..=350).contains(&on(b))),
            "spread {:?}",
            (0..4).map(on).collect::<Vec<_>>()
        );
        // Without backend 3: only its keys move.
        let with3 = sessions(gw3, 1000, 1, &seen).await;
        let mut moved = 0;
        for k in 0..1000 {
            if with4[k][0] == 3 {
                moved += 1;
            } else {
                assert_eq!(
                    with3[k][0], with4[k][0],
                    "key {k} moved though its backend stayed"
                );
            }
        }
        assert_eq!(moved, on(3));
        eprintln!(
            "sticky: 1000 keys x 5 all on one backend; spread {:?}; removing backend 3 moved {moved}",
            (0..4).map(on).collect::<Vec<_>>()
        );
    });
}

#[test]
fn two_gateway_processes_agree_on_every_key_and_a_missing_key_falls_back() {
    let (backends, seen) = session_backends(4);
    let json = sticky_config(&backends);
    let in_process = start_gateway(&json);
    let other = GatewayProcess::start(&json, None);
    let other_addr = other.addr();
    run_for(Duration::from_secs(300), async {
        let a = sessions(in_process, 300, 1, &seen).await;
        let b = sessions(other_addr, 300, 1, &seen).await;
        assert_eq!(a, b, "the two gateways disagree");
        // No X-Session header: the route's round robin spreads the connections.
        seen.lock().unwrap().clear();
        open_many(in_process, 40, 10, false).await;
        assert!(wait_until(STEP, || seen.lock().unwrap().len() == 40).await);
        let ids: std::collections::BTreeSet<usize> =
            seen.lock().unwrap().iter().map(|s| s.1).collect();
        assert_eq!(ids.len(), 4, "keyless connections did not spread: {ids:?}");
    });
}
