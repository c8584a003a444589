//! One route's per-client state: open connections (`rate_limit.connections_per_ip`) and the
//! handshake token bucket (`rate_limit.handshakes_per_second_per_ip`) of each client (an IPv4
//! address or an IPv6 prefix: [`ClientKey`]).
//!
//! Bounded: a client is in the table only while it has an open connection or its bucket is not
//! full (one that would start afresh anyway needs no entry). Such entries are swept out when
//! the table has doubled since the last sweep (so a sweep costs O(1) per new client,
//! amortized), and the table never holds more than `rate_limit.max_tracked_clients` clients
//! (57 bytes a slot in the hash table, 131 072 slots for 100 000 entries: 7.5 MB at the
//! default, plus 4 bytes a client for a moment while it evicts). A full table never refuses a
//! newcomer, so that whoever fills it cannot lock strangers out: it forgets the least recently
//! seen clients without an open connection (down to half full: their handshake rate starts
//! afresh), and when every client in it has an open connection, the newcomer is admitted
//! untracked (no per-address limit for that connection).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::client::ClientKey;
use crate::bucket::{Bucket, Tokens};
use crate::config::RateLimit;

/// The table is not swept below this size (a sweep of a small table is not worth it).
const MIN_SWEEP: usize = 1024;

/// A full table whose last scan freed less than a quarter of it is not scanned again for this
/// long (a scan of 100 000 entries takes about 1 ms): newcomers are admitted untracked
/// meanwhile.
const FULL_SWEEP_GAP: Duration = Duration::from_millis(100);

/// One client.
struct Entry {
    /// Connections of this client on the route, from admission to their end.
    open: u32,
    /// When it was last seen, on the table's clock (for forgetting the least recent first).
    seen: u32,
    tokens: Tokens,
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Over {
    /// `connections_per_ip` connections are open.
    Connections(u32),
    /// The handshake bucket (this rule) is empty; a token is back after this long.
    Handshakes(Bucket, Duration),
}

/// How a client was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// Counted in the table, after forgetting this many idle clients to make room for it.
    Tracked {
        /// Clients forgotten.
        evicted: usize,
    },
    /// The table is full of clients with open connections: admitted without an entry.
    Untracked,
}

