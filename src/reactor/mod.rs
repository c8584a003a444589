//! The I/O driver: one edge-triggered epoll per worker thread, with its timers.
//!
//! async-io (smol's reactor) registers sockets one-shot, so every wait for readiness costs an
//! `epoll_ctl` to re-arm it; every wait of its poller also sets a timerfd and drains an eventfd,
//! and every new timer wakes its thread. For a relayed WebSocket that was more system calls than
//! the data itself (strace, 64 B echo: 5 per message against nginx's 2; a connect + echo + close
//! cycle: 17 `epoll_ctl`). So the gateway's sockets and timers live here instead: a socket is
//! registered once, edge-triggered, with readiness kept per direction ([`io`]); a timer is an
//! entry in its thread's deadline map ([`timer`]). Each worker thread runs [`block_on`], which
//! runs the executor and, when that has nothing to do, waits on its own epoll until the next
//! deadline. A socket or timer made on a thread without a driver (a test's, say) joins the shared
//! driver, one thread started on first use ([`shared`]). TLS (the listener's clients, `wss://`
//! backends) runs over these sockets; only DNS runs on the blocking pool. There is no other I/O
//! loop in the process.

pub mod io;
pub mod timer;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};
use rustix::fd::OwnedFd;

pub use io::{Listener, Pipe, Socket};
pub use timer::Timer;

/// The key of the driver's own wake-up eventfd.
const NOTIFY: u64 = u64::MAX;

/// Events taken from the kernel per wait.
const EVENTS: usize = 256;

thread_local! {
    /// The driver of this worker thread (none outside [`block_on`]).
    static CURRENT: std::cell::RefCell<Option<Arc<Driver>>> = const { std::cell::RefCell::new(None) };
}

/// Sockets registered with a driver, and timers armed, in the whole process.
static SOCKETS: AtomicUsize = AtomicUsize::new(0);
static TIMERS: AtomicUsize = AtomicUsize::new(0);

/// How many sockets are registered with the drivers and how many timers are armed, process
/// wide (for leak checks and the logs).
pub fn counts() -> (usize, usize) {
    (SOCKETS.load(Relaxed), TIMERS.load(Relaxed))
}

/// This thread's driver, if it runs [`block_on`].
pub(crate) fn current() -> Option<Arc<Driver>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// This thread's driver, or else the shared one (whose thread starts on first use), and
/// whether it is the shared one (which a new timer must wake: it may be asleep with a later
/// deadline).
pub(crate) fn current_or_shared() -> std::io::Result<(Arc<Driver>, bool)> {
    if let Some(d) = current() {
        return Ok((d, false));
    }
    static SHARED: std::sync::OnceLock<Result<Arc<Driver>, String>> = std::sync::OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        let driver = Arc::new(Driver::new().map_err(|e| e.to_string())?);
        let d = driver.clone();
        std::thread::Builder::new()
            .name("kairos-io".into())
            .spawn(move || {
                let (mut events, mut wakers) = (Vec::with_capacity(EVENTS), Vec::new());
                loop {
                    d.wait(&mut events, true);
                    d.dispatch(&events, &mut wakers);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(driver)
    });
    match shared {
        Ok(d) => Ok((d.clone(), true)),
        Err(e) => Err(std::io::Error::other(format!("no I/O driver: {e}"))),
    }
}

/// Runs `future` on this thread, with a driver for the sockets and timers made here.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let driver = match Driver::new() {
        Ok(d) => Arc::new(d),
        Err(e) => {
            log::warn!("cannot create an epoll instance ({e}); this thread's sockets use the shared driver");
            return futures_lite::future::block_on(future);
        }
    };
    CURRENT.with(|c| *c.borrow_mut() = Some(driver.clone()));
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(false),
        sleeping: AtomicBool::new(false),
        driver: driver.clone(),
    });
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut events = Vec::with_capacity(EVENTS);
    let mut wakers = Vec::new();
    loop {
        signal.woken.store(false, SeqCst);
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            CURRENT.with(|c| *c.borrow_mut() = None);
            return out;
        }
        let mut block = false;
        if !signal.woken.load(SeqCst) {
            // Announce the sleep, then look once more: a waker either sees `sleeping` (and
            // writes the eventfd) or set `woken` before this look.
            signal.sleeping.store(true, SeqCst);
            block = !signal.woken.load(SeqCst);
        }
        driver.wait(&mut events, block);
        // Awake: the wake-ups below reach the executor without the eventfd.
        signal.sleeping.store(false, SeqCst);
        driver.dispatch(&events, &mut wakers);
    }
}

