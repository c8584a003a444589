//! One direction of a relayed connection: bytes read from one leg wait in a buffer, are checked
//! frame by frame ([`frames`]), and are written to the other leg. Nothing is reassembled: a
//! frame's payload streams through the buffer in chunks. This file is the buffer: what is in
//! flight, when it grows, shrinks or goes.

mod frames;

use std::time::Instant;

use super::buffer::Buf;
use super::policy::DirPolicy;
use super::rules::Message;
pub use super::rules::Rules;
use super::side::Side;
use crate::frame::{Utf8Check, Violation};
use crate::metrics::Flow;
use frames::Payload;

/// Largest buffer per direction while data flows (released when the direction is idle).
pub const BUF: usize = 16 * 1024;

/// Buffer a direction starts with when data arrives: enough for small messages; it grows to
/// [`BUF`] when a read fills it or a whole frame needs more room.
pub const SMALL_BUF: usize = 2 * 1024;

/// What processing the buffered bytes found, for the connection to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing special.
    None,
    /// The source sent a close frame; `forwarded` says whether it went on to the destination.
    Close {
        /// Whether the close frame stays in the output.
        forwarded: bool,
    },
}

/// State of one direction.
#[derive(Debug)]
pub struct Direction {
    /// The side it reads from: the client's frames are masked and get re-masked.
    pub from: Side,
    /// Bytes in flight: `[start..ready)` checked and waiting to be written, `[ready..end)` read
    /// but not yet checked. `None` while idle.
    pub buf: Option<Buf>,
    /// See `buf`.
    pub start: usize,
    /// See `buf`.
    pub ready: usize,
    /// See `buf`.
    pub end: usize,
    frame: Option<Payload>,
    message: Option<Message>,
    utf8: Utf8Check,
    /// Messages passed so far by type (data messages when complete, control frames each) and
    /// wire bytes written on.
    pub flow: Flow,
    /// The code of the close frame this direction's source sent ([`NO_CODE`](crate::frame::NO_CODE) when it had
    /// none).
    pub close_code: Option<u16>,
    /// The reason of that close frame, when it had one (for the access log).
    /// (Boxed: a thin pointer, as every open connection holds two of these.)
    #[allow(clippy::box_collection)]
    pub close_reason: Option<Box<String>>,
    /// The last read did not fill the buffer: wait for readiness before reading again.
    pub drained: bool,
    /// A read filled the buffer since the direction was last idle: use [`BUF`] bytes.
    pub busy: bool,
    /// When the last frame arrived (kept only with an idle timeout: it costs a clock read).
    pub last_frame: Option<Instant>,
    /// Answers to the gateway's own pings, taken out of the stream (client side only).
    pub keepalive_pongs: u64,
    /// The route's policies for this direction (`None` on the fast path).
    pub policy: Option<Box<DirPolicy>>,
    /// Room a whole frame needs in the buffer while it waits to be whole (a JSON-checked text
    /// frame may be larger than [`BUF`]); 0 once it is.
    want: usize,
}

impl Direction {
    /// The direction reading from `from`.
    pub fn new(from: Side) -> Self {
        Direction {
            from,
            buf: None,
            start: 0,
            ready: 0,
            end: 0,
            frame: None,
            message: None,
            utf8: Utf8Check::default(),
            flow: Flow::default(),
            close_code: None,
            close_reason: None,
            drained: false,
            busy: false,
            last_frame: None,
            keepalive_pongs: 0,
            policy: None,
            want: 0,
        }
    }

    /// Takes the bytes its source sent before the relay started (with its handshake).
    pub fn load(&mut self, early: &[u8]) {
        let mut buf = Buf::new(BUF.max(early.len()));
        buf[..early.len()].copy_from_slice(early);
        self.buf = Some(buf);
        self.end = early.len();
    }

    /// Whether the output ends on a frame boundary once `[start..ready)` is written (a
    /// gateway frame may then be written after it).
    pub fn at_boundary(&self) -> bool {
        self.frame.is_none()
    }

    /// Whether no byte is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether there is room to read into (a direction without a buffer gets one).
    pub fn has_room(&self) -> bool {
        self.end < self.buf.as_ref().map_or(BUF, |b| b.len())
    }

