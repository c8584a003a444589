//! Stage 1: the listener and the accept loop; one task per connection, which walks the stages
//! handshake -> route -> auth -> upstream -> relay. A panic in one connection's task is caught
//! and logged; the other connections never notice.

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::FutureExt;
use std::net::{TcpListener, TcpStream};

use smol::LocalExecutor;

use crate::auth::{extract_token, AuthError};
use crate::balance::{self, Balancers, Lease};
use crate::config::{Config, Route};
use crate::error::Error;
use crate::handshake::{self, Head, Request, Upgrade};
use crate::net::Stream;
use crate::reactor::{self, Listener, Timer};
use crate::relay::{self, Rules};
use crate::route;
use crate::upstream::{self, ClientSide};

/// Pending connections the kernel queues before `accept` (nginx uses 511).
const LISTEN_BACKLOG: i32 = 1024;

/// A bound gateway, ready to serve. Cloned into each worker thread.
#[derive(Clone)]
pub struct Gateway {
    listener: Arc<TcpListener>,
    config: Arc<Config>,
    balancers: Arc<Balancers>,
}

/// Connection numbers for the logs, unique across worker threads.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Connection tasks alive, process wide.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// How many connection tasks are alive (accepted and not yet ended), process wide.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Counts a connection task from its start to its end, however it ends (panics included).
struct Alive;

