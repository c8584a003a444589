//! Graceful shutdown's word to every task: once [`Drain::begin`] is called, every [`Watcher`]
//! is ready (and its task woken). A connection's relay checks a flag on each wake-up and
//! registers its waker once, so watching costs nothing per frame. The drain also says when,
//! within its spread, each relayed connection is to close ([`Drain::close_at`]): at a random
//! moment, so that the clients do not all reconnect at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The shutdown flag of one gateway, and the tasks to wake when it is raised.
#[derive(Default)]
pub struct Drain {
    /// Whether it began (read on every wake-up of a watcher, without the lock).
    on: AtomicBool,
    wakers: Mutex<Wakers>,
    /// When it began, the window its closes are spread over, and why.
    began: Mutex<Option<(Instant, Duration, Cause)>>,
}

#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Drain {
    /// A drain not begun.
    pub fn new() -> Arc<Drain> {
        Arc::default()
    }

    /// Raises the flag and wakes every watcher; relayed connections close over `spread`.
    pub fn begin(&self, spread: Duration) {
        self.begin_for(Cause::Shutdown, spread);
    }

    /// [`Drain::begin`], saying why. A drain begins once: a later call changes nothing.
    pub fn begin_for(&self, cause: Cause, spread: Duration) {
        {
            let mut began = self.began();
            if began.is_some() {
                return;
            }
            *began = Some((Instant::now(), spread, cause));
        }
        self.on.store(true, SeqCst);
        let wakers: Vec<Waker> = self
            .lock()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Whether the drain has begun.
    pub fn is_on(&self) -> bool {
        self.on.load(SeqCst)
    }

    /// A moment for one relayed connection to close: uniformly random within the spread
    /// from the drain's start (now, when the drain has not begun or has no spread).
    pub fn close_at(&self) -> Instant {
        let began = *self.began();
        match began {
            Some((begun, spread, _)) if !spread.is_zero() => {
                begun + spread.mul_f64(rand::random::<f64>())
            }
            _ => Instant::now(),
        }
    }

    /// A future that is ready once the drain begins.
    pub fn watch(self: &Arc<Self>) -> Watcher {
        Watcher {
            drain: self.clone(),
            slot: None,
        }
    }

    fn began(&self) -> MutexGuard<'_, Option<(Instant, Duration, Cause)>> {
        self.began.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, Wakers> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a drain began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The gateway is shutting down.
    Shutdown,
    /// A reload removed what the connections use (their route, or their backend from it).
    Restart,
}

/// Ready once its drain has begun. Its task's waker is registered on the first poll only: a
/// task keeps one waker for its life.
pub struct Watcher {
    drain: Arc<Drain>,
    slot: Option<usize>,
}

impl Watcher {
    /// When this task's connection is to close, once the drain has begun ([`Drain::close_at`]).
    pub fn close_at(&self) -> Instant {
        self.drain.close_at()
    }

    /// Why the drain began (once it has).
    pub fn cause(&self) -> Cause {
        self.drain
            .began()
            .map_or(Cause::Shutdown, |(_, _, cause)| cause)
    }

    /// True once the drain has begun; otherwise makes sure this task is woken when it does.
    pub fn poll_begun(&mut self, cx: &mut Context<'_>) -> bool {
        if self.drain.is_on() {
            return true;
        }
        if self.slot.is_none() {
            let mut w = self.drain.lock();
            let slot = match w.free.pop() {
                Some(i) => i,
                None => {
                    w.slots.push(None);
                    w.slots.len() - 1
                }
            };
            w.slots[slot] = Some(cx.waker().clone());
            self.slot = Some(slot);
            drop(w);
            // Raised between the first check and the registration: do not miss it.
            return self.drain.is_on();
        }
        false
    }
}

impl Future for Watcher {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.get_mut().poll_begun(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut w = self.drain.lock();
            if let Some(s) = w.slots.get_mut(i) {
                *s = None;
            }
            w.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_wake_when_the_drain_begins() {
        let drain = Drain::new();
        let watcher = drain.watch();
        let other = drain.watch();
        drop(other); // its slot is freed and reused
        let d = drain.clone();
        let t = std::thread::spawn(move || smol::block_on(watcher));
        // The watcher may or may not have registered yet: either way it must finish.
        d.begin(Duration::ZERO);
        t.join().unwrap();
        let mut late = drain.watch();
        let waker = std::task::Waker::noop();
        assert!(late.poll_begun(&mut Context::from_waker(waker)));
    }
}
