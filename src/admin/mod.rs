//! The admin listener (`admin`): plain HTTP/1.1 on its own address and thread, one request per
//! connection. `GET /metrics` (Prometheus text 0.0.4), `GET /healthz` (200 while the process
//! runs), `GET /readyz` (200 when every route has a usable backend and the gateway is not
//! shutting down; else 503 with the reason), the status page and its `GET /status`
//! ([`page`]), and the connection API and actions ([`api`]: `admin.token`, `GET /connections`,
//! the `POST`s that close connections and drain backends). Only the three probes may share
//! the public port, when `admin` names its address.
//! Each exchange (request head, answer, drain) has one deadline from accept, and connections
//! that hold a place without a request make room for new ones (`MAX_CONNECTIONS`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_executor::LocalExecutor;
use futures_lite::{AsyncWriteExt, FutureExt};

mod api;
mod json;
mod page;

pub use crate::balance::BackendState;
use crate::drain::Drain;
use crate::handshake::{self, Head, Request};
use crate::net::Stream;
use crate::reactor::{self, Listener, Timer};

/// Admin connections open at once: it bounds the admin thread's descriptors. When all are
/// taken, the oldest one that is not being answered (still reading its request head, or
/// draining after its answer) is evicted for the next, once it has had [`HEAD_GRACE`]; until
/// then new connections wait in the listen queue, in order. Idle or slow connections only take
/// each other's places, and a liveness probe waits at most a few graces for its turn.
const MAX_CONNECTIONS: usize = 256;

/// Time a new admin connection has for its request head before it may be evicted.
const HEAD_GRACE: Duration = Duration::from_millis(100);

/// Time for a whole admin exchange, from accept: request head, answer, and the drain after it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Time to read what the client still sends after its answer (within [`EXCHANGE_TIMEOUT`]).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// What the admin endpoints report, taken when a request arrives.
pub struct Status {
    /// Every backend of the config in force.
    pub backends: Vec<BackendStatus>,
    /// A graceful shutdown is under way.
    pub shutting_down: bool,
    /// `admin.token` of the config in force.
    pub token: Option<String>,
    /// The admin listener is on a loopback address (the API may go without a token).
    pub loopback: bool,
    /// `server.close_spread_ms`: a backend drain's spread unless the request names one.
    pub close_spread: Duration,
}

/// One backend of a route, as the admin endpoints show it.
pub struct BackendStatus {
    /// The route's `external_path`.
    pub route: String,
    /// `ws://host:port` or `wss://host:port` (the metrics' `backend` label).
    pub origin: String,
    /// `host:port` (the connection API's `backend`).
    pub address: String,
    /// What it is to new connections.
    pub state: BackendState,
}

/// What the admin listener reads from the gateway, and asks of it.
pub trait Gateway: Send + Sync {
    /// The state for a request.
    fn status(&self) -> Status;
    /// Drains backend `address` (`host:port`) of route `route` (no new connection goes to
    /// it), or puts it back; `Err` says what is not in the config in force.
    fn set_drained(&self, route: &str, address: &str, drained: bool) -> Result<(), String>;
}

/// The gateway, as the admin thread holds it.
pub type GatewayRef = Arc<dyn Gateway>;

/// Serves the admin endpoints on `listener` (bound, listening, non-blocking:
/// [`crate::sockets`]) on a `kairos-admin` thread, until `stop` begins (the process no longer
/// accepts: an upgrade handed the socket over); returns its address.
pub fn start(
    listener: Arc<TcpListener>,
    gateway: GatewayRef,
    stop: Arc<Drain>,
) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("kairos-admin".into())
        .spawn(move || {
            let ex = Rc::new(LocalExecutor::new());
            reactor::block_on(ex.run(serve(listener, gateway, stop, ex.clone())));
        })?;
    Ok(addr)
}