/// Wakes a [`block_on`] loop, from any thread.
struct Signal {
    woken: AtomicBool,
    sleeping: AtomicBool,
    driver: Arc<Driver>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        if self.sleeping.swap(false, SeqCst) {
            self.driver.notify();
        }
    }
}

pub(crate) struct Driver {
    epoll: OwnedFd,
    notify: OwnedFd,
    sources: Mutex<Slab>,
    timers: Mutex<Timers>,
}

/// Registered sockets by key (the epoll data).
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Arc<Source>>>,
    free: Vec<usize>,
}

/// Pending timers by deadline (and a sequence number, for equal deadlines).
#[derive(Default)]
struct Timers {
    map: BTreeMap<(Instant, u64), Waker>,
    next: u64,
}

/// What a socket's edges told since its last read or write, and who waits for the next one.
/// The flags are atomics so that a read or write that does not block takes no lock; an edge
/// sets a flag and takes its waker under `waiting`, and a task checks the flag again under it
/// before it parks, so no edge is lost.
struct Source {
    readable: AtomicBool,
    writable: AtomicBool,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    reader: Option<Waker>,
    writer: Option<Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Driver {
    /// Wakes the driver's thread (to look at its timers again).
    fn notify(&self) {
        // Nothing to do if it fails: the counter is full, so a wake-up is pending anyway.
        let _ = rustix::io::write(&self.notify, &1u64.to_ne_bytes());
    }

    fn new() -> std::io::Result<Driver> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let notify = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let flags = EventFlags::IN | EventFlags::ET;
        epoll::add(&epoll, &notify, EventData::new_u64(NOTIFY), flags)?;
        Ok(Driver {
            epoll,
            notify,
            sources: Mutex::default(),
            timers: Mutex::default(),
        })
    }

    /// Takes the ready events; when `block`, waits for one or for the next deadline.
    fn wait(&self, events: &mut Vec<epoll::Event>, block: bool) {
        events.clear();
        let timeout = if block {
            lock(&self.timers).map.keys().next().map(|&(deadline, _)| {
                // Whole milliseconds, rounded up: waking early would only spin.
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = left.as_nanos().div_ceil(1_000_000);
                let ms = ms.min(i32::MAX as u128) as i64;
                Timespec {
                    tv_sec: ms / 1000,
                    tv_nsec: (ms % 1000) * 1_000_000,
                }
            })
        } else {
            Some(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })
        };
        if let Err(e) = epoll::wait(&self.epoll, spare_capacity(events), timeout.as_ref()) {
            if e != rustix::io::Errno::INTR {
                log::error!("epoll_wait failed: {e}");
            }
        }
    }

    /// Records the events' readiness, fires due timers, and wakes the tasks waiting for them.
    fn dispatch(&self, events: &[epoll::Event], wakers: &mut Vec<Waker>) {
        if !events.is_empty() {
            let sources = lock(&self.sources);
            for event in events.iter() {
                let key = event.data.u64();
                if key == NOTIFY {
                    let _ = rustix::io::read(&self.notify, &mut [0u8; 8]);
                    continue;
                }
                if let Some(Some(source)) = sources.slots.get(key as usize) {
                    source.ready(event.flags, wakers);
                }
            }
        }
        {
            let mut timers = lock(&self.timers);
            if !timers.map.is_empty() {
                let now = Instant::now();
                while let Some(entry) = timers.map.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    wakers.push(entry.remove());
                }
            }
        }
        for w in wakers.drain(..) {
            w.wake();
        }
    }
}

impl Source {
    fn ready(&self, flags: EventFlags, wakers: &mut Vec<Waker>) {
        let broken = flags.intersects(EventFlags::ERR | EventFlags::HUP);
        let mut w = lock(&self.waiting);
        if broken || flags.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::PRI) {
            self.readable.store(true, SeqCst);
            wakers.extend(w.reader.take());
        }
        if broken || flags.contains(EventFlags::OUT) {
            self.writable.store(true, SeqCst);
            wakers.extend(w.writer.take());
        }
    }
}

/// Keeps `cx`'s waker in `slot` (cloning it only when it changed).
fn store(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}
