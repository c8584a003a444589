//! A reload stops the replaced generation's health checks (issue 13, item 8): its probes stop
//! within `timeout_ms`, and after 200 reloads the process's threads, open files and memory are
//! back to their start values, however long the checks' interval.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rustix::process::Signal;

/// Probes a backend received: the generation tag in their path, when they arrived, and
/// whether the gateway has closed their connection.
type Probes = Arc<Mutex<Vec<Probe>>>;

#[derive(Debug, Clone)]
struct Probe {
    tag: usize,
    at: Instant,
    closed: bool,
}

/// A backend answering every health probe (`GET /health?g=TAG`) with 200, recording it.
fn health_backend() -> (SocketAddr, Probes) {
    let probes: Probes = Arc::default();
    let seen = probes.clone();
    let addr = spawn_backend(move |mut s| {
        let seen = seen.clone();
        async move {
            let head = read_head(&mut s).await;
            let tag = head
                .split_once("?g=")
                .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok());
            let Some(tag) = tag else { return };
            let at = Instant::now();
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(Probe {
                    tag,
                    at,
                    closed: false,
                });
                seen.len() - 1
            };
            let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = s.write_all(ok.as_bytes()).await;
            let _ = s.read_to_end(&mut Vec::new()).await;
            seen.lock().unwrap()[n].closed = true;
        }
    });
    (addr, probes)
}

/// One health-checked route to `backend`, probed at `/health?g=TAG`; reloads by SIGHUP only.
fn config(backend: SocketAddr, tag: usize, interval_ms: u64, timeout_ms: u64) -> String {
    let checks = format!(
        r#""health_check": {{ "interval_ms": {interval_ms}, "timeout_ms": {timeout_ms} }},"#
    );
    config_json(backend, r#""server": { "reload_poll_ms": 0 },"#, &checks).replace(
        r#""weight": 1 }"#,
        &format!(r#""weight": 1, "health_check_path": "/health?g={tag}" }}"#),
    )
}

/// Rewrites the config for `tag` and reloads it by SIGHUP; returns when the reload is applied.
fn reload(gw: &GatewayProcess, json: &str) -> Instant {
    gw.rewrite(json);
    gw.signal(Signal::HUP);
    assert!(
        gw.wait_for("applied to new connections", STEP).is_some(),
        "a reload was not applied"
    );
    Instant::now()
}

/// Waits until a probe of generation `tag` was answered and its connection closed.
fn probe_done(probes: &Probes, tag: usize) -> bool {
    let done = || {
        probes
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.tag == tag && p.closed)
    };
    run(wait_until(STEP, done))
}

/// The process's thread count and open files.
fn threads_and_fds(gw: &GatewayProcess) -> (u64, usize) {
    let pid = gw.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (threads, fds)
}

#[test]
fn a_replaced_generation_probes_no_more_once_timeout_ms_has_passed() {
    let (interval, timeout) = (1000, 100);
    let (backend, probes) = health_backend();
    let gw = GatewayProcess::start(&config(backend, 0, interval, timeout), None);
    gw.addr();
    // Each generation probes at once, then after `interval`: one still running then probes
    // again, long after it was replaced.
    let mut replaced_at = Vec::new();
    for tag in 1..=5 {
        assert!(
            probe_done(&probes, tag - 1),
            "generation {} never probed",
            tag - 1
        );
        replaced_at.push(reload(&gw, &config(backend, tag, interval, timeout)));
    }
    // Watching that nothing more comes from the replaced ones: one interval and a margin.
    std::thread::sleep(Duration::from_millis(interval + 500));
    let probes = probes.lock().unwrap().clone();
    let late: Vec<_> = probes
        .iter()
        .filter(|p| {
            replaced_at
                .get(p.tag)
                .is_some_and(|r| p.at > *r + Duration::from_millis(timeout))
        })
        .map(|p| (p.tag, p.at.duration_since(replaced_at[p.tag])))
        .collect();
    assert!(
        late.is_empty(),
        "replaced generations probed after timeout_ms ({timeout} ms): (generation, after its \
         replacement) {late:?}"
    );
    assert!(
        probes.iter().any(|p| p.tag == 5),
        "the generation in force never probed: {probes:?}"
    );
}

#[test]
fn two_hundred_reloads_leave_no_thread_file_or_memory_behind() {
    // A day between probes: a probe loop that only looks for its replacement after sleeping
    // never does here.
    let (interval, timeout) = (86_400_000, 500);
    let (backend, probes) = health_backend();
    let gw = GatewayProcess::start(&config(backend, 0, interval, timeout), None);
    gw.addr();
    // A few reloads first, so that what the first ones make once exists before counting.
    for tag in 1..=3 {
        reload(&gw, &config(backend, tag, interval, timeout));
    }
    // Its probe done and closed, so that it holds no socket when counting.
    assert!(
        probe_done(&probes, 3),
        "the generation in force never probed"
    );
    let start = threads_and_fds(&gw);
    let rss = gw.rss_kib();
    // Each generation probes before the next replaces it: every replaced one is asleep.
    for tag in 4..204 {
        reload(&gw, &config(backend, tag, interval, timeout));
        assert!(probe_done(&probes, tag), "generation {tag} never probed");
    }
    let settled = run(wait_until(STEP, || threads_and_fds(&gw) == start));
    let grew = gw.rss_kib().saturating_sub(rss);
    eprintln!(
        "after 200 reloads: (threads, fds) {:?}, at start {start:?}; RSS grew {grew} KiB",
        threads_and_fds(&gw)
    );
    assert!(
        settled,
        "after 200 reloads, (threads, fds) = {:?}, at start {start:?}",
        threads_and_fds(&gw)
    );
    assert!(grew < 1024, "RSS grew {grew} KiB over 200 reloads");
}