async fn serve(
    listener: Arc<TcpListener>,
    gateway: GatewayRef,
    stop: Arc<Drain>,
    ex: Rc<LocalExecutor<'static>>,
) {
    let mut stopped = stop.watch();
    let listener = match Listener::new(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("admin: cannot register the listener: {e}");
            return;
        }
    };
    let (ended, ended_rx) = async_channel::bounded(1);
    let table = Rc::new(RefCell::new(Table {
        open: 0,
        next_id: 0,
        evictable: BTreeMap::new(),
        ended,
    }));
    loop {
        make_room(&table, &ended_rx).await;
        let Some(accepted) = listener.accept_unless(&mut stopped).await else {
            // The requests this thread was woken for are answered here; the rest go to the
            // process that took the socket. The thread serves what it has until the exit.
            for (tcp, peer) in listener.close(MAX_CONNECTIONS) {
                spawn_exchange(&ex, &table, tcp, peer, &gateway);
            }
            return std::future::pending().await;
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                log::warn!("admin: accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        spawn_exchange(&ex, &table, tcp, peer, &gateway);
        // Let the new connection (and an evicted one) run before the next accept.
        futures_lite::future::yield_now().await;
    }
}

/// Admits an accepted connection and answers it on a task of its own.
fn spawn_exchange(
    ex: &LocalExecutor<'static>,
    table: &Rc<RefCell<Table>>,
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    gateway: &GatewayRef,
) {
    let Ok(stream) = Stream::accepted(tcp) else {
        return;
    };
    let (slot, gateway) = (Slot::admit(table), gateway.clone());
    ex.spawn(async move {
        exchange(stream, peer, &gateway, &slot)
            .or(async {
                Timer::after(EXCHANGE_TIMEOUT).await;
                log::debug!("admin {peer}: closed: not done within {EXCHANGE_TIMEOUT:?}");
            })
            .await;
    })
    .detach();
}

/// The open admin connections: how many, and which may be evicted.
struct Table {
    open: usize,
    next_id: u64,
    /// The connections not being answered right now, oldest first, with when each was
    /// admitted; dropping one's sender evicts it.
    evictable: BTreeMap<u64, (Instant, Sender<()>)>,
    /// Told, without waiting, whenever a connection ends.
    ended: Sender<()>,
}

/// Waits until a new connection may be admitted: a place is free, or the oldest connection
/// not being answered has had its [`HEAD_GRACE`] (it is evicted).
async fn make_room(table: &RefCell<Table>, ended: &Receiver<()>) {
    loop {
        let wait = {
            let mut t = table.borrow_mut();
            if t.open < MAX_CONNECTIONS {
                return;
            }
            let now = Instant::now();
            match t.evictable.first_key_value() {
                Some((&id, &(since, _))) if since + HEAD_GRACE <= now => {
                    // Its task logs it, with its peer.
                    t.evictable.remove(&id);
                    return;
                }
                Some((_, &(since, _))) => since + HEAD_GRACE - now,
                // Every one is being answered: one ends within the exchange deadline.
                None => EXCHANGE_TIMEOUT,
            }
        };
        async {
            let _ = ended.recv().await;
        }
        .or(Timer::after(wait))
        .await;
    }
}

/// An admitted connection's place in the [`Table`], given back when dropped.
struct Slot {
    id: u64,
    since: Instant,
    table: Rc<RefCell<Table>>,
    /// Closed (never sent to) when the connection is evicted.
    evicted: Receiver<()>,
}

impl Slot {
    fn admit(table: &Rc<RefCell<Table>>) -> Slot {
        let (evict, evicted) = async_channel::bounded(1);
        let since = Instant::now();
        let mut t = table.borrow_mut();
        let id = t.next_id;
        t.next_id += 1;
        t.open += 1;
        t.evictable.insert(id, (since, evict));
        Slot {
            id,
            since,
            table: table.clone(),
            evicted,
        }
    }

    /// Completes when the connection is evicted.
    async fn evicted(&self) {
        let _ = self.evicted.recv().await;
    }

    /// Runs `work` (answering) with the connection safe from eviction; `None` when it had
    /// been evicted already.
    async fn busy<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let (_, evict) = self.table.borrow_mut().evictable.remove(&self.id)?;
        let out = work.await;
        let entry = (self.since, evict);
        self.table.borrow_mut().evictable.insert(self.id, entry);
        Some(out)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.borrow_mut();
        t.evictable.remove(&self.id);
        t.open -= 1;
        let _ = t.ended.try_send(());
    }
}

/// One admin exchange: reads a request, answers it, drains; an eviction ends it at any point
/// but the answer.
async fn exchange(mut stream: Stream, peer: SocketAddr, gateway: &GatewayRef, slot: &Slot) {
    let read = async { Some(handshake::read_request(&mut stream, 8192).await) }
        .or(async {
            slot.evicted().await;
            None
        })
        .await;
    let Some(read) = read else {
        log::debug!("admin {peer}: evicted before a complete request ({MAX_CONNECTIONS} open)");
        return;
    };
    let reply = match read {
        Ok((request, _)) => {
            let reply = api::answer(&request, peer, &**gateway);
            log::debug!(
                "admin {peer}: {} {} -> {}",
                request.method,
                request.target,
                reply.code
            );
            reply
        }
        Err(e) => {
            log::debug!("admin {peer}: {e}");
            if e.status().is_none() {
                return;
            }
            Reply::text(400, "bad request\n")
        }
    };
    if slot.busy(send(&mut stream, &reply)).await == Some(true) {
        handshake::drain(&mut stream, DRAIN_TIMEOUT, 64 * 1024)
            .or(slot.evicted())
            .await;
    }
}

