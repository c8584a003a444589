//! Test harness: a real gateway on 127.0.0.1:0, real backends, real clients, real sockets.
//! Every wait has a deadline; nothing sleeps to wait for readiness.
#![allow(dead_code)]

pub mod cli;
pub mod tls;
mod victim;
#[allow(unused_imports)]
pub use victim::*;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::handshake::client::Response;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use kairos_gateway::config;
use smol::net::{TcpListener, TcpStream};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Default deadline for one test step.
pub const STEP: Duration = Duration::from_secs(10);

pub fn init_logs() {
    let _ = env_logger::builder()
        .is_test(true)
        .parse_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
}

/// Runs `fut` to completion, failing the test if it takes longer than `limit`.
pub fn run_for<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    smol::block_on(fut.or(async move {
        smol::Timer::after(limit).await;
        panic!("test step did not finish within {limit:?}");
    }))
}

/// Runs `fut` with a 60 s deadline.
pub fn run<T>(fut: impl Future<Output = T>) -> T {
    run_for(Duration::from_secs(60), fut)
}

/// Awaits `fut` for at most `limit`; `None` when it did not finish.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    async { Some(fut.await) }
        .or(async move {
            smol::Timer::after(limit).await;
            None
        })
        .await
}

/// Parses `json` as a config (relative paths from this crate's directory) and starts a gateway
/// for it on 127.0.0.1:0. Panics with the config problems if it does not load.
pub fn start_gateway(json: &str) -> SocketAddr {
    init_logs();
    let loaded = config::parse(json, Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let mut cfg = loaded.config;
    cfg.host = "127.0.0.1".into();
    cfg.port = 0;
    kairos_gateway::server::start(Arc::new(cfg), 2).expect("start gateway")
}

/// Starts the example echo backend on 127.0.0.1:0.
pub fn start_echo() -> SocketAddr {
    init_logs();
    kairos_gateway::echo::start(([127, 0, 0, 1], 0).into()).expect("start echo backend")
}

/// One route `/ws/chat` -> `ws://127.0.0.1:PORT/ws`, plus `extra` top-level fields (JSON
/// members without braces, e.g. `"limits": {...},`), and `route_extra` fields of the router.
pub fn config_json(backend: SocketAddr, extra: &str, route_extra: &str) -> String {
    format!(
        r#"{{ {extra} "version": 1, "routers": [ {{
            "protocol": "websocket",
            "backends": [{{ "host": "ws://127.0.0.1", "port": {port}, "weight": 1 }}],
            "external_path": "/ws/chat", "internal_path": "/ws",
            {route_extra} "methods": ["GET"] }} ] }}"#,
        port = backend.port()
    )
}

/// Gateway with one plain route to a fresh echo backend; returns the gateway's address.
pub fn echo_gateway() -> SocketAddr {
    start_gateway(&config_json(start_echo(), "", ""))
}

/// Connects a WebSocket client to `ws://addr{path}` with extra request headers.
pub async fn try_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Response), WsError> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (n, v) in headers {
        let name: async_tungstenite::tungstenite::http::HeaderName =
            n.parse().expect("header name");
        req.headers_mut()
            .append(name, HeaderValue::from_str(v).expect("header value"));
    }
    let tcp = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    async_tungstenite::client_async(req, tcp).await
}

/// Connects and panics on failure.
pub async fn connect(addr: SocketAddr, path: &str) -> Ws {
    match try_connect(addr, path, &[]).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("connect to {addr}{path} failed: {e}"),
    }
}

/// The status of a refused handshake (panics if it was accepted).
pub async fn refused_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    match try_connect(addr, path, headers).await {
        Ok(_) => panic!("handshake to {path} unexpectedly succeeded"),
        Err(WsError::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("handshake to {path} failed without an HTTP status: {e}"),
    }
}

