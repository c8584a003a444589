//! The admin listener under exhaustion: connections held open against the admin port, idle or
//! trickling a byte a second and re-opened as soon as they are closed, never keep a liveness
//! or readiness probe from its answer.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

/// Connections held against the admin port.
const ATTACKERS: usize = 1000;

/// The longest a probe may wait for its whole answer.
const PROBE_LIMIT: Duration = Duration::from_secs(1);

/// Holds one connection to `admin` open at all times until `stop`: idle, or trickling a
/// request head that never ends, one byte a second. Counts every connection it opens.
async fn attacker(
    admin: SocketAddr,
    trickle: bool,
    opened: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let head = b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: ";
    while !stop.load(Relaxed) {
        let Ok(mut s) = TcpStream::connect(admin).await else {
            smol::Timer::after(Duration::from_millis(10)).await;
            continue;
        };
        opened.fetch_add(1, Relaxed);
        let mut buf = [0u8; 256];
        for i in 0.. {
            if trickle {
                let byte = head.get(i).copied().unwrap_or(b'a');
                if s.write_all(&[byte]).await.is_err() {
                    break;
                }
            }
            // Anything but a timeout (an answer, EOF, a reset) means this one is done.
            if within(Duration::from_secs(1), s.read(&mut buf))
                .await
                .is_some()
                || stop.load(Relaxed)
            {
                break;
            }
        }
    }
}

/// `GET path` on the admin listener: the status and how long the whole answer took, or what
/// went wrong.
async fn probe(admin: SocketAddr, path: &str) -> Result<(u16, Duration), String> {
    let start = Instant::now();
    let answer = async {
        let mut s = TcpStream::connect(admin)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(parse_raw(&buf).status)
    };
    match within(PROBE_LIMIT, answer).await {
        Some(Ok(0)) => Err("closed without an answer".into()),
        Some(Ok(status)) => Ok((status, start.elapsed())),
        Some(Err(e)) => Err(e),
        None => Err(format!("no answer within {PROBE_LIMIT:?}")),
    }
}

#[test]
fn healthz_and_readyz_answer_within_1s_while_1000_idle_or_trickling_connections_are_held() {
    // The attackers, the probes and the test's own sockets.
    let limit = raise_open_files(ATTACKERS as u64 + 512);
    assert!(
        limit > ATTACKERS as u64 + 256,
        "open files limit {limit} too low"
    );
    let (backend, _) = id_backend(0);
    let json = admin_config(backend);
    let gw = GatewayProcess::start(&json, None);
    let admin = gw.admin_addr();
    let (opened, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    for i in 0..ATTACKERS {
        let attack = attacker(admin, i % 2 == 1, opened.clone(), stop.clone());
        smol::spawn(attack).detach();
    }
    run(async {
        let all = wait_until(STEP, || opened.load(Relaxed) >= ATTACKERS).await;
        assert!(
            all,
            "only {} attacker connections opened",
            opened.load(Relaxed)
        );
        let (mut slowest, mut probes, start) = (Duration::ZERO, 0, Instant::now());
        // Probes for 4 s: twice the admin exchange deadline, so that the held connections
        // are renewed under them.
        while start.elapsed() < Duration::from_secs(4) {
            probes += 2;
            for path in ["/healthz", "/readyz"] {
                match probe(admin, path).await {
                    Ok((200, took)) => slowest = slowest.max(took),
                    Ok((status, _)) => panic!("{path} answered {status} under the attack"),
                    Err(e) => panic!(
                        "{path} under {ATTACKERS} held admin connections \
                         ({} opened so far): {e}",
                        opened.load(Relaxed)
                    ),
                }
            }
            // Pacing between probes, as a prober's period; nothing waits for readiness here.
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        eprintln!(
            "{probes} probes, the slowest {slowest:?}; attacker connections opened: {}",
            opened.load(Relaxed)
        );
    });
    stop.store(true, Relaxed);
}