/// The per-client table of one route.
pub struct Table {
    map: HashMap<ClientKey, Entry>,
    /// Counts `enter` calls: each entry's `seen` is a reading of it.
    clock: u32,
    /// The size at which the next sweep happens.
    sweep_at: usize,
    /// Until then, a full table is not scanned again.
    hold_off: Option<Instant>,
    /// When an eviction, and an untracked admission, were last logged.
    warned: (Option<Instant>, Option<Instant>),
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table {
            map: HashMap::new(),
            clock: 0,
            sweep_at: MIN_SWEEP,
            hold_off: None,
            warned: (None, None),
        }
    }

    /// Admits one connection of `client` under `rule`: spends a handshake token (every
    /// attempt does, as a handshake is what the rate counts), then counts an open connection.
    /// A newcomer to a full table is never refused: see the module's doc.
    pub fn enter(
        &mut self,
        client: ClientKey,
        rule: &RateLimit,
        now: Instant,
    ) -> Result<Entered, Over> {
        let seen = self.tick();
        let mut evicted = 0;
        if !self.map.contains_key(&client) {
            match self.make_room(rule, now) {
                Some(n) => evicted = n,
                None => return Ok(Entered::Untracked),
            }
        }
        let entry = self.map.entry(client).or_insert(Entry {
            open: 0,
            seen,
            tokens: Tokens::full(now),
        });
        entry.seen = seen;
        if let Some(b) = &rule.handshakes_per_ip {
            entry
                .tokens
                .take(b, now)
                .map_err(|w| Over::Handshakes(*b, w))?;
        }
        if let Some(max) = rule.connections_per_ip {
            if entry.open >= max {
                return Err(Over::Connections(max));
            }
        }
        entry.open += 1;
        Ok(Entered::Tracked { evicted })
    }

    /// A connection `enter` admitted (tracked) under a rule with bucket `bucket` has ended.
    pub fn leave(&mut self, client: ClientKey, bucket: Option<&Bucket>, now: Instant) {
        let Some(e) = self.map.get_mut(&client) else {
            return;
        };
        e.open = e.open.saturating_sub(1);
        if e.open == 0 && bucket.is_none_or(|b| e.tokens.is_full(b, now)) {
            self.map.remove(&client);
        }
    }

    /// Whether an admission to a full table (an eviction, or an untracked client) should be
    /// logged now: each kind once a second at most.
    pub fn warn_due(&mut self, entered: Entered, now: Instant) -> bool {
        let last = match entered {
            Entered::Tracked { .. } => &mut self.warned.0,
            Entered::Untracked => &mut self.warned.1,
        };
        let due = last.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if due {
            *last = Some(now);
        }
        due
    }

    /// Clients in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The clock's next reading. When it wraps (once in 4 billion entries), every client
    /// becomes as old as the others.
    fn tick(&mut self) -> u32 {
        self.clock = self.clock.wrapping_add(1);
        if self.clock == 0 {
            self.map.values_mut().for_each(|e| e.seen = 0);
            self.clock = 1;
        }
        self.clock
    }

    /// Room for a newcomer: `Some(clients forgotten)` when it may have an entry, `None` when
    /// it must go untracked. Sweeps out clients that need no entry when the table has doubled
    /// since the last sweep; when it is full, forgets the least recently seen idle clients too.
    fn make_room(&mut self, rule: &RateLimit, now: Instant) -> Option<usize> {
        let cap = rule.max_tracked_clients;
        if self.map.len() < self.sweep_at.min(cap) {
            return Some(0);
        }
        if self.map.len() >= cap && self.hold_off.is_some_and(|t| now < t) {
            return None;
        }
        let bucket = rule.handshakes_per_ip;
        self.map
            .retain(|_, e| e.open > 0 || bucket.is_some_and(|b| !e.tokens.is_full(&b, now)));
        let mut evicted = 0;
        if self.map.len() >= cap {
            evicted = self.evict_idle(self.map.len() + 1 - cap / 2);
        }
        let len = self.map.len();
        self.sweep_at = (2 * len).max(MIN_SWEEP);
        self.hold_off = (len >= cap - cap / 4).then_some(now + FULL_SWEEP_GAP);
        if self.map.capacity() > 4 * len.max(MIN_SWEEP) {
            self.map.shrink_to(2 * len);
        }
        (len < cap).then_some(evicted)
    }

    /// Forgets up to `n` clients without an open connection, the least recently seen first;
    /// how many.
    fn evict_idle(&mut self, n: usize) -> usize {
        let mut idle: Vec<u32> = self
            .map
            .values()
            .filter(|e| e.open == 0)
            .map(|e| e.seen)
            .collect();
        let n = n.min(idle.len());
        if n == 0 {
            return 0;
        }
        // Readings are unique: the n oldest are those up to the n-th smallest.
        let newest = *idle.select_nth_unstable(n - 1).1;
        let before = self.map.len();
        self.map.retain(|_, e| e.open > 0 || e.seen > newest);
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::MAX_WAIT;

    fn bucket(rate: f64, burst: f64) -> Bucket {
        Bucket { rate, burst }
    }

    #[test]
    fn a_bucket_spends_its_burst_then_refills_at_its_rate() {
        let b = bucket(2.0, 3.0);
        let t0 = Instant::now();
        let mut t = Tokens::full(t0);
        for _ in 0..3 {
            assert_eq!(t.take(&b, t0), Ok(()));
        }
        // Empty: one token is back in 1/2 s.
        assert_eq!(t.take(&b, t0), Err(Duration::from_millis(500)));
        // A refused attempt spends nothing: 0.2 s later, 0.3 s to go.
        let wait = t.take(&b, t0 + Duration::from_millis(200)).unwrap_err();
        assert!((wait.as_secs_f64() - 0.3).abs() < 1e-9, "{wait:?}");
        assert_eq!(t.take(&b, t0 + Duration::from_millis(500)), Ok(()));
        // Never more than the burst, however long the wait.
        let later = t0 + Duration::from_secs(3600);
        assert!(t.is_full(&b, later));
        for _ in 0..3 {
            assert_eq!(t.take(&b, later), Ok(()));
        }
        assert!(t.take(&b, later).is_err());
        assert!(!t.is_full(&b, later + Duration::from_millis(1400)));
        assert!(t.is_full(&b, later + Duration::from_millis(1500)));
    }

    #[test]
    fn a_slow_bucket_announces_a_bounded_wait() {
        let b = bucket(1e-12, 1.0);
        let now = Instant::now();
        let mut t = Tokens::full(now);
        assert_eq!(t.take(&b, now), Ok(()));
        assert_eq!(t.take(&b, now), Err(MAX_WAIT));
    }

    /// A rule for a table of at most `cap` clients.
    fn rule(per_ip: Option<u32>, b: Option<Bucket>, cap: usize) -> RateLimit {
        RateLimit {
            connections_per_ip: per_ip,
            handshakes_per_ip: b,
            max_tracked_clients: cap,
            ..RateLimit::default()
        }
    }

    /// Client `i` of 192.0.2.0/24.
    fn ip(i: u8) -> ClientKey {
        ClientKey::new([192, 0, 2, i].into(), 64)
    }

    const TRACKED: Result<Entered, Over> = Ok(Entered::Tracked { evicted: 0 });

    #[test]
    fn a_slot_is_57_bytes_as_the_docs_say() {
        let slot = std::mem::size_of::<(ClientKey, Entry)>() + 1;
        assert_eq!(slot, 57, "update the memory bound in the docs");
    }

    #[test]
    fn open_connections_are_counted_per_address() {
        let r = rule(Some(2), None, 10);
        let now = Instant::now();
        let (a, b) = (ip(1), ip(2));
        let mut t = Table::new();
        assert_eq!(t.enter(a, &r, now), TRACKED);
        assert_eq!(t.enter(a, &r, now), TRACKED);
        assert_eq!(t.enter(a, &r, now), Err(Over::Connections(2)));
        assert_eq!(t.enter(b, &r, now), TRACKED);
        t.leave(a, None, now);
        assert_eq!(t.enter(a, &r, now), TRACKED);
        for c in [a, a, b] {
            t.leave(c, None, now);
        }
        assert_eq!(
            t.len(),
            0,
            "a client without connections or tokens spent is gone"
        );
    }

    #[test]
    fn a_flood_from_one_ipv6_prefix_is_one_client() {
        let b = bucket(1.0, 3.0);
        let r = rule(None, Some(b), 16);
        let now = Instant::now();
        let mut t = Table::new();
        let from = |host: u64| {
            ClientKey::new(
                std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(host)).into(),
                64,
            )
        };
        let upgraded = (0..100_000)
            .filter(|&h| t.enter(from(h), &r, now).is_ok())
            .count();
        assert_eq!((upgraded, t.len()), (3, 1), "the /64's burst, in one entry");
        assert_eq!(t.enter(ip(1), &r, now), TRACKED, "a stranger keeps its own");
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_seen_idle_clients() {
        let b = bucket(1.0, 1.0);
        let r = rule(None, Some(b), 16);
        let now = Instant::now();
        let mut t = Table::new();
        for i in 0..16 {
            assert_eq!(t.enter(ip(i), &r, now), TRACKED);
            t.leave(ip(i), Some(&b), now);
        }
        // Every bucket is spent, so every client stays; client 0 is seen again (refused).
        assert!(t.enter(ip(0), &r, now).is_err());
        let evicted = Entered::Tracked { evicted: 1 };
        assert!(t.warn_due(evicted, now));
        assert!(!t.warn_due(evicted, now + Duration::from_millis(500)));
        assert!(t.warn_due(Entered::Untracked, now + Duration::from_millis(500)));
        // A newcomer is admitted: the 9 least recently seen are forgotten, down to half.
        assert_eq!(
            t.enter(ip(16), &r, now),
            Ok(Entered::Tracked { evicted: 9 })
        );
        assert_eq!(t.len(), 8);
        // Client 0 was seen last: still there, still out of tokens. Client 1 starts afresh.
        assert!(t.enter(ip(0), &r, now).is_err());
        assert_eq!(t.enter(ip(1), &r, now), TRACKED);
    }

    #[test]
    fn a_table_full_of_open_connections_admits_newcomers_untracked() {
        let r = rule(Some(5), None, 2);
        let t0 = Instant::now();
        let mut t = Table::new();
        assert_eq!(t.enter(ip(0), &r, t0), TRACKED);
        assert_eq!(t.enter(ip(1), &r, t0), TRACKED);
        assert_eq!(t.enter(ip(2), &r, t0), Ok(Entered::Untracked));
        assert_eq!(t.len(), 2);
        // Once a client leaves there is room again.
        t.leave(ip(0), None, t0);
        assert_eq!(t.enter(ip(2), &r, t0), TRACKED);
    }

    #[test]
    fn a_full_table_that_frees_little_is_rescanned_at_most_every_gap() {
        let b = bucket(100.0, 1.0);
        let r = rule(None, Some(b), 4);
        let t0 = Instant::now();
        let mut t = Table::new();
        for i in 0..4 {
            assert_eq!(t.enter(ip(i), &r, t0), TRACKED);
        }
        // Four open connections: nothing to free, the newcomer goes untracked.
        assert_eq!(t.enter(ip(4), &r, t0), Ok(Entered::Untracked));
        for i in 0..4 {
            t.leave(ip(i), Some(&b), t0);
        }
        // Their buckets are full after 10 ms, but the last scan was too recent...
        let soon = t0 + Duration::from_millis(20);
        assert_eq!(t.enter(ip(4), &r, soon), Ok(Entered::Untracked));
        // ...and after the gap a sweep empties the table.
        assert_eq!(t.enter(ip(4), &r, t0 + FULL_SWEEP_GAP), TRACKED);
        assert_eq!(t.len(), 1);
    }
}
