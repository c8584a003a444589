//! `routers[].circuit_breaker` and `routers[].health_check`: when a backend stops getting new
//! connections, and how it earns them back.

use std::time::Duration;

use super::fields::{Fields, Report};

/// Longest interval, timeout or open time accepted: a day.
const MAX_MS: u64 = 86_400_000;

/// `circuit_breaker`: the passive breaker kept for each backend of a route.
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
            open: Duration::from_millis(30_000),
        }
    }
}

/// `health_check`: active probes of each backend of a route.
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
            interval: Duration::from_millis(10_000),
            timeout: Duration::from_millis(2_000),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// Reads `circuit_breaker`. When absent: the defaults for a route with several backends, and
/// off for a route with one (as nginx never marks a lone server unavailable: with nothing to
/// fail over to, refusing its clients for `open_ms` would only delay its recovery).
pub fn read_circuit(f: &mut Fields, report: &mut Report, backends: usize) -> CircuitBreaker {
    let d = CircuitBreaker::default();
    let Some(v) = f.raw("circuit_breaker") else {
        return CircuitBreaker {
            failure_threshold: if backends > 1 { d.failure_threshold } else { 0 },
            ..d
        };
    };
    let ctx = f.name("");
    let Some(mut c) = Fields::new(&ctx, "circuit_breaker.", v, report) else {
        return d;
    };
    let failure_threshold = c.int(
        report,
        "failure_threshold",
        0,
        1_000_000,
        u64::from(d.failure_threshold),
    ) as u32;
    let open = c.int(report, "open_ms", 10, MAX_MS, d.open.as_millis() as u64);
    c.finish(report);
    CircuitBreaker {
        failure_threshold,
        open: Duration::from_millis(open),
    }
}

/// Reads `health_check`. Checks run when the block is there, or when a backend has a
/// `health_check_path` (then with the defaults).
pub fn read_health(
    f: &mut Fields,
    report: &mut Report,
    any_probe_path: bool,
) -> Option<HealthCheck> {
    let d = HealthCheck::default();
    let Some(v) = f.raw("health_check") else {
        return any_probe_path.then_some(d);
    };
    let ctx = f.name("");
    let mut h = Fields::new(&ctx, "health_check.", v, report)?;
    let ms = |h: &mut Fields, r: &mut Report, key, def: Duration| {
        Duration::from_millis(h.int(r, key, 10, MAX_MS, def.as_millis() as u64))
    };
    let interval = ms(&mut h, report, "interval_ms", d.interval);
    // Longer than the interval is fine: the next probe starts when the previous one ends.
    let timeout = ms(&mut h, report, "timeout_ms", d.timeout.min(interval));
    let threshold = |h: &mut Fields, r: &mut Report, key, def: u32| {
        h.int(r, key, 1, 1000, u64::from(def)) as u32
    };
    let unhealthy_threshold =
        threshold(&mut h, report, "unhealthy_threshold", d.unhealthy_threshold);
    let healthy_threshold = threshold(&mut h, report, "healthy_threshold", d.healthy_threshold);
    h.finish(report);
    Some(HealthCheck {
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
    })
}
