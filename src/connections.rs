//! The relayed connections open now: who each is, where it goes, since when, and what it
//! relayed as of its last live count (`relay::live`). The admin API lists them
//! (`GET /connections`), and the live counts go through them: a connection's entry holds what
//! its route's counters have of its traffic, its task's waker (for the ticking thread to have
//! a silent connection counted, and for an operator's close, which the entry also holds). An
//! entry is in the table from the 101 to the end ([`Listed`] takes it out, with its waker). The table is split into shards by id, so that connections
//! opening and closing on different workers seldom wait for each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Instant;

use crate::config::Config;
use crate::error::GatewayClose;
use crate::metrics::{Flow, RouteStats, Traffic};

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<u64, Arc<Entry>>>;

static TABLE: LazyLock<[Shard; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Shard::default()));

/// One open connection.
pub struct Entry {
    /// Its number (the access log's `connection_id`).
    pub id: u64,
    /// The client, as `trusted_proxies` decides it.
    pub client: IpAddr,
    /// The token's `sub`.
    pub user: Option<Box<str>>,
    /// When it was accepted, in milliseconds since the epoch.
    pub opened_at_ms: u64,
    /// The config it runs on, its route (by position) and backend (by position in the route).
    config: Arc<Config>,
    at: u16,
    chosen: u16,
    /// Its route's counters.
    pub stats: Arc<RouteStats>,
    /// Data messages and wire bytes counted so far, client to backend then backend to client.
    counted: [AtomicU64; 4],
    /// The connection's task, and what it is to be woken for.
    wake: Mutex<Wake>,
}

/// What a connection's task is woken for from outside.
#[derive(Default)]
struct Wake {
    /// The task's waker (the same for its life), from its first wake-up on.
    waker: Option<Waker>,
    /// Woken at the next tick: it has traffic not counted yet.
    tick: bool,
    /// An operator asked it to close, with this close, at that moment.
    close: Option<Box<(GatewayClose, Instant)>>,
}

/// Moved by every operator's close (and its cancel): a connection that sees it move looks
/// for a request in its entry. One relaxed load per wake-up, of a line no connection writes.
static ASKS: AtomicU32 = AtomicU32::new(0);

/// The number of operators' requests so far ([`Entry::asked`]).
pub fn asks() -> u32 {
    ASKS.load(Relaxed)
}

impl Entry {
    /// A connection about to be relayed on `config`'s route `at`, backend `chosen`.
    pub fn new(
        id: u64,
        client: IpAddr,
        user: Option<Box<str>>,
        opened_at_ms: u64,
        (config, at, chosen): (Arc<Config>, usize, usize),
        stats: Arc<RouteStats>,
    ) -> Entry {
        Entry {
            id,
            client,
            user,
            opened_at_ms,
            config,
            at: at as u16,
            chosen: chosen as u16,
            stats,
            counted: Default::default(),
            wake: Mutex::default(),
        }
    }

    /// Its route's `external_path`.
    pub fn route(&self) -> &str {
        self.config.routes[usize::from(self.at)].external.as_str()
    }

    /// Its backend, `host:port`.
    pub fn backend(&self) -> String {
        let route = &self.config.routes[usize::from(self.at)];
        (route.backends.get(usize::from(self.chosen)))
            .map_or(String::new(), |b| format!("{}:{}", b.host, b.port))
    }

    fn wake(&self) -> MutexGuard<'_, Wake> {
        self.wake.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the connection task's waker (its first wake-up: a task keeps one waker).
    pub fn register(&self, waker: &Waker) {
        self.wake().waker = Some(waker.clone());
    }

    /// Asks the connection to close with `close` at `at` (`None`: cancels such a request not
    /// carried out yet), and wakes it.
    pub fn ask(&self, close: Option<(GatewayClose, Instant)>) {
        let waker = {
            let mut w = self.wake();
            w.close = close.map(Box::new);
            ASKS.fetch_add(1, SeqCst);
            w.waker.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The operator's close was carried out.
    pub fn done_asking(&self) {
        self.wake().close = None;
    }

    /// The close an operator asked for, if any (left in place: a cancel may still come).
    pub fn asked(&self) -> Option<(GatewayClose, Instant)> {
        self.wake().close.as_deref().copied()
    }

    /// Counts what the connection relayed since its last count (`up`: client to backend)
    /// into the route's counters and its own.
    pub fn count(&self, up: &Flow, down: &Flow) {
        let traffic = Traffic {
            client_to_backend: *up,
            backend_to_client: *down,
        };
        self.stats.add_traffic(&traffic);
        let all = [
            up.messages.data(),
            up.bytes,
            down.messages.data(),
            down.bytes,
        ];
        for (c, n) in self.counted.iter().zip(all) {
            c.fetch_add(n, Relaxed);
        }
        self.wake().tick = false;
    }

    /// Has the connection woken at the next tick ([`Entry::register`] gave its waker).
    pub fn wake_at_tick(&self) {
        self.wake().tick = true;
    }

    /// (data messages, wire bytes) client to backend, then backend to client, as counted.
    pub fn counts(&self) -> [(u64, u64); 2] {
        let c = |i: usize| self.counted[i].load(Relaxed);
        [(c(0), c(1)), (c(2), c(3))]
    }
}

fn shard(id: u64) -> MutexGuard<'static, HashMap<u64, Arc<Entry>>> {
    TABLE[id as usize % SHARDS]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A connection's place in the table, given back when dropped.
pub struct Listed(Arc<Entry>);

impl Listed {
    /// Puts `entry` in the table.
    pub fn new(entry: Entry) -> Listed {
        let entry = Arc::new(entry);
        shard(entry.id).insert(entry.id, entry.clone());
        Listed(entry)
    }

    /// The entry.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.0
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        shard(self.0.id).remove(&self.0.id);
        self.0.wake().waker = None;
    }
}

/// The open connections `keep` accepts, by id (`dyn`: one copy of the code for every caller).
pub fn list(keep: &dyn Fn(&Entry) -> bool) -> Vec<Arc<Entry>> {
    let mut all = Vec::new();
    for s in TABLE.iter() {
        let s = s.lock().unwrap_or_else(PoisonError::into_inner);
        all.extend(s.values().filter(|e| keep(e)).cloned());
    }
    all.sort_by_key(|e| e.id);
    all
}

/// Wakes every connection that left its waker for the tick.
pub fn wake_waiting() {
    let mut wakers = Vec::new();
    for s in TABLE.iter() {
        let s = s.lock().unwrap_or_else(PoisonError::into_inner);
        for e in s.values() {
            let mut w = e.wake();
            if std::mem::take(&mut w.tick) {
                wakers.extend(w.waker.clone());
            }
        }
    }
    for w in wakers {
        w.wake();
    }
}
