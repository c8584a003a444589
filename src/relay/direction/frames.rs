//! The frames passing through a direction, by kind: the payload of the frame under way, then
//! each new frame from its header: data (text, binary, continuation), ping and pong, close.
//! Every RFC 6455 rule the gateway is responsible for is checked here or in [`check`], and
//! a client's frame is re-masked in place with a key of the gateway's own.

use std::time::Instant;

use super::{Buf, Direction, Event, Rules, BUF};
use crate::frame::Utf8Check;
use crate::frame::{apply_mask, check_close_payload, op, parse_header, whole_frame, Header};
use crate::frame::{Violation, NO_CODE};
use crate::relay::policy::{Take, Verdict};
use crate::relay::rules::{check, Message};
use crate::relay::side::Side;
use crate::relay::watch;

/// A frame whose payload is passing through.
#[derive(Debug)]
pub(super) struct Payload {
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
    pub(super) start: Option<usize>,
}

/// What one step of processing found.
enum Step {
    /// Go on with the next bytes.
    Next,
    /// Nothing more to do before more bytes arrive (or a throttle ends).
    Wait,
    /// A close frame, kept in the output (`true`) or withdrawn.
    Close(bool),
    /// A transformed message replaces the frame that completed it ([`Direction::splice`]).
    Splice,
}

impl Direction {
    /// Checks and transforms `buf` (this direction's buffer), up to the first close frame.
    pub(super) fn frames(
        &mut self,
        buf: &mut Buf,
        rules: &Rules,
        forward_close: bool,
        stop: bool,
    ) -> Result<Event, Violation> {
        loop {
            let step = if self.frame.is_some() {
                self.payload(buf)?
            } else if stop {
                Step::Wait
            } else {
                self.next_frame(buf, rules, forward_close)?
            };
            match step {
                Step::Next => {}
                Step::Wait => return Ok(Event::None),
                Step::Close(forwarded) => return Ok(Event::Close { forwarded }),
                Step::Splice => self.splice(buf),
            }
        }
    }