    /// Makes room for reading: moves unwritten bytes to the front when the tail is full. A
    /// buffer that grew past [`BUF`] for a large frame is given back once what is left in it
    /// fits in [`BUF`] (none is kept when nothing is left).
    pub fn compact(&mut self) {
        let len = self.buf.as_ref().map_or(0, |b| b.len());
        let left = self.end - self.start;
        let shrink = len > BUF && left <= BUF && self.want <= BUF;
        if left == 0 {
            self.start = 0;
            self.ready = 0;
            self.end = 0;
            if shrink {
                self.buf = None;
            }
        } else if shrink {
            let mut small = Buf::new(BUF);
            if let Some(buf) = self.buf.as_ref() {
                small[..left].copy_from_slice(&buf[self.start..self.end]);
            }
            self.buf = Some(small);
            self.shift(self.start);
        } else if self.start > 0 && self.end == len {
            let by = self.start;
            if let Some(buf) = self.buf.as_mut() {
                buf.copy_within(by..self.end, 0);
            }
            self.shift(by);
        }
    }

    /// The buffered bytes moved `by` bytes to the front: the positions follow them.
    fn shift(&mut self, by: usize) {
        self.start -= by;
        self.ready -= by;
        self.end -= by;
        if let Some(p) = self.frame.as_mut() {
            p.start = p.start.and_then(|s| s.checked_sub(by));
        }
    }

    /// Grows a small buffer to [`BUF`] (keeping its bytes and positions) when it is full or
    /// the direction is busy.
    pub fn grow_if_full(&mut self) {
        let Some(old) = self.buf.as_ref() else { return };
        let size = BUF.max(self.want);
        if (self.end < old.len() && !self.busy) || old.len() >= size {
            return;
        }
        let mut new = Buf::new(size);
        new[..self.end].copy_from_slice(&old[..self.end]);
        self.buf = Some(new);
    }

    /// Marks `n` more bytes as written; a frame whose first bytes go out can no longer be
    /// withdrawn.
    pub fn written(&mut self, n: usize) {
        self.start += n;
        self.flow.bytes += n as u64;
        if let Some(p) = self.frame.as_mut() {
            if p.start.is_some_and(|s| s < self.start) {
                p.start = None;
            }
        }
    }

    /// Drops what is waiting to be written (its destination is gone).
    pub fn discard_ready(&mut self) {
        self.written(self.ready - self.start);
    }

    /// Checks and transforms the buffered bytes, up to the first close frame.
    ///
    /// On a violation, the offending frame is withdrawn from the output when none of it was
    /// written yet; the returned flag says whether the output still ends on a boundary.
    /// With `stop`, processing ends at the next frame boundary (a gateway frame waits there).
    pub fn process(
        &mut self,
        rules: &Rules,
        forward_close: bool,
        stop: bool,
    ) -> Result<Event, (Violation, bool)> {
        let Some(mut buf) = self.buf.take() else {
            return Ok(Event::None);
        };
        let processed = self.frames(&mut buf, rules, forward_close, stop);
        self.buf = Some(buf);
        processed.map_err(|v| {
            let clean = match self.frame.take() {
                None => true,
                Some(Payload { start: Some(s), .. }) => {
                    self.ready = s;
                    true
                }
                Some(_) => false,
            };
            self.end = self.ready;
            (v, clean)
        })
    }
    /// Puts the transformed message waiting in the policy in place of the frame that completed
    /// it (`old` bytes at `at`), growing the buffer when the new frame needs the room; the new
    /// frame is ready to be written. Apart from the frame loop, which takes it rarely.
    #[inline(never)]
    pub(super) fn splice(&mut self, buf: &mut Buf) {
        let Some((at, old, frame)) = self.policy.as_mut().and_then(|p| p.pending.take()) else {
            return;
        };
        let end = self.end - old + frame.len();
        if end > buf.len() {
            let mut bigger = Buf::new(end.max(BUF));
            bigger[..at].copy_from_slice(&buf[..at]);
            bigger[at + frame.len()..end].copy_from_slice(&buf[at + old..self.end]);
            *buf = bigger;
        } else {
            buf.copy_within(at + old..self.end, at + frame.len());
        }
        buf[at..at + frame.len()].copy_from_slice(&frame);
        self.end = end;
        self.ready = at + frame.len();
        self.message_done();
    }
}

#[cfg(test)]
mod tests;