/// The next message, within [`STEP`]; panics on timeout, error or end.
pub async fn next_msg(ws: &mut Ws) -> Message {
    match within(STEP, ws.next()).await {
        Some(Some(Ok(m))) => m,
        Some(Some(Err(e))) => panic!("receive failed: {e}"),
        Some(None) => panic!("stream ended"),
        None => panic!("no message within {STEP:?}"),
    }
}

/// The next data message, skipping pings and pongs.
pub async fn next_data(ws: &mut Ws) -> Message {
    loop {
        match next_msg(ws).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` bytes on a fresh TCP connection and reads the answer until the gateway
/// closes the connection (within [`STEP`]).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.expect("tcp connect");
    s.write_all(request).await.expect("write request");
    let mut buf = Vec::new();
    within(STEP, s.read_to_end(&mut buf))
        .await
        .expect("gateway did not close the connection")
        .expect("read response");
    parse_raw(&buf)
}

pub fn parse_raw(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A valid upgrade request for `path` with extra header lines (each ending in `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Starts a backend on 127.0.0.1:0 that runs `handler` for each accepted connection.
pub fn spawn_backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    init_logs();
    let listener = smol::block_on(TcpListener::bind("127.0.0.1:0")).expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    smol::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            smol::spawn(handler(s)).detach();
        }
    })
    .detach();
    addr
}

/// Reads an HTTP request head from `s` (the backend side of a test).
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

/// Accepts a WebSocket upgrade whose head was already read by [`read_head`], answering with
/// `extra` response header lines (each ending in `\r\n`).
pub async fn accept_after_head(mut s: TcpStream, head: &str, extra: &str) -> Ws {
    let key = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .expect("backend request has a key");
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let res = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    );
    s.write_all(res.as_bytes()).await.expect("write 101");
    WebSocketStream::from_raw_socket(
        s,
        async_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await
}

/// Echoes text and binary messages until the peer closes or fails.
pub async fn echo_ws(mut ws: Ws) {
    while let Some(Ok(m)) = ws.next().await {
        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
            break;
        }
    }
}

/// A backend that reports every request head it receives on a channel, answers 101 with
/// `extra` response header lines, and echoes.
pub fn request_recorder_with(extra: &'static str) -> (SocketAddr, smol::channel::Receiver<Head>) {
    request_recorder_after("", extra)
}

/// [`request_recorder_with`], writing `interim` (interim answers such as a `100 Continue`)
/// before its 101.
pub fn request_recorder_after(
    interim: &'static str,
    extra: &'static str,
) -> (SocketAddr, smol::channel::Receiver<Head>) {
    let (tx, rx) = smol::channel::unbounded();
    let addr = spawn_backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let head = read_head(&mut s).await;
            let _ = tx.send(Head::parse(&head)).await;
            if s.write_all(interim.as_bytes()).await.is_ok() {
                echo_ws(accept_after_head(s, &head, extra).await).await;
            }
        }
    });
    (addr, rx)
}

/// One websocket router to `ws://127.0.0.1:PORT` of `backend`, `external` -> `internal`, with
/// `extra` fields (JSON members followed by a comma, e.g. `"auth_required": true,`).
pub fn router(backend: SocketAddr, external: &str, internal: &str, extra: &str) -> String {
    format!(
        r#"{{ "protocol": "websocket", "methods": ["GET"], {extra}
              "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}],
              "external_path": "{external}", "internal_path": "{internal}" }}"#,
        backend.port()
    )
}

/// Opens a raw TCP connection to the gateway, sends `request` in one write and reads the
/// response head.
pub async fn raw_upgrade(gw: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut s = TcpStream::connect(gw).await.expect("connect to gateway");
    s.write_all(request).await.expect("write request");
    let head = within(STEP, read_head(&mut s))
        .await
        .expect("no response head from the gateway in time");
    (s, head)
}

