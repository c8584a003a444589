//! fleet: C clients that stay connected, as the users of a chat service do, and come back when
//! the server closes their connection (a gateway restarting, say). Each client keeps one
//! connection to `URL?key=k<i mod K>`, reads the backend's greeting (`backend NAME`, from
//! `echo_backend --name`), and waits; after a close (or a broken connection) it reconnects with
//! full-jitter exponential backoff. The report says what the clients saw of a rolling restart:
//! failed handshakes, close codes, how long each took to be back, and whether a key was ever
//! served by two backends. `bench/rolling.sh` drives it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::Message;
use futures_lite::FutureExt;
use serde_json::{json, Value};
use smol::{Executor, Timer};

use super::{hold_config, round2, run_end, Conn, Opts, Target, LOGGED_ERRORS};
use super::{MAX_LOGGED_ERRORS, OPEN_TIMEOUT};

/// The first reconnect waits up to this long; each failed attempt doubles it...
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// ... up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// How often the count of connected clients is looked at (and printed when it changed).
const STATUS_EVERY: Duration = Duration::from_millis(100);

/// Closed (never sent on) when the run ends: every client's `recv()` then returns.
type Stop = smol::channel::Receiver<()>;

/// What the clients share: how many are connected, and the event log.
struct Shared {
    connected: AtomicUsize,
    events: Option<Mutex<BufWriter<File>>>,
}

impl Shared {
    /// One line of the `--events` file: `UNIX_MS CLIENT KIND VALUE`.
    fn event(&self, client: usize, kind: &str, value: &str) {
        if let Some(events) = &self.events {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let mut w = events.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = writeln!(w, "{ms} {client} {kind} {value}");
        }
    }
}

/// One client's account of its run.
#[derive(Default)]
struct Outcome {
    connects: u64,
    /// Attempts that did not end in a 101 (refused, reset, timed out, another status...).
    failed_handshakes: u64,
    /// Anything else that went wrong (a close handshake not finished, a strange greeting).
    errors: u64,
    first_error: Option<String>,
    /// Server closes by close code (`broken`: the connection ended without a close frame).
    closes: BTreeMap<String, u64>,
    /// Milliseconds from each server close to this client's next 101.
    back_ms: Vec<f64>,
    /// Backend name -> connections it served.
    backends: BTreeMap<String, u64>,
    /// Connections that ended without having received a greeting.
    no_greeting: u64,
    /// Connected when the run ended.
    connected_at_end: bool,
}

impl Outcome {
    fn note(&mut self, e: String) {
        if LOGGED_ERRORS.fetch_add(1, Ordering::Relaxed) < MAX_LOGGED_ERRORS {
            eprintln!("loadgen: fleet: {e}");
        }
        self.first_error.get_or_insert(e);
    }

    fn failed_handshake(&mut self, e: String) {
        self.failed_handshakes += 1;
        self.note(e);
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.note(e);
    }
}

/// How a held connection ended.
enum Held {
    /// The run ended; the connection is still open.
    Stopped,
    /// The server sent a close frame with this code (1005: none in the frame).
    Closed(u16),
    /// The connection broke without a close frame.
    Broken(String),
}

pub(super) async fn fleet(ex: &Arc<Executor<'static>>, o: &Opts) -> Value {
    let events = o.events.as_deref().map(|path| match File::create(path) {
        Ok(f) => Mutex::new(BufWriter::new(f)),
        Err(e) => {
            eprintln!("loadgen: --events {path}: {e}");
            std::process::exit(2);
        }
    });
    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        events,
    });
    let (stop_tx, stop) = smol::channel::bounded::<()>(1);
    eprintln!(
        "fleet: {} clients on {} keys to {}, opening {}/s, for {} s",
        o.connections, o.keys, o.target.url, o.open_rate, o.duration
    );
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..o.connections)
        .map(|id| {
            let target = keyed(&o.target, id % o.keys);
            let start = t0 + Duration::from_secs_f64(id as f64 / o.open_rate);
            ex.spawn(client(id, target, start, shared.clone(), stop.clone()))
        })
        .collect();
    let status = ex.spawn(print_connected(shared.clone(), stop.clone()));
    run_end(o.duration).await;
    let secs = t0.elapsed().as_secs_f64();
    drop(stop_tx);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await);
    }
    status.await;
    if let Some(events) = &shared.events {
        let _ = events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }
    report(o, secs, outcomes)
}

/// The target with `key=k<key>` added to its query.
fn keyed(target: &Target, key: usize) -> Target {
    let sep = if target.path.contains('?') { '&' } else { '?' };
    let param = format!("{sep}key=k{key}");
    Target {
        url: format!("{}{param}", target.url),
        path: format!("{}{param}", target.path),
        ..target.clone()
    }
}

/// Waits for `timer`; false when the run ended first.
async fn pause(timer: Timer, stop: &Stop) -> bool {
    async {
        timer.await;
        true
    }
    .or(async {
        let _ = stop.recv().await;
        false
    })
    .await
}

/// Full jitter: a random wait up to `BACKOFF_BASE` x 2^failures, at most `BACKOFF_CAP`.
fn backoff(failures: u32) -> Timer {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << failures.min(16))
        .min(BACKOFF_CAP);
    Timer::after(ceiling.mul_f64(rand::random::<f64>()))
}

