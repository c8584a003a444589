//! Stage 5a: which backends of a route a new connection may try, in which order (failover),
//! and the state behind that choice: the strategy's counters, the open connections, the active
//! health check's verdict and the passive circuit breaker of each backend.
//!
//! Strategies choose among the backends usable now (healthy, breaker not open). `ip_hash` and
//! `sticky` use weighted rendezvous (highest random weight) hashing over a hash that never
//! changes between builds or processes: several gateways with the same config send a key to
//! the same backend with no shared state, removing one of N backends moves only the keys that
//! were on it, and a key whose backend is down goes to its next backend in rendezvous order
//! (and back when it is up). The failover order is rendezvous order too (keyed by a random
//! number for the other strategies, so that a dead backend's load spreads).

mod circuit;
mod strategy;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::{Backend, Config, HealthCheck, Route, Sticky, Strategy};
use crate::handshake::{Head, Request};
use circuit::{Admit, Circuit};
use strategy::{fnv1a, least_connections, rendezvous, round_robin, weighted_random};

/// The balancers of every route of a config, by position in `config.routes`.
pub struct Balancers {
    routes: Vec<Balancer>,
}

/// One route's balancing state.
struct Balancer {
    strategy: Strategy,
    /// The route's health check, if any (for `Retry-After`).
    health: Option<HealthCheck>,
    /// Smooth weighted round robin: each backend's current weight.
    current: Mutex<Vec<i64>>,
    slots: Vec<Slot>,
}

/// One backend of a route.
pub struct Slot {
    weight: u64,
    /// Hash of the backend's stable identity (`ws://host:port`).
    hash: u64,
    /// Open proxied connections, and connects under way.
    active: AtomicUsize,
    /// The active health check's verdict (true until a check says otherwise).
    up: AtomicBool,
    /// An operator drained it (`POST /backends/drain`): no new connection goes to it.
    drained: AtomicBool,
    circuit: Circuit,
}

/// What a backend of a route is to new connections, as the admin endpoints show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Takes new connections.
    Up,
    /// Its active health check failed.
    Down,
    /// Its circuit breaker is open (or half-open with its trial under way).
    BreakerOpen,
    /// An operator drained it.
    Drained,
}

impl BackendState {
    /// `up`, `down`, `breaker_open` or `drained`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::BreakerOpen => "breaker_open",
            BackendState::Drained => "drained",
        }
    }
}

impl Balancers {
    /// Fresh state for `config`'s routes.
    pub fn new(config: &Config) -> Arc<Balancers> {
        Arc::new(Balancers {
            routes: config.routes.iter().map(Balancer::new).collect(),
        })
    }

    /// The backends of route `route` (its position in `config.routes`) that a new connection
    /// may try, best first. With a `sticky` key, the usable backend that key hashes to first
    /// (the same in every process).
    pub fn plan(self: &Arc<Self>, route: usize, client: IpAddr, sticky: Option<&[u8]>) -> Plan {
        let (order, retry_after) = match self.routes.get(route) {
            Some(b) => b.plan(client, sticky),
            None => (Vec::new(), Duration::from_secs(1)),
        };
        Plan {
            balancers: self.clone(),
            route,
            order,
            next: 0,
            retry_after,
        }
    }

    /// Records the active health check's verdict on a backend; true if it changed.
    pub fn set_up(&self, route: usize, backend: usize, up: bool) -> bool {
        self.slot(route, backend)
            .is_some_and(|s| s.up.swap(up, Relaxed) != up)
    }

    /// Drains a backend (`true`: no new connection goes to it) or puts it back.
    pub fn set_drained(&self, route: usize, backend: usize, drained: bool) {
        if let Some(s) = self.slot(route, backend) {
            s.drained.store(drained, Relaxed);
        }
    }

    /// What a backend is to new connections now.
    pub fn state(&self, route: usize, backend: usize) -> BackendState {
        let Some(s) = self.slot(route, backend) else {
            return BackendState::Down;
        };
        // The balancer's own test ([`Slot::usable`]), told apart.
        match s.usable(Instant::now()) {
            Ok(()) => BackendState::Up,
            Err(Some(_)) => BackendState::BreakerOpen,
            Err(None) if s.drained.load(Relaxed) => BackendState::Drained,
            Err(None) => BackendState::Down,
        }
    }

    fn slot(&self, route: usize, backend: usize) -> Option<&Slot> {
        self.routes.get(route)?.slots.get(backend)
    }
}

/// The backends a connection may try, best first.
pub struct Plan {
    balancers: Arc<Balancers>,
    route: usize,
    order: Vec<usize>,
    next: usize,
    retry_after: Duration,
}

impl Plan {
    /// The next backend to try whose breaker lets it through now, counted on that backend
    /// (for `least_connections`) from now on.
    pub fn next_attempt(&mut self) -> Option<Attempt> {
        while let Some(&backend) = self.order.get(self.next) {
            self.next += 1;
            let slot = self.balancers.slot(self.route, backend)?;
            let trial = match slot.circuit.admit(Instant::now()) {
                Admit::Yes => false,
                Admit::Trial => true,
                Admit::No(wait) => {
                    self.retry_after = self.retry_after.min(wait);
                    continue;
                }
            };
            slot.active.fetch_add(1, Relaxed);
            let lease = Lease {
                balancers: self.balancers.clone(),
                route: self.route,
                backend,
            };
            return Some(Attempt {
                lease: Some(lease),
                trial,
            });
        }
        None
    }

    /// How many backends the plan holds (the usable ones when it was made), tried or not.
    pub fn candidates(&self) -> usize {
        self.order.len()
    }

    /// Whether backends are left to try.
    pub fn has_more(&self) -> bool {
        self.next < self.order.len()
    }

