//! The connection type every stage uses: a plain socket on the worker thread's edge-triggered
//! driver ([`crate::reactor`]), on async-io outside a worker thread, or a TLS backend.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use smol::Async;

use crate::reactor::io::Plain;
use crate::reactor::Socket;

/// A connection (client or backend).
pub enum Stream {
    /// Plain TCP on [`crate::reactor`].
    Driver(Socket),
    /// Plain TCP on async-io.
    Async(Async<TcpStream>),
    /// `wss://` backend.
    Tls(Box<TlsStream<Async<TcpStream>>>),
}

impl From<Plain> for Stream {
    fn from(plain: Plain) -> Stream {
        match plain {
            Plain::Driver(s) => Stream::Driver(s),
            Plain::Async(s) => Stream::Async(s),
        }
    }
}

impl Stream {
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
        let tcp = match self {
            Stream::Driver(s) => return s.shutdown_write(),
            Stream::Async(s) => s.get_ref(),
            Stream::Tls(s) => s.get_ref().0.get_ref(),
        };
        let _ = tcp.shutdown(Shutdown::Write);
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
