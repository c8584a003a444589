//! A leg of a relayed connection: what the state machine knows of it ([`Leg`]), and its I/O:
//! writing a direction's checked bytes (and the gateway's own frames) to it, reading into a
//! direction from it. Each returns what happened; [`super::conn`] decides what follows.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::buffer::Buf;
use super::direction::{Direction, BUF, SMALL_BUF};
use super::Transport;
use crate::error::GatewayClose;

/// One leg's state, as the connection's state machine sets it.
#[derive(Debug, Default)]
pub(super) struct Leg {
    /// Nothing more is read from this leg (close received, EOF, error or violation).
    pub done_reading: bool,
    /// The leg sent a close frame.
    pub got_close: bool,
    /// A close frame went (or is queued) to this leg: no data frame may follow it.
    pub close_out: bool,
    /// A gateway frame for this leg (a close, or a keepalive ping) and how much of it was
    /// written; it goes out at the next frame boundary of the stream to the leg.
    pub inject: Option<(Vec<u8>, usize)>,
    /// Once the injected close is written, later frames for this leg are dropped.
    pub sealed: bool,
    /// The leg is gone or must be cut (I/O failed, or its output stopped mid-frame).
    pub dead: bool,
    /// A close owed to this leg (it broke the protocol), sent once the other leg's close
    /// handshake is done, so that what the other side still sends arrives first.
    pub owed: Option<GatewayClose>,
    /// The output was written since the last flush.
    pub unflushed: bool,
    /// Its close handshake was complete while the other leg was still closing: it got its FIN.
    pub shut: bool,
}

impl Leg {
    /// Whether nothing more comes from this leg.
    pub fn finished_reading(&self) -> bool {
        self.done_reading || self.dead
    }

    /// Whether the leg can take a gateway frame now (none queued, no close sent, not gone).
    pub fn open_for_frame(&self) -> bool {
        self.inject.is_none() && !self.close_out && !self.dead
    }

    /// Whether its close handshake is complete: it sent its close frame, and the close frame
    /// to it is written and flushed.
    pub fn handshake_done(&self) -> bool {
        self.got_close && self.close_out && self.inject.is_none() && !self.unflushed
    }
}

/// What a write round did.
#[derive(PartialEq, Eq)]
pub(super) enum Wrote {
    /// Nothing could be written.
    Nothing,
    /// Some bytes went out.
    Some,
    /// The leg failed.
    Failed,
}

/// Writes what `d` has checked to `leg` (transport `t`), then at a frame boundary the gateway
/// frame waiting for it, then flushes. Bytes for a leg that is gone or sealed are dropped.
/// Inlined into both of its call sites (one per leg): it runs several times per message.
#[inline(always)]
pub(super) fn write<T: Transport>(
    d: &mut Direction,
    leg: &mut Leg,
    t: &mut T,
    cx: &mut Context<'_>,
) -> Wrote {
    if leg.dead || leg.sealed {
        d.discard_ready(); // nobody to write to: drop
        return Wrote::Nothing;
    }
    let mut progress = false;
    while d.start < d.ready {
        let Some(buf) = d.buf.as_ref() else { break };
        match Pin::new(&mut *t).poll_write(cx, &buf[d.start..d.ready]) {
            Poll::Ready(Ok(n)) if n > 0 => {
                d.written(n);
                leg.unflushed = true;
                progress = true;
            }
            Poll::Ready(_) => return Wrote::Failed,
            Poll::Pending => break,
        }
    }
    if leg.inject.is_some() && d.start == d.ready && d.at_boundary() {
        match write_injected(leg, t, cx) {
            Wrote::Failed => return Wrote::Failed,
            Wrote::Some => progress = true,
            Wrote::Nothing => {}
        }
    }
    if leg.unflushed {
        match Pin::new(&mut *t).poll_flush(cx) {
            Poll::Ready(Ok(())) => leg.unflushed = false,
            Poll::Ready(Err(_)) => return Wrote::Failed,
            Poll::Pending => {}
        }
    }
    if progress {
        Wrote::Some
    } else {
        Wrote::Nothing
    }
}

/// Writes the gateway frame waiting for `leg`. After a close nothing more goes to the leg;
/// after a keepalive ping, the stream.
#[cold]
fn write_injected<T: Transport>(leg: &mut Leg, t: &mut T, cx: &mut Context<'_>) -> Wrote {
    let mut wrote = Wrote::Nothing;
    while let Some((frame, pos)) = leg.inject.as_mut() {
        match Pin::new(&mut *t).poll_write(cx, &frame[*pos..]) {
            Poll::Ready(Ok(n)) if n > 0 => {
                *pos += n;
                leg.unflushed = true;
                wrote = Wrote::Some;
                if *pos == frame.len() {
                    leg.inject = None;
                    leg.sealed = leg.close_out;
                }
            }
            Poll::Ready(_) => return Wrote::Failed,
            Poll::Pending => break,
        }
    }
    wrote
}

/// What a read did.
pub(super) enum Read {
    /// Nothing to read now (an idle direction then gives its buffer back).
    Idle,
    /// Bytes arrived.
    Data,
    /// The leg is gone: why.
    Lost(&'static str),
}

/// Reads from `t` into `d`. An idle direction waits for readiness without a buffer, and so
/// does one whose last read did not fill it (the socket is most likely drained).
pub(super) fn read<T: Transport>(d: &mut Direction, t: &mut T, cx: &mut Context<'_>) -> Read {
    let ready = if d.buf.is_none() || d.drained {
        t.poll_readable(cx)
    } else {
        Poll::Ready(Ok(()))
    };
    let res = match ready {
        Poll::Ready(Ok(())) => read_into(d, t, cx),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    };
    match res {
        Poll::Ready(Ok(0)) => Read::Lost("connection closed without a close frame"),
        Poll::Ready(Ok(n)) => {
            d.end += n;
            Read::Data
        }
        Poll::Ready(Err(_)) => Read::Lost("connection reset"),
        Poll::Pending => {
            if d.is_empty() {
                d.buf = None; // idle: hold no buffer
                d.busy = false;
            }
            Read::Idle
        }
    }
}

/// One read into `d`'s buffer (made when it has none: small, unless the direction is busy).
fn read_into<T: Transport>(
    d: &mut Direction,
    t: &mut T,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    d.drained = false;
    let size = if d.busy { BUF } else { SMALL_BUF };
    let buf = d.buf.get_or_insert_with(|| Buf::new(size));
    let space = buf.len() - d.end;
    let res = Pin::new(t).poll_read(cx, &mut buf[d.end..]);
    if let Poll::Ready(Ok(n)) = res {
        d.drained = n < space;
        // A read that fills the buffer: more is coming, use the big one.
        d.busy |= n == space;
    }
    res
}
