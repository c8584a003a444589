//! A direction's buffer, counted process wide: a relayed connection holds one only while bytes
//! are in flight, and [`held`] shows it (an idle connection holds none, whatever its legs'
//! transports).
//!
//! A buffer of one of the two sizes the relay reads with goes back to its thread's small pool
//! when it is dropped, and the next message of any connection on that thread takes it from
//! there: zeroing and allocating a buffer per message was a third of the instructions of a
//! lone echo (callgrind: `memset`). At most [`POOLED`] of each size wait there, so what an idle
//! gateway keeps is bounded (8 x (2 + 16) KiB = 144 KiB per worker at worst, after a burst). A reused
//! buffer holds an earlier message's bytes: the relay only ever reads the part a read filled.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::direction::{BUF, SMALL_BUF};

/// Buffers of each pooled size kept per thread.
pub const POOLED: usize = 8;

thread_local! {
    /// Freed buffers of [`SMALL_BUF`] and [`BUF`] bytes, to be used again.
    static POOL: RefCell<[Vec<Box<[u8]>>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// The pool slot for a buffer of `len` bytes, if that size is pooled.
fn slot(len: usize) -> Option<usize> {
    match len {
        SMALL_BUF => Some(0),
        BUF => Some(1),
        _ => None,
    }
}

/// Relay buffers alive, process wide.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// How many relay buffers are held, process wide (for tests and leak checks: with every
/// relayed connection idle, none).
pub fn held() -> usize {
    HELD.load(Relaxed)
}

/// Bytes of one direction: zeroed when new, an earlier message's bytes when pooled.
#[derive(Debug)]
pub struct Buf(Box<[u8]>);

impl Buf {
    /// A buffer of `len` bytes (from this thread's pool when it has one of that size).
    pub fn new(len: usize) -> Buf {
        HELD.fetch_add(1, Relaxed);
        let pooled = slot(len).and_then(|i| POOL.with(|p| p.borrow_mut()[i].pop()));
        Buf(pooled.unwrap_or_else(|| vec![0u8; len].into_boxed_slice()))
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Relaxed);
        if let Some(i) = slot(self.0.len()) {
            let bytes = std::mem::take(&mut self.0);
            // A thread that is ending has no pool left: the buffer is simply freed.
            let _ = POOL.try_with(|p| {
                let list = &mut p.borrow_mut()[i];
                if list.len() < POOLED {
                    list.push(bytes);
                }
            });
        }
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_sizes_are_reused_on_their_thread_and_the_pool_is_bounded() {
        std::thread::spawn(|| {
            let first = Buf::new(SMALL_BUF);
            let at = first.as_ptr();
            drop(first);
            assert_eq!(Buf::new(SMALL_BUF).as_ptr(), at, "reused");
            // Other sizes are not pooled.
            drop(Buf::new(SMALL_BUF + 1));
            assert!(POOL.with(|p| p.borrow()[0].len()) <= 1);
            let many: Vec<Buf> = (0..3 * POOLED).map(|_| Buf::new(BUF)).collect();
            drop(many);
            assert_eq!(POOL.with(|p| p.borrow()[1].len()), POOLED);
        })
        .join()
        .expect("test thread");
    }
}
