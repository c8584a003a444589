//! An open connection's traffic, counted into its route's counters within [`EVERY`] or so of
//! when it happened, so that `/metrics` shows what open connections relay, with no atomic
//! write per frame and no clock read per wake-up.
//!
//! A thread of its own moves a process-wide epoch every [`EVERY`] ([`start_ticks`]): on a
//! worker, an armed timer would cost every wait of its event loop two clock reads, 5% of a
//! message relayed one at a time. A connection compares it
//! with the epoch of its last count at the end of each wake-up (one relaxed load): when it
//! moved and so did the connection's bytes, what moved since the last count is added. So that
//! a connection that falls idle is counted too, the first wake-up that moves bytes after a
//! count arms a timer a little longer than a tick: its wake-up sees the epoch moved. An idle,
//! counted connection holds no timer.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use super::watch::armed;
use crate::metrics::{Flow, RouteStats, Traffic};
use crate::reactor::Timer;

/// How often the epoch moves.
pub const EVERY: Duration = Duration::from_secs(5);

/// The epoch: moved every [`EVERY`].
static EPOCH: AtomicU32 = AtomicU32::new(0);

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
            });
        if let Err(e) = ticks {
            log::warn!("cannot start the live counters' thread ({e}): open connections are counted when they end");
        }
    });
}

/// A connection's route counters, and what of its traffic they have.
pub(super) struct Live {
    stats: Arc<RouteStats>,
    counted: Traffic,
    epoch: u32,
    /// Wakes an idle connection whose traffic is not counted yet.
    due: Option<Timer>,
}

impl Live {
    pub(super) fn new(stats: Arc<RouteStats>) -> Box<Live> {
        Box::new(Live {
            stats,
            counted: Traffic::default(),
            epoch: EPOCH.load(Relaxed),
            due: None,
        })
    }

    /// At the end of a wake-up, with the flows so far (`up`: client to backend).
    pub(super) fn poll(&mut self, up: &Flow, down: &Flow, cx: &mut Context<'_>) {
        let moved = up.bytes != self.counted.client_to_backend.bytes
            || down.bytes != self.counted.backend_to_client.bytes;
        let epoch = EPOCH.load(Relaxed);
        if epoch == self.epoch {
            if moved && self.due.is_none() {
                self.due = Some(armed(EVERY + EVERY / 5, cx));
            }
            return;
        }
        self.epoch = epoch;
        self.due = None;
        if moved {
            let now = Traffic {
                client_to_backend: *up,
                backend_to_client: *down,
            };
            self.stats.add_traffic(&now.since(&self.counted));
            self.counted = now;
        }
    }

    /// What of `total` (the connection's whole traffic) is not counted yet.
    pub(super) fn rest(&self, total: &Traffic) -> Traffic {
        total.since(&self.counted)
    }
}
