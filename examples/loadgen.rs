//! WebSocket load generator for the benchmarks in `bench/` (see `bench/README.md`).
//!
//! `cargo run --release --example loadgen -- --url ws://127.0.0.1:PORT/PATH --mode MODE ...`
//!
//! Modes: `throughput` (closed loop, W messages in flight per connection, every echo checked),
//! `rate` (open loop on a fixed schedule, latency from the *scheduled* send time), `connect`
//! (connect + handshake + one echo + close, repeatedly), `hold` (many idle connections) and
//! `fleet` (clients that stay connected and come back when the server closes them; in
//! `loadgen/fleet.rs`).
//! Each mode prints one JSON line on stdout at the end; logs go to stderr.
//!
//! The hot path drives tungstenite's synchronous `WebSocket` over a non-blocking socket and waits
//! on the socket's readiness itself, so that it can queue several messages and write them with
//! one flush, and parse every frame one read brought in before waiting again.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::handshake::client::generate_key;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message, WebSocket};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, FutureExt};
use serde_json::{json, Value};
use smol::{Async, Executor, Timer};

#[path = "loadgen/fleet.rs"]
mod fleet;

const HELP: &str = "\
loadgen: WebSocket load generator (one JSON line on stdout at the end, logs on stderr)

USAGE:
    loadgen --url ws://127.0.0.1:PORT/PATH --mode MODE [OPTIONS]

MODES AND THEIR OPTIONS:
    throughput  --connections C --inflight W --size S --duration SECS [--binary | --json]
                C connections, each keeping W messages of S bytes in flight; every echo is
                checked byte for byte and in order; round-trip time per message. --json: each
                message is a JSON object whose first member is its stamp, and only that stamp
                is checked in the echo (for routes whose rules transform messages)
    rate        --connections C --rate R --size S --duration SECS [--binary]
                open loop: R messages/s in total on a fixed schedule; latency is measured from
                the scheduled send time (coordinated omission corrected)
    connect     --parallel K --duration SECS
                K loops of TCP connect + handshake + one echo + close handshake
    hold        --connections C --hold SECS [--batch N]
                open C connections (N at a time, default 200), echo once on each, print
                `HELD <n>` on stdout, hold them idle for SECS (or until stdin, when it is a
                pipe or a terminal, reaches end of file), then close them all cleanly
    fleet       --connections C --keys K --duration SECS [--open-rate O] [--events FILE]
                C clients; client i connects to URL?key=k<i mod K>, reads the backend's
                greeting (`backend NAME`, echo_backend --name) and stays connected; when the
                server closes its connection (or it breaks) it reconnects with jittered
                exponential backoff (full jitter, 100 ms doubling to 2 s). The first connects
                are paced at O per second (default 500). Prints `CONNECTED <n>` on stdout when
                the count of connected clients changes (at most every 100 ms). Runs for SECS
                (or until stdin, when it is a pipe or a terminal, reaches end of file), then
                closes every connection cleanly. Reports failed handshakes, close codes, the
                time from a close to the next 101, and keys served by more than one backend.
                --events FILE: one line per event, `UNIX_MS CLIENT open BACKEND` or
                `UNIX_MS CLIENT close CODE` (CODE `broken` when no close frame came)

COMMON:
    --threads N   executor threads of the load generator (default 1)
    --help        this text

Defaults: C=50, W=8, S=64, SECS=10, R=1000, K=16 (connect) or 100 (fleet), O=500.
";

/// How long a connection may take to open (TCP + handshake) or to close.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long echoes still in flight at the end of a run are waited for.
const DRAIN: Duration = Duration::from_secs(5);
/// Errors logged on stderr per run; the rest are only counted.
const MAX_LOGGED_ERRORS: usize = 10;
static LOGGED_ERRORS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Throughput,
    Rate,
    Connect,
    Hold,
    Fleet,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Throughput => "throughput",
            Mode::Rate => "rate",
            Mode::Connect => "connect",
            Mode::Hold => "hold",
            Mode::Fleet => "fleet",
        }
    }
}

