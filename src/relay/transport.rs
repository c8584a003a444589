//! What the relay needs of a connection besides reading and writing.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::Async;

use crate::upstream::BackendStream;

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

impl Transport for Async<TcpStream> {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_readable(self, cx)
    }
    fn waits_for_readable(&self) -> bool {
        true
    }
    fn shutdown_write(&mut self) {
        let _ = self.get_ref().shutdown(Shutdown::Write);
    }
}

impl Transport for BackendStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            BackendStream::Plain(s) => Async::poll_readable(s, cx),
            // TLS may hold decrypted bytes the socket does not show: always read.
            BackendStream::Tls(_) => Poll::Ready(Ok(())),
        }
    }
    fn waits_for_readable(&self) -> bool {
        matches!(self, BackendStream::Plain(_))
    }
    fn shutdown_write(&mut self) {
        let tcp = match self {
            BackendStream::Plain(s) => s.get_ref(),
            BackendStream::Tls(s) => s.get_ref().0.get_ref(),
        };
        let _ = tcp.shutdown(Shutdown::Write);
    }
}
