//! Timers on the worker thread's driver: an entry in a deadline map, fired by the driver loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering::Relaxed;

use super::{current_or_shared, lock, Driver, TIMERS};

/// Completes once its duration has passed.
pub struct Timer {
    /// `None`: never (the duration overflowed the clock).
    deadline: Option<Instant>,
    state: State,
}

enum State {
    /// Not polled yet: it joins the driver of the thread that first polls it.
    New,
    /// In `driver`'s map under this key.
    Armed(Arc<Driver>, (Instant, u64)),
    Done,
}

impl Timer {
    /// A timer that fires `after` from now.
    pub fn after(after: Duration) -> Timer {
        Timer {
            deadline: Instant::now().checked_add(after),
            state: State::New,
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            this.disarm();
            this.state = State::Done;
            return Poll::Ready(());
        }
        match &mut this.state {
            State::New => {
                let (driver, shared) = match current_or_shared() {
                    Ok(d) => d,
                    Err(e) => {
                        // No epoll at all: nothing in the process can wait; say so.
                        log::error!("timer not armed: {e}");
                        return Poll::Pending;
                    }
                };
                let key = {
                    let mut timers = lock(&driver.timers);
                    let key = (deadline, timers.next);
                    timers.next += 1;
                    timers.map.insert(key, cx.waker().clone());
                    key
                };
                TIMERS.fetch_add(1, Relaxed);
                if shared {
                    driver.notify();
                }
                this.state = State::Armed(driver, key);
            }
            State::Armed(driver, key) => {
                let mut timers = lock(&driver.timers);
                match timers.map.get_mut(key) {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    Some(w) => *w = cx.waker().clone(),
                    // Fired: the deadline has passed after all.
                    None => return Poll::Ready(()),
                }
            }
            State::Done => return Poll::Ready(()),
        }
        Poll::Pending
    }
}

impl Timer {
    fn disarm(&mut self) {
        if let State::Armed(driver, key) = std::mem::replace(&mut self.state, State::Done) {
            lock(&driver.timers).map.remove(&key);
            TIMERS.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.disarm();
    }
}