/// An admin answer.
pub struct Reply {
    code: u16,
    kind: &'static str,
    body: String,
    /// A HEAD request: the head only.
    head_only: bool,
    /// A gzip-compressed body sent instead of `body` (the status page).
    gzipped: Option<&'static [u8]>,
}

impl Reply {
    fn text(code: u16, body: &str) -> Reply {
        Reply {
            code,
            kind: "text/plain; charset=utf-8",
            body: body.to_string(),
            head_only: false,
            gzipped: None,
        }
    }
}

/// Whether `request` is for the admin endpoints when they share the public listener: a plain
/// (not upgrade) request for one of their paths.
pub fn is_admin_request(request: &Request) -> bool {
    let path = crate::route::split_target(&request.target).0;
    let upgrade = request
        .header("Upgrade")
        .is_some_and(|u| u.to_ascii_lowercase().contains("websocket"));
    !upgrade && ["/metrics", "/healthz", "/readyz"].contains(&path)
}

/// The answer to a probe (`/healthz`, `/readyz`, `/metrics`) on the public listener, when
/// `admin` puts the endpoints there; `status` is asked only when the endpoint needs it.
pub fn reply(request: &Request, status: impl FnOnce() -> Status) -> Reply {
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        return Reply::text(405, "use GET\n");
    }
    let path = crate::route::split_target(&request.target).0;
    let mut reply = match path {
        "/healthz" => Reply::text(200, "ok\n"),
        _ => probe(path, &status()).unwrap_or_else(|| {
            Reply::text(
                404,
                "not found: the admin endpoints here are /metrics, /healthz and /readyz\n",
            )
        }),
    };
    reply.head_only = head_only;
    reply
}

/// `/healthz`, `/readyz` and `/metrics`, open to whoever reaches the listener.
fn probe(path: &str, s: &Status) -> Option<Reply> {
    Some(match path {
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" => readiness(s),
        "/metrics" => Reply {
            code: 200,
            kind: "text/plain; version=0.0.4; charset=utf-8",
            body: crate::metrics::render(env!("CARGO_PKG_VERSION"), &backend_states(s)),
            head_only: false,
            gzipped: None,
        },
        _ => return None,
    })
}

/// (route, `ws://host:port`, state) of every backend, for the metrics.
fn backend_states(s: &Status) -> Vec<(&str, &str, &'static str)> {
    (s.backends.iter())
        .map(|b| (b.route.as_str(), b.origin.as_str(), b.state.as_str()))
        .collect()
}

/// `/readyz`: 200 when every route has a usable backend and no shutdown is under way; the
/// drained backends are listed either way.
fn readiness(s: &Status) -> Reply {
    if s.shutting_down {
        return Reply::text(503, "not ready: shutting down\n");
    }
    let mut down: Vec<&str> = Vec::new();
    for b in &s.backends {
        let usable = (s.backends.iter()).any(|o| o.route == b.route && o.state == BackendState::Up);
        if !usable && !down.contains(&b.route.as_str()) {
            down.push(&b.route);
        }
    }
    let drained: Vec<String> = (s.backends.iter())
        .filter(|b| b.state == BackendState::Drained)
        .map(|b| format!("drained: route {} backend {}\n", b.route, b.address))
        .collect();
    let drained = drained.concat();
    if down.is_empty() {
        Reply::text(200, &format!("ready\n{drained}"))
    } else {
        let down = down.join(", ");
        Reply::text(
            503,
            &format!(
                "not ready: no usable backend (down, circuit open or drained) for route \
                 {down}\n{drained}"
            ),
        )
    }
}

/// Writes `reply` and closes the connection gracefully.
pub async fn respond(stream: &mut Stream, reply: &Reply) {
    if send(stream, reply).await {
        handshake::drain(stream, DRAIN_TIMEOUT, 64 * 1024).await;
    }
}

/// Writes `reply` and sends FIN; whether it was all written.
async fn send(stream: &mut Stream, reply: &Reply) -> bool {
    let reason = crate::error::reason_phrase(reply.code);
    let (body, gzip) = match reply.gzipped {
        Some(gz) => (gz, "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"),
        None => (reply.body.as_bytes(), ""),
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{gzip}\
         Connection: close\r\n\r\n",
        reply.code,
        reply.kind,
        body.len()
    );
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        if !reply.head_only {
            stream.write_all(body).await?;
        }
        stream.flush().await
    };
    let sent = sent.await.is_ok();
    if sent {
        stream.shutdown_write();
    }
    sent
}
