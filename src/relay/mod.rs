//! Stage 6: relay frames both ways until both legs are closed.
//!
//! A frame-level relay: each direction parses frame headers, checks every RFC 6455 rule the
//! gateway is responsible for (masking, reserved bits, opcodes, control frames, fragmentation,
//! UTF-8 of text, close codes, size limits), re-masks client frames in place with a key of its
//! own, and writes them on without reassembling messages. A direction holds a buffer only while
//! bytes are in flight; an idle connection holds none. A direction reads again only when what
//! it read was written (backpressure: a slow reader slows its sender through TCP).
//!
//! Pings, pongs and close frames are passed through, so the peer answers them; the close
//! handshake is the peers' own. The gateway writes a close frame itself only when a leg breaks
//! the protocol or vanishes (codes in [`crate::error`]), at a frame boundary of the other
//! stream. Once one leg is finished, the other gets [`CLOSE_GRACE`]; a leg whose close
//! handshake is complete gets its FIN at once, without waiting for the other.

mod buffer;
mod closing;
mod direction;
mod json;
mod policy;
mod rules;
mod transport;
mod watch;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::reactor::Timer;
use futures_lite::{AsyncWrite, FutureExt};

pub use buffer::held as buffers_held;
use buffer::Buf;
pub use direction::Rules;
use direction::{Direction, Event, BUF, SMALL_BUF};
pub use policy::Policy;
pub use transport::Transport;

/// How long the second leg may take to finish once the first is done.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a closed connection is drained for its peer's last bytes before it is dropped.
const DRAIN: Duration = Duration::from_secs(1);

/// Index of a leg.
const CLIENT: usize = 0;
const BACKEND: usize = 1;

/// How the relay ended (for the connection's log line).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// What ended a leg, if it was not a clean close.
    pub errors: Vec<String>,
    /// Messages and bytes each way, for the metrics.
    pub traffic: crate::metrics::Traffic,
    /// The close frames each side sent (the gateway's own included): who, and the code.
    pub closes: Vec<(crate::metrics::Side, u16)>,
}

