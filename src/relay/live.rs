//! An open connection's traffic, counted into its route's counters at most [`EVERY`] after it
//! happened, so that `/metrics` shows what open connections relay, still without an atomic per
//! frame: after a wake-up that moved bytes, a timer is armed (one at a time); when it fires,
//! what moved since the last count is added. An idle connection holds no timer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use std::future::Future;

use super::watch::armed;
use crate::metrics::{Flow, RouteStats, Traffic};
use crate::reactor::Timer;

/// The longest an open connection's traffic waits to be counted.
pub const EVERY: Duration = Duration::from_secs(5);

/// A connection's route counters, and what of its traffic they have.
pub(super) struct Live {
    stats: Arc<RouteStats>,
    counted: Traffic,
    due: Option<Timer>,
}

impl Live {
    pub(super) fn new(stats: Arc<RouteStats>) -> Box<Live> {
        Box::new(Live {
            stats,
            counted: Traffic::default(),
            due: None,
        })
    }

    /// After a wake-up, with the flows so far (`up`: client to backend): counts them when the
    /// timer fired, or arms it when they moved.
    pub(super) fn poll(&mut self, up: &Flow, down: &Flow, cx: &mut Context<'_>) {
        match &mut self.due {
            Some(timer) => {
                if Pin::new(timer).poll(cx).is_ready() {
                    self.due = None;
                    let now = Traffic {
                        client_to_backend: *up,
                        backend_to_client: *down,
                    };
                    self.stats.add_traffic(&now.since(&self.counted));
                    self.counted = now;
                }
            }
            None => {
                let counted = &self.counted;
                if up.bytes != counted.client_to_backend.bytes
                    || down.bytes != counted.backend_to_client.bytes
                {
                    self.due = Some(armed(EVERY, cx));
                }
            }
        }
    }

    /// What of `total` (the connection's whole traffic) is not counted yet.
    pub(super) fn rest(&self, total: &Traffic) -> Traffic {
        total.since(&self.counted)
    }
}
