//! Drains that reloads and the shutdown start, per route and backend. Every generation has one
//! [`Drain`] per backend of each of its routes, and a relayed connection watches the one of
//! its route and backend. A reload that removes a route, or a backend from a route, begins the
//! drains of the connections that were using it, in every generation still alive (1012
//! "service restart", spread over `server.close_spread_ms`); every other connection is left
//! alone. The shutdown begins them all (1001).

use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::Generation;
use crate::config::{Backend, Config};
use crate::drain::{Cause, Drain};

/// One drain per backend of each route: `[route][backend]`.
pub(super) fn drains(config: &Config) -> Vec<Vec<Arc<Drain>>> {
    (config.routes.iter())
        .map(|r| r.backends.iter().map(|_| Drain::new()).collect())
        .collect()
}

/// The generations that may still have connections: each reload adds one, the dead are
/// forgotten.
#[derive(Default)]
pub(super) struct Generations(Mutex<Vec<Weak<Generation>>>);

impl Generations {
    /// Remembers `g`; forgets the generations no connection holds any more.
    pub(super) fn add(&self, g: &Arc<Generation>) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(g));
    }

    /// The generations alive now.
    fn alive(&self) -> Vec<Arc<Generation>> {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter().filter_map(Weak::upgrade).collect()
    }

    /// A reload put `next` in force: the connections of every route it no longer has, and of
    /// every backend a kept route no longer has, are drained (1012). Returns how many drains
    /// began (a route's backend each).
    pub(super) fn retire_removed(&self, next: &Config) -> usize {
        let spread = next.close_spread;
        let mut begun = 0;
        for g in self.alive() {
            for (r, route) in g.config.routes.iter().enumerate() {
                let kept = next
                    .routes
                    .iter()
                    .find(|n| n.external.as_str() == route.external.as_str());
                for (b, backend) in route.backends.iter().enumerate() {
                    let gone = kept.is_none_or(|n| !n.backends.iter().any(|k| same(k, backend)));
                    if let (true, Some(d)) = (gone, g.retired.get(r).and_then(|v| v.get(b))) {
                        if !d.is_on() {
                            d.begin_for(Cause::Restart, spread);
                            begun += 1;
                        }
                    }
                }
            }
        }
        begun
    }

    /// The shutdown: every relayed connection of every generation is drained (1001).
    pub(super) fn shut_down(&self, spread: std::time::Duration) {
        for g in self.alive() {
            for d in g.retired.iter().flatten() {
                d.begin_for(Cause::Shutdown, spread);
            }
        }
    }
}

/// Whether two backends are the same server: scheme, host and port (weights and the rest may
/// change without draining anything).
fn same(a: &Backend, b: &Backend) -> bool {
    a.tls == b.tls && a.host == b.host && a.port == b.port
}
