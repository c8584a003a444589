//! An open connection's traffic, counted into its route's counters within about [`EVERY`] of
//! when it happened, so that `/metrics` (and `GET /connections`) show what open connections
//! relay, with no atomic write per frame and no clock read per wake-up.
//!
//! A thread of its own moves a process-wide epoch every [`EVERY`] ([`start_ticks`]). A
//! connection compares it with the epoch of its last count at the end of each wake-up (one
//! relaxed load) and, when it moved and so did the connection's bytes, counts what moved since
//! (through its entry in the table of open connections, [`crate::connections`]). So that a
//! connection that falls silent is counted too, the first wake-up that leaves traffic
//! uncounted marks its entry, and the ticking thread wakes it at the next tick (the entry
//! holds the task's waker from its first wake-up on; an operator's close wakes it the same
//! way, [`Live::poll_asked`]). No timer is armed on a worker: one would cost every wait of its event loop two clock
//! reads (5% of a message relayed one at a time, `bench/callgrind.sh`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, Instant};

use crate::connections::{self, Entry};
use crate::error::GatewayClose;
use crate::metrics::Flow;
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
                crate::connections::wake_waiting();
            });
        if let Err(e) = ticks {
            log::warn!("cannot start the live counters' thread ({e}): open connections are counted when they end");
        }
    });
}

/// A connection's entry, and the epoch of its last count. What was counted is taken out of
/// the directions' flows, which then hold what is not counted yet. Also what an operator
/// asked of the connection through its entry (`POST /connections/.../close`,
/// `POST /backends/drain`).
pub(super) struct Live {
    pub(super) entry: Arc<Entry>,
    epoch: u32,
    /// It is to be woken at the next tick.
    waiting: bool,
    /// The operators' requests seen ([`connections::asks`]).
    asks: u32,
    /// The task's waker is in the entry.
    registered: bool,
    /// An operator's close, and the timer of its moment.
    leaving: Option<Box<(Timer, GatewayClose)>>,
}

impl Live {
    pub(super) fn new(entry: Arc<Entry>) -> Live {
        Live {
            entry,
            epoch: EPOCH.load(Relaxed),
            waiting: false,
            // Not the count now: the first wake-up registers the waker and then looks.
            asks: connections::asks().wrapping_sub(1),
            registered: false,
            leaving: None,
        }
    }

    /// At the start of a wake-up: the close an operator asked for, once its moment has come.
    /// Registers the task's waker with the entry on the first wake-up, then looks at the
    /// entry only when an operator's request (for any connection) came since the last look.
    pub(super) fn poll_asked(&mut self, cx: &mut Context<'_>) -> Option<GatewayClose> {
        let asks = connections::asks();
        if asks != self.asks {
            if !self.registered {
                self.entry.register(cx.waker());
                self.registered = true;
            }
            self.asks = asks;
            self.leaving = (self.entry.asked()).map(|(close, at)| {
                Box::new((
                    Timer::after(at.saturating_duration_since(Instant::now())),
                    close,
                ))
            });
        }
        let (timer, close) = self.leaving.as_deref_mut()?;
        if Pin::new(timer).poll(cx).is_pending() {
            return None;
        }
        let close = *close;
        self.leaving = None;
        self.entry.done_asking();
        Some(close)
    }

    /// At the end of a wake-up, with the flows not counted yet (`up`: client to backend).
    pub(super) fn poll(&mut self, up: &mut Flow, down: &mut Flow) {
        if up.bytes == 0 && down.bytes == 0 {
            return;
        }
        let epoch = EPOCH.load(Relaxed);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.waiting = false;
            self.entry.count(up, down);
            (*up, *down) = (Flow::default(), Flow::default());
        } else if !self.waiting {
            self.entry.wake_at_tick();
            self.waiting = true;
        }
    }
}
