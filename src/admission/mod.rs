//! Stage 3b: admission, between route and auth. Before the gateway spends a signature check or
//! a backend connection on a request it checks the connection limits: the client address's
//! handshake rate and open connections on the route (`rate_limit.handshakes_per_second_per_ip`,
//! `rate_limit.connections_per_ip`: 429), then the route's and the whole gateway's open
//! connections (`max_connections`, `limits.max_connections`: 503). A request that passes gets a
//! [`Ticket`] that counts it until the connection ends (refused for its token, connecting,
//! relaying, or refused later by the backend), however it ends: the ticket releases on drop.
//!
//! The counts belong to the gateway ([`Admission`]), not to a config generation: a reload
//! changes the limits, never the counts. A route's counts and per-address table are kept by
//! its `external_path` (as the metrics are), so a route that stays across a reload counts the
//! connections the old config admitted against the new config's limit; a route that is
//! removed is forgotten once its last connection ends. Per-address entries exist only on
//! routes with a per-address rule, so routes without one pay two atomic increments and two
//! decrements per connection, and nothing per frame. An IPv6 client is counted by its
//! `server.ipv6_prefix` network ([`ClientKey`]); a full table never refuses a newcomer
//! (`table.rs` says what it does instead).

mod client;
mod table;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::bucket::Bucket;
use crate::config::{Config, RateLimit};
use crate::error::{Capacity, Error, PerClient};
pub use client::{client_ip, is_trusted, ClientKey};
use table::{Entered, Over, Table};

/// The `Retry-After` of a refusal for open connections: one may close any moment.
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// One gateway's connection counts, shared by every config generation it runs.
#[derive(Default)]
pub struct Admission {
    /// Admitted connections not yet ended, all routes.
    open: AtomicUsize,
    /// Each route's state by `external_path`, while a generation or a connection holds it.
    routes: Mutex<HashMap<String, Weak<RouteGate>>>,
}

/// One route's counts.
struct RouteGate {
    /// The route's `external_path`.
    name: String,
    /// Admitted connections of this route not yet ended.
    open: AtomicUsize,
    /// Per-address state (touched only on routes with a per-address rule).
    clients: Mutex<Table>,
}

/// A config generation's view of the counts: the [`RouteGate`] of each of its routes.
pub struct Gates {
    admission: Arc<Admission>,
    /// By position in `config.routes`.
    routes: Vec<Arc<RouteGate>>,
}

/// What an admitted connection holds until it ends; dropping it gives back what it counted.
pub struct Ticket {
    admission: Arc<Admission>,
    gate: Arc<RouteGate>,
    global: bool,
    route: bool,
    /// The client counted in the route's table, and the bucket rule it came under.
    client: Option<(ClientKey, Option<Bucket>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    /// No connection counted yet.
    pub fn new() -> Arc<Admission> {
        Arc::default()
    }

    /// The gates of `config`'s routes: those of a route this gateway already knows by its
    /// `external_path` (with its open connections and client table), else new ones.
    pub fn gates(self: &Arc<Self>, config: &Config) -> Gates {
        let mut known = lock(&self.routes);
        known.retain(|_, g| g.strong_count() > 0);
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let name = r.external.as_str();
                if let Some(g) = known.get(name).and_then(Weak::upgrade) {
                    return g;
                }
                let g = Arc::new(RouteGate {
                    name: name.to_string(),
                    open: AtomicUsize::new(0),
                    clients: Mutex::new(Table::new()),
                });
                known.insert(name.to_string(), Arc::downgrade(&g));
                g
            })
            .collect();
        Gates {
            admission: self.clone(),
            routes,
        }
    }
}

impl Gates {
    /// Admits a connection of `client` on route `at` (its position in `config.routes`), or
    /// says which limit refuses it. Per-address rules come first (a client over its own limit
    /// is told so, and takes no place in the route's or the gateway's count).
    pub fn enter(&self, config: &Config, at: usize, client: IpAddr) -> Result<Ticket, Error> {
        let (route, gate) = (&config.routes[at], &self.routes[at]);
        let mut ticket = Ticket {
            admission: self.admission.clone(),
            gate: gate.clone(),
            global: false,
            route: false,
            client: None,
        };
        let rule = &route.rate_limit;
        if rule.connections_per_ip.is_some() || rule.handshakes_per_ip.is_some() {
            let client = ClientKey::new(client, config.ipv6_prefix);
            if gate.enter_client(client, rule)? {
                ticket.client = Some((client, rule.handshakes_per_ip));
            }
        }
        ticket.route = reserve(&gate.open, route.max_connections);
        if let (false, Some(max)) = (ticket.route, route.max_connections) {
            let route = gate.name.clone();
            return Err(overloaded(Capacity::Route { route, max }));
        }
        let max = config.limits.max_connections;
        ticket.global = reserve(&self.admission.open, max);
        if let (false, Some(max)) = (ticket.global, max) {
            return Err(overloaded(Capacity::Gateway { max }));
        }
        Ok(ticket)
    }
}

fn overloaded(what: Capacity) -> Error {
    Error::Overloaded {
        what,
        retry_after: RETRY_OPEN,
    }
}

/// Counts one more on `count` unless it is at `max` already (one atomic step: concurrent
/// connections can never take it past `max`).
fn reserve(count: &AtomicUsize, max: Option<usize>) -> bool {
    match max {
        None => {
            count.fetch_add(1, Relaxed);
            true
        }
        Some(max) => count
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok(),
    }
}

impl RouteGate {
    /// Counts `client` in the route's table under `rule`: `true` when it is counted (its
    /// ticket must leave the table), `false` when it was admitted untracked.
    fn enter_client(&self, client: ClientKey, rule: &RateLimit) -> Result<bool, Error> {
        let now = Instant::now();
        let mut table = lock(&self.clients);
        let (what, retry_after) = match table.enter(client, rule, now) {
            Ok(Entered::Tracked { evicted: 0 }) => return Ok(true),
            Ok(entered) => {
                if table.warn_due(entered, now) {
                    self.warn_full(entered, rule.max_tracked_clients);
                }
                return Ok(entered != Entered::Untracked);
            }
            Err(Over::Connections(max)) => (
                PerClient::Connections {
                    client: client.to_string(),
                    max,
                },
                RETRY_OPEN,
            ),
            Err(Over::Handshakes(bucket, wait)) => (
                PerClient::Handshakes {
                    client: client.to_string(),
                    rate: bucket.rate,
                    burst: bucket.burst,
                },
                wait,
            ),
        };
        Err(Error::TooManyRequests { what, retry_after })
    }

    /// The warning for a full table (once a second at most).
    fn warn_full(&self, entered: Entered, cap: usize) {
        let route = &self.name;
        match entered {
            Entered::Tracked { evicted } => log::warn!(
                "route {route}: {cap} clients are tracked for its rate_limit \
                 (max_tracked_clients); the {evicted} least recently seen without an open \
                 connection were forgotten (their handshake rate starts afresh)"
            ),
            Entered::Untracked => log::warn!(
                "route {route}: {cap} clients are tracked for its rate_limit \
                 (max_tracked_clients), each with an open connection; new clients are admitted \
                 untracked (no per-address limit) until some leave"
            ),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.global {
            self.admission.open.fetch_sub(1, Relaxed);
        }
        if self.route {
            self.gate.open.fetch_sub(1, Relaxed);
        }
        if let Some((ip, bucket)) = self.client {
            lock(&self.gate.clients).leave(ip, bucket.as_ref(), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
