//! A direction's buffer, counted process wide: a relayed connection holds one only while bytes
//! are in flight, and [`held`] shows it (an idle connection holds none, whatever its legs'
//! transports).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Relay buffers alive, process wide.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// How many relay buffers are held, process wide (for tests and leak checks: with every
/// relayed connection idle, none).
pub fn held() -> usize {
    HELD.load(Relaxed)
}

/// Bytes of one direction, zeroed when made.
#[derive(Debug)]
pub struct Buf(Box<[u8]>);

impl Buf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> Buf {
        HELD.fetch_add(1, Relaxed);
        Buf(vec![0u8; len].into_boxed_slice())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Relaxed);
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
