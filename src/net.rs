//! The connection type every stage uses: a plain socket on the thread's edge-triggered driver
//! ([`crate::reactor`]; the shared driver on a thread without one); a `wss://` backend or a
//! client of the TLS listener is TLS over such a plain stream, so a connection lives on one
//! I/O loop.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
#[cfg(feature = "tls-backend")]
use futures_rustls::client;
#[cfg(any(feature = "tls-listener", feature = "tls-backend"))]
use futures_rustls::rustls::ConnectionCommon;
#[cfg(feature = "tls-listener")]
use futures_rustls::server;

use crate::reactor::{current_or_shared, Socket};

/// A connection (client or backend).
pub enum Stream {
    /// Plain TCP on [`crate::reactor`].
    Driver(Socket),
    /// A `wss://` backend, over the connected plain stream.
    #[cfg(feature = "tls-backend")]
    TlsClient(Box<client::TlsStream<Stream>>),
    /// A client of the TLS listener (`server.tls`), over the accepted plain stream.
    #[cfg(feature = "tls-listener")]
    TlsServer(Box<server::TlsStream<Stream>>),
}

/// TLS handshakes on the listener that failed (or timed out), process wide.
static TLS_HANDSHAKE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many TLS handshakes on the listener failed or timed out since the process started.
pub fn tls_handshake_failures() -> u64 {
    TLS_HANDSHAKE_FAILURES.load(Ordering::Relaxed)
}

/// Runs the server side of a TLS handshake on an accepted connection, bounded by `limit` (a
/// client that never completes the TLS handshake holds the socket no longer than one that
/// never completes its request head). A failure or a timeout is counted in
/// [`tls_handshake_failures`].
#[cfg(feature = "tls-listener")]
pub async fn accept_tls(
    config: std::sync::Arc<futures_rustls::rustls::ServerConfig>,
    stream: Stream,
    limit: std::time::Duration,
) -> io::Result<Stream> {
    use crate::reactor::Timer;
    use futures_lite::FutureExt;
    let handshake = async {
        let tls = futures_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .await?;
        Ok(Stream::TlsServer(Box::new(tls)))
    };
    let accepted = handshake
        .or(async {
            Timer::after(limit).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not done within {limit:?}"),
            ))
        })
        .await;
    if accepted.is_err() {
        TLS_HANDSHAKE_FAILURES.fetch_add(1, Ordering::Relaxed);
    }
    accepted
}

impl Stream {
    /// An accepted connection, on this thread's driver (the shared one outside a worker). It
    /// must be non-blocking already, as [`crate::reactor::Listener::accept`] gives it: that
    /// saves a system call per connection.
    pub fn accepted(stream: TcpStream) -> io::Result<Stream> {
        Socket::new(current_or_shared()?.0, stream).map(Stream::Driver)
    }

    /// A plain connection to `addr`, made without blocking the thread.
    pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        let driver = current_or_shared()?.0;
        Socket::connect(driver, addr).await.map(Stream::Driver)
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Driver(s) => s.get_ref(),
            #[cfg(feature = "tls-backend")]
            Stream::TlsClient(s) => s.get_ref().0.tcp(),
            #[cfg(feature = "tls-listener")]
            Stream::TlsServer(s) => s.get_ref().0.tcp(),
        }
    }

    /// Ready when a read may find bytes (or the end), so that a reader can wait without a
    /// buffer. A TLS stream is ready when its session holds plaintext (or a close) to give,
    /// else until a read of the stream under it blocked: the session reads that until it
    /// blocks or a record is whole, and a whole record leaves plaintext, so nothing is missed
    /// (and the session shrinks its read buffer on that last read, so an idle one is small).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Driver(s) => s.poll_readable(cx),
            #[cfg(feature = "tls-backend")]
            Stream::TlsClient(s) => {
                let (inner, session) = s.get_mut();
                tls_readable(inner, session, cx)
            }
            #[cfg(feature = "tls-listener")]
            Stream::TlsServer(s) => {
                let (inner, session) = s.get_mut();
                tls_readable(inner, session, cx)
            }
        }
    }

    /// Sends FIN (no more writes). A TLS stream first sends a close_notify, written as far as
    /// the socket takes it without waiting.
    pub fn shutdown_write(&mut self) {
        match self {
            #[cfg(feature = "tls-backend")]
            Stream::TlsClient(s) => {
                let (inner, session) = s.get_mut();
                close_notify(inner.tcp(), session);
            }
            #[cfg(feature = "tls-listener")]
            Stream::TlsServer(s) => {
                let (inner, session) = s.get_mut();
                close_notify(inner.tcp(), session);
            }
            Stream::Driver(_) => {}
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

/// [`Stream::poll_readable`] for TLS over `inner`.
#[cfg(any(feature = "tls-listener", feature = "tls-backend"))]
fn tls_readable<D>(
    inner: &mut Stream,
    session: &ConnectionCommon<D>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    // False when plaintext or a close_notify waits to be read.
    if !session.wants_read() {
        return Poll::Ready(Ok(()));
    }
    match inner {
        Stream::Driver(s) => s.poll_readable_after_block(cx),
        #[cfg(feature = "tls-backend")]
        Stream::TlsClient(_) => Poll::Ready(Ok(())),
        #[cfg(feature = "tls-listener")]
        Stream::TlsServer(_) => Poll::Ready(Ok(())),
    }
}

/// Queues a TLS close_notify and writes what the session has to send.
#[cfg(any(feature = "tls-listener", feature = "tls-backend"))]
fn close_notify<D>(mut tcp: &TcpStream, session: &mut ConnectionCommon<D>) {
    session.send_close_notify();
    // The socket is non-blocking: a full send buffer ends this at once.
    for _ in 0..4 {
        if !session.wants_write() || session.write_tls(&mut tcp).is_err() {
            break;
        }
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
            #[cfg(feature = "tls-backend")]
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(feature = "tls-listener")]
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            #[cfg(feature = "tls-backend")]
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(feature = "tls-listener")]
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Driver(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls-backend")]
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "tls-listener")]
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Driver(s) => Pin::new(s).poll_close(cx),
            #[cfg(feature = "tls-backend")]
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_close(cx),
            #[cfg(feature = "tls-listener")]
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
