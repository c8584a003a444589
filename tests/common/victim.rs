//! The victim of an availability test: while one client attacks the gateway, another must keep
//! its service. An established connection keeps echoing with p99 under 50 ms, and a new client
//! on a healthy route gets its 101 within 1 s (issue 13's rule).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;

use super::{connect, try_connect, within};

/// The victim's rule for an established connection.
pub const VICTIM_P99: Duration = Duration::from_millis(50);

/// The victim's rule for a new client's handshake.
pub const VICTIM_CONNECT: Duration = Duration::from_secs(1);

/// One echo's longest wait before it counts as lost.
const ECHO_LIMIT: Duration = Duration::from_secs(5);

/// An established connection echoing one small message every `every`, on a thread of its own
/// (so that the test's attack does not share its executor), recording every round trip.
pub struct Victim {
    stop: Arc<AtomicBool>,
    rtts: Arc<Mutex<Vec<Duration>>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// What the victim saw.
#[derive(Debug)]
pub struct VictimReport {
    /// Echoes completed.
    pub echoes: usize,
    /// Median round trip.
    pub p50: Duration,
    /// 99th percentile round trip.
    pub p99: Duration,
    /// Longest round trip.
    pub max: Duration,
}

impl Victim {
    /// Connects to `ws://addr{path}` (panics if it cannot) and starts echoing every `every`.
    pub fn start(addr: SocketAddr, path: &str, every: Duration) -> Victim {
        let stop = Arc::new(AtomicBool::new(false));
        let rtts = Arc::new(Mutex::new(Vec::new()));
        let (s, r, path) = (stop.clone(), rtts.clone(), path.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            smol::block_on(async move {
                let mut ws = connect(addr, &path).await;
                let _ = ready_tx.send(());
                let mut n = 0u64;
                while !s.load(Ordering::Relaxed) {
                    n += 1;
                    let text = format!("victim {n}");
                    let sent = Instant::now();
                    ws.send(Message::text(text.clone()))
                        .await
                        .map_err(|e| format!("victim send {n}: {e}"))?;
                    let echo = within(ECHO_LIMIT, async {
                        loop {
                            match ws.next().await {
                                Some(Ok(m)) if m.is_text() => return Ok(m),
                                Some(Ok(_)) => continue,
                                Some(Err(e)) => return Err(e.to_string()),
                                None => return Err("closed".to_string()),
                            }
                        }
                    })
                    .await;
                    match echo {
                        Some(Ok(m)) if m == Message::text(text) => {}
                        Some(Ok(m)) => return Err(format!("victim echo {n}: got {m:?}")),
                        Some(Err(e)) => return Err(format!("victim echo {n}: {e}")),
                        None => return Err(format!("victim echo {n}: none in {ECHO_LIMIT:?}")),
                    }
                    if let Ok(mut v) = r.lock() {
                        v.push(sent.elapsed());
                    }
                    // Pacing, not a wait for readiness.
                    smol::Timer::after(every).await;
                }
                let _ = ws.close(None).await;
                Ok(())
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the victim did not connect");
        Victim {
            stop,
            rtts,
            thread: Some(thread),
        }
    }

    /// Round trips so far.
    pub fn echoes(&self) -> usize {
        self.rtts.lock().map_or(0, |v| v.len())
    }

    /// Stops the victim; what it saw. Panics if an echo was lost or wrong.
    pub fn stop(mut self) -> VictimReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the victim lost its service: {e}"),
                Err(_) => panic!("the victim thread panicked"),
            }
        }
        let mut v = self.rtts.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort();
        let at = |q: f64| {
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        VictimReport {
            echoes: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: v.last().copied().unwrap_or_default(),
        }
    }

    /// Stops the victim and asserts its rule: at least `min_echoes` echoes, p99 under
    /// [`VICTIM_P99`]. Returns the report (to print).
    pub fn assert_served(self, min_echoes: usize) -> VictimReport {
        let r = self.stop();
        assert!(
            r.echoes >= min_echoes,
            "the victim got {} echoes, fewer than {min_echoes}: {r:?}",
            r.echoes
        );
        assert!(r.p99 < VICTIM_P99, "the victim's p99 is over 50 ms: {r:?}");
        r
    }
}

/// A new client on `path` gets its 101 within [`VICTIM_CONNECT`]; returns how long it took.
pub fn assert_new_client_served(addr: SocketAddr, path: &str) -> Duration {
    let path = path.to_string();
    let started = Instant::now();
    let connected = smol::block_on(within(VICTIM_CONNECT, try_connect(addr, &path, &[])));
    let took = started.elapsed();
    match connected {
        Some(Ok(_)) => took,
        Some(Err(e)) => panic!("a new client on {path} was refused after {took:?}: {e}"),
        None => panic!("a new client on {path} got no 101 within {VICTIM_CONNECT:?}"),
    }
}
