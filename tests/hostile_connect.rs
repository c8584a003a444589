//! Hostile load on the backend connect (issue 13, item 2): clients that send an upgrade and
//! leave at once, against a backend that accepts and never answers, must not keep their
//! backend attempts: their sockets and connection-limit places are back within about 100 ms,
//! while a victim on a healthy route of the same gateway keeps its service. Frames a client
//! sends before its 101 still reach the backend, in order, up to a bound.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use common::*;
use futures_lite::AsyncWriteExt;

/// How soon a client's leaving must give back what its backend attempt held.
const RELEASED_WITHIN: Duration = Duration::from_millis(100);

/// A backend that accepts TCP connections and never answers; it holds every socket.
struct Blackhole {
    addr: SocketAddr,
    /// Each accepted connection, and whether the gateway closed it.
    held: Arc<Mutex<Vec<(TcpStream, bool)>>>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the blackhole");
        let addr = listener.local_addr().expect("blackhole address");
        let held: Arc<Mutex<Vec<(TcpStream, bool)>>> = Arc::default();
        let list = held.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().map_while(Result::ok) {
                let _ = s.set_nonblocking(true);
                list.lock().unwrap().push((s, false));
            }
        });
        Blackhole { addr, held }
    }

    fn accepted(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Connections the gateway has not closed yet (their unread bytes are read and dropped).
    fn open(&self) -> usize {
        let mut held = self.held.lock().unwrap();
        let mut buf = [0u8; 4096];
        for (s, closed) in held.iter_mut().filter(|(_, closed)| !*closed) {
            *closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
        }
        held.iter().filter(|(_, closed)| !*closed).count()
    }
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// What each open descriptor of process `pid` is (`socket:[123]`, `anon_inode:[eventpoll]`,
/// `pipe:[456]`...), sorted: a failure names what was left open.
fn fd_targets(pid: u32) -> Vec<String> {
    let mut all: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}

/// `n` clients send an upgrade for `path`; once the gateway has connected each one's backend
/// attempt to `hole`, they all leave at once, half of them with a reset (SO_LINGER 0). Returns
/// when they left.
fn upgrade_and_leave(addr: SocketAddr, path: &str, n: usize, hole: &Blackhole) -> Instant {
    let before = hole.accepted();
    let clients: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(upgrade_request(path, "").as_bytes())
                .expect("write the upgrade");
            s
        })
        .collect();
    let all_connected = smol::block_on(wait_until(STEP, || hole.accepted() >= before + n));
    assert!(
        all_connected,
        "the gateway connected {} of {n} attempts to the backend",
        hole.accepted() - before
    );
    for (i, s) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).expect("linger");
        }
        drop(s);
    }
    Instant::now()
}

#[test]
fn clients_that_leave_during_the_backend_connect_release_it_at_once() {
    let hole = Blackhole::start();
    let echo = start_echo();
    // A breaker that opens on one failure: an abandoned attempt must not count as one.
    let json = format!(
        r#"{{ "version": 1, "limits": {{ "max_connections": 50 }}, "routers": [
            {{ "protocol": "websocket", "methods": ["GET"], "external_path": "/ws/chat",
               "internal_path": "/ws", "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }},
            {{ "protocol": "websocket", "methods": ["GET"], "external_path": "/slow",
               "internal_path": "/ws", "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}],
               "circuit_breaker": {{ "failure_threshold": 1, "open_ms": 60000 }} }} ] }}"#,
        echo.port(),
        hole.addr.port()
    );
    let gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    let pid = gw.child.id();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    let baseline = open_fds(pid);
    let before = fd_targets(pid);
    // Each round fills the connection limit with clients that leave (all but two places: the
    // victim's, and the last round's new client, which may still be closing); rounds go on
    // for two seconds.
    let start = Instant::now();
    let mut round = 0;
    while round < 5 || start.elapsed() < Duration::from_secs(2) {
        round += 1;
        let left = upgrade_and_leave(addr, "/slow", 48, &hole);
        let released = smol::block_on(wait_until(STEP, || open_fds(pid) <= baseline));
        let took = left.elapsed();
        assert!(
            released,
            "round {round}: the gateway holds {} descriptors, {baseline} before the attack; \
             before: {before:?}; now: {:?}",
            open_fds(pid),
            fd_targets(pid)
        );
        assert!(
            took <= RELEASED_WITHIN,
            "round {round}: descriptors back to {baseline} only after {took:?}"
        );
        let closed = smol::block_on(wait_until(STEP, || hole.open() == 0));
        assert!(
            closed,
            "round {round}: the backend still holds open attempts"
        );
        // The limit's places are back: a new client on the healthy route gets its 101.
        assert_new_client_served(addr, "/ws/chat");
        if round % 10 == 0 {
            eprintln!("round {round}: released in {took:?}");
        }
    }
    let report = victim.assert_served(50);
    eprintln!("victim {report:?}");
}

