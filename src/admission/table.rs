//! One route's per-address state: open connections (`rate_limit.connections_per_ip`) and the
//! handshake token bucket (`rate_limit.handshakes_per_second_per_ip`) of each client address.
//!
//! Bounded: an address is in the table only while it has an open connection or its bucket is
//! not full (an address that would start afresh anyway needs no entry). Such entries are
//! swept out when the table has doubled since the last sweep (so a sweep costs O(1) per new
//! address, amortized), and the table never holds more than `rate_limit.max_tracked_clients`
//! addresses (57 bytes a slot in the hash table, 131 072 slots for 100 000 entries: 7.5 MB at
//! the default): when it is full and a sweep frees nothing, new addresses are refused (429)
//! rather than let it grow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::bucket::{Bucket, Tokens};
use crate::config::RateLimit;

/// The table is not swept below this size (a sweep of a small table is not worth it).
const MIN_SWEEP: usize = 1024;

/// A full table is swept at most this often (a sweep of 100 000 entries takes about 1 ms).
const FULL_SWEEP_GAP: Duration = Duration::from_millis(100);

/// One client address.
struct Entry {
    /// Connections of this address on the route, from admission to their end.
    open: u32,
    tokens: Tokens,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Over {
    /// `connections_per_ip` connections are open.
    Connections(u32),
    /// The handshake bucket (this rule) is empty; a token is back after this long.
    Handshakes(Bucket, Duration),
    /// A new address, and the table is full.
    Full,
}

/// The per-address table of one route.
pub struct Table {
    map: HashMap<IpAddr, Entry>,
    /// The size at which the next sweep happens.
    sweep_at: usize,
    last_sweep: Option<Instant>,
    last_full_warning: Option<Instant>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table {
            map: HashMap::new(),
            sweep_at: MIN_SWEEP,
            last_sweep: None,
            last_full_warning: None,
        }
    }

    /// Admits one connection of `client` under `rule`: spends a handshake token (every
    /// attempt does, as a handshake is what the rate counts), then counts an open connection.
    pub fn enter(&mut self, client: IpAddr, rule: &RateLimit, now: Instant) -> Result<(), Over> {
        if !self.map.contains_key(&client) && !self.make_room(rule, now) {
            return Err(Over::Full);
        }
        let entry = self.map.entry(client).or_insert(Entry {
            open: 0,
            tokens: Tokens::full(now),
        });
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
        Ok(())
    }

    /// A connection `enter` admitted under a rule with bucket `bucket` has ended.
    pub fn leave(&mut self, client: IpAddr, bucket: Option<&Bucket>, now: Instant) {
        let Some(e) = self.map.get_mut(&client) else {
            return;
        };
        e.open = e.open.saturating_sub(1);
        if e.open == 0 && bucket.is_none_or(|b| e.tokens.is_full(b, now)) {
            self.map.remove(&client);
        }
    }

    /// Whether a refusal for a full table should be logged now (once a second at most).
    pub fn warn_full(&mut self, now: Instant) -> bool {
        let due = self
            .last_full_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if due {
            self.last_full_warning = Some(now);
        }
        due
    }

    /// Addresses in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether a new address may be added, sweeping idle entries first when the table has
    /// doubled since the last sweep (or is full, at most every [`FULL_SWEEP_GAP`]).
    fn make_room(&mut self, rule: &RateLimit, now: Instant) -> bool {
        let (len, cap) = (self.map.len(), rule.max_tracked_clients);
        if len < self.sweep_at.min(cap) {
            return true;
        }
        let recent = self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < FULL_SWEEP_GAP);
        if len >= cap && recent {
            return false;
        }
        let bucket = rule.handshakes_per_ip;
        self.map
            .retain(|_, e| e.open > 0 || bucket.is_some_and(|b| !e.tokens.is_full(&b, now)));
        self.last_sweep = Some(now);
        let len = self.map.len();
        self.sweep_at = (2 * len).max(MIN_SWEEP);
        if self.map.capacity() > 4 * len.max(MIN_SWEEP) {
            self.map.shrink_to(2 * len);
        }
        len < cap
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

    /// A rule for a table of at most `cap` addresses.
    fn rule(per_ip: Option<u32>, b: Option<Bucket>, cap: usize) -> RateLimit {
        RateLimit {
            connections_per_ip: per_ip,
            handshakes_per_ip: b,
            max_tracked_clients: cap,
            ..RateLimit::default()
        }
    }

    #[test]
    fn open_connections_are_counted_per_address() {
        let r = rule(Some(2), None, 10);
        let now = Instant::now();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut t = Table::new();
        assert_eq!(t.enter(a, &r, now), Ok(()));
        assert_eq!(t.enter(a, &r, now), Ok(()));
        assert_eq!(t.enter(a, &r, now), Err(Over::Connections(2)));
        assert_eq!(t.enter(b, &r, now), Ok(()));
        t.leave(a, None, now);
        assert_eq!(t.enter(a, &r, now), Ok(()));
        for ip in [a, a, b] {
            t.leave(ip, None, now);
        }
        assert_eq!(
            t.len(),
            0,
            "an address without connections or tokens spent is gone"
        );
    }

    #[test]
    fn the_table_stays_within_its_cap() {
        let b = bucket(1.0, 1.0);
        let r = rule(None, Some(b), 3);
        let now = Instant::now();
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        let mut t = Table::new();
        for i in 0..3 {
            assert_eq!(t.enter(ip(i), &r, now), Ok(()));
            t.leave(ip(i), Some(&b), now);
        }
        // Each bucket is spent, so each address stays: a fourth is refused...
        assert_eq!(t.enter(ip(3), &r, now), Err(Over::Full));
        assert!(t.warn_full(now));
        assert!(!t.warn_full(now + Duration::from_millis(500)));
        // ...known ones are not...
        assert_eq!(
            t.enter(ip(0), &r, now),
            Err(Over::Handshakes(b, Duration::from_secs(1)))
        );
        // ...and once their buckets are full again, a sweep makes room.
        let later = now + Duration::from_secs(1);
        assert_eq!(t.enter(ip(3), &r, later), Ok(()));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_address_without_connections_leaves_at_once() {
        let r = rule(Some(5), None, 2);
        let now = Instant::now();
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        let mut t = Table::new();
        assert_eq!(t.enter(ip(0), &r, now), Ok(()));
        assert_eq!(t.enter(ip(1), &r, now), Ok(()));
        assert_eq!(t.enter(ip(2), &r, now), Err(Over::Full));
        t.leave(ip(0), None, now);
        assert_eq!(t.enter(ip(2), &r, now), Ok(()));
    }

    #[test]
    fn a_full_table_is_swept_at_most_every_gap() {
        let b = bucket(100.0, 1.0);
        let r = rule(None, Some(b), 2);
        let t0 = Instant::now();
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        let mut t = Table::new();
        for i in 0..2 {
            assert_eq!(t.enter(ip(i), &r, t0), Ok(()));
            t.leave(ip(i), Some(&b), t0);
        }
        assert_eq!(t.enter(ip(2), &r, t0), Err(Over::Full));
        // Both buckets are full again after 10 ms, but the last sweep was too recent.
        let soon = t0 + Duration::from_millis(20);
        assert_eq!(t.enter(ip(2), &r, soon), Err(Over::Full));
        assert_eq!(t.enter(ip(2), &r, t0 + FULL_SWEEP_GAP), Ok(()));
        assert_eq!(t.len(), 1);
    }
}