#[derive(Debug, Default)]
struct Leg {
    /// Nothing more is read from this leg (close received, EOF, error or violation).
    done_reading: bool,
    /// The leg sent a close frame.
    got_close: bool,
    /// A close frame went (or is queued) to this leg: no data frame may follow it.
    close_out: bool,
    /// A gateway close frame for this leg, written at the next frame boundary.
    inject: Option<(Vec<u8>, usize)>,
    /// Once the injected close is written, later frames for this leg are dropped.
    sealed: bool,
    /// The leg is gone or must be cut (I/O failed, or its output stopped mid-frame).
    dead: bool,
    /// A close owed to this leg (it broke the protocol), sent once the other leg's close
    /// handshake is done, so that what the other side still sends arrives first.
    owed: Option<(u16, &'static str)>,
    /// The output was written since the last flush.
    unflushed: bool,
    /// Its close handshake was complete while the other leg was still closing: it got its FIN.
    shut: bool,
}

struct Conn<C, B> {
    client: C,
    backend: B,
    /// client -> backend, backend -> client.
    dirs: [Direction; 2],
    legs: [Leg; 2],
    rules: Rules,
    grace: Option<Timer>,
    watch: watch::Watch,
    /// Wakes a throttled direction when its tokens are back.
    throttle: [Option<Timer>; 2],
    summary: Summary,
}

/// Relays between `client` and `backend` (with the bytes each sent past its handshake) until
/// both legs are closed, then shuts both down. Once `drain` says the gateway is shutting down,
/// both legs get 1001.
pub async fn run<C: Transport, B: Transport>(
    client: C,
    client_early: Vec<u8>,
    backend: B,
    backend_early: Vec<u8>,
    rules: Rules,
    drain: Option<crate::drain::Watcher>,
) -> Summary {
    // On the heap: the connection's task then holds a pointer, not the state, and nothing
    // large is moved when the relay starts or finishes.
    let mut conn = Box::new(Conn {
        client,
        backend,
        dirs: [Direction::new(true), Direction::new(false)],
        legs: [Leg::default(), Leg::default()],
        rules,
        grace: None,
        watch: watch::Watch::default(),
        throttle: [None, None],
        summary: Summary::default(),
    });
    if let Some(p) = rules.policy {
        for (i, d) in conn.dirs.iter_mut().enumerate() {
            d.policy = Some(policy::DirPolicy::new(p, i == CLIENT));
        }
    }
    conn.watch.drain = drain;
    conn.start_watch();
    for (i, early) in [client_early, backend_early].into_iter().enumerate() {
        if !early.is_empty() {
            let mut buf = Buf::new(BUF.max(early.len()));
            buf[..early.len()].copy_from_slice(&early);
            conn.dirs[i].buf = Some(buf);
            conn.dirs[i].end = early.len();
            conn.process(i);
        }
    }
    poll_fn(|cx| conn.poll(cx)).await;
    let summary = conn.summary();
    // Boxed: the close handshake's future (about 1 KiB) would otherwise size this future, and
    // so every idle connection's task, for a step each connection takes once, at its end.
    Box::pin(conn.finish()).await;
    summary
}

impl<C: Transport, B: Transport> Conn<C, B> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_watch(cx);
        for _ in 0..64 {
            let up = self.step(CLIENT, cx);
            let down = self.step(BACKEND, cx);
            if self.is_done() {
                return Poll::Ready(());
            }
            if !up && !down {
                if self.rules.policy.is_some() && self.poll_throttle(cx) {
                    continue;
                }
                if self.grace.is_some() {
                    // Closing has begun.
                    self.shut_complete_legs();
                }
                if let Some(t) = self.grace.as_mut() {
                    if Pin::new(t).poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                return Poll::Pending;
            }
        }
        // Busy: let other connections run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_done(&self) -> bool {
        (0..2).all(|i| {
            let dst = 1 - i;
            (self.legs[i].done_reading || self.legs[i].dead)
                && (self.dirs[i].is_empty() || self.legs[dst].dead)
                && (self.legs[dst].inject.is_none() || self.legs[dst].dead)
        })
    }

    /// One round of writing then reading for the direction that reads leg `src`; true if it
    /// made progress.
    fn step(&mut self, src: usize, cx: &mut Context<'_>) -> bool {
        let mut progress = self.write(src, cx);
        self.dirs[src].compact();
        self.dirs[src].grow_if_full();
        if self.can_read(src) {
            progress |= self.read(src, cx);
        }
        progress
    }

    fn can_read(&self, src: usize) -> bool {
        let d = &self.dirs[src];
        let dst = &self.legs[1 - src];
        !self.legs[src].done_reading
            && !self.legs[src].dead
            && (dst.inject.is_none() || !d.at_boundary())
            && d.end < d.buf.as_ref().map_or(BUF, |b| b.len())
    }

