//! Stage 1: the listener and the accept loop; one task per connection, which walks the stages
//! handshake -> route -> auth -> admission -> upstream -> relay ([`connection`]). A panic in one
//! connection's task is caught and logged; the other connections never notice.
//!
//! The config in force is a [`Generation`]: the config, its balancers (health and breaker
//! state) and its route counters. A connection takes the generation in force when it is
//! accepted and keeps it to its end, so a reload changes only what new connections see. The
//! connection counts behind the connection limits are the gateway's, not a generation's: a
//! reload never resets them.

mod admit;
mod connection;
mod operator;
mod retire;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_executor::LocalExecutor;
use futures_lite::FutureExt;

use crate::admission::{Admission, Gates};
use crate::auth::JwtVerifier;
use crate::balance::Balancers;
use crate::config::Config;
use crate::drain::Drain;
use crate::metrics::{self, RouteStats};
use crate::reactor::{self, Listener, Timer};
use crate::sockets::LISTEN_BACKLOG;

/// One config's worth of state, kept by each connection for its whole life.
pub struct Generation {
    /// The config.
    pub config: Arc<Config>,
    /// The token verifier built from its `jwt` block.
    pub jwt: Option<JwtVerifier>,
    /// Its balancers (strategy counters, health verdicts, breakers).
    pub balancers: Arc<Balancers>,
    /// Each route's counters, by position in `config.routes`.
    pub stats: Vec<Arc<RouteStats>>,
    /// The counters of requests that matched no route.
    pub unrouted: Arc<RouteStats>,
    /// Its routes' connection counts (kept by the gateway across generations).
    pub gates: Gates,
    /// What its relayed connections watch, `[route][backend]`: begun by a reload that removes
    /// their route or backend, or by the shutdown ([`retire`]).
    retired: Vec<Vec<Arc<Drain>>>,
}

impl Generation {
    /// The state of `config`; `Err` when its `jwt` block's verifier cannot be built (a
    /// config that came through [`crate::control::load`] has been checked for that).
    fn new(config: Arc<Config>, admission: &Arc<Admission>) -> io::Result<Arc<Generation>> {
        let jwt = match &config.jwt {
            Some(j) => Some(JwtVerifier::from_config(j).map_err(|problems| {
                io::Error::new(io::ErrorKind::InvalidInput, problems.join("; "))
            })?),
            None => None,
        };
        Ok(Arc::new(Generation {
            jwt,
            balancers: Balancers::new(&config),
            gates: admission.gates(&config),
            stats: config
                .routes
                .iter()
                .map(|r| metrics::route(r.external.as_str()))
                .collect(),
            unrouted: metrics::route(metrics::NO_ROUTE),
            retired: retire::drains(&config),
            config,
        }))
    }
}

impl Generation {
    /// A watch on the drain of route `at`'s backend `backend` ([`retire`]).
    pub(super) fn drain_of(&self, at: usize, backend: usize) -> Option<crate::drain::Watcher> {
        Some(self.retired.get(at)?.get(backend)?.watch())
    }
}

/// A bound gateway, ready to serve. Cloned into each worker thread.
#[derive(Clone)]
pub struct Gateway {
    listener: Arc<TcpListener>,
    /// Whether systemd keeps `listener` (socket activation) for the next instance: then it
    /// is never shut down, and the connects queued on it wait for that instance.
    systemd: bool,
    /// Worker accept loops started, and ended (their queued connects taken).
    accept_loops: Arc<(AtomicUsize, AtomicUsize)>,
    current: Arc<RwLock<Arc<Generation>>>,
    /// Raised by the shutdown (`/readyz` answers 503).
    shutting_down: Arc<AtomicBool>,
    /// Begun by the shutdown and by an upgrade's hand-over: the accept loops end.
    accepting: Arc<Drain>,
    /// Begun by an upgrade's hand-over: the admin listener's accept loop ends too (it serves
    /// on through a shutdown, to say it is not ready).
    handed_over: Arc<Drain>,
    /// The connection counts of `limits.max_connections` and the routes' limits, which
    /// outlive every generation.
    admission: Arc<Admission>,
    /// The health checks of the generation in force (a replaced one's stop with it).
    health: Arc<Mutex<Option<crate::health::Checks>>>,
    /// Every generation that may still have connections.
    generations: Arc<retire::Generations>,
    /// The backends an operator drained, `(route, host:port)`: every generation's balancers
    /// keep them out ([`operator`]).
    drained: Arc<Mutex<Drained>>,
}

