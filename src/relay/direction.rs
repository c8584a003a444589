//! One direction of a relayed connection: bytes read from one leg are parsed frame by frame,
//! checked, re-masked in place when they go to the backend, and written to the other leg.
//! Nothing is reassembled: a frame's payload streams through the buffer in chunks.

use std::time::Instant;

use super::buffer::Buf;
use super::policy::{DirPolicy, Verdict};
pub use super::rules::Rules;
use super::rules::{check, Message};
use super::watch;
use crate::frame::{apply_mask, check_close_payload, op, parse_header, Utf8Check, Violation};

/// Largest buffer per direction while data flows (released when the direction is idle).
pub const BUF: usize = 16 * 1024;

/// Buffer a direction starts with when data arrives: enough for small messages; it grows to
/// [`BUF`] when a read fills it or a whole frame needs more room.
pub const SMALL_BUF: usize = 2 * 1024;

/// A frame whose payload is passing through.
#[derive(Debug)]
struct Payload {
    remaining: u64,
    fin: bool,
    data: bool,
    /// Client's masking key and the offset reached in it.
    unmask: Option<[u8; 4]>,
    /// Key the gateway masks with towards the backend.
    remask: Option<[u8; 4]>,
    offset: usize,
    /// Check the payload as UTF-8 text.
    text: bool,
    /// Index in the buffer where this frame's header starts, while no byte of it was written.
    start: Option<usize>,
}

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
    /// Whether frames come from the client (masked) and go to the backend (re-masked).
    pub from_client: bool,
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
    /// Messages passed so far by type (data messages when complete, control frames each),
    /// in [`crate::metrics::TYPES`] order: text, binary, ping, pong, close.
    pub counts: [u64; 5],
    /// Type of the data message under way (0: text, 1: binary).
    kind: usize,
    /// Wire bytes written on.
    pub bytes: u64,
    /// The code of the close frame this direction's source sent (1005 when it had none).
    pub close_code: Option<u16>,
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
    /// A direction reading from the client (`from_client`) or the backend.
    pub fn new(from_client: bool) -> Self {
        Direction {
            from_client,
            buf: None,
            start: 0,
            ready: 0,
            end: 0,
            frame: None,
            message: None,
            utf8: Utf8Check::default(),
            counts: [0; 5],
            kind: 0,
            bytes: 0,
            close_code: None,
            drained: false,
            busy: false,
            last_frame: None,
            keepalive_pongs: 0,
            policy: None,
            want: 0,
        }
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
        self.bytes += n as u64;
        if let Some(p) = self.frame.as_mut() {
            if p.start.is_some_and(|s| s < self.start) {
                p.start = None;
            }
        }
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
        match self.process_inner(rules, forward_close, stop) {
            Ok(ev) => Ok(ev),
            Err(v) => {
                let clean = match self.frame.take() {
                    None => true,
                    Some(Payload { start: Some(s), .. }) => {
                        self.ready = s;
                        true
                    }
                    Some(_) => false,
                };
                self.end = self.ready;
                Err((v, clean))
            }
        }
    }

    fn process_inner(
        &mut self,
        rules: &Rules,
        forward_close: bool,
        stop: bool,
    ) -> Result<Event, Violation> {
        let Some(buf) = self.buf.as_mut() else {
            return Ok(Event::None);
        };
        loop {
            if let Some(p) = self.frame.as_mut() {
                let n =
                    (self.end - self.ready).min(usize::try_from(p.remaining).unwrap_or(usize::MAX));
                if n == 0 && p.remaining > 0 {
                    return Ok(Event::None);
                }
                if !pass_payload(&mut buf[self.ready..self.ready + n], p, &mut self.utf8) {
                    if p.fin {
                        return Err(Violation::Utf8);
                    }
                    // A non-final fragment: passed on unchecked from here, and the message is
                    // failed at its final frame at the latest (a backend that checks faster
                    // shows through, as it would without the gateway).
                    p.text = false;
                    if let Some(m) = self.message.as_mut() {
                        m.invalid = true;
                    }
                }
                self.ready += n;
                p.remaining -= n as u64;
                if p.remaining == 0 {
                    let (fin, data, text) = (p.fin, p.data, p.text);
                    if fin && data && text && !self.utf8.is_complete() {
                        // Ends mid code point. The frame stays current, so that `process`
                        // withdraws it when none of it was written yet.
                        return Err(Violation::Utf8);
                    }
                    self.frame = None;
                    if fin && data {
                        self.message = None;
                        self.utf8.reset();
                        self.counts[self.kind] += 1;
                    }
                }
                continue;
            }
            if stop {
                return Ok(Event::None);
            }
            let at = self.ready;
            let Some(h) = parse_header(&buf[at..self.end])? else {
                return Ok(Event::None);
            };
            let mut message = self.message;
            let text = check(&h, rules, self.from_client, &mut message)?;
            let total = h.header_len as u64 + h.len;
            let json = !h.is_control()
                && message.is_some_and(|m| m.text)
                && self.policy.as_ref().is_some_and(|p| p.wants_whole_text());
            let whole = (h.is_control() || text) && total <= BUF as u64 || json;
            if whole && ((self.end - at) as u64) < total {
                if json {
                    self.want = usize::try_from(total).unwrap_or(usize::MAX);
                }
                return Ok(Event::None); // wait for the whole frame before passing any of it
            }
            if self.from_client
                && h.opcode == op::PONG
                && rules.ping_interval.is_some()
                && watch::is_own_pong(&buf[at..], &h)
            {
                // The answer to a gateway ping is the gateway's: the backend never sees it.
                buf.copy_within(at + total as usize..self.end, at);
                self.end -= total as usize;
                self.keepalive_pongs += 1;
                continue;
            }
            // Rates count every frame but a close (pings and pongs too: they cost the other
            // side as much as data does); the close handshake always passes.
            if let (true, Some(p)) = (h.opcode != op::CLOSE, self.policy.as_mut()) {
                if let Verdict::Wait = p.admit(&h, h.opcode != op::CONTINUATION, total)? {
                    return Ok(Event::None); // throttled: the frame waits in the buffer
                }
                if json {
                    // Whole: the buffer may shrink back once the frame is through.
                    self.want = 0;
                    let payload = &buf[at + h.header_len..at + total as usize];
                    p.text_frame(payload, h.mask, h.fin)?;
                }
            }
            if self.last_frame.is_some() {
                self.last_frame = Some(Instant::now());
            }
            match h.opcode {
                op::TEXT => self.kind = 0,
                op::BINARY => self.kind = 1,
                op::PING => self.counts[2] += 1,
                op::PONG => self.counts[3] += 1,
                _ => {}
            }
            self.message = message;
            let remask = h.mask.map(|_| rand::random::<[u8; 4]>());
            if let Some(k) = remask {
                buf[at + h.header_len - 4..at + h.header_len].copy_from_slice(&k);
            }
            self.ready = at + h.header_len;
            self.frame = Some(Payload {
                remaining: h.len,
                fin: h.fin,
                data: !h.is_control(),
                unmask: h.mask,
                remask,
                offset: 0,
                text,
                start: Some(at),
            });
            if h.opcode == op::CLOSE {
                return self.close_frame(at, h.header_len, h.len as usize, forward_close);
            }
        }
    }

    /// A whole close frame is at `at`: check it, then keep it in the output or withdraw it.
    /// Input after it is discarded (nothing may follow a close).
    fn close_frame(
        &mut self,
        at: usize,
        header_len: usize,
        len: usize,
        forward: bool,
    ) -> Result<Event, Violation> {
        let Some(buf) = self.buf.as_mut() else {
            return Ok(Event::None);
        };
        let payload_at = at + header_len;
        let Some(p) = self.frame.as_mut() else {
            return Ok(Event::None);
        };
        let mut copy = [0u8; 125];
        copy[..len].copy_from_slice(&buf[payload_at..payload_at + len]);
        if let Some(k) = p.unmask {
            apply_mask(&mut copy[..len], k, 0);
        }
        check_close_payload(&copy[..len])?;
        self.counts[4] += 1;
        self.close_code = Some(match copy[..len] {
            [a, b, ..] => u16::from_be_bytes([a, b]),
            _ => 1005,
        });
        if let (Some(k), Some(r)) = (p.unmask, p.remask) {
            apply_mask(&mut buf[payload_at..payload_at + len], xor(k, r), 0);
        }
        self.frame = None;
        self.ready = if forward { payload_at + len } else { at };
        self.end = self.ready;
        Ok(Event::Close { forwarded: forward })
    }
}

fn xor(a: [u8; 4], b: [u8; 4]) -> [u8; 4] {
    [a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]]
}

/// Passes one chunk of payload: unmask/check/remask in place. False if the chunk makes the
/// text invalid UTF-8.
fn pass_payload(chunk: &mut [u8], p: &mut Payload, utf8: &mut Utf8Check) -> bool {
    let ok = match (p.unmask, p.remask) {
        (Some(k), Some(r)) if p.text => {
            apply_mask(chunk, k, p.offset);
            let ok = utf8.feed(chunk);
            apply_mask(chunk, r, p.offset);
            ok
        }
        (Some(k), Some(r)) => {
            apply_mask(chunk, xor(k, r), p.offset);
            true
        }
        _ => !p.text || utf8.feed(chunk),
    };
    p.offset = (p.offset + chunk.len()) % 4;
    ok
}

#[cfg(test)]
mod tests;
