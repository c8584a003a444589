//! Circuit breaking and active health checks: backends that fail, die and come back, behind a
//! real gateway, with real clients.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::{AsyncWriteExt, StreamExt};
use smol::net::{TcpListener, TcpStream};

/// The health probe's User-Agent.
const PROBE: &str = "kairos-gateway health check";

/// State shared by a test backend's connections (it outlives a kill).
#[derive(Default)]
struct Shared {
    /// Fail every client upgrade: accept the TCP connection and drop it at once.
    failing: AtomicBool,
    /// The status `GET /health` answers (200 when 0).
    health_status: AtomicU16,
    /// When each client upgrade attempt (not a probe) arrived.
    attempts: Mutex<Vec<Instant>>,
    /// Client upgrades accepted.
    upgrades: AtomicUsize,
    /// Health probes: when, and what was answered (101 for a WebSocket probe).
    probes: Mutex<Vec<(Instant, u16)>>,
}

/// A backend whose first message to each client is its id, then echo; it can fail on
/// purpose, answer its health check with any status, be killed and be restarted on its port.
struct TestBackend {
    id: usize,
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_loop: Option<smol::Task<()>>,
}

impl TestBackend {
    fn start(id: usize) -> TestBackend {
        let mut b = TestBackend {
            id,
            addr: ([127, 0, 0, 1], 0).into(),
            shared: Arc::default(),
            accept_loop: None,
        };
        b.restart();
        b
    }

    /// Stops listening (new connects are refused); connections already open stay.
    fn kill(&mut self) {
        self.accept_loop = None;
    }

    /// Listens again (on the same port once it has one).
    fn restart(&mut self) {
        let listener = smol::block_on(TcpListener::bind(self.addr)).expect("bind backend");
        self.addr = listener.local_addr().expect("backend addr");
        let (id, shared) = (self.id, self.shared.clone());
        self.accept_loop = Some(smol::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                smol::spawn(serve(s, id, shared.clone())).detach();
            }
        }));
    }

    fn attempts(&self) -> Vec<Instant> {
        self.shared.attempts.lock().unwrap().clone()
    }

    fn upgrades(&self) -> usize {
        self.shared.upgrades.load(Relaxed)
    }

    /// Probes answered with `status` since `since`.
    fn probes_since(&self, since: Instant, status: u16) -> usize {
        let probes = self.shared.probes.lock().unwrap();
        probes
            .iter()
            .filter(|(t, s)| *t >= since && *s == status)
            .count()
    }

    fn json(&self, extra: &str) -> String {
        format!(
            r#"{{ "host": "ws://127.0.0.1", "port": {}, "weight": 1 {extra} }}"#,
            self.addr.port()
        )
    }
}

async fn serve(mut s: TcpStream, id: usize, shared: Arc<Shared>) {
    let head = read_head(&mut s).await;
    if head.contains(PROBE) {
        if head.starts_with("GET /health ") {
            let status = match shared.health_status.load(Relaxed) {
                0 => 200,
                n => n,
            };
            shared.probes.lock().unwrap().push((Instant::now(), status));
            let res = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let _ = s.write_all(res.as_bytes()).await;
            return;
        }
        shared.probes.lock().unwrap().push((Instant::now(), 101));
        let mut ws = accept_after_head(s, &head, "").await;
        while let Some(Ok(_)) = ws.next().await {}
        return;
    }
    shared.attempts.lock().unwrap().push(Instant::now());
    if shared.failing.load(Relaxed) {
        return;
    }
    let mut ws = accept_after_head(s, &head, "").await;
    shared.upgrades.fetch_add(1, Relaxed);
    if ws.send(Message::text(id.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(m)) = ws.next().await {
        if m.is_text() && ws.send(m).await.is_err() {
            return;
        }
    }
}

/// A route `/ws/chat` over `backends` (JSON objects) with `route_extra` fields.
fn config(backends: &[String], route_extra: &str) -> String {
    format!(
        r#"{{ "version": 1, "routers": [ {{ "protocol": "websocket",
            "backends": [{}], "external_path": "/ws/chat", "internal_path": "/ws",
            {route_extra} "methods": ["GET"] }} ] }}"#,
        backends.join(",")
    )
}

/// Connects `n` clients one after another; returns how many reached each of `ids` backends.
async fn spread(gw: SocketAddr, n: usize, ids: usize) -> Vec<usize> {
    let mut on = vec![0; ids];
    for _ in 0..n {
        let (mut ws, id) = connect_id(gw, "/ws/chat").await;
        on[id] += 1;
        ws.close(None).await.unwrap();
    }
    on
}