/// A masked client text frame.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let key = [7u8, 1, 9, 3];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A backend that reports each request head on `heads`, and answers 101 (then echoes) only once
/// it gets a go on `go`; it reports the gateway closing a connection it never answered on
/// `closed`.
fn held_backend() -> (
    SocketAddr,
    smol::channel::Receiver<()>,
    smol::channel::Sender<()>,
    smol::channel::Receiver<()>,
) {
    let (heads_tx, heads) = smol::channel::unbounded();
    let (go, go_rx) = smol::channel::unbounded::<()>();
    let (closed_tx, closed) = smol::channel::unbounded();
    let addr = spawn_backend(move |mut s| {
        let (heads_tx, go_rx, closed_tx) = (heads_tx.clone(), go_rx.clone(), closed_tx.clone());
        async move {
            use futures_lite::{AsyncReadExt, FutureExt};
            let head = read_head(&mut s).await;
            let _ = heads_tx.send(()).await;
            let mut probe = s.clone();
            let gone = async {
                let mut buf = [0u8; 256];
                while matches!(probe.read(&mut buf).await, Ok(n) if n > 0) {}
                None
            };
            match async { go_rx.recv().await.ok() }.or(gone).await {
                Some(()) => echo_ws(accept_after_head(s, &head, "").await).await,
                None => {
                    let _ = closed_tx.send(()).await;
                }
            }
        }
    });
    (addr, heads, go, closed)
}

#[test]
fn frames_sent_before_and_during_the_backend_connect_arrive_in_order() {
    let (backend, heads, go, _) = held_backend();
    let gw = start_gateway(&config_json(backend, "", ""));
    run(async {
        let mut s = smol::net::TcpStream::connect(gw).await.expect("connect");
        let head = upgrade_request("/ws/chat", "");
        let first = [head.as_bytes(), &masked_text(b"one")].concat();
        s.write_all(&first).await.expect("write head and frame");
        within(STEP, heads.recv())
            .await
            .expect("the backend got no request")
            .expect("backend channel");
        // The gateway now waits for the backend's 101 and watches the client.
        s.write_all(&masked_text(b"two")).await.expect("write");
        s.write_all(&masked_text(b"three")).await.expect("write");
        // Pacing (not a wait for readiness): gives the gateway time to read them before the
        // 101; they must arrive in order either way.
        smol::Timer::after(Duration::from_millis(50)).await;
        go.send(()).await.expect("go");
        let answer = read_head(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        let mut ws = WebSocketStream::from_raw_socket(s, Role::Client, None).await;
        ws.send(Message::text("four")).await.expect("send");
        for want in ["one", "two", "three", "four"] {
            assert_eq!(next_data(&mut ws).await, Message::text(want));
        }
    });
}

#[test]
fn a_client_that_sends_more_than_64_kib_before_its_101_is_refused() {
    let (backend, _heads, _go, closed) = held_backend();
    let limits = r#""limits": { "backend_connect_timeout_ms": 3000 },"#;
    let gw = start_gateway(&config_json(backend, limits, ""));
    run(async {
        // One 70 KiB binary frame (masked with a zero key) right after the head.
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(70u64 * 1024).to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.resize(frame.len() + 70 * 1024, 0x5a);
        let request = [upgrade_request("/ws/chat", "").as_bytes(), &frame].concat();
        let started = Instant::now();
        let res = raw_http_while_writing(gw, &request).await;
        assert_eq!(res.status, 400, "{res:?}");
        assert!(res.body.contains("before the 101"), "{res:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not refused at once"
        );
        within(STEP, closed.recv())
            .await
            .expect("the backend attempt was kept")
            .expect("backend channel");
    });
}
