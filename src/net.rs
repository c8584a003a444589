//! The connection type every stage uses: a plain socket on the worker thread's edge-triggered
//! driver ([`crate::reactor`]), on async-io outside a worker thread, or a TLS backend.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use smol::Async;

use crate::reactor::{current, Socket};

/// A connection (client or backend).
pub enum Stream {
    /// Plain TCP on [`crate::reactor`].
    Driver(Socket),
    /// Plain TCP on async-io.
    Async(Async<TcpStream>),
    /// `wss://` backend.
    Tls(Box<TlsStream<Async<TcpStream>>>),
}

impl Stream {
    /// An accepted connection, on this thread's driver (async-io outside a worker thread). It
    /// must be non-blocking already, as [`crate::reactor::Listener::accept`] gives it: that
    /// saves a system call per connection.
    pub fn accepted(stream: TcpStream) -> io::Result<Stream> {
        match current() {
            Some(driver) => Socket::new(driver, stream).map(Stream::Driver),
            None => Async::new(stream).map(Stream::Async),
        }
    }

    /// A plain connection to `addr`, made without blocking the thread.
    pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        match current() {
            Some(driver) => Socket::connect(driver, addr).await.map(Stream::Driver),
            None => Async::<TcpStream>::connect(addr).await.map(Stream::Async),
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Driver(s) => s.get_ref(),
            Stream::Async(s) => s.get_ref(),
            Stream::Tls(s) => s.get_ref().0.get_ref(),
        }
    }

    /// A plain connection moved to async-io, for TLS on top of it (a TLS stream as it is).
    pub fn into_async(self) -> io::Result<Async<TcpStream>> {
        match self {
            Stream::Driver(s) => s.into_async(),
            Stream::Async(s) => Ok(s),
            Stream::Tls(_) => Err(io::Error::other("already a TLS stream")),
        }
    }

    /// Ready when a read would not block (a TLS stream is always ready: it may hold decrypted
    /// bytes the socket does not show).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Driver(s) => s.poll_readable(cx),
            Stream::Async(s) => s.poll_readable(cx),
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }

    /// Sends FIN (no more writes).
    pub fn shutdown_write(&self) {
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Driver(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Async(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Driver(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Async(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Driver(s) => Pin::new(s).poll_flush(cx),
            Stream::Async(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Driver(s) => Pin::new(s).poll_close(cx),
            Stream::Async(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