impl Alive {
    fn new() -> Alive {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Alive
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gateway {
    /// Binds `config.host:config.port`.
    pub async fn bind(config: Arc<Config>) -> io::Result<Gateway> {
        let shown = format!("{}:{}", config.host, config.port);
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {shown}: {e}"));
        let addr = smol::net::resolve((config.host.as_str(), config.port))
            .await
            .map_err(named)?
            .into_iter()
            .next()
            .ok_or_else(|| named(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
        let listener = TcpListener::bind(addr).map_err(named)?;
        // std listens with a backlog of 128: a burst of connects overflows it and costs the
        // clients a 1 s SYN retry. Listening again on the bound socket raises it (the kernel
        // caps it at net.core.somaxconn).
        rustix::net::listen(&listener, LISTEN_BACKLOG).map_err(|e| named(io::Error::from(e)))?;
        listener.set_nonblocking(true).map_err(named)?;
        Ok(Gateway {
            listener: Arc::new(listener),
            balancers: Balancers::new(&config),
            config,
        })
    }

    /// Starts the active health checks of the routes that have them (on a thread of their
    /// own); they stop when this gateway's balancers are gone.
    pub fn start_health_checks(&self) -> io::Result<()> {
        crate::health::start(self.config.clone(), &self.balancers)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs one worker on this thread, forever: its own executor and I/O driver. It accepts
    /// on the shared listener (the kernel wakes one idle worker per new connection) and runs
    /// every connection it accepted to its end, so a connection never changes threads.
    pub fn run_worker(&self) {
        let ex = Rc::new(LocalExecutor::new());
        let gateway = self.clone();
        reactor::block_on(async move {
            // The accept loop is a task of its own: a run future is polled on every wake-up
            // of its thread, a task only when it is woken.
            ex.spawn(gateway.serve(ex.clone())).detach();
            ex.run(std::future::pending::<()>()).await
        })
    }

    /// Accepts connections forever, spawning one task per connection on `ex`.
    async fn serve(self, ex: Rc<LocalExecutor<'static>>) {
        let mut last_error_log: Option<Instant> = None;
        let listener = match Listener::new(self.listener.clone()) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot register the listener: {e}; this worker accepts nothing");
                return;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                    let shared = (self.config.clone(), self.balancers.clone());
                    let task =
                        AssertUnwindSafe(serve_connection(stream, peer, shared, id)).catch_unwind();
                    let alive = Alive::new();
                    ex.spawn(async move {
                        let _alive = alive;
                        if let Err(panic) = task.await {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            log::error!(
                                "conn {id} {peer}: bug: the connection task panicked: {what}"
                            );
                        }
                    })
                    .detach();
                }
                Err(e) => {
                    // Out of file descriptors and the like: log at most once a second, back
                    // off a little, and keep serving the connections already open.
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        log::error!("accept failed: {e} (will keep retrying)");
                        last_error_log = Some(Instant::now());
                    }
                    Timer::after(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Starts a gateway on `threads` background worker threads and returns the address it listens
/// on. Used by the tests and by `--demo`; the threads live as long as the process.
pub fn start(config: Arc<Config>, threads: usize) -> io::Result<SocketAddr> {
    let gateway = smol::block_on(Gateway::bind(config))?;
    let addr = gateway.local_addr()?;
    gateway.start_health_checks()?;
    for i in 0..threads.max(1) {
        let gateway = gateway.clone();
        std::thread::Builder::new()
            .name(format!("kairos-{i}"))
            .spawn(move || gateway.run_worker())?;
    }
    Ok(addr)
}

/// Runs the stages of one connection.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    (config, balancers): (Arc<Config>, Arc<Balancers>),
    id: u64,
) {
    let _ = stream.set_nodelay(true);
    log::debug!("conn {id} {peer}: accepted");
    // On this worker thread's edge-triggered driver for the connection's whole life.
    let stream = match Stream::accepted(stream) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("conn {id} {peer}: cannot register the connection: {e}");
            return;
        }
    };
    // The handshake's state (request, headers, TLS and DNS futures) lives in its own box and is
    // gone before the relay starts: an idle relayed connection keeps only what it needs.
    let Some(o) = Box::pin(open(stream, peer, &config, &balancers, id)).await else {
        return;
    };
    let limits = &config.limits;
    let rules = Rules {
        max_frame: limits.max_frame_bytes as u64,
        max_message: limits.max_message_bytes as u64,
        deflate: o.deflate,
        idle_timeout: limits.idle_timeout,
        ping_interval: limits.ping_interval,
    };
    let summary = relay::run(o.client, o.client_early, o.backend, o.backend_early, rules).await;
    log::debug!(
        "conn {id} {peer}: closed; {} messages to backend, {} to client{}",
        summary.to_backend,
        summary.to_client,
        if summary.errors.is_empty() {
            String::new()
        } else {
            format!("; {}", summary.errors.join("; "))
        }
    );
}

/// What the handshake hands to the relay.
struct Opened {
    client: Stream,
    client_early: Vec<u8>,
    backend: Stream,
    backend_early: Vec<u8>,
    deflate: bool,
    /// Counts the connection on its backend while it lives.
    _lease: Option<Lease>,
}

/// Everything before the relay: request, route, token, backend, 101. `None` when the
/// connection was refused (and answered) or the client left.
async fn open(
    mut stream: Stream,
    peer: SocketAddr,
    config: &Config,
    balancers: &Arc<Balancers>,
    id: u64,
) -> Option<Opened> {
    let limits = &config.limits;
    let timeout = limits.handshake_timeout;
    let read = handshake::read_request(&mut stream, limits.max_request_head_bytes)
        .or(async {
            Timer::after(timeout).await;
            Err(Error::HandshakeTimeout(timeout))
        })
        .await;
    let (request, early) = match read {
        Ok(r) => r,
        Err(e) => return refuse(&mut stream, peer, id, &e).await,
    };
    let Admitted {
        at,
        route,
        target,
        query,
        upgrade,
        claims,
    } = match admit(config, &request) {
        Ok(a) => a,
        Err(e) => return refuse(&mut stream, peer, id, &e).await,
    };
    let sticky = route.sticky.as_ref().and_then(|s| {
        balance::sticky_key(s, &request, query.as_deref(), claims.as_ref(), peer.ip())
    });
    let mut plan = balancers.plan(at, peer.ip(), sticky.as_deref());
    let client = ClientSide {
        request: &request,
        upgrade: &upgrade,
        peer,
        proto: "http",
    };
    let connected = upstream::connect_any(config, route, &mut plan, &target, &client).await;
    let (chosen, upgraded, lease) = match connected {
        Ok(c) => c,
        Err(e) => return refuse(&mut stream, peer, id, &e).await,
    };
    log::debug!(
        "conn {id} {peer}: {} -> routers[{}] -> {}{target}",
        route::split_target(&request.target).0,
        route.index,
        route.backends[chosen].origin()
    );
    let accept = derive_accept_key(upgrade.key.as_bytes());
    if let Err(e) = handshake::write_switching(&mut stream, &accept, &upgraded.headers).await {
        log::debug!("conn {id} {peer}: client gone before the 101 was sent: {e}");
        return None;
    }
    log::debug!("conn {id} {peer}: upgraded");
    Some(Opened {
        client: stream,
        client_early: early,
        backend: upgraded.stream,
        backend_early: upgraded.leftover,
        deflate: upgraded.deflate,
        _lease: lease,
    })
}

/// Logs why a connection was refused and answers it.
async fn refuse<T>(stream: &mut Stream, peer: SocketAddr, id: u64, err: &Error) -> Option<T> {
    match err.status() {
        Some(status) if err.is_operator_problem() => {
            log::warn!("conn {id} {peer}: {status}: {err}")
        }
        Some(status) => log::debug!("conn {id} {peer}: {status}: {err}"),
        None => log::debug!("conn {id} {peer}: closed: {err}"),
    }
    if handshake::write_error(stream, err).await {
        stream.shutdown_write();
        handshake::drain(stream, Duration::from_millis(500), 64 * 1024).await;
    }
    None
}

/// Route, method, upgrade and token checks. Returns the route, the backend's path and query,
/// and the upgrade fields.
/// What an admitted request is: its route (and position in `config.routes`), the backend's
/// target, the upgrade fields, and the verified token's claims.
struct Admitted<'c> {
    at: usize,
    route: &'c Route,
    target: String,
    /// The client's query (for a `query:` sticky key).
    query: Option<String>,
    upgrade: Upgrade,
    claims: Option<serde_json::Map<String, serde_json::Value>>,
}

fn admit<'c>(config: &'c Config, req: &Request) -> Result<Admitted<'c>, Error> {
    let target = route::origin_form(&req.target);
    let (path, query) = route::split_target(&target);
    if !path.starts_with('/') {
        return Err(Error::BadRequest(
            "the request target must be a path starting with /".to_string(),
        ));
    }
    let (index, captures) = route::find(config.routes.iter().map(|r| &r.external), path)
        .ok_or_else(|| Error::NotFound(path.to_string()))?;
    let route = &config.routes[index];
    if req.method != "GET" {
        return Err(Error::MethodNotAllowed(req.method.clone()));
    }
    let upgrade = handshake::check_upgrade(req)?;
    let client_query = query.map(str::to_string);
    let mut query = client_query.clone();
    let mut claims = None;
    if route.auth_required {
        let Some(jwt) = config.jwt.as_ref() else {
            return Err(Error::Unauthorized(AuthError::Missing));
        };
        let raw_auth = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"));
        if raw_auth
            .clone()
            .any(|(_, v)| std::str::from_utf8(v).is_err())
        {
            return Err(Error::Unauthorized(AuthError::Malformed(
                "Authorization header is not valid text".to_string(),
            )));
        }
        let auth: Vec<&str> = req.header_all("Authorization").collect();
        let token = extract_token(&auth, query.as_deref(), jwt.query_param.as_deref())
            .map_err(Error::Unauthorized)?;
        claims = Some(jwt.verify(&token).map_err(Error::Unauthorized)?);
        if let (Some(q), Some(name)) = (&query, &jwt.query_param) {
            query = route::strip_query_param(q, name);
        }
    }
    let mut target = route.internal.render(&captures);
    if let Some(q) = query {
        target.push('?');
        target.push_str(&q);
    }
    Ok(Admitted {
        at: index,
        route,
        target,
        query: client_query,
        upgrade,
        claims,
    })
}
