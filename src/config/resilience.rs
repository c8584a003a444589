//! `routers[].circuit_breaker` and `routers[].health_check`: when a backend stops getting new
//! connections, and how it earns them back.

use std::time::Duration;

use super::fields::{Fields, Object};
use super::{ms, DAY_MS};

/// `circuit_breaker`: the passive breaker kept for each backend of a route. When absent: the
/// defaults for a route with several backends, and off for a route with one (as nginx never
/// marks a lone server unavailable: with nothing to fail over to, refusing its clients for
/// `open_ms` would only delay its recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// `failure_threshold` (5; 0 turns the breaker off): consecutive failed connects
    /// (refused, timed out, or a broken or 5xx handshake) that open the breaker.
    pub failure_threshold: u32,
    /// `open_ms` (30000): how long an open breaker keeps new connections away before one
    /// trial connection (half-open) decides whether it closes again.
    pub open: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            failure_threshold: 5,
            open: ms(30_000),
        }
    }
}

/// `health_check`: active probes of each backend of a route. They run when the block is there,
/// or when a backend has a `health_check_path` (then with the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// `interval_ms` (10000): time between the starts of two probes of a backend (the next
    /// starts when the previous one ends, if that is later).
    pub interval: Duration,
    /// `timeout_ms` (2000, or `interval_ms` when that is shorter): a probe not done by then
    /// failed. It may be longer than `interval_ms`, as in HAProxy and Envoy.
    pub timeout: Duration,
    /// `unhealthy_threshold` (3): failed probes in a row that mark a backend down.
    pub unhealthy_threshold: u32,
    /// `healthy_threshold` (2): passed probes in a row that mark a down backend up again.
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: ms(10_000),
            timeout: ms(2_000),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

impl Object for CircuitBreaker {
    fn fields(&mut self, f: &mut Fields) {
        f.int("failure_threshold", 0, 1_000_000, |n| {
            self.failure_threshold = n as u32
        });
        f.int("open_ms", 10, DAY_MS, |n| self.open = ms(n));
    }
}

impl Object for HealthCheck {
    fn fields(&mut self, f: &mut Fields) {
        f.int("interval_ms", 10, DAY_MS, |n| self.interval = ms(n));
        // Longer than the interval is fine: the next probe starts when the previous one ends.
        f.int("timeout_ms", 10, DAY_MS, |n| self.timeout = ms(n));
        f.int("unhealthy_threshold", 1, 1000, |n| {
            self.unhealthy_threshold = n as u32
        });
        f.int("healthy_threshold", 1, 1000, |n| {
            self.healthy_threshold = n as u32
        });
        if !f.given("timeout_ms") {
            self.timeout = self.timeout.min(self.interval);
        }
    }
}
