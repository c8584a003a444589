//! Sockets on the worker thread's driver: registered once, edge-triggered.
//!
//! Readiness is kept per direction: an edge sets it, a read clears it before reading (so an
//! edge after that read sets it again), and a write that would block clears it and waits for the
//! next edge. A socket also remembers what its last read found: waiting for an edge is right
//! only once a read emptied it (bytes a read left behind bring no edge). Closing the descriptor
//! removes it from the epoll set; the slot is freed on drop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::{current_or_shared, lock, store, Driver, Source, SOCKETS};

/// A descriptor's place in a driver.
pub struct Registration {
    source: Arc<Source>,
    key: usize,
    driver: Arc<Driver>,
}

impl Registration {
    fn new(driver: Arc<Driver>, fd: impl AsFd, flags: EventFlags) -> io::Result<Registration> {
        let source = Arc::new(Source {
            readable: AtomicBool::new(true),
            writable: AtomicBool::new(true),
            waiting: Mutex::default(),
        });
        let key = {
            let mut slab = lock(&driver.sources);
            let key = slab.free.pop().unwrap_or(slab.slots.len());
            if key == slab.slots.len() {
                slab.slots.push(None);
            }
            slab.slots[key] = Some(source.clone());
            key
        };
        // From here on, Drop frees the slot.
        SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reg = Registration {
            source,
            key,
            driver,
        };
        epoll::add(&reg.driver.epoll, fd, EventData::new_u64(key as u64), flags)?;
        Ok(reg)
    }

    fn clear_readable(&self) {
        self.source.readable.store(false, SeqCst);
    }

    /// Ready when an edge came since the last [`Registration::clear_readable`].
    fn poll_readable(&self, cx: &Context<'_>) -> Poll<()> {
        if self.source.readable.load(SeqCst) {
            return Poll::Ready(());
        }
        let mut w = lock(&self.source.waiting);
        if self.source.readable.load(SeqCst) {
            return Poll::Ready(());
        }
        store(&mut w.reader, cx);
        Poll::Pending
    }

    /// After a write would block: ready (to retry) when an edge came meanwhile.
    fn poll_writable(&self, cx: &Context<'_>) -> Poll<()> {
        if self.source.writable.swap(false, SeqCst) {
            return Poll::Ready(());
        }
        let mut w = lock(&self.source.waiting);
        if self.source.writable.swap(false, SeqCst) {
            return Poll::Ready(());
        }
        store(&mut w.writer, cx);
        Poll::Pending
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slab = lock(&self.driver.sources);
        slab.slots[self.key] = None;
        slab.free.push(self.key);
        SOCKETS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `op` until it does not block, waiting for edges in between.
fn retry<T>(
    reg: &Registration,
    cx: &Context<'_>,
    read: bool,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        if read {
            reg.clear_readable();
        }
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return Poll::Ready(r),
        }
        let ready = if read {
            reg.poll_readable(cx)
        } else {
            reg.poll_writable(cx)
        };
        if ready.is_pending() {
            return Poll::Pending;
        }
    }
}

/// The read end of a self-pipe (a Unix socket pair) on this thread's driver: what a signal
/// handler writes to.
pub struct Pipe {
    stream: std::os::unix::net::UnixStream,
    reg: Registration,
}

impl Pipe {
    /// Registers `stream` (made non-blocking) with this thread's driver.
    pub fn new(stream: std::os::unix::net::UnixStream) -> io::Result<Pipe> {
        stream.set_nonblocking(true)?;
        let (driver, _) = current_or_shared()?;
        let reg = Registration::new(driver, &stream, EventFlags::IN | EventFlags::ET)?;
        Ok(Pipe { stream, reg })
    }