#[test]
fn circuit_opens_after_the_threshold_and_a_trial_closes_it() {
    let open = Duration::from_millis(1500);
    let (a, b) = (TestBackend::start(0), TestBackend::start(1));
    let breaker = r#""circuit_breaker": { "failure_threshold": 3, "open_ms": 1500 },"#;
    let gw = start_gateway(&config(&[a.json(""), b.json("")], breaker));
    a.shared.failing.store(true, Relaxed);
    run(async {
        // Until backend 0 failed three times, every client still gets in (through 1).
        let deadline = Instant::now() + STEP;
        while a.attempts().len() < 3 {
            assert!(Instant::now() < deadline, "backend 0 never tried");
            let (mut ws, id) = connect_id(gw, "/ws/chat").await;
            assert_eq!(id, 1);
            ws.close(None).await.unwrap();
        }
        let opened = a.attempts()[2];
        // Open: no connect reaches backend 0 until open_ms has passed.
        let mut during = 0;
        while opened.elapsed() + Duration::from_millis(300) < open {
            let (mut ws, id) = connect_id(gw, "/ws/chat").await;
            assert_eq!(id, 1);
            ws.close(None).await.unwrap();
            during += 1;
        }
        assert_eq!(a.attempts().len(), 3, "a connect reached the open backend");
        assert!(
            during >= 5,
            "only {during} clients ran while the breaker was open"
        );
        // Backend 0 is back; after open_ms one trial connection closes the breaker.
        a.shared.failing.store(false, Relaxed);
        let deadline = Instant::now() + STEP;
        while a.upgrades() == 0 {
            assert!(Instant::now() < deadline, "no trial reached backend 0");
            let (mut ws, _) = connect_id(gw, "/ws/chat").await;
            ws.close(None).await.unwrap();
        }
        let attempts = a.attempts();
        assert_eq!(attempts.len(), 4);
        assert!(
            attempts[3] >= opened + open,
            "the trial came {:?} after opening, before open_ms",
            attempts[3] - opened
        );
        // Closed again: round robin shares the clients.
        let on = spread(gw, 20, 2).await;
        assert!(on[0] >= 8, "backend 0 got {on:?} after its breaker closed");
    });
}

#[test]
fn every_backend_open_is_503_with_retry_after() {
    let (a, b) = (TestBackend::start(0), TestBackend::start(1));
    a.shared.failing.store(true, Relaxed);
    b.shared.failing.store(true, Relaxed);
    let breaker = r#""circuit_breaker": { "failure_threshold": 1, "open_ms": 5000 },"#;
    let gw = start_gateway(&config(&[a.json(""), b.json("")], breaker));
    run(async {
        let first = raw_http(gw, upgrade_request("/ws/chat", "").as_bytes()).await;
        assert_eq!(first.status, 502, "{}", first.head);
        let second = raw_http(gw, upgrade_request("/ws/chat", "").as_bytes()).await;
        assert_eq!(second.status, 503, "{}", second.head);
        let retry: u64 = second
            .header("Retry-After")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=5).contains(&retry), "Retry-After: {retry}");
        assert!(
            second
                .body
                .contains("no backend of route /ws/chat is available"),
            "{}",
            second.body
        );
        assert_eq!(a.attempts().len() + b.attempts().len(), 2);
    });
}

/// A health-checked route over two backends, as a child process (its log is the observable
/// verdict), with the breaker off so that only the checks decide.
fn checked_gateway(a: &TestBackend, b: &TestBackend) -> GatewayProcess {
    let checks = r#""health_check": { "interval_ms": 300, "timeout_ms": 200,
        "unhealthy_threshold": 3, "healthy_threshold": 2 },
        "circuit_breaker": { "failure_threshold": 0 },"#;
    GatewayProcess::start(&config(&[a.json(""), b.json("")], checks), None)
}

#[test]
fn a_killed_backend_is_marked_down_then_up_and_all_down_is_503() {
    let (interval, unhealthy, healthy) = (Duration::from_millis(300), 3, 2);
    // Scheduling slack on a busy 2-core machine.
    let slack = Duration::from_millis(600);
    let (mut a, mut b) = (TestBackend::start(0), TestBackend::start(1));
    let gw = checked_gateway(&a, &b);
    let addr = gw.addr();
    let name = |b: &TestBackend| format!("backend ws://127.0.0.1:{}", b.addr.port());
    run(async {
        let t0 = Instant::now();
        assert!(
            wait_until(STEP, || a.probes_since(t0, 101) >= 1).await,
            "no health check reached backend 0"
        );
        // Killed: down within interval x unhealthy_threshold.
        a.kill();
        let killed = Instant::now();
        let line = gw.wait_for(&format!("{} is down", name(&a)), STEP);
        let took = killed.elapsed();
        let line = line.expect("backend 0 never marked down");
        assert!(line.contains("3 health checks in a row failed"), "{line}");
        eprintln!("marked down {} ms after the kill", took.as_millis());
        assert!(took <= interval * unhealthy + slack, "down after {took:?}");
        // No new connection is even attempted on it (a failover would log an attempt).
        let on = spread(addr, 20, 2).await;
        assert_eq!(on, [0, 20]);
        assert_eq!(gw.count_for("attempt", Duration::from_millis(200)), 0);
        // Restarted: up within interval x healthy_threshold.
        a.restart();
        let restarted = Instant::now();
        let line = gw.wait_for(&format!("{} is up", name(&a)), STEP);
        let took = restarted.elapsed();
        line.expect("backend 0 never marked up again");
        eprintln!("marked up {} ms after the restart", took.as_millis());
        assert!(took <= interval * healthy + slack, "up after {took:?}");
        let on = spread(addr, 20, 2).await;
        assert!(on[0] >= 8, "backend 0 got {on:?} once up again");
        // Both down: 503 with Retry-After.
        a.kill();
        b.kill();
        for backend in [&a, &b] {
            let down = gw.wait_for(&format!("{} is down", name(backend)), STEP);
            assert!(down.is_some(), "{} never marked down", name(backend));
        }
        let res = raw_http(addr, upgrade_request("/ws/chat", "").as_bytes()).await;
        assert_eq!(res.status, 503, "{}", res.head);
        assert_eq!(
            res.header("Retry-After").as_deref(),
            Some("1"),
            "{}",
            res.head
        );
    });
}