    /// When a route with no usable backend may have one again (for `Retry-After`).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// A connect to one backend under way. Its result goes to the backend's breaker; dropped
/// without one (the client left), it ends a half-open trial without a verdict.
pub struct Attempt {
    lease: Option<Lease>,
    trial: bool,
}

impl Attempt {
    /// The backend's position in its route.
    pub fn backend(&self) -> usize {
        self.lease.as_ref().map_or(0, |l| l.backend)
    }

    /// The backend answered (101, or its own 4xx): the breaker closes. The lease counts the
    /// connection on the backend while it lives.
    pub fn succeeded(mut self) -> Option<Lease> {
        if let Some(slot) = self.slot() {
            slot.circuit.succeeded();
        }
        self.trial = false;
        self.lease.take()
    }

    /// The backend refused, timed out or broke the handshake.
    pub fn failed(mut self, why: &str) {
        if let Some(slot) = self.slot() {
            slot.circuit.failed(why);
        }
        self.trial = false;
    }

    fn slot(&self) -> Option<&Slot> {
        let l = self.lease.as_ref()?;
        l.balancers.slot(l.route, l.backend)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.trial {
            if let Some(slot) = self.slot() {
                slot.circuit.abandoned();
            }
        }
    }
}

/// The stickiness key of a connection, if the request carries it.
pub fn sticky_key(
    sticky: &Sticky,
    req: &Request,
    query: Option<&str>,
    claims: Option<&Map<String, Value>>,
    client: IpAddr,
) -> Option<Vec<u8>> {
    match sticky {
        Sticky::Ip => Some(match client {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }),
        Sticky::Header(name) => req.header_raw(name).next().map(<[u8]>::to_vec),
        Sticky::Cookie(name) => req
            .header_raw("Cookie")
            .flat_map(|v| v.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (&pair[..eq] == name.as_bytes()).then(|| pair[eq + 1..].to_vec())
            }),
        Sticky::Query(name) => query
            .and_then(|q| crate::route::query_param(q, name))
            .map(String::into_bytes),
        Sticky::Claim(name) => claims.and_then(|c| c.get(name)).map(|v| match v {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        }),
    }
}

/// A connection counted on a backend (for `least_connections`).
pub struct Lease {
    balancers: Arc<Balancers>,
    route: usize,
    backend: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.balancers.slot(self.route, self.backend) {
            s.active.fetch_sub(1, Relaxed);
        }
    }
}

impl Slot {
    /// `Ok` when a new connection may try this backend now, else how long until it may.
    fn usable(&self, now: Instant) -> Result<(), Option<Duration>> {
        if !self.up.load(Relaxed) || self.drained.load(Relaxed) {
            return Err(None);
        }
        match self.circuit.peek(now) {
            Admit::Yes | Admit::Trial => Ok(()),
            Admit::No(wait) => Err(Some(wait)),
        }
    }
}

impl Balancer {
    fn new(route: &Route) -> Balancer {
        let name = format!("routers[{}] ({})", route.index, route.external.as_str());
        Balancer {
            strategy: route.strategy,
            health: route.health,
            current: Mutex::new(vec![0; route.backends.len()]),
            slots: route
                .backends
                .iter()
                .map(|b| Slot::new(b, route, &name))
                .collect(),
        }
    }

    /// The usable backends in the order to try them, and (when there is none) how long until
    /// one may be usable again.
    fn plan(&self, client: IpAddr, sticky: Option<&[u8]>) -> (Vec<usize>, Duration) {
        let now = Instant::now();
        let mut usable = Vec::with_capacity(self.slots.len());
        let mut wait: Option<Duration> = None;
        // A down backend comes back no sooner than healthy_threshold probes from now.
        let probes = self.health.map(|h| h.interval * h.healthy_threshold);
        for (i, s) in self.slots.iter().enumerate() {
            let w = match s.usable(now) {
                Ok(()) => {
                    usable.push(i);
                    continue;
                }
                Err(w) => w.or(probes).unwrap_or(Duration::from_secs(1)),
            };
            wait = Some(wait.map_or(w, |x| x.min(w)));
        }
        let key = match (sticky, self.strategy, client) {
            (Some(key), _, _) => fnv1a(key),
            (None, Strategy::IpHash, IpAddr::V4(a)) => fnv1a(&a.octets()),
            (None, Strategy::IpHash, IpAddr::V6(a)) => fnv1a(&a.octets()),
            _ => rand::random::<u64>(),
        };
        let mut order: Vec<usize> = rendezvous(&self.slots, key)
            .into_iter()
            .filter(|i| usable.contains(i))
            .collect();
        let first = match (sticky, self.strategy) {
            (Some(_), _) | (None, Strategy::IpHash) => None,
            (None, Strategy::RoundRobin) => {
                let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
                round_robin(&mut current, &self.slots, &usable)
            }
            (None, Strategy::LeastConnections) => least_connections(&self.slots, &usable),
            (None, Strategy::Random) => weighted_random(&self.slots, &usable),
        };
        if let Some(pos) = first.and_then(|f| order.iter().position(|&i| i == f)) {
            let f = order.remove(pos);
            order.insert(0, f);
        }
        (order, wait.unwrap_or(Duration::from_secs(1)))
    }
}

impl Slot {
    fn new(backend: &Backend, route: &Route, route_name: &str) -> Slot {
        let id = backend.origin();
        Slot {
            weight: u64::from(backend.weight),
            hash: fnv1a(id.as_bytes()),
            active: AtomicUsize::new(0),
            up: AtomicBool::new(true),
            drained: AtomicBool::new(false),
            circuit: Circuit::new(route.circuit, format!("{route_name}: backend {id}")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
