//! An open connection's traffic, counted into its route's counters within [`EVERY`] or so of
//! when it happened, so that `/metrics` shows what open connections relay, with no atomic
//! write per frame and no clock read per wake-up.
//!
//! A thread of its own moves a process-wide epoch every [`EVERY`] ([`start_ticks`]). A
//! connection compares it with the epoch of its last count at the end of each wake-up (one
//! relaxed load) and, when it moved and so did the connection's bytes, adds what moved since
//! its last count. So that a connection that falls silent is counted too, the first wake-up
//! that leaves traffic uncounted hands the connection's waker to that thread, which wakes it at
//! the next tick. No timer is armed on a worker: one would cost every wait of its event loop
//! two clock reads (5% of a message relayed one at a time, `bench/callgrind.sh`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use crate::connections::Entry;
use crate::metrics::{Flow, RouteStats, Traffic};

/// How often the epoch moves.
pub const EVERY: Duration = Duration::from_secs(5);

/// The epoch: moved every [`EVERY`].
static EPOCH: AtomicU32 = AtomicU32::new(0);

/// Whether the thread that moves it runs.
static TICKING: AtomicBool = AtomicBool::new(false);

/// The connections with traffic not counted yet, to wake at the next tick.
static WAITING: Mutex<Vec<Waker>> = Mutex::new(Vec::new());

/// Starts the thread that moves the epoch every [`EVERY`] (once per process).
pub fn start_ticks() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let ticks = std::thread::Builder::new()
            .name("kairos-epoch".into())
            .stack_size(32 * 1024)
            .spawn(|| loop {
                std::thread::sleep(EVERY);
                EPOCH.fetch_add(1, Relaxed);
                let waiting = std::mem::take(&mut *waiting());
                for waker in waiting {
                    waker.wake();
                }
            });
        TICKING.store(ticks.is_ok(), Relaxed);
        if let Err(e) = ticks {
            log::warn!("cannot start the live counters' thread ({e}): open connections are counted when they end");
        }
    });
}

/// Where an open connection's traffic is counted: its route's counters, and its entry in the
/// table of open connections.
pub struct Counters {
    /// The route's counters.
    pub stats: Arc<RouteStats>,
    /// The connection's entry (`GET /connections`).
    pub entry: Option<Arc<Entry>>,
}

/// A connection's counters, and what of its traffic they have.
pub(super) struct Live {
    to: Counters,
    counted: Traffic,
    epoch: u32,
    /// Its waker is with the ticking thread.
    waiting: bool,
}

fn waiting() -> std::sync::MutexGuard<'static, Vec<Waker>> {
    WAITING.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Live {
    pub(super) fn new(to: Counters) -> Box<Live> {
        Box::new(Live {
            to,
            counted: Traffic::default(),
            epoch: EPOCH.load(Relaxed),
            waiting: false,
        })
    }

    /// At the end of a wake-up, with the flows so far (`up`: client to backend).
    pub(super) fn poll(&mut self, up: &Flow, down: &Flow, cx: &mut Context<'_>) {
        let moved = up.bytes != self.counted.client_to_backend.bytes
            || down.bytes != self.counted.backend_to_client.bytes;
        let epoch = EPOCH.load(Relaxed);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.waiting = false;
            if moved {
                let now = Traffic {
                    client_to_backend: *up,
                    backend_to_client: *down,
                };
                let delta = now.since(&self.counted);
                self.to.stats.add_traffic(&delta);
                if let Some(entry) = &self.to.entry {
                    entry.add(&delta);
                }
                self.counted = now;
                return;
            }
        }
        if moved && !self.waiting && TICKING.load(Relaxed) {
            waiting().push(cx.waker().clone());
            self.waiting = true;
        }
    }

    /// What of `total` (the connection's whole traffic) is not counted yet.
    pub(super) fn rest(&self, total: &Traffic) -> Traffic {
        total.since(&self.counted)
    }
}