struct Opts {
    target: Target,
    mode: Mode,
    connections: usize,
    inflight: usize,
    size: usize,
    duration: f64,
    binary: bool,
    json: bool,
    rate: f64,
    parallel: usize,
    hold: f64,
    batch: usize,
    threads: usize,
    keys: usize,
    open_rate: f64,
    events: Option<String>,
}

/// Where to connect: `ws://HOST:PORT/PATH` resolved once.
#[derive(Clone)]
struct Target {
    url: String,
    addr: SocketAddr,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(h, _)| !h.ends_with(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Target {
            url: url.to_string(),
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

fn parse_args() -> Result<Option<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut url: Option<String> = None;
    let mut mode: Option<Mode> = None;
    let mut o = Opts {
        target: Target {
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            authority: String::new(),
            path: String::new(),
        },
        mode: Mode::Throughput,
        connections: 50,
        inflight: 8,
        size: 64,
        duration: 10.0,
        binary: false,
        json: false,
        rate: 1000.0,
        parallel: 16,
        hold: 10.0,
        batch: 200,
        threads: 1,
        keys: 100,
        open_rate: 500.0,
        events: None,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("url") => url = Some(parser.value()?.string()?),
            Long("mode") => {
                mode = Some(match parser.value()?.string()?.as_str() {
                    "throughput" => Mode::Throughput,
                    "rate" => Mode::Rate,
                    "connect" => Mode::Connect,
                    "hold" => Mode::Hold,
                    "fleet" => Mode::Fleet,
                    other => {
                        return Err(format!(
                            "--mode {other}: expected throughput, rate, connect, hold or fleet"
                        )
                        .into())
                    }
                })
            }
            Long("connections") => o.connections = parser.value()?.parse()?,
            Long("inflight") => o.inflight = parser.value()?.parse()?,
            Long("size") => o.size = parser.value()?.parse()?,
            Long("duration") => o.duration = parser.value()?.parse()?,
            Long("binary") => o.binary = true,
            Long("json") => o.json = true,
            Long("rate") => o.rate = parser.value()?.parse()?,
            Long("parallel") => o.parallel = parser.value()?.parse()?,
            Long("hold") => o.hold = parser.value()?.parse()?,
            Long("batch") => o.batch = parser.value()?.parse()?,
            Long("threads") => o.threads = parser.value()?.parse()?,
            Long("keys") => o.keys = parser.value()?.parse()?,
            Long("open-rate") => o.open_rate = parser.value()?.parse()?,
            Long("events") => o.events = Some(parser.value()?.string()?),
            Long("help") | Short('h') => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    let url = url.ok_or("--url is required")?;
    o.target = Target::parse(&url)?;
    o.mode = mode.ok_or("--mode is required")?;
    let positive = [
        ("--connections", o.connections),
        ("--inflight", o.inflight),
        ("--size", o.size),
        ("--parallel", o.parallel),
        ("--batch", o.batch),
        ("--threads", o.threads),
        ("--keys", o.keys),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(format!("{name} must be at least 1").into());
        }
    }
    if !(o.duration > 0.0 && o.rate > 0.0 && o.open_rate > 0.0 && o.hold >= 0.0) {
        return Err(
            "--duration, --rate and --open-rate must be positive, --hold not negative".into(),
        );
    }
    Ok(Some(o))
}

fn main() {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("loadgen: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    // Timers fire up to 50 µs late by default (the kernel's timer slack), which would show up
    // in rate mode's latencies; 1 ns makes the schedule exact. Threads inherit it. Best effort.
    let _ = std::fs::write("/proc/self/timerslack_ns", "1");
    let ex = Arc::new(Executor::new());
    for i in 1..opts.threads {
        let ex = ex.clone();
        std::thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .spawn(move || smol::block_on(ex.run(future::pending::<()>())))
            .expect("cannot start a thread");
    }
    let report = smol::block_on(ex.run(run(ex.clone(), opts)));
    println!("{report}");
}

async fn run(ex: Arc<Executor<'static>>, o: Opts) -> Value {
    let mut report = match o.mode {
        Mode::Throughput => throughput(&ex, &o).await,
        Mode::Rate => rate(&ex, &o).await,
        Mode::Connect => connect(&ex, &o).await,
        Mode::Hold => hold(&ex, &o).await,
        Mode::Fleet => fleet::fleet(&ex, &o).await,
    };
    report["mode"] = json!(o.mode.name());
    report["url"] = json!(o.target.url);
    report["threads"] = json!(o.threads);
    report["loadgen_cpu_s"] = json!(own_cpu_seconds());
    report
}

/// CPU time (user + system, all threads) this process used so far, from /proc/self/stat.
/// Linux reports it in USER_HZ ticks, which is 100 on every architecture Rust targets.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

// ---------------------------------------------------------------------------------------------
// One client connection: tungstenite over a non-blocking socket, with explicit readiness waits.

/// The socket as tungstenite sees it: plain non-blocking reads and writes.
struct Sock(Async<TcpStream>);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s: &TcpStream = self.0.get_ref();
        s.read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s: &TcpStream = self.0.get_ref();
        s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &WsError) -> bool {
    matches!(e, WsError::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

struct Conn {
    ws: WebSocket<Sock>,
    /// Something was queued that has not been fully written yet.
    unflushed: bool,
}

impl Conn {
    /// TCP connect, then the client handshake (checked: 101 and the right accept key).
    async fn open(target: &Target, cfg: WebSocketConfig) -> Result<Conn, String> {
        let handshake = async {
            let stream = Async::<TcpStream>::connect(target.addr)
                .await
                .map_err(|e| format!("connect to {}: {e}", target.addr))?;
            stream
                .get_ref()
                .set_nodelay(true)
                .map_err(|e| format!("set_nodelay: {e}"))?;
            let key = generate_key();
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                target.path, target.authority
            );
            let mut s = &stream;
            s.write_all(request.as_bytes())
                .await
                .map_err(|e| format!("handshake write: {e}"))?;
            let mut head = Vec::with_capacity(512);
            let mut chunk = [0u8; 1024];
            let head_len = loop {
                let n = s
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("handshake read: {e}"))?;
                if n == 0 {
                    return Err("connection closed during the handshake".to_string());
                }
                head.extend_from_slice(&chunk[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&head) {
                    Ok(httparse::Status::Complete(len)) => {
                        if resp.code != Some(101) {
                            return Err(format!(
                                "handshake answered HTTP {} {}",
                                resp.code.unwrap_or(0),
                                resp.reason.unwrap_or("")
                            ));
                        }
                        let accept = resp
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                            .map(|h| h.value);
                        if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
                            return Err("handshake: wrong Sec-WebSocket-Accept".to_string());
                        }
                        break len;
                    }
                    Ok(httparse::Status::Partial) if head.len() < 16384 => {}
                    Ok(httparse::Status::Partial) => {
                        return Err("handshake: response head too large".to_string())
                    }
                    Err(e) => return Err(format!("handshake: bad response: {e}")),
                }
            };
            let rest = head.split_off(head_len);
            Ok(Conn {
                ws: WebSocket::from_partially_read(Sock(stream), rest, Role::Client, Some(cfg)),
                unflushed: false,
            })
        };
        handshake
            .or(async {
                Timer::after(OPEN_TIMEOUT).await;
                Err(format!("open timed out after {OPEN_TIMEOUT:?}"))
            })
            .await
    }

    fn io(&self) -> &Async<TcpStream> {
        &self.ws.get_ref().0
    }

    /// Queues a message; it is written at the next flush (or earlier if the buffer fills).
    fn queue(&mut self, msg: Message) -> Result<(), String> {
        self.unflushed = true;
        match self.ws.write(msg) {
            Ok(()) => Ok(()),
            Err(e) if would_block(&e) => Ok(()),
            Err(e) => Err(format!("send: {e}")),
        }
    }

    /// Writes what is queued without waiting; true once all of it is out.
    fn try_flush(&mut self) -> Result<bool, String> {
        match self.ws.flush() {
            Ok(()) => {
                self.unflushed = false;
                Ok(true)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(format!("send: {e}")),
        }
    }

    /// The next message if one is already here (tungstenite answers pings itself).
    fn try_read(&mut self) -> Result<Option<Message>, WsError> {
        match self.ws.read() {
            Ok(m) => Ok(Some(m)),
            Err(e) if would_block(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until the socket is readable, or writable while output is pending, or `timer` fires.
    async fn wait(&self, read: bool, timer: Option<&mut Timer>) {
        let io = self.io();
        let write = self.unflushed;
        let mut timer = timer;
        future::poll_fn(|cx| {
            if read && io.poll_readable(cx).is_ready() {
                return Poll::Ready(());
            }
            if write && io.poll_writable(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some(t) = timer.as_deref_mut() {
                if Pin::new(t).poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Waits for the next text or binary message.
    async fn recv(&mut self, deadline: Instant) -> Result<Message, String> {
        let mut timer = Timer::at(deadline);
        loop {
            if self.unflushed {
                self.try_flush()?;
            }
            match self.try_read() {
                Ok(Some(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
                Ok(Some(Message::Close(f))) => return Err(format!("closed by the peer: {f:?}")),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(format!("receive: {e}")),
            }
            if Instant::now() >= deadline {
                return Err("no echo within the time limit".to_string());
            }
            self.wait(true, Some(&mut timer)).await;
        }
    }

    /// The close handshake (code 1000), then waits for the server to close TCP.
    async fn close(mut self, deadline: Instant) -> Result<(), String> {
        match self.ws.close(None) {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(format!("close: {e}")),
        }
        self.unflushed = true;
        let mut timer = Timer::at(deadline);
        loop {
            if self.unflushed {
                match self.ws.flush() {
                    Ok(()) => self.unflushed = false,
                    Err(e) if would_block(&e) => {}
                    Err(WsError::ConnectionClosed) => return Ok(()),
                    Err(e) => return Err(format!("close: {e}")),
                }
            }
            match self.try_read() {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(WsError::ConnectionClosed) => return Ok(()),
                Err(e) => return Err(format!("close: {e}")),
            }
            if Instant::now() >= deadline {
                return Err("close handshake not finished in time".to_string());
            }
            self.wait(true, Some(&mut timer)).await;
        }
    }
}

/// Read buffers: generous for the load modes, small for `hold` (10 000 idle connections).
fn load_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(64 * 1024)
}

fn hold_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
}

// ---------------------------------------------------------------------------------------------
// Payloads: deterministic, so an echo is checked without keeping a copy of what was sent.

/// Messages of one connection: a per-connection ASCII pattern whose first (up to) 16 bytes are
/// the message's sequence number in hex.
struct Payload {
    template: Vec<u8>,
    binary: bool,
    /// A JSON object `{"s":"<stamp>","p":"..."}` (for routes that transform messages: only the
    /// stamp is checked in the echo, which the rules may have changed elsewhere).
    json: bool,
}

/// Where the stamp starts in a JSON payload: after `{"s":"`.
const JSON_STAMP_AT: usize = 6;

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Payload {
    fn new(id: usize, size: usize, binary: bool) -> Payload {
        let template = (0..size)
            .map(|i| b'a' + ((i + id * 7) % 26) as u8)
            .collect();
        Payload {
            template,
            binary,
            json: false,
        }
    }

    /// A JSON object of `size` bytes (at least 30) stamped like the others.
    fn json(id: usize, size: usize) -> Payload {
        let pad = size.max(30) - 30;
        let mut template = br#"{"s":"0000000000000000","p":""#.to_vec();
        template.extend((0..pad).map(|i| b'a' + ((i + id * 7) % 26) as u8));
        template.extend_from_slice(br#""}"#);
        Payload {
            template,
            binary: false,
            json: true,
        }
    }

    fn stamp(seq: u64, out: &mut [u8]) {
        let k = out.len();
        for (j, b) in out.iter_mut().enumerate() {
            *b = HEX[((seq >> (4 * (k - 1 - j))) & 0xf) as usize];
        }
    }

    fn digits(&self) -> usize {
        self.template.len().min(16)
    }

    fn message(&self, seq: u64) -> Message {
        let mut v = self.template.clone();
        let k = self.digits();
        let at = if self.json { JSON_STAMP_AT } else { 0 };
        Self::stamp(seq, &mut v[at..at + k]);
        if self.binary {
            Message::Binary(v.into())
        } else {
            Message::Text(String::from_utf8(v).expect("the payload is ASCII").into())
        }
    }

    /// Checks that `msg` is exactly message `seq`.
    fn check(&self, seq: u64, msg: &Message) -> Result<(), String> {
        let (data, binary): (&[u8], bool) = match msg {
            Message::Text(t) => (t.as_bytes(), false),
            Message::Binary(b) => (b, true),
            other => return Err(format!("unexpected frame instead of an echo: {other:?}")),
        };
        if binary != self.binary {
            return Err(format!(
                "echo of message {seq} came back as {}",
                if binary { "binary" } else { "text" }
            ));
        }
        if self.json {
            return self.check_json(seq, data);
        }
        if data.len() != self.template.len() {
            return Err(format!(
                "echo of message {seq} has {} bytes, sent {}",
                data.len(),
                self.template.len()
            ));
        }
        let k = self.digits();
        let mut expect = [0u8; 16];
        Self::stamp(seq, &mut expect[..k]);
        if data[..k] != expect[..k] {
            return Err(format!(
                "echo out of order: expected message {seq}, got one stamped {:?}",
                String::from_utf8_lossy(&data[..k])
            ));
        }
        if data[k..] != self.template[k..] {
            return Err(format!("echo of message {seq} differs from what was sent"));
        }
        Ok(())
    }
}

impl Payload {
    /// A JSON echo: an object whose first member is still the stamp of message `seq`.
    fn check_json(&self, seq: u64, data: &[u8]) -> Result<(), String> {
        let mut expect = [0u8; 16];
        Self::stamp(seq, &mut expect);
        let stamp = data.get(JSON_STAMP_AT..JSON_STAMP_AT + 16);
        if !data.starts_with(br#"{"s":""#) || stamp != Some(&expect[..]) {
            return Err(format!(
                "echo of JSON message {seq} does not start with its stamp: {:?}",
                String::from_utf8_lossy(&data[..data.len().min(40)])
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Default)]
struct Stats {
    /// Latencies in nanoseconds.
    lat: Vec<u64>,
    /// Messages (or cycles) completed within the measured window.
    done: u64,
    /// Messages sent (rate mode).
    sent: u64,
    /// Messages received, including the drain after the window (rate mode).
    received: u64,
    /// How late each send was against its scheduled time, in nanoseconds (rate mode).
    lag: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Stats {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if LOGGED_ERRORS.fetch_add(1, Ordering::Relaxed) < MAX_LOGGED_ERRORS {
            eprintln!("loadgen: error: {e}");
        }
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    fn merge(&mut self, other: Stats) {
        self.lat.extend(other.lat);
        self.done += other.done;
        self.sent += other.sent;
        self.received += other.received;
        self.lag.extend(other.lag);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Latency percentiles (nearest rank) in microseconds, one decimal.
    fn percentiles(&mut self) -> Value {
        self.lat.sort_unstable();
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        let pct = |q: f64| -> Value {
            if self.lat.is_empty() {
                return Value::Null;
            }
            let rank = ((q * self.lat.len() as f64).ceil() as usize).clamp(1, self.lat.len());
            json!(us(self.lat[rank - 1]))
        };
        json!({
            "p50_us": pct(0.50),
            "p90_us": pct(0.90),
            "p99_us": pct(0.99),
            "p999_us": pct(0.999),
            "max_us": self.lat.last().map(|&v| us(v)),
        })
    }
}

fn merge_into(report: &mut Value, extra: Value) {
    if let (Value::Object(r), Value::Object(e)) = (report, extra) {
        r.extend(e);
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Opens `n` connections, `batch` at a time, each optionally checked with one echo.
async fn open_many(
    ex: &Arc<Executor<'static>>,
    target: &Target,
    n: usize,
    batch: usize,
    cfg: WebSocketConfig,
    echo: bool,
    stats: &mut Stats,
) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let tasks: Vec<_> = (start..end)
            .map(|i| {
                let target = target.clone();
                ex.spawn(async move {
                    let mut conn = Conn::open(&target, cfg).await?;
                    if echo {
                        let probe = Payload::new(i, 16, false);
                        conn.queue(probe.message(i as u64))?;
                        let m = conn.recv(Instant::now() + OPEN_TIMEOUT).await?;
                        probe.check(i as u64, &m)?;
                    }
                    Ok::<Conn, String>(conn)
                })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(c) => conns.push(c),
                Err(e) => stats.error(e),
            }
        }
        start = end;
    }
    conns
}

/// Closes every connection cleanly, all at once; failures are counted in `stats`.
async fn close_all(ex: &Arc<Executor<'static>>, conns: Vec<Conn>, stats: &mut Stats) -> u64 {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| ex.spawn(c.close(deadline)))
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await {
            Ok(()) => ok += 1,
            Err(e) => stats.error(e),
        }
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// throughput: closed loop, W in flight per connection.

async fn throughput(ex: &Arc<Executor<'static>>, o: &Opts) -> Value {
    let mut stats = Stats::default();
    let conns = open_many(
        ex,
        &o.target,
        o.connections,
        o.batch,
        load_config(),
        false,
        &mut stats,
    )
    .await;
    eprintln!(
        "throughput: {} connections to {}, {} x {} B {} in flight each, {} s",
        conns.len(),
        o.target.url,
        o.inflight,
        o.size,
        if o.binary { "binary" } else { "text" },
        o.duration
    );
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.duration);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| {
            let payload = match o.json {
                true => Payload::json(id, o.size),
                false => Payload::new(id, o.size, o.binary),
            };
            ex.spawn(throughput_conn(conn, payload, o.inflight, deadline))
        })
        .collect();
    for t in tasks {
        stats.merge(t.await);
    }
    let secs = o.duration;
    let mut report = json!({
        "connections": o.connections,
        "inflight": o.inflight,
        "size": o.size,
        "binary": o.binary,
        "json": o.json,
        "duration_s": secs,
        "msgs": stats.done,
        "msgs_per_sec": round2(stats.done as f64 / secs),
        "mb_per_sec": round2(stats.done as f64 * o.size as f64 / secs / 1e6),
    });
    merge_into(&mut report, stats.percentiles());
    report["errors"] = json!(stats.errors);
    report["first_error"] = json!(stats.first_error);
    report
}

async fn throughput_conn(
    mut conn: Conn,
    payload: Payload,
    inflight: usize,
    deadline: Instant,
) -> Stats {
    let mut st = Stats::default();
    let drain_end = deadline + DRAIN;
    let mut timer = Timer::at(drain_end);
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(inflight + 1);
    let (mut next_send, mut next_recv) = (0u64, 0u64);
    let result: Result<(), String> = async {
        for _ in 0..inflight {
            conn.queue(payload.message(next_send))?;
            sent_at.push_back(Instant::now());
            next_send += 1;
        }
        loop {
            if conn.unflushed {
                conn.try_flush()?;
            }
            // Every echo already here: check it, and queue its replacement (one flush for all).
            while let Some(msg) = conn.try_read().map_err(|e| format!("receive: {e}"))? {
                let now = Instant::now();
                if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
                    if let Message::Close(f) = msg {
                        return Err(format!("closed by the peer: {f:?}"));
                    }
                    continue;
                }
                payload.check(next_recv, &msg)?;
                let sent = sent_at.pop_front().ok_or("an echo nobody asked for")?;
                st.lat.push((now - sent).as_nanos() as u64);
                next_recv += 1;
                if now < deadline {
                    st.done += 1;
                    conn.queue(payload.message(next_send))?;
                    sent_at.push_back(Instant::now());
                    next_send += 1;
                }
            }
            let now = Instant::now();
            if now >= deadline && sent_at.is_empty() {
                return Ok(());
            }
            if now >= drain_end {
                return Err(format!(
                    "{} echoes still missing {DRAIN:?} after the end",
                    sent_at.len()
                ));
            }
            conn.wait(true, Some(&mut timer)).await;
        }
    }
    .await;
    match result {
        Ok(()) => {
            if let Err(e) = conn.close(Instant::now() + OPEN_TIMEOUT).await {
                st.error(e);
            }
        }
        Err(e) => st.error(e),
    }
    st
}

// ---------------------------------------------------------------------------------------------
// rate: open loop on a fixed schedule.

async fn rate(ex: &Arc<Executor<'static>>, o: &Opts) -> Value {
    let mut stats = Stats::default();
    let conns = open_many(
        ex,
        &o.target,
        o.connections,
        o.batch,
        load_config(),
        false,
        &mut stats,
    )
    .await;
    let n = conns.len();
    eprintln!(
        "rate: {n} connections to {}, {} msg/s in total of {} B, {} s",
        o.target.url, o.rate, o.size, o.duration
    );
    // Connection i sends at t0 + i/R + k*C/R: evenly spread, R per second in total.
    let interval = Duration::from_secs_f64(o.connections as f64 / o.rate);
    let t0 = Instant::now() + Duration::from_millis(10);
    let deadline = t0 + Duration::from_secs_f64(o.duration);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| {
            let payload = match o.json {
                true => Payload::json(id, o.size),
                false => Payload::new(id, o.size, o.binary),
            };
            let first = t0 + Duration::from_secs_f64(id as f64 / o.rate);
            ex.spawn(rate_conn(conn, payload, first, interval, deadline))
        })
        .collect();
    for t in tasks {
        stats.merge(t.await);
    }
    let mut report = json!({
        "connections": o.connections,
        "size": o.size,
        "binary": o.binary,
        "json": o.json,
        "duration_s": o.duration,
        "target_rate": o.rate,
        "sent": stats.sent,
        "received": stats.received,
        "achieved_rate": round2(stats.received as f64 / o.duration),
    });
    merge_into(&mut report, stats.percentiles());
    // The generator's own lateness: how long after its slot each message was queued.
    stats.lat = std::mem::take(&mut stats.lag);
    if let Value::Object(lag) = stats.percentiles() {
        for (k, v) in lag {
            report[format!("send_lag_{k}")] = v;
        }
    }
    report["errors"] = json!(stats.errors);
    report["first_error"] = json!(stats.first_error);
    report
}

async fn rate_conn(
    mut conn: Conn,
    payload: Payload,
    first: Instant,
    interval: Duration,
    deadline: Instant,
) -> Stats {
    let mut st = Stats::default();
    let drain_end = deadline + DRAIN;
    let mut timer = Timer::at(first);
    let mut armed = first;
    let mut scheduled: VecDeque<Instant> = VecDeque::new();
    let mut next = first;
    let (mut next_send, mut next_recv) = (0u64, 0u64);
    let result: Result<(), String> = async {
        loop {
            // Everything due is sent now, late or not; its latency counts from its slot.
            let now = Instant::now();
            while next <= now && next < deadline {
                st.lag.push((now - next).as_nanos() as u64);
                conn.queue(payload.message(next_send))?;
                scheduled.push_back(next);
                next_send += 1;
                st.sent += 1;
                next += interval;
            }
            if conn.unflushed {
                conn.try_flush()?;
            }
            while let Some(msg) = conn.try_read().map_err(|e| format!("receive: {e}"))? {
                let now = Instant::now();
                if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
                    if let Message::Close(f) = msg {
                        return Err(format!("closed by the peer: {f:?}"));
                    }
                    continue;
                }
                payload.check(next_recv, &msg)?;
                let slot = scheduled.pop_front().ok_or("an echo nobody asked for")?;
                st.lat.push((now - slot).as_nanos() as u64);
                st.received += 1;
                next_recv += 1;
            }
            let now = Instant::now();
            if next >= deadline && scheduled.is_empty() {
                return Ok(());
            }
            if now >= drain_end {
                return Err(format!(
                    "{} echoes still missing {DRAIN:?} after the end",
                    scheduled.len()
                ));
            }
            // Re-arming costs the reactor a wake-up: only when the instant changes.
            let wake = if next < deadline { next } else { drain_end };
            if wake != armed {
                timer.set_at(wake);
                armed = wake;
            }
            conn.wait(true, Some(&mut timer)).await;
        }
    }
    .await;
    match result {
        Ok(()) => {
            if let Err(e) = conn.close(Instant::now() + OPEN_TIMEOUT).await {
                st.error(e);
            }
        }
        Err(e) => st.error(e),
    }
    st
}

// ---------------------------------------------------------------------------------------------
// connect: connect + handshake + one echo + close, in K loops.

async fn connect(ex: &Arc<Executor<'static>>, o: &Opts) -> Value {
    eprintln!(
        "connect: {} loops against {}, {} s",
        o.parallel, o.target.url, o.duration
    );
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.duration);
    let tasks: Vec<_> = (0..o.parallel)
        .map(|id| {
            let target = o.target.clone();
            ex.spawn(async move {
                let mut st = Stats::default();
                let probe = Payload::new(id, 32, false);
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match connect_cycle(&target, &probe, seq).await {
                        Ok(()) => {
                            st.lat.push(start.elapsed().as_nanos() as u64);
                            st.done += 1;
                        }
                        Err(e) => {
                            st.error(e);
                            Timer::after(Duration::from_millis(10)).await;
                        }
                    }
                    seq += 1;
                }
                st
            })
        })
        .collect();
    let mut stats = Stats::default();
    for t in tasks {
        stats.merge(t.await);
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut report = json!({
        "parallel": o.parallel,
        "duration_s": round2(secs),
        "cycles": stats.done,
        "connects_per_sec": round2(stats.done as f64 / secs),
    });
    merge_into(&mut report, stats.percentiles());
    report["errors"] = json!(stats.errors);
    report["first_error"] = json!(stats.first_error);
    report
}

async fn connect_cycle(target: &Target, probe: &Payload, seq: u64) -> Result<(), String> {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let mut conn = Conn::open(target, WebSocketConfig::default()).await?;
    conn.queue(probe.message(seq))?;
    let m = conn.recv(deadline).await?;
    probe.check(seq, &m)?;
    conn.close(deadline).await
}

// ---------------------------------------------------------------------------------------------
// hold: many idle connections.

async fn hold(ex: &Arc<Executor<'static>>, o: &Opts) -> Value {
    let mut stats = Stats::default();
    let t0 = Instant::now();
    let conns = open_many(
        ex,
        &o.target,
        o.connections,
        o.batch,
        hold_config(),
        true,
        &mut stats,
    )
    .await;
    let open_secs = t0.elapsed().as_secs_f64();
    let held = conns.len();
    let open_errors = stats.errors;
    eprintln!(
        "hold: {held} of {} connections open and echoed in {open_secs:.2} s; holding for {} s",
        o.connections, o.hold
    );
    println!("HELD {held}");
    let _ = io::stdout().flush();
    let t1 = Instant::now();
    run_end(o.hold).await;
    let held_secs = t1.elapsed().as_secs_f64();
    let closed = close_all(ex, conns, &mut stats).await;
    eprintln!("hold: closed {closed} of {held} cleanly");
    json!({
        "connections": o.connections,
        "held": held,
        "open_secs": round2(open_secs),
        "held_secs": round2(held_secs),
        "open_errors": open_errors,
        "closed_ok": closed,
        "errors": stats.errors,
        "first_error": stats.first_error,
    })
}

/// Waits for `secs`, or until stdin (a pipe or a terminal) reaches its end.
async fn run_end(secs: f64) {
    let timer = async {
        Timer::after(Duration::from_secs_f64(secs)).await;
    };
    match stdin_eof() {
        Some(eof) => {
            timer
                .or(async {
                    let _ = eof.recv().await;
                })
                .await
        }
        None => timer.await,
    }
}

/// When stdin is a pipe, socket or terminal: a channel that closes at its end of file.
/// (/dev/null or a file is not watched: the hold then lasts its full time.)
fn stdin_eof() -> Option<smol::channel::Receiver<()>> {
    use std::os::unix::fs::FileTypeExt;
    let watched = io::stdin().is_terminal()
        || std::fs::metadata("/proc/self/fd/0")
            .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
            .unwrap_or(false);
    if !watched {
        return None;
    }
    let (tx, rx) = smol::channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            drop(tx);
        })
        .ok()?;
    Some(rx)
}
