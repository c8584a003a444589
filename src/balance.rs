//! Stage 5a: which backend of a route a new connection tries first, and which ones next
//! (failover). Each route has a [`Balancer`] with the state its strategy needs: the smooth
//! weighted round-robin counters (nginx's algorithm) and the open connections per backend.
//!
//! `ip_hash` uses weighted rendezvous (highest random weight) hashing over a hash that never
//! changes between builds or processes: several gateways with the same config send a client to
//! the same backend with no shared state, and removing one of N backends moves only the keys
//! that were on it. The failover order is rendezvous order too (keyed by the client for
//! `ip_hash`, by a random number otherwise, so that a dead backend's load spreads).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use crate::config::{Backend, Config, Route, Sticky, Strategy};
use crate::handshake::{Head, Request};

/// The balancers of every route of a config, by position in `config.routes`.
pub struct Balancers {
    routes: Vec<Balancer>,
}

/// One route's balancing state.
struct Balancer {
    strategy: Strategy,
    weights: Vec<u64>,
    /// Stable identity of each backend for hashing (`host:port`).
    ids: Vec<String>,
    /// Smooth weighted round robin: each backend's current weight.
    current: Mutex<Vec<i64>>,
    /// Open proxied connections per backend.
    active: Vec<AtomicUsize>,
}

impl Balancers {
    /// Fresh state for `config`'s routes.
    pub fn new(config: &Config) -> Arc<Balancers> {
        Arc::new(Balancers {
            routes: config.routes.iter().map(Balancer::new).collect(),
        })
    }

    /// Backends of route `route` (its position in `config.routes`) to try, best first. With a
    /// `sticky` key, the backend that key hashes to first (the same in every process).
    pub fn candidates(&self, route: usize, client: IpAddr, sticky: Option<&[u8]>) -> Vec<usize> {
        let Some(b) = self.routes.get(route) else {
            return Vec::new();
        };
        match sticky {
            Some(key) => b.rendezvous(fnv1a(key)),
            None => b.candidates(client),
        }
    }

