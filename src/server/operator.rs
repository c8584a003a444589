//! What the admin listener reads from the gateway and asks of it ([`crate::admin::Gateway`]):
//! the state of every backend, and the operators' drains. A drain is kept by the gateway, by
//! route (`external_path`) and backend (`host:port`), and applied to each generation's
//! balancers, so that it outlives reloads (until it is undone, or the process ends: an
//! upgrade's new process starts with none).

use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use super::{Drained, Gateway, Generation};
use crate::admin::{BackendStatus, Status};

impl Generation {
    /// What the admin endpoints report about this generation.
    pub fn status(&self, shutting_down: bool) -> Status {
        let mut backends = Vec::new();
        for (at, route) in self.config.routes.iter().enumerate() {
            for (i, b) in route.backends.iter().enumerate() {
                backends.push(BackendStatus {
                    route: route.external.as_str().to_string(),
                    origin: b.origin(),
                    address: format!("{}:{}", b.host, b.port),
                    state: self.balancers.state(at, i),
                });
            }
        }
        let config = &self.config;
        let loopback = config.admin.as_ref().is_some_and(|(host, _)| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        Status {
            backends,
            shutting_down,
            token: config.admin_token.clone(),
            loopback,
            close_spread: config.close_spread,
        }
    }

    /// The positions of backend `address` (`host:port`) in route `route`, by route.
    fn find(&self, route: &str, address: &str) -> Option<(usize, Vec<usize>)> {
        let at = (self.config.routes.iter()).position(|r| r.external.as_str() == route)?;
        let found: Vec<usize> = (self.config.routes[at].backends.iter().enumerate())
            .filter(|(_, b)| format!("{}:{}", b.host, b.port) == address)
            .map(|(i, _)| i)
            .collect();
        (!found.is_empty()).then_some((at, found))
    }
}

impl Gateway {
    /// Applies the operators' drains to `next` (a reload's generation); no drain changes
    /// while the returned guard is held.
    pub(super) fn keep_drained(&self, next: &Generation) -> MutexGuard<'_, Drained> {
        let drained = self.drained.lock().unwrap_or_else(PoisonError::into_inner);
        for (route, address) in drained.iter() {
            if let Some((at, found)) = next.find(route, address) {
                for i in found {
                    next.balancers.set_drained(at, i, true);
                }
            }
        }
        drained
    }
}

impl crate::admin::Gateway for Gateway {
    fn status(&self) -> Status {
        self.generation()
            .status(self.shutting_down.load(Ordering::SeqCst))
    }

    fn set_drained(&self, route: &str, address: &str, drained: bool) -> Result<(), String> {
        // Locked first: a reload's generation takes the drains after this one is applied.
        let mut all = self.drained.lock().unwrap_or_else(PoisonError::into_inner);
        let g = self.generation();
        let Some((at, found)) = g.find(route, address) else {
            return Err(format!(
                "no backend {address} in route {route} of the config in force"
            ));
        };
        all.retain(|(r, a)| (r.as_str(), a.as_str()) != (route, address));
        if drained {
            all.push((route.to_string(), address.to_string()));
        }
        for i in found {
            g.balancers.set_drained(at, i, drained);
        }
        Ok(())
    }
}