    fn write(&mut self, src: usize, cx: &mut Context<'_>) -> bool {
        let dst = 1 - src;
        if self.legs[dst].dead || self.legs[dst].sealed {
            let d = &mut self.dirs[src];
            let n = d.ready - d.start;
            d.written(n); // nobody to write to: drop
            return false;
        }
        let mut progress = false;
        let mut failed = false;
        {
            let Conn {
                client,
                backend,
                dirs,
                legs,
                ..
            } = self;
            let (d, leg) = (&mut dirs[src], &mut legs[dst]);
            while d.start < d.ready {
                let Some(buf) = d.buf.as_ref() else { break };
                match poll_write_leg(client, backend, dst, cx, &buf[d.start..d.ready]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        d.written(n);
                        leg.unflushed = true;
                        progress = true;
                    }
                    Poll::Ready(_) => {
                        failed = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            while !failed && d.start == d.ready && d.at_boundary() {
                let Some((frame, pos)) = leg.inject.as_mut() else {
                    break;
                };
                match poll_write_leg(client, backend, dst, cx, &frame[*pos..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        *pos += n;
                        leg.unflushed = true;
                        progress = true;
                        if *pos == frame.len() {
                            leg.inject = None;
                            // After a close nothing more; after a keepalive ping, the stream.
                            leg.sealed = leg.close_out;
                        }
                    }
                    Poll::Ready(_) => failed = true,
                    Poll::Pending => break,
                }
            }
            if !failed && leg.unflushed {
                let flushed = match dst {
                    CLIENT => Pin::new(client).poll_flush(cx),
                    _ => Pin::new(backend).poll_flush(cx),
                };
                match flushed {
                    Poll::Ready(Ok(())) => leg.unflushed = false,
                    Poll::Ready(Err(_)) => failed = true,
                    Poll::Pending => {}
                }
            }
        }
        if failed {
            self.lost(dst, "write failed");
            return true;
        }
        progress
    }

    fn read(&mut self, src: usize, cx: &mut Context<'_>) -> bool {
        enum Outcome {
            Idle,
            Data,
            Lost(&'static str),
        }
        let outcome = {
            let Conn {
                client,
                backend,
                dirs,
                ..
            } = self;
            let d = &mut dirs[src];
            // After a read that did not fill the buffer the socket is most likely drained:
            // wait for readiness instead of paying for a read that would block.
            let wait = d.buf.is_none() || d.drained;
            let ready = match src {
                CLIENT => wait_readable(client, wait, cx),
                _ => wait_readable(backend, wait, cx),
            };
            let res = match ready {
                Poll::Ready(Ok(())) => {
                    d.drained = false;
                    let size = if d.busy { BUF } else { SMALL_BUF };
                    let buf = d.buf.get_or_insert_with(|| Buf::new(size));
                    let space = buf.len() - d.end;
                    let res = match src {
                        CLIENT => Pin::new(client).poll_read(cx, &mut buf[d.end..]),
                        _ => Pin::new(backend).poll_read(cx, &mut buf[d.end..]),
                    };
                    if let Poll::Ready(Ok(n)) = res {
                        d.drained = n < space;
                        // A read that fills the buffer: more is coming, use the big one.
                        d.busy |= n == space;
                    }
                    res
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
            match res {
                Poll::Ready(Ok(0)) => Outcome::Lost("connection closed without a close frame"),
                Poll::Ready(Ok(n)) => {
                    d.end += n;
                    Outcome::Data
                }
                Poll::Ready(Err(_)) => Outcome::Lost("connection reset"),
                Poll::Pending => {
                    if d.is_empty() {
                        d.buf = None; // idle: hold no buffer
                        d.busy = false;
                    }
                    Outcome::Idle
                }
            }
        };
        match outcome {
            Outcome::Idle => false,
            Outcome::Data => {
                self.process(src);
                true
            }
            Outcome::Lost(why) => {
                self.lost(src, why);
                true
            }
        }
    }

    /// Checks what direction `src` has buffered and reacts to closes and violations.
    fn process(&mut self, src: usize) {
        let dst = 1 - src;
        let forward_close =
            !self.legs[dst].close_out && !self.legs[dst].dead && self.legs[dst].owed.is_none();
        let stop = self.legs[dst].inject.is_some();
        match self.dirs[src].process(&self.rules, forward_close, stop) {
            Ok(Event::None) => {}
            Ok(Event::Close { forwarded }) => {
                self.legs[src].got_close = true;
                self.legs[src].done_reading = true;
                self.start_grace();
                if forwarded {
                    self.legs[dst].close_out = true;
                } else if let Some((code, reason)) = self.legs[dst].owed.take() {
                    self.queue_close(dst, code, reason);
                }
            }
            Err((v, clean)) => self.violation(src, v, clean),
        }
    }
}

/// Before a read into a fresh buffer, waits for data without holding one.
fn wait_readable<T: Transport>(
    t: &mut T,
    idle: bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if idle {
        t.poll_readable(cx)
    } else {
        Poll::Ready(Ok(()))
    }
}

fn poll_write_leg<C: AsyncWrite + Unpin, B: AsyncWrite + Unpin>(
    client: &mut C,
    backend: &mut B,
    leg: usize,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    match leg {
        CLIENT => Pin::new(client).poll_write(cx, data),
        _ => Pin::new(backend).poll_write(cx, data),
    }
}
