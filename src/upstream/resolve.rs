//! Stage 5, before the TCP connect: a backend's name to its addresses.
//!
//! The lookup (getaddrinfo) blocks, so it runs on the blocking pool (the `blocking` crate), shared by the whole
//! process. Without care, one name that does not resolve fills that pool with stalled lookups,
//! one per connection, and the connects of every other backend wait behind them (issue 13:
//! 2,000 upgrades to such a route made a healthy `ws://localhost` route answer 504). So here:
//! one lookup per name and port at a time, the later askers waiting for its answer; at most
//! [`MAX_WAITING_PER_NAME`] of them (past it, the caller answers 503); an answer kept for
//! `limits.dns_cache_ms`, a failure for at most [`FAILURE_TTL`] (so that a name that fails
//! does not run the blocking lookup again for each connection). IP addresses and `localhost`
//! need no lookup. Hands the connect the addresses to try, in the resolver's order.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_lock::OnceCell;

/// Connections that may wait for one name's lookup under way. A lookup that answers takes
/// milliseconds, so this many are only waiting when the resolver stalls; the next ones are
/// refused at once rather than held for the connect timeout.
pub const MAX_WAITING_PER_NAME: usize = 128;

/// How long a failed lookup is remembered (at most `limits.dns_cache_ms`): connections in
/// that time fail at once instead of each running the lookup again. Also the `Retry-After`
/// of a connection refused for [`MAX_WAITING_PER_NAME`].
pub const FAILURE_TTL: Duration = Duration::from_secs(1);

/// The blocking lookup: the system's (`getaddrinfo`), or a test's.
type LookupFn = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// Addresses, or why there are none.
type Answer = Result<Arc<[SocketAddr]>, String>;

/// Why a name gave no addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// [`MAX_WAITING_PER_NAME`] connections already wait for this name's lookup.
    Busy,
    /// The lookup failed (the text says why, naming the host).
    Failed(String),
}

/// The names looked up, and the lookups under way.
pub struct Resolver {
    lookups: Mutex<HashMap<(String, u16), Arc<Lookup>>>,
    lookup: Arc<LookupFn>,
    max_waiting: usize,
    failure_ttl: Duration,
}

/// One lookup of a name: under way until its answer is set.
#[derive(Default)]
struct Lookup {
    /// The answer, and when it came.
    answer: OnceCell<(Answer, Instant)>,
    /// Connections waiting for it.
    waiting: AtomicUsize,
}

impl Lookup {
    /// Whether an asker may use this lookup: under way (to wait for it), or answered within
    /// `ttl` (`failure_ttl` for a failure).
    fn usable(&self, now: Instant, ttl: Duration, failure_ttl: Duration) -> bool {
        match self.answer.get() {
            None => true,
            Some((Ok(_), at)) => now.saturating_duration_since(*at) < ttl,
            Some((Err(_), at)) => now.saturating_duration_since(*at) < ttl.min(failure_ttl),
        }
    }
}

/// Counts a connection waiting for a lookup while it lives (it may be dropped: client gone).
struct Waiting<'a>(&'a Lookup);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
    }
}

impl Resolver {
    /// A resolver running `lookup` on the blocking pool, with at most `max_waiting`
    /// connections waiting for one name, and failures remembered for `failure_ttl`.
    pub fn new(
        lookup: impl Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
        max_waiting: usize,
        failure_ttl: Duration,
    ) -> Resolver {
        Resolver {
            lookups: Mutex::default(),
            lookup: Arc::new(lookup),
            max_waiting,
            failure_ttl,
        }
    }

    /// The process's resolver: the system's lookup, [`MAX_WAITING_PER_NAME`], [`FAILURE_TTL`].
    /// Shared by every config generation (a reload keeps what was looked up).
    pub fn system() -> &'static Resolver {
        static SYSTEM: OnceLock<Resolver> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let lookup = |host: &str, port| Ok((host, port).to_socket_addrs()?.collect());
            Resolver::new(lookup, MAX_WAITING_PER_NAME, FAILURE_TTL)
        })
    }

    /// The addresses of `host` (a name, an IP address, or `localhost`) and `port`; an answer
    /// less than `ttl` old is reused.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        ttl: Duration,
    ) -> Result<Arc<[SocketAddr]>, Failure> {
        if let Some(addrs) = literal(host, port) {
            return Ok(addrs);
        }
        let lookup = self.lookup_for(host, port, ttl);
        if let Some((answer, _)) = lookup.answer.get() {
            return answer.clone().map_err(Failure::Failed);
        }
        if lookup.waiting.fetch_add(1, SeqCst) >= self.max_waiting {
            lookup.waiting.fetch_sub(1, SeqCst);
            return Err(Failure::Busy);
        }
        let _waiting = Waiting(&lookup);
        let (answer, _) = lookup.answer.wait().await;
        answer.clone().map_err(Failure::Failed)
    }

    /// The lookup of `host`, `port` to use: the last one, when under way or answered within
    /// `ttl`; else a new one, started. Lookups no longer usable are dropped then.
    fn lookup_for(&self, host: &str, port: u16, ttl: Duration) -> Arc<Lookup> {
        let now = Instant::now();
        let mut lookups = self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (host.to_string(), port);
        if let Some(l) = lookups.get(&key) {
            if l.usable(now, ttl, self.failure_ttl) {
                return l.clone();
            }
        }
        lookups.retain(|_, l| l.usable(now, ttl, self.failure_ttl));
        let l = Arc::new(Lookup::default());
        lookups.insert(key, l.clone());
        self.start(host, port, l.clone());
        l
    }

    /// Runs the blocking lookup on the blocking pool; it sets its answer whether or not
    /// anyone still waits for it.
    fn start(&self, host: &str, port: u16, to: Arc<Lookup>) {
        let (run, host) = (self.lookup.clone(), host.to_string());
        blocking::unblock(move || {
            let answer = match run(&host, port) {
                Ok(addrs) => Ok(addrs.into()),
                Err(e) => Err(format!("cannot resolve {host}: {e}")),
            };
            let _ = to.answer.set_blocking((answer, Instant::now()));
        })
        .detach();
    }
}

/// The addresses of a host that needs no lookup: an IP address, or `localhost` (RFC 6761:
/// loopback, IPv4 first).
fn literal(host: &str, port: u16) -> Option<Arc<[SocketAddr]>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Arc::new([SocketAddr::new(ip, port)]));
    }
    let local = host.strip_suffix('.').unwrap_or(host);
    local.eq_ignore_ascii_case("localhost").then(|| {
        Arc::from([
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ])
    })
}

#[cfg(test)]
mod tests;