#[test]
fn an_http_check_failing_stops_new_connections_but_keeps_open_ones() {
    let (a, b) = (TestBackend::start(0), TestBackend::start(1));
    let path = r#", "health_check_path": "/health""#;
    let checks = r#""health_check": { "interval_ms": 100, "timeout_ms": 100,
        "unhealthy_threshold": 2, "healthy_threshold": 2 },"#;
    let gw = start_gateway(&config(&[a.json(path), b.json(path)], checks));
    run(async {
        // A connection held open on backend 0.
        let mut held = loop {
            let (ws, id) = connect_id(gw, "/ws/chat").await;
            if id == 0 {
                break ws;
            }
        };
        // Its check fails: once two probes in a row got 503, nothing new goes to it.
        a.shared.health_status.store(503, Relaxed);
        let failing = Instant::now();
        assert!(wait_until(STEP, || a.probes_since(failing, 503) >= 2).await);
        let deadline = Instant::now() + STEP;
        let mut in_a_row = 0;
        while in_a_row < 10 {
            assert!(Instant::now() < deadline, "backend 0 still gets clients");
            let (mut ws, id) = connect_id(gw, "/ws/chat").await;
            in_a_row = if id == 1 { in_a_row + 1 } else { 0 };
            ws.close(None).await.unwrap();
        }
        let before = a.upgrades();
        assert_eq!(spread(gw, 20, 2).await, [0, 20]);
        assert_eq!(a.upgrades(), before);
        // The open connection was not cut.
        held.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_data(&mut held).await, Message::text("still here"));
        // Passing again: back after two good probes.
        a.shared.health_status.store(200, Relaxed);
        let passing = Instant::now();
        assert!(wait_until(STEP, || a.probes_since(passing, 200) >= 2).await);
        let deadline = Instant::now() + STEP;
        while a.upgrades() == before {
            assert!(
                Instant::now() < deadline,
                "backend 0 never got clients again"
            );
            let (mut ws, _) = connect_id(gw, "/ws/chat").await;
            ws.close(None).await.unwrap();
        }
        held.close(None).await.unwrap();
    });
}

#[test]
fn a_check_whose_timeout_is_longer_than_its_interval_marks_a_silent_backend_down() {
    let (timeout, unhealthy) = (Duration::from_millis(400), 2);
    // A backend that accepts and never answers: every probe of it times out. It records when
    // each probe arrived, and holds the connection until the gateway drops it.
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let silent = spawn_backend(move |mut s| {
        seen.lock().unwrap().push(Instant::now());
        async move {
            let mut sink = Vec::new();
            let _ = futures_lite::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
        }
    });
    let good = TestBackend::start(1);
    let silent_json = format!(
        r#"{{ "host": "ws://127.0.0.1", "port": {} }}"#,
        silent.port()
    );
    let checks = r#""health_check": { "interval_ms": 50, "timeout_ms": 400,
        "unhealthy_threshold": 2, "healthy_threshold": 2 },"#;
    let gw = GatewayProcess::start(&config(&[silent_json, good.json("")], checks), None);
    gw.addr();
    let down = gw.wait_for(
        &format!("backend ws://127.0.0.1:{} is down", silent.port()),
        STEP,
    );
    let line = down.expect("the silent backend was never marked down");
    assert!(line.contains("2 health checks in a row failed"), "{line}");
    // The next probe started when the previous one ended (its timeout), not every interval.
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(arrivals.len() >= unhealthy, "{} probes", arrivals.len());
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= timeout - Duration::from_millis(50),
            "probes {gap:?} apart: they overlapped"
        );
    }
}