/// The backends an operator drained: `(route, host:port)`.
type Drained = Vec<(String, String)>;

/// Connection numbers for the logs, unique across worker threads.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Connection tasks alive, process wide.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// How many connection tasks are alive (accepted and not yet ended), process wide.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Counts an accept loop's end, however it ends.
struct Ended(Arc<(AtomicUsize, AtomicUsize)>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0 .1.fetch_add(1, Ordering::SeqCst);
    }
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
    pub fn bind(config: Arc<Config>) -> io::Result<Gateway> {
        let listener = crate::sockets::bind(&config.host, config.port, "")?;
        Gateway::new(config, listener, false)
    }

    /// A gateway on `listener` (bound, listening and non-blocking: [`crate::sockets`]);
    /// `systemd` when systemd keeps it listening (socket activation).
    pub fn new(config: Arc<Config>, listener: TcpListener, systemd: bool) -> io::Result<Gateway> {
        crate::relay::start_live_ticks();
        let admission = Admission::new();
        let first = Generation::new(config, &admission)?;
        let generations = Arc::new(retire::Generations::default());
        generations.add(&first);
        Ok(Gateway {
            listener: Arc::new(listener),
            systemd,
            accept_loops: Arc::default(),
            current: Arc::new(RwLock::new(first)),
            shutting_down: Arc::default(),
            accepting: Drain::new(),
            handed_over: Drain::new(),
            admission,
            health: Arc::default(),
            generations,
            drained: Arc::default(),
        })
    }

    /// The generation in force.
    pub fn generation(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.generation().config.clone()
    }

    /// Puts `config` in force for new connections (open ones keep theirs) and starts its
    /// health checks; the previous generation's checks stop at once. The open connections of
    /// a route `config` no longer has, or of a backend it removed from a route, are drained
    /// (1012, spread over `server.close_spread_ms`); returns how many route backends were.
    pub fn swap(&self, config: Config) -> io::Result<usize> {
        let next = Generation::new(Arc::new(config), &self.admission)?;
        let checks = crate::health::start(next.config.clone(), &next.balancers)?;
        let retired = self.generations.retire_removed(&next.config);
        self.generations.add(&next);
        // The operators' drains, held until `next` is in force: none is missed.
        let drained = self.keep_drained(&next);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        drop(drained);
        // Dropping the replaced checks ends their thread.
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = checks;
        Ok(retired)
    }

    /// Starts the active health checks of the routes that have them (on a thread of their
    /// own); they stop when their generation is replaced.
    pub fn start_health_checks(&self) -> io::Result<()> {
        let g = self.generation();
        let checks = crate::health::start(g.config.clone(), &g.balancers)?;
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = checks;
        Ok(())
    }

    /// Begins a graceful shutdown: the accept loops end, taking the connects already queued
    /// (none is reset), and every connection is told to close
    /// ([`GatewayClose::Shutdown`](crate::error::GatewayClose::Shutdown) on both legs once
    /// relayed, each at a random moment within `server.close_spread_ms`; a connection in its
    /// handshake finishes it first). Then [`Gateway::stop_listening`].
    pub fn begin_shutdown(&self) {
        let spread = self.config().close_spread;
        self.shutting_down.store(true, Ordering::SeqCst);
        self.accepting.begin(Duration::ZERO);
        self.generations.shut_down(spread);
    }

    /// Once every accept loop has ended (within a second), stops the listening socket
    /// listening: new connects are refused. Not a socket systemd keeps for the next instance,
    /// nor one an upgrade handed over.
    pub async fn stop_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        let loops = &self.accept_loops;
        while loops.1.load(Ordering::SeqCst) < loops.0.load(Ordering::SeqCst)
            && Instant::now() < deadline
        {
            Timer::after(Duration::from_millis(1)).await;
        }
        if self.systemd || self.handed_over.is_on() {
            return;
        }
        // On Linux, shutting down a listening socket's read side stops it listening.
        if let Err(e) = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Read) {
            log::warn!("shutdown: cannot stop the listener: {e}");
        }
    }

    /// An upgrade's new process accepts on the listening sockets: this one stops accepting
    /// (the connects its workers were woken for are still served) and drains its relayed
    /// connections with the shutdown's close, spread over `server.close_spread_ms`.
    /// Handshakes in progress finish (and their connections are then drained too).
    pub fn hand_over(&self) {
        self.handed_over.begin(Duration::ZERO);
        self.accepting.begin(Duration::ZERO);
        self.generations.shut_down(self.config().close_spread);
    }

    /// Begun when an upgrade's new process took the listening sockets: the admin listener's
    /// accept loop watches it.
    pub fn handed_over(&self) -> Arc<Drain> {
        self.handed_over.clone()
    }

    /// Whether systemd keeps the public listening socket (socket activation).
    pub fn systemd_socket(&self) -> bool {
        self.systemd
    }

    /// The public listening socket (for an upgrade).
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs one worker on this thread until a shutdown has closed every connection it
    /// accepted: its own executor and I/O driver. It accepts on the shared listener (the kernel
    /// wakes one idle worker per new connection) and runs every connection it accepted to its
    /// end, so a connection never changes threads.
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

    /// Accepts connections until the shutdown begins, spawning one task per connection on
    /// `ex`.
    async fn serve(self, ex: Rc<LocalExecutor<'static>>) {
        let loops = self.accept_loops.clone();
        loops.0.fetch_add(1, Ordering::SeqCst);
        let _ended = Ended(loops);
        let mut last_error_log: Option<Instant> = None;
        let listener = match Listener::new(self.listener.clone()) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot register the listener: {e}; this worker accepts nothing");
                return;
            }
        };
        let mut stopped = self.accepting.watch();
        loop {
            let Some(accepted) = listener.accept_unless(&mut stopped).await else {
                // The connects queued now are served here (an upgrade's new process is not
                // woken for those this worker was; the shutdown would reset them), unless
                // systemd keeps them for the next instance.
                let queued = match self.systemd && !self.handed_over.is_on() {
                    true => 0,
                    false => LISTEN_BACKLOG as usize,
                };
                for (stream, peer) in listener.close(queued) {
                    self.spawn_connection(&ex, stream, peer);
                }
                return;
            };
            match accepted {
                Ok((stream, peer)) => self.spawn_connection(&ex, stream, peer),
                Err(_) if self.accepting.is_on() => return,
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

    fn spawn_connection(
        &self,
        ex: &LocalExecutor<'static>,
        stream: std::net::TcpStream,
        peer: SocketAddr,
    ) {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation();
        let alive = Alive::new();
        ex.spawn(async move {
            let _alive = alive;
            // Made here, not captured: a captured future would be stored twice in the task
            // (as the capture and as the future awaited).
            let task = connection::serve(stream, peer, generation, id);
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!("conn {id} {peer}: bug: the connection task panicked: {what}");
            }
        })
        .detach();
    }
}

/// Starts a gateway on `threads` background worker threads and returns the address it listens
/// on. Used by the tests and by `--demo`; the threads live as long as the process.
pub fn start(config: Arc<Config>, threads: usize) -> io::Result<SocketAddr> {
    let gateway = Gateway::bind(config)?;
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
