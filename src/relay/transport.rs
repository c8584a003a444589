//! What the relay needs of a connection besides reading and writing.

use std::io;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::net::Stream;

/// A leg's byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Ready when a read would not block. Only called when [`waits_for_readable`] is true.
    ///
    /// [`waits_for_readable`]: Transport::waits_for_readable
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Whether [`Transport::poll_readable`] works, so that an idle leg needs no read buffer.
    fn waits_for_readable(&self) -> bool;
    /// Sends FIN (no more writes).
    fn shutdown_write(&mut self);
}

impl Transport for Stream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Stream::poll_readable(self, cx)
    }
    fn waits_for_readable(&self) -> bool {
        !matches!(self, Stream::Tls(_))
    }
    fn shutdown_write(&mut self) {
        Stream::shutdown_write(self);
    }
}
