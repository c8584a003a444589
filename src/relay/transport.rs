//! What the relay needs of a connection besides reading and writing.

use std::io;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::net::Stream;

/// A leg's byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Ready when a read may find bytes (or the end): an idle leg waits here, holding no read
    /// buffer.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Sends FIN (no more writes).
    fn shutdown_write(&mut self);
}

impl Transport for Stream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Stream::poll_readable(self, cx)
    }
    fn shutdown_write(&mut self) {
        Stream::shutdown_write(self);
    }
}
