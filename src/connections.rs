//! The relayed connections open now: who each is, where it goes, since when, and what it
//! relayed as of its last live count (`relay::live`). The admin API lists them
//! (`GET /connections`), and the live counts go through them: a connection's entry holds what
//! its route's counters have of its traffic, and the waker the ticking thread uses to have a
//! silent connection counted. An entry is in the table from the 101 to the end ([`Listed`]
//! takes it out, with its waker). The table is split into shards by id, so that connections
//! opening and closing on different workers seldom wait for each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use crate::config::Config;
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
    /// Who to wake at the next tick, for traffic not counted yet.
    waker: Mutex<Option<Waker>>,
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
            waker: Mutex::default(),
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

    fn waker(&self) -> MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(PoisonError::into_inner)
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
        *self.waker() = None;
    }

    /// Leaves `waker` to be woken at the next tick.
    pub fn wake_at_tick(&self, waker: &Waker) {
        *self.waker() = Some(waker.clone());
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
        *self.0.waker() = None;
    }
}

/// The open connections `keep` accepts, by id.
pub fn list(keep: impl Fn(&Entry) -> bool) -> Vec<Arc<Entry>> {
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
        wakers.extend(s.values().filter_map(|e| e.waker().take()));
    }
    for w in wakers {
        w.wake();
    }
}