/// A plain (blocking) client socket whose upgrade of `path` was answered 101: for attacks
/// written byte by byte.
pub fn raw_upgraded(addr: SocketAddr, path: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(upgrade_request(path, "").as_bytes())
        .expect("write the upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read the answer"), 1, "closed");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "not upgraded");
    s
}

/// A config with one route `/ws/chat` -> `ws://127.0.0.1:PORT/ws` and an admin listener on
/// 127.0.0.1:0.
pub fn admin_config(backend: SocketAddr) -> String {
    format!(
        r#"{{ "version": 1, "admin": {{ "host": "127.0.0.1", "port": 0 }},
            "routers": [{{ "protocol": "websocket", "external_path": "/ws/chat",
                "internal_path": "/ws", "methods": ["GET"],
                "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }}] }}"#,
        backend.port()
    )
}

/// [`request_recorder_with`] no extra header.
pub fn request_recorder() -> (SocketAddr, smol::channel::Receiver<Head>) {
    request_recorder_with("")
}

/// The next head a recording backend received, within [`STEP`].
pub async fn next_request(rx: &smol::channel::Receiver<Head>) -> Head {
    within(STEP, rx.recv())
        .await
        .expect("the backend received no request in time")
        .expect("backend channel closed")
}

/// Waits until `cond` holds, polling every few ms, for at most `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    cond()
}

/// Like [`raw_http`], but reads while it writes, and ignores write and read errors: for a
/// request larger than the gateway reads (it answers, then closes with the rest unread, which
/// resets the connection). The answer is what was read until the close (within [`STEP`]).
pub async fn raw_http_while_writing(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let s = TcpStream::connect(addr).await.expect("tcp connect");
    let writer = async {
        let _ = s.clone().write_all(request).await;
    };
    let mut buf = Vec::new();
    let reader = async { within(STEP, s.clone().read_to_end(&mut buf)).await };
    let (_, read) = futures_lite::future::zip(writer, reader).await;
    assert!(read.is_some(), "the gateway did not close the connection");
    parse_raw(&buf)
}

/// The gateway binary as a child process (killed on drop), with its stderr lines on a channel.
pub struct GatewayProcess {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    config: std::path::PathBuf,
}

impl GatewayProcess {
    /// Runs the binary on `json` (listening on 127.0.0.1:0 with one worker),
    /// under `ulimit -n LIMIT` when given, with `RUST_LOG=info`.
    pub fn start(json: &str, nofile: Option<u32>) -> GatewayProcess {
        Self::start_with_log(json, nofile, "info")
    }

    /// [`GatewayProcess::start`] with `RUST_LOG=rust_log`.
    pub fn start_with_log(json: &str, nofile: Option<u32>, rust_log: &str) -> GatewayProcess {
        let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
        Self::spawn(
            json,
            &format!(r#"{limit}exec "$0" --config "$1""#),
            &[],
            rust_log,
        )
    }

    /// [`GatewayProcess::start`] with environment variables `vars` (`NAME=value`, no quoting
    /// needed: each is one argument of `env`).
    pub fn start_with_env(json: &str, vars: &[&str]) -> GatewayProcess {
        let n = vars.len();
        let refs: Vec<String> = (2..2 + n).map(|i| format!(r#""${{{i}}}""#)).collect();
        let script = format!(r#"exec env {} "$0" --config "$1""#, refs.join(" "));
        let paths: Vec<&Path> = vars.iter().map(Path::new).collect();
        Self::spawn(json, &script, &paths, "info")
    }

    /// [`GatewayProcess::start`] with more arguments after `--config FILE` (`"--demo"`).
    pub fn start_with_args(json: &str, args: &str) -> GatewayProcess {
        Self::spawn(
            json,
            &format!(r#"exec "$0" --config "$1" {args}"#),
            &[],
            "info",
        )
    }

    /// [`GatewayProcess::start`] in a mount namespace of its own, where `/etc/resolv.conf` is
    /// `resolv_conf`: the test chooses the DNS server the gateway's resolver asks. Needs
    /// `unshare -m` (root); fails saying so when it cannot.
    pub fn start_with_resolv_conf(json: &str, resolv_conf: &Path) -> GatewayProcess {
        let unshare = std::process::Command::new("unshare")
            .args(["-m", "true"])
            .status();
        assert!(
            unshare.is_ok_and(|s| s.success()),
            "this test runs the gateway with a resolv.conf of its own, in a private mount \
             namespace: `unshare -m` must work (run the tests as root, as CI does)"
        );
        let script = r#"exec unshare -m sh -c 'mount --bind "$2" /etc/resolv.conf && exec "$0" --config "$1"' "$0" "$1" "$2""#;
        Self::spawn(json, script, &[resolv_conf], "info")
    }

    /// [`GatewayProcess::start`] through `sh -c script`, with the gateway binary as `$0`, the
    /// config file as `$1` and `args` from `$2` on.
    pub fn start_script(json: &str, script: &str, args: &[&Path]) -> GatewayProcess {
        Self::spawn(json, script, args, "info")
    }

    /// Runs `sh -c script` with the gateway binary as `$0`, the config file for `json` as `$1`
    /// and `args` from `$2` on.
    fn spawn(json: &str, script: &str, args: &[&Path], rust_log: &str) -> GatewayProcess {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let config =
            std::env::temp_dir().join(format!("kairos-gw-{}-{n}.json", std::process::id()));
        std::fs::write(&config, Self::with_server(json)).expect("write config");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_kairos-gateway"))
            .arg(&config)
            .args(args)
            // The test's config decides: the environment's listen overrides would not.
            .env_remove("KAIROS_HOST")
            .env_remove("KAIROS_PORT")
            .env_remove("KAIROS_CONFIG_PATH")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the gateway");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        GatewayProcess {
            child,
            lines,
            config,
        }
    }

    /// Waits for the `listening on ADDR` line (20 s at most).
    pub fn addr(&self) -> SocketAddr {
        self.wait_for("listening on ", Duration::from_secs(20))
            .and_then(|l| l.split_once("listening on ")?.1.trim().parse().ok())
            .expect("gateway did not start listening")
    }

    /// Waits for the `admin listening on ADDR` line (20 s at most).
    pub fn admin_addr(&self) -> SocketAddr {
        self.wait_for("admin listening on ", Duration::from_secs(20))
            .and_then(|l| {
                let rest = l.split_once("admin listening on ")?.1;
                rest.split_whitespace().next()?.parse().ok()
            })
            .expect("gateway did not start its admin listener")
    }

    /// Replaces the config file's contents (with the same `server` block as at start).
    pub fn rewrite(&self, json: &str) {
        std::fs::write(&self.config, Self::with_server(json)).expect("rewrite config");
    }

    /// `json` listening on 127.0.0.1:0 with one worker: those fields go into its `server`
    /// block when it has one (with at least one field), else into a new one.
    fn with_server(json: &str) -> String {
        let ours = r#""host": "127.0.0.1", "port": 0, "workers": 1"#;
        if json.contains(r#""server": {"#) {
            json.replacen(r#""server": {"#, &format!(r#""server": {{ {ours},"#), 1)
        } else {
            json.replacen("{ ", &format!(r#"{{ "server": {{ {ours} }}, "#), 1)
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// The exit status, once the process has exited (within `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Stops the process (SIGTERM unless it has exited, then SIGKILL if it is not gone within
    /// 20 s) and returns every stderr line not read yet.
    pub fn stop_and_collect(mut self) -> Vec<String> {
        if self.child.try_wait().expect("try_wait").is_none() {
            self.signal(rustix::process::Signal::TERM);
        }
        if self.wait_exit(Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The reader thread ends at EOF, which closes the channel.
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(STEP) {
            lines.push(line);
        }
        lines
    }

    /// The next stderr line containing `what`, within `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// How many stderr lines contain `what` during the next `window`.
    pub fn count_for(&self, what: &str, window: Duration) -> usize {
        let end = std::time::Instant::now() + window;
        let mut n = 0;
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        n
    }

    /// The process's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Raises this test process's soft open-files limit to at least `want` when it is lower (up
/// to the hard limit); returns the soft limit in force.
pub fn raise_open_files(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < want) {
        let target = want.min(lim.maximum.unwrap_or(u64::MAX));
        let new = Rlimit {
            current: Some(target),
            maximum: lim.maximum,
        };
        let _ = setrlimit(Resource::Nofile, new);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Close codes a backend received, in order.
pub type Closes = Arc<std::sync::Mutex<Vec<u16>>>;

/// A backend that sends `id` as its first message, then echoes text and binary; it records the
/// code of each close frame it receives.
pub fn id_backend(id: usize) -> (SocketAddr, Closes) {
    let closes: Closes = Arc::default();
    let seen = closes.clone();
    let addr = spawn_backend(move |mut s| {
        let seen = seen.clone();
        async move {
            let head = read_head(&mut s).await;
            let mut ws = accept_after_head(s, &head, "").await;
            if ws.send(Message::text(id.to_string())).await.is_err() {
                return;
            }
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(c) = &m {
                    let code = c.as_ref().map_or(1005, |c| u16::from(c.code));
                    seen.lock().unwrap().push(code);
                } else if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
    (addr, closes)
}

/// Connects to `path`; returns the connection and the id the backend sent first.
pub async fn connect_id(addr: SocketAddr, path: &str) -> (Ws, usize) {
    let mut ws = connect(addr, path).await;
    match next_data(&mut ws).await {
        Message::Text(id) => {
            let id = id.parse().expect("backend id");
            (ws, id)
        }
        other => panic!("expected the backend's id, got {other:?}"),
    }
}

/// `GET path` on a plain HTTP server (the admin listener); the whole answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> RawResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
    raw_http(addr, req.as_bytes()).await
}

/// A test CA and a leaf certificate for `localhost` signed by it, as PEM, and the leaf as DER.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: futures_rustls::pki_types::CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

pub fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kairos listener test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf_params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        cert_der: leaf.der().clone(),
        key_der: leaf_key.serialize_der(),
    }
}

impl Pki {
    /// A TLS acceptor serving the leaf certificate (what a `wss://` backend runs).
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        use futures_rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use futures_rustls::rustls;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .expect("test certificate");
        futures_rustls::TlsAcceptor::from(Arc::new(server))
    }
}

/// `promtool check metrics` on `text`, where promtool is installed (`.ci/run` installs it).
pub fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        let required = std::env::var_os("KAIROS_REQUIRE_PROMTOOL").is_some();
        assert!(
            !required,
            "KAIROS_REQUIRE_PROMTOOL is set but promtool cannot run"
        );
        eprintln!("promtool is not installed: the exposition format was not checked by it");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A request head as the backend received it.
#[derive(Debug)]
pub struct Head {
    pub text: String,
    pub request_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn parse(text: &str) -> Head {
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("header line without a colon: {l:?}"));
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Head {
            text: text.to_string(),
            request_line,
            headers,
        }
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of header `name`, which must appear exactly once.
    pub fn one(&self, name: &str) -> &str {
        match self.values(name).as_slice() {
            [v] => v,
            other => panic!(
                "expected exactly one {name} header, found {other:?} in:\n{}",
                self.text
            ),
        }
    }

    pub fn assert_absent(&self, name: &str) {
        let found = self.values(name);
        assert!(
            found.is_empty(),
            "{name} must not reach the backend (found {found:?}) in:\n{}",
            self.text
        );
    }
}

/// The value of the sample `series` (name and labels, as printed) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Seconds since the Unix epoch (for token claims).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An HS256 token with `claims`, signed with `secret`.
pub fn hs256_token(secret: &str, claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("sign token")
}