    /// Passes what is buffered of the current frame's payload.
    fn payload(&mut self, buf: &mut [u8]) -> Result<Step, Violation> {
        let Some(p) = self.frame.as_mut() else {
            return Ok(Step::Next);
        };
        let n = (self.end - self.ready).min(usize::try_from(p.remaining).unwrap_or(usize::MAX));
        if n == 0 && p.remaining > 0 {
            return Ok(Step::Wait);
        }
        if !pass_payload(&mut buf[self.ready..self.ready + n], p, &mut self.utf8) {
            if p.fin {
                return Err(Violation::Utf8);
            }
            // A non-final fragment: passed on unchecked from here, and the message is failed
            // at its final frame at the latest (a backend that checks faster shows through, as
            // it would without the gateway).
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
                // Ends mid code point. The frame stays current, so that `process` withdraws
                // it when none of it was written yet.
                return Err(Violation::Utf8);
            }
            self.frame = None;
            if fin && data {
                self.message_done();
            }
        }
        Ok(Step::Next)
    }

    /// A data message's last frame went through: count it.
    pub(super) fn message_done(&mut self) {
        if let Some(m) = self.message.take() {
            let counts = &mut self.flow.messages;
            if m.binary {
                counts.binary += 1;
            } else {
                counts.text += 1;
            }
        }
        self.utf8.reset();
    }

    /// Reads the next frame's header, checks it, and hands the frame to its kind.
    fn next_frame(
        &mut self,
        buf: &mut [u8],
        rules: &Rules,
        forward_close: bool,
    ) -> Result<Step, Violation> {
        let at = self.ready;
        let Some(h) = parse_header(&buf[at..self.end])? else {
            return Ok(Step::Wait);
        };
        let mut message = self.message;
        let text = check(&h, rules, self.from, &mut message)?;
        match h.opcode {
            op::CLOSE => self.close(buf, &h, at, forward_close),
            op::PING | op::PONG => self.ping_pong(buf, &h, at, rules),
            _ => self.data(buf, &h, at, message, text, rules),
        }
    }

    /// A text, binary or continuation frame: a frame of a text message (up to [`BUF`]) or
    /// one the JSON check reads waits to be whole; the policies admit it; it starts passing.
    fn data(
        &mut self,
        buf: &mut [u8],
        h: &Header,
        at: usize,
        message: Option<Message>,
        text: bool,
        rules: &Rules,
    ) -> Result<Step, Violation> {
        let total = frame_len(h);
        // Checked as JSON, or collected for transform rules.
        let json = message.is_some_and(|m| m.text)
            && self.policy.as_ref().is_some_and(|p| p.wants_whole_text());
        let whole = text && total <= BUF as u64 || json;
        if whole && !self.holds(at, total) {
            if json {
                self.want = usize::try_from(total).unwrap_or(usize::MAX);
            }
            return Ok(Step::Wait); // wait for the whole frame before passing any of it
        }
        // Rates count every frame but a close (pings and pongs too: they cost the other side
        // as much as data does); the close handshake always passes.
        if let Some(p) = self.policy.as_mut() {
            if let Verdict::Wait = p.admit(h, h.opcode != op::CONTINUATION, total)? {
                return Ok(Step::Wait); // throttled: the frame waits in the buffer
            }
            if json {
                // Whole: the buffer may shrink back once the frame is through.
                self.want = 0;
                let payload = &buf[at + h.header_len..at + total as usize];
                p.text_frame(payload, h.mask, h.fin)?;
                if p.transforms() {
                    let step = self.transformed(buf, h, at, message, rules)?;
                    if let Some(step) = step {
                        return Ok(step);
                    }
                }
            }
        }
        self.arrived();
        self.message = message;
        self.begin(buf, h, at, true, text);
        Ok(Step::Next)
    }

    /// A whole text frame on a direction with transform rules: a frame of a message that
    /// streams goes on as usual (`None`); a frame of a collected message leaves the buffer, and
    /// the one that completes it is replaced by the transformed message ([`Step::Splice`]).
    /// Apart from [`Direction::data`], so that the fast path's code stays as small as it was.
    #[inline(never)]
    fn transformed(
        &mut self,
        buf: &mut [u8],
        h: &Header,
        at: usize,
        message: Option<Message>,
        rules: &Rules,
    ) -> Result<Option<Step>, Violation> {
        let Some(p) = self.policy.as_mut() else {
            return Ok(None);
        };
        let total = frame_len(h) as usize;
        let payload = &buf[at + h.header_len..at + total];
        let first = h.opcode != op::CONTINUATION;
        let step = match p.transform_frame(payload, h.mask, first, h.fin)? {
            Take::Stream => return Ok(None),
            Take::Held => {
                buf.copy_within(at + total..self.end, at);
                self.end -= total;
                Step::Next
            }
            Take::Done(payload) => {
                if payload.len() as u64 > rules.max_message[self.from] {
                    return Err(Violation::TooBig("message too big after message_transform"));
                }
                // Towards the backend with a masking key of the gateway's own.
                let mask = h.mask.map(|_| rand::random::<[u8; 4]>());
                let frame = whole_frame(op::TEXT, &payload, mask);
                p.pending = Some((at, total, frame));
                Step::Splice
            }
        };
        self.arrived();
        self.message = message;
        Ok(Some(step))
    }

    /// A ping or a pong, whole in the buffer first. A client's pong that answers the
    /// gateway's own ping is taken out of the stream: the backend never sees it.
    fn ping_pong(
        &mut self,
        buf: &mut [u8],
        h: &Header,
        at: usize,
        rules: &Rules,
    ) -> Result<Step, Violation> {
        let total = frame_len(h);
        if !self.holds(at, total) {
            return Ok(Step::Wait);
        }
        let total = total as usize;
        if self.from == Side::Client
            && h.opcode == op::PONG
            && rules.ping_interval.is_some()
            && watch::is_own_pong(&buf[at..], h)
        {
            buf.copy_within(at + total..self.end, at);
            self.end -= total;
            self.keepalive_pongs += 1;
            return Ok(Step::Next);
        }
        if let Some(p) = self.policy.as_mut() {
            if let Verdict::Wait = p.admit(h, true, total as u64)? {
                return Ok(Step::Wait);
            }
        }
        self.arrived();
        if h.opcode == op::PING {
            self.flow.messages.ping += 1;
        } else {
            self.flow.messages.pong += 1;
        }
        self.begin(buf, h, at, false, false);
        Ok(Step::Next)
    }

    /// A close frame, whole in the buffer first: checked, then kept in the output (re-masked)
    /// or withdrawn. Input after it is discarded (nothing may follow a close).
    fn close(
        &mut self,
        buf: &mut [u8],
        h: &Header,
        at: usize,
        forward: bool,
    ) -> Result<Step, Violation> {
        if !self.holds(at, frame_len(h)) {
            return Ok(Step::Wait);
        }
        self.arrived();
        let (payload_at, len) = (at + h.header_len, h.len as usize);
        let mut copy = [0u8; 125];
        copy[..len].copy_from_slice(&buf[payload_at..payload_at + len]);
        if let Some(k) = h.mask {
            apply_mask(&mut copy[..len], k, 0);
        }
        check_close_payload(&copy[..len])?;
        self.flow.messages.close += 1;
        self.close_code = Some(match copy[..len] {
            [a, b, ..] => u16::from_be_bytes([a, b]),
            _ => NO_CODE,
        });
        if len > 2 {
            // Checked as UTF-8 above.
            // A thin pointer: every open connection holds two of these.
            let reason = String::from_utf8_lossy(&copy[2..len]).into_owned();
            self.close_reason = Some(Box::new(reason));
        }
        if let Some(k) = h.mask {
            let r = rand::random::<[u8; 4]>();
            buf[payload_at - 4..payload_at].copy_from_slice(&r);
            apply_mask(&mut buf[payload_at..payload_at + len], xor(k, r), 0);
        }
        self.ready = if forward { payload_at + len } else { at };
        self.end = self.ready;
        Ok(Step::Close(forward))
    }

    /// Whether the frame at `at`, `total` bytes on the wire, is all in the buffer.
    fn holds(&self, at: usize, total: u64) -> bool {
        (self.end - at) as u64 >= total
    }

    /// A frame arrived: the idle timer sees it (when there is one).
    fn arrived(&mut self) {
        if self.last_frame.is_some() {
            self.last_frame = Some(Instant::now());
        }
    }

    /// The frame at `at` starts passing: its header goes out (a client's with the gateway's
    /// masking key), its payload follows through [`Direction::payload`]. Inlined: every frame
    /// of the fast path takes it (callgrind: 100 instructions a message when it was a call).
    #[inline(always)]
    fn begin(&mut self, buf: &mut [u8], h: &Header, at: usize, data: bool, text: bool) {
        let remask = h.mask.map(|_| rand::random::<[u8; 4]>());
        if let Some(k) = remask {
            buf[at + h.header_len - 4..at + h.header_len].copy_from_slice(&k);
        }
        self.ready = at + h.header_len;
        self.frame = Some(Payload {
            remaining: h.len,
            fin: h.fin,
            data,
            unmask: h.mask,
            remask,
            offset: 0,
            text,
            start: Some(at),
        });
    }
}

/// A frame's size on the wire.
fn frame_len(h: &Header) -> u64 {
    h.header_len as u64 + h.len
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
