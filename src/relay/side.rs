//! The two legs of a relayed connection by name: a [`Side`], and [`Both`], one thing per side.

use std::fmt;
use std::ops::{Index, IndexMut};

use crate::metrics;

/// A leg of the connection, or what comes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's leg: frames from it are masked, frames to it are not.
    Client,
    /// The backend's leg: frames to it are masked (with the gateway's own key).
    Backend,
}

impl Side {
    /// Both sides, the client first.
    pub const BOTH: [Side; 2] = [Side::Client, Side::Backend];

    /// The other leg.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }

    /// Who sent a close frame, for the metrics.
    pub fn closer(self) -> metrics::Side {
        match self {
            Side::Client => metrics::Side::Client,
            Side::Backend => metrics::Side::Backend,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Backend => "backend",
        })
    }
}

/// One thing per side, indexed by [`Side`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Both<T> {
    /// The client's.
    pub client: T,
    /// The backend's.
    pub backend: T,
}

impl<T> Index<Side> for Both<T> {
    type Output = T;

    fn index(&self, side: Side) -> &T {
        match side {
            Side::Client => &self.client,
            Side::Backend => &self.backend,
        }
    }
}

impl<T> IndexMut<Side> for Both<T> {
    fn index_mut(&mut self, side: Side) -> &mut T {
        match side {
            Side::Client => &mut self.client,
            Side::Backend => &mut self.backend,
        }
    }
}