    /// Ready once something was written, which it takes (several writes count as one).
    pub fn poll_recv(&self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let mut buf = [0u8; 16];
        retry(&self.reg, cx, true, || {
            match (&self.stream).read(&mut buf) {
                Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// A TCP connection on this thread's driver.
pub struct Socket {
    stream: TcpStream,
    reg: Registration,
    last_read: LastRead,
}

/// What a socket's last read found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LastRead {
    /// As many bytes as it asked for, the end or an error (or no read yet): more may wait.
    More,
    /// Fewer bytes than it asked for: the socket was empty then, the next bytes bring an edge.
    Short,
    /// Nothing: it would have blocked.
    Blocked,
}

impl Socket {
    /// Registers a connected, non-blocking stream with `driver`.
    pub(crate) fn new(driver: Arc<Driver>, stream: TcpStream) -> io::Result<Socket> {
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        let reg = Registration::new(driver, &stream, flags)?;
        Ok(Socket {
            stream,
            reg,
            last_read: LastRead::More,
        })
    }

    /// Connects to `addr` on `driver` without blocking the thread.
    pub(crate) async fn connect(driver: Arc<Driver>, addr: SocketAddr) -> io::Result<Socket> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let fd: OwnedFd = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
        let started = rustix::net::connect(&fd, &addr);
        let socket = Socket::new(driver, TcpStream::from(fd))?;
        match started {
            Ok(()) => return Ok(socket),
            Err(e) if e == rustix::io::Errno::INPROGRESS => {}
            Err(e) => return Err(e.into()),
        }
        std::future::poll_fn(|cx| socket.reg.poll_writable(cx)).await;
        match rustix::net::sockopt::socket_error(&socket.stream)? {
            Ok(()) => Ok(socket),
            Err(e) => Err(e.into()),
        }
    }

    /// The TCP stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// Ready when a read may find bytes (or the end): the last read did not empty the socket,
    /// or an edge came since (or it is broken).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.last_read == LastRead::More {
            return Poll::Ready(Ok(()));
        }
        self.reg.poll_readable(cx).map(Ok)
    }

    /// [`Socket::poll_readable`], but waiting for an edge only once a read blocked: for a
    /// reader above (TLS) whose own buffers are given back only on such a read.
    pub fn poll_readable_after_block(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.last_read != LastRead::Blocked {
            return Poll::Ready(Ok(()));
        }
        self.reg.poll_readable(cx).map(Ok)
    }

    /// Sends FIN.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = retry(&this.reg, cx, true, || (&this.stream).read(buf));
        this.last_read = match &read {
            Poll::Pending => LastRead::Blocked,
            Poll::Ready(Ok(n)) if *n > 0 && *n < buf.len() => LastRead::Short,
            Poll::Ready(_) => LastRead::More,
        };
        read
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        retry(&this.reg, cx, false, || (&this.stream).write(buf))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

/// The listening socket (shared by the worker threads) on this thread's driver (the shared
/// driver outside a worker thread).
pub struct Listener {
    listener: Arc<TcpListener>,
    reg: Registration,
}

impl Listener {
    /// Registers a bound, listening, non-blocking socket with this thread's driver.
    /// Exclusive wake-ups: a new connection wakes one waiting worker, not all of them.
    pub fn new(listener: Arc<TcpListener>) -> io::Result<Listener> {
        let (driver, _) = current_or_shared()?;
        let flags = EventFlags::IN | EventFlags::ET | EventFlags::EXCLUSIVE;
        let reg = Registration::new(driver, &*listener, flags)?;
        Ok(Listener { listener, reg })
    }

    /// Accepts a connection (non-blocking, close-on-exec).
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (l, reg) = (&self.listener, &self.reg);
        std::future::poll_fn(|cx| retry(reg, cx, true, || accept(l))).await
    }

    /// [`Listener::accept`], unless `stop` completes first (`None`).
    pub async fn accept_unless(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        use futures_lite::FutureExt;
        async { Some(self.accept().await) }
            .or(async {
                stop.await;
                None
            })
            .await
    }

    /// Leaves this thread's driver and takes, without waiting, the connections the kernel
    /// has queued (at most `max`): the connections a wake-up of this thread was for, which
    /// no other process would be woken for.
    pub fn close(self, max: usize) -> Vec<(TcpStream, SocketAddr)> {
        let listener = self.listener.clone();
        drop(self);
        let mut queued = Vec::new();
        while queued.len() < max {
            match accept(&listener) {
                Ok(c) => queued.push(c),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                Err(_) => break,
            }
        }
        queued
    }
}

impl Drop for Listener {
    /// A listening socket can outlive its registration (other threads, or another process
    /// after an upgrade, hold it): closing a descriptor would not take it out of this epoll
    /// set, whose exclusive wake-ups would go on taking connections nobody accepts here.
    fn drop(&mut self) {
        let _ = epoll::delete(&self.reg.driver.epoll, &*self.listener);
    }
}

/// Accepts a connection on a non-blocking listener without waiting (`WouldBlock` when none
/// is queued).
fn accept(l: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let (fd, addr) = rustix::net::acceptfrom_with(l, flags)?;
    let addr = match addr.map(SocketAddr::try_from) {
        Some(Ok(a)) => a,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "peer address is not IP",
            ))
        }
    };
    Ok((TcpStream::from(fd), addr))
}