    /// Counts a connection on a backend until the lease is dropped.
    pub fn lease(self: &Arc<Self>, route: usize, backend: usize) -> Lease {
        if let Some(n) = self.routes.get(route).and_then(|b| b.active.get(backend)) {
            n.fetch_add(1, Relaxed);
        }
        Lease {
            balancers: self.clone(),
            route,
            backend,
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
        let b = self.balancers.routes.get(self.route);
        if let Some(n) = b.and_then(|b| b.active.get(self.backend)) {
            n.fetch_sub(1, Relaxed);
        }
    }
}

impl Balancer {
    fn new(route: &Route) -> Balancer {
        let n = route.backends.len();
        Balancer {
            strategy: route.strategy,
            weights: route.backends.iter().map(|b| u64::from(b.weight)).collect(),
            ids: route.backends.iter().map(Backend::origin).collect(),
            current: Mutex::new(vec![0; n]),
            active: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn candidates(&self, client: IpAddr) -> Vec<usize> {
        let key = match (self.strategy, client) {
            (Strategy::IpHash, IpAddr::V4(a)) => fnv1a(&a.octets()),
            (Strategy::IpHash, IpAddr::V6(a)) => fnv1a(&a.octets()),
            _ => rand::random::<u64>(),
        };
        let mut order = self.rendezvous(key);
        let first = match self.strategy {
            Strategy::RoundRobin => self.round_robin(),
            Strategy::LeastConnections => self.least_connections(),
            Strategy::Random => self.weighted_random(),
            Strategy::IpHash => order.first().copied().unwrap_or(0),
        };
        if let Some(pos) = order.iter().position(|&i| i == first) {
            order.remove(pos);
            order.insert(0, first);
        }
        order
    }

    /// nginx's smooth weighted round robin: over `sum(weights)` picks, each backend is chosen
    /// exactly `weight` times, interleaved.
    fn round_robin(&self) -> usize {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let total: i64 = self.weights.iter().map(|&w| w as i64).sum();
        let mut best = 0;
        for (i, c) in current.iter_mut().enumerate() {
            *c += self.weights[i] as i64;
        }
        for i in 1..current.len() {
            if current[i] > current[best] {
                best = i;
            }
        }
        if let Some(c) = current.get_mut(best) {
            *c -= total;
        }
        best
    }

    /// Fewest open connections per unit of weight; ties go to the heavier, then the first.
    fn least_connections(&self) -> usize {
        let load = |i: usize| {
            (
                self.active[i].load(Relaxed) as u128,
                self.weights[i] as u128,
            )
        };
        let mut best = 0;
        for i in 1..self.weights.len() {
            let ((a, wa), (b, wb)) = (load(i), load(best));
            if a * wb < b * wa || (a * wb == b * wa && wa > wb) {
                best = i;
            }
        }
        best
    }

    fn weighted_random(&self) -> usize {
        let total: u64 = self.weights.iter().sum();
        let mut r = rand::random::<u64>() % total.max(1);
        for (i, &w) in self.weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        0
    }

    /// All backends by decreasing weighted rendezvous score for `key`.
    fn rendezvous(&self, key: u64) -> Vec<usize> {
        let score = |i: usize| {
            let h = mix(key ^ fnv1a(self.ids[i].as_bytes()));
            // A uniform number in (0, 1]; the score -w / ln(u) is highest for the winner,
            // and each backend wins in proportion to its weight.
            let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            -(self.weights[i] as f64) / u.ln()
        };
        let mut scored: Vec<(f64, usize)> = (0..self.ids.len()).map(|i| (score(i), i)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, i)| i).collect()
    }
}

/// FNV-1a, 64 bits: fixed forever, so every gateway process hashes a key the same way.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finalizer: spreads the bits of a combined hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(strategy: Strategy, weights: &[u32]) -> Balancer {
        Balancer {
            strategy,
            weights: weights.iter().map(|&w| u64::from(w)).collect(),
            ids: (0..weights.len())
                .map(|i| format!("ws://b{i}:80"))
                .collect(),
            current: Mutex::new(vec![0; weights.len()]),
            active: weights.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    #[test]
    fn sticky_keys_come_from_where_the_config_says() {
        let req = Request {
            method: "GET".into(),
            target: "/ws?room=blue%20sky".into(),
            minor_version: 1,
            headers: vec![
                ("X-Session".into(), b"abc".to_vec()),
                ("Cookie".into(), b"a=1; sid=s-42 ; z=9".to_vec()),
            ],
        };
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"sub": "u7", "tenant": 12}"#).unwrap();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let key = |s: Sticky| sticky_key(&s, &req, Some("room=blue%20sky"), Some(&claims), ip);
        assert_eq!(key(Sticky::Ip), Some(vec![10, 0, 0, 9]));
        assert_eq!(
            key(Sticky::Header("x-session".into())),
            Some(b"abc".to_vec())
        );
        assert_eq!(key(Sticky::Cookie("sid".into())), Some(b"s-42".to_vec()));
        assert_eq!(key(Sticky::Cookie("nope".into())), None);
        assert_eq!(
            key(Sticky::Query("room".into())),
            Some(b"blue sky".to_vec())
        );
        assert_eq!(key(Sticky::Claim("sub".into())), Some(b"u7".to_vec()));
        assert_eq!(key(Sticky::Claim("tenant".into())), Some(b"12".to_vec()));
        assert_eq!(key(Sticky::Claim("role".into())), None);
    }

    #[test]
    fn smooth_round_robin_is_exact_and_interleaved() {
        let b = balancer(Strategy::RoundRobin, &[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| b.round_robin()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]); // nginx's sequence for 5:1:1
    }

    #[test]
    fn rendezvous_moves_only_the_removed_backends_keys() {
        let four = balancer(Strategy::IpHash, &[1, 1, 1, 1]);
        let three = Balancer {
            ids: four.ids[..3].to_vec(),
            ..balancer(Strategy::IpHash, &[1, 1, 1])
        };
        for key in 0..2000u64 {
            let k = mix(key);
            let before = four.rendezvous(k)[0];
            let after = three.rendezvous(k)[0];
            if before != 3 {
                assert_eq!(before, after, "key {key} moved without its backend going");
            }
        }
    }
}
