//! The relayed connections open now, for the admin API (`GET /connections`): who each is, where
//! it goes, since when, and what it relayed as of its last live count (`relay::live`, within
//! about 5 s). A connection is in the table from its 101 to its end ([`Listed`] takes it out
//! when dropped). The table is split into shards by id, so that connections opening and closing
//! on different workers seldom wait for each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use crate::metrics::Traffic;

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<u64, Arc<Entry>>>;

static TABLE: LazyLock<[Shard; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Shard::default()));

/// One open connection.
#[derive(Debug)]
pub struct Entry {
    /// Its number (the access log's `connection_id`).
    pub id: u64,
    /// Its route's `external_path`.
    pub route: Arc<str>,
    /// The client, as `trusted_proxies` decides it.
    pub client: IpAddr,
    /// Its backend, `host:port`.
    pub backend: String,
    /// The token's `sub`.
    pub user: Option<Box<str>>,
    /// When it was accepted, in milliseconds since the epoch.
    pub opened_at_ms: u64,
    /// Data messages and wire bytes, client to backend then backend to client, as of the
    /// connection's last live count.
    counts: [AtomicU64; 4],
}

impl Entry {
    /// A connection about to be relayed.
    pub fn new(
        id: u64,
        route: Arc<str>,
        client: IpAddr,
        backend: String,
        user: Option<Box<str>>,
        opened_at_ms: u64,
    ) -> Entry {
        Entry {
            id,
            route,
            client,
            backend,
            user,
            opened_at_ms,
            counts: Default::default(),
        }
    }

    /// Adds what the connection relayed since its last count.
    pub fn add(&self, t: &Traffic) {
        let (up, down) = (&t.client_to_backend, &t.backend_to_client);
        let all = [
            up.messages.data(),
            up.bytes,
            down.messages.data(),
            down.bytes,
        ];
        for (c, n) in self.counts.iter().zip(all) {
            c.fetch_add(n, Relaxed);
        }
    }

    /// (messages, bytes) client to backend, then backend to client.
    pub fn counts(&self) -> [(u64, u64); 2] {
        let c = |i: usize| self.counts[i].load(Relaxed);
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

    /// The entry (to count into).
    pub fn entry(&self) -> &Arc<Entry> {
        &self.0
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        shard(self.0.id).remove(&self.0.id);
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
