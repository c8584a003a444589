//! The passive circuit breaker of one backend of a route: `failure_threshold` failed connects
//! in a row open it; while open the backend gets no new connections; after `open_ms` one trial
//! connection (half-open) decides whether it closes again or stays open for another `open_ms`.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::CircuitBreaker;
use crate::plural::count;

/// One backend's breaker.
pub struct Circuit {
    settings: CircuitBreaker,
    /// `routers[0] (/ws/chat): backend ws://host:port`, for the logs.
    name: String,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connections flow; `failures` connects in a row have failed.
    Closed { failures: u32 },
    /// No connection until `until`; then the next one is the trial.
    Open { until: Instant },
    /// The trial connection is under way; nobody else gets through.
    HalfOpen,
}

/// What the breaker says to a connection about to try the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Yes,
    /// Go ahead: you are the half-open trial, and your result decides.
    Trial,
    /// Not now; it may be worth asking again after this long.
    No(Duration),
}

impl Circuit {
    /// A closed breaker.
    pub fn new(settings: CircuitBreaker, name: String) -> Circuit {
        Circuit {
            settings,
            name,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the breaker would let a connection through now (without taking the trial).
    pub fn peek(&self, now: Instant) -> Admit {
        match *self.state() {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } if now >= until => Admit::Trial,
            State::Open { until } => Admit::No(until - now),
            // A trial is bounded by the connect timeout; ask again in a second.
            State::HalfOpen => Admit::No(Duration::from_secs(1)),
        }
    }

    /// Lets a connection through, or not; an expired open breaker turns half-open and this
    /// connection is its trial.
    pub fn admit(&self, now: Instant) -> Admit {
        let mut state = self.state();
        let admit = match *state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                log::info!(
                    "{}: circuit half-open: one trial connection decides",
                    self.name
                );
                Admit::Trial
            }
            State::Open { until } => Admit::No(until - now),
            State::HalfOpen => Admit::No(Duration::from_secs(1)),
        };
        admit
    }

    /// The backend answered (101, or a 4xx that is its own answer).
    pub fn succeeded(&self) {
        let mut state = self.state();
        if *state == State::HalfOpen {
            log::info!(
                "{}: circuit closed: the trial connection succeeded",
                self.name
            );
        }
        if !matches!(*state, State::Open { .. }) {
            *state = State::Closed { failures: 0 };
        }
    }

    /// The backend refused, timed out or broke the handshake (`why`).
    pub fn failed(&self, why: &str) {
        let threshold = self.settings.failure_threshold;
        if threshold == 0 {
            return;
        }
        let open_ms = self.settings.open.as_millis();
        let until = Instant::now() + self.settings.open;
        let mut state = self.state();
        match *state {
            State::Closed { failures } if failures + 1 >= threshold => {
                *state = State::Open { until };
                log::info!(
                    "{}: circuit open after {} in a row (last: {why}); \
                     no new connections for {open_ms} ms",
                    self.name,
                    count(failures as usize + 1, "failed connect")
                );
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                }
            }
            State::HalfOpen => {
                *state = State::Open { until };
                log::info!(
                    "{}: circuit open again: the trial connection failed ({why}); \
                     no new connections for {open_ms} ms",
                    self.name
                );
            }
            // An attempt that started before the breaker opened: it is open already.
            State::Open { .. } => {}
        }
    }

    /// The trial ended without a result (its client left): the next connection is the trial.
    pub fn abandoned(&self) {
        let mut state = self.state();
        if *state == State::HalfOpen {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(threshold: u32, open_ms: u64) -> Circuit {
        let settings = CircuitBreaker {
            failure_threshold: threshold,
            open: Duration::from_millis(open_ms),
        };
        Circuit::new(settings, "test".into())
    }

    #[test]
    fn opens_after_the_threshold_and_one_trial_decides() {
        let c = circuit(3, 60_000);
        let now = Instant::now();
        c.failed("refused");
        c.failed("refused");
        assert_eq!(c.admit(now), Admit::Yes);
        c.succeeded(); // a success in between resets the count
        for _ in 0..3 {
            assert_eq!(c.admit(now), Admit::Yes);
            c.failed("refused");
        }
        assert!(matches!(c.admit(now), Admit::No(d) if d > Duration::from_secs(59)));
        let later = now + Duration::from_secs(61);
        assert_eq!(c.peek(later), Admit::Trial);
        assert_eq!(c.admit(later), Admit::Trial);
        assert!(matches!(c.admit(later), Admit::No(_)), "only one trial");
        c.failed("refused");
        assert!(
            matches!(c.admit(Instant::now()), Admit::No(_)),
            "open again"
        );
        let much_later = Instant::now() + Duration::from_secs(61);
        assert_eq!(c.admit(much_later), Admit::Trial);
        c.succeeded();
        assert_eq!(c.admit(much_later), Admit::Yes);
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_connection_try() {
        let c = circuit(1, 10);
        c.failed("refused");
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(c.admit(later), Admit::Trial);
        c.abandoned();
        assert_eq!(c.admit(later), Admit::Trial);
    }

    #[test]
    fn a_zero_threshold_never_opens() {
        let c = circuit(0, 10);
        for _ in 0..100 {
            c.failed("refused");
        }
        assert_eq!(c.admit(Instant::now()), Admit::Yes);
    }
}