/// `CONNECTED <n>` on stdout whenever the count changed, until the run ends.
async fn print_connected(shared: Arc<Shared>, stop: Stop) {
    let mut last = None;
    while pause(Timer::after(STATUS_EVERY), &stop).await {
        let n = shared.connected.load(Ordering::Relaxed);
        if last != Some(n) {
            println!("CONNECTED {n}");
            last = Some(n);
        }
    }
}

/// One client: connect, hold, and after every close come back, until the run ends.
async fn client(
    id: usize,
    target: Target,
    start: Instant,
    shared: Arc<Shared>,
    stop: Stop,
) -> Outcome {
    let mut out = Outcome::default();
    let mut closed_at: Option<Instant> = None;
    let mut failures = 0;
    let mut wait = Timer::at(start);
    while pause(wait, &stop).await {
        let opened = async { Some(Conn::open(&target, hold_config()).await) }
            .or(async {
                let _ = stop.recv().await;
                None
            })
            .await;
        let mut conn = match opened {
            None => break,
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                out.failed_handshake(e);
                failures += 1;
                wait = backoff(failures);
                continue;
            }
        };
        out.connects += 1;
        failures = 0;
        if let Some(t) = closed_at.take() {
            out.back_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        shared.connected.fetch_add(1, Ordering::Relaxed);
        let held = hold(&mut conn, id, &shared, &stop, &mut out).await;
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        if let Held::Stopped = held {
            out.connected_at_end = true;
            if let Err(e) = conn.close(Instant::now() + OPEN_TIMEOUT).await {
                out.error(format!("final {e}"));
            }
            break;
        }
        closed_at = Some(Instant::now());
        closed(conn, id, held, &shared, &mut out).await;
        wait = backoff(0);
    }
    out
}

/// Reads the greeting, then waits for the server to close the connection or the run to end.
async fn hold(conn: &mut Conn, id: usize, shared: &Shared, stop: &Stop, out: &mut Outcome) -> Held {
    let mut greeted = false;
    let held = loop {
        match conn.try_read() {
            Ok(Some(Message::Text(t))) if !greeted => {
                greeted = true;
                match t.as_str().strip_prefix("backend ") {
                    Some(name) => {
                        *out.backends.entry(name.to_string()).or_default() += 1;
                        shared.event(id, "open", name);
                    }
                    None => out.error(format!("a first message that is no greeting: {t:?}")),
                }
            }
            Ok(Some(Message::Close(f))) => break Held::Closed(f.map_or(1005, |f| f.code.into())),
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => break Held::Broken(format!("receive: {e}")),
        }
        let stopped = async {
            conn.wait(true, None).await;
            false
        }
        .or(async {
            let _ = stop.recv().await;
            true
        })
        .await;
        if stopped {
            break Held::Stopped;
        }
    };
    if !greeted {
        out.no_greeting += 1;
    }
    held
}

/// Records a close by the server (or a break) and finishes the close handshake.
async fn closed(conn: Conn, id: usize, held: Held, shared: &Shared, out: &mut Outcome) {
    let code = match held {
        Held::Closed(code) => code.to_string(),
        Held::Broken(e) => {
            out.error(e);
            "broken".to_string()
        }
        Held::Stopped => return,
    };
    shared.event(id, "close", &code);
    *out.closes.entry(code.clone()).or_default() += 1;
    if code != "broken" {
        if let Err(e) = conn.close(Instant::now() + OPEN_TIMEOUT).await {
            out.error(format!("after the server's close frame: {e}"));
        }
    }
}

/// The run's JSON line.
fn report(o: &Opts, secs: f64, outcomes: Vec<Outcome>) -> Value {
    let mut all = Outcome::default();
    let mut by_key: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut not_back = 0;
    for (id, c) in outcomes.into_iter().enumerate() {
        all.connects += c.connects;
        all.failed_handshakes += c.failed_handshakes;
        all.errors += c.errors;
        all.no_greeting += c.no_greeting;
        if all.first_error.is_none() {
            all.first_error = c.first_error;
        }
        for (code, n) in c.closes {
            *all.closes.entry(code).or_default() += n;
        }
        all.back_ms.extend(c.back_ms);
        for (name, n) in c.backends {
            *all.backends.entry(name.clone()).or_default() += n;
            by_key.entry(id % o.keys).or_default().insert(name);
        }
        not_back += usize::from(!c.connected_at_end);
    }
    all.back_ms.sort_by(f64::total_cmp);
    let p99 = match all.back_ms.len() {
        0 => None,
        n => Some(all.back_ms[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1]),
    };
    json!({
        "clients": o.connections,
        "keys": o.keys,
        "duration_s": round2(secs),
        "connects": all.connects,
        "failed_handshakes": all.failed_handshakes,
        "closes_by_code": all.closes,
        "reconnects": all.back_ms.len(),
        "max_back_ms": all.back_ms.last().map(|&v| v.round()),
        "p99_back_ms": p99.map(f64::round),
        "not_back": not_back,
        "sticky_violations": by_key.values().filter(|names| names.len() > 1).count(),
        "backends_seen": all.backends,
        "no_greeting": all.no_greeting,
        "errors": all.errors,
        "first_error": all.first_error,
    })
}
