//! The token bucket behind every rate of the config (`handshakes_per_second_per_ip`,
//! `messages_per_second`, `bytes_per_second`): a level that refills at `rate` tokens a second
//! up to `burst`. A [`Bucket`] is its settings (the config holds them); a [`Tokens`] is only
//! its level and when it was last looked at. Imports nothing of the crate.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens added per second.
    pub rate: f64,
    /// Largest number of tokens held (what may be spent at once).
    pub burst: f64,
}

/// The longest wait announced (a bucket refilling at 0.00001/s would say a day and more).
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// A bucket's level: `level` tokens at `at`.
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    level: f64,
    at: Instant,
}

impl Tokens {
    /// A bucket that is full, whatever its burst.
    pub fn full(now: Instant) -> Tokens {
        Tokens {
            level: f64::INFINITY,
            at: now,
        }
    }

    /// Brings the level to `now`: `rate` tokens a second since the last look, at most `burst`.
    pub fn refill(&mut self, b: &Bucket, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + secs * b.rate).min(b.burst);
        self.at = self.at.max(now);
    }

    /// How long after the last refill until the level reaches `need` (zero if it has), at
    /// most [`MAX_WAIT`].
    pub fn wait_for(&self, b: &Bucket, need: f64) -> Duration {
        let secs = ((need - self.level) / b.rate).max(0.0);
        Duration::try_from_secs_f64(secs).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
    }

    /// Spends `n` tokens; the level may go below zero (a debt the next waits pay off).
    pub fn spend(&mut self, n: f64) {
        self.level -= n;
    }

    /// Spends one token, or says how long until one is back.
    pub fn take(&mut self, b: &Bucket, now: Instant) -> Result<(), Duration> {
        self.refill(b, now);
        match self.wait_for(b, 1.0) {
            Duration::ZERO => {
                self.spend(1.0);
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Whether the bucket is full at `now` (an entry for it would hold nothing new).
    pub fn is_full(&self, b: &Bucket, now: Instant) -> bool {
        let mut t = *self;
        t.refill(b, now);
        t.level >= b.burst
    }
}
