//! A route's message policies inside the relay: `rate_limit.messages_per_second` and
//! `bytes_per_second` (token buckets per direction, throttling or closing), `message_filter`
//! (`allow_types`, `require_json`) and `message_transform` (the text messages collected for
//! its rules). A direction without policies holds none of this (`Option<Box<..>>` left
//! `None`), so the fast path pays one branch per frame header.

use std::fmt;
use std::pin::Pin;
use std::task::Context;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use super::json::JsonCheck;
use super::transform::Transformer;
use crate::bucket::{Bucket, Tokens};
use crate::config::{MessageFilter, OnExceed, RateLimit};
use crate::frame::{apply_mask, op, Header, Violation};
use crate::reactor::Timer;

/// The policies of one route, as the relay applies them (copied into each connection).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Data messages per second, per direction.
    pub messages: Option<Bucket>,
    /// Wire bytes of data frames per second, per direction.
    pub bytes: Option<Bucket>,
    /// Close (a [`Violation::Policy`]) instead of throttling.
    pub close: bool,
    /// Refuse text messages (a [`Violation::Unsupported`]).
    pub deny_text: bool,
    /// Refuse binary messages (a [`Violation::Unsupported`]).
    pub deny_binary: bool,
    /// Text messages from the client must be JSON (else a [`Violation::Invalid`]).
    pub require_json: bool,
}

impl Policy {
    /// The relay's view of a route's `rate_limit` and `message_filter`; `None` when neither
    /// asks for anything (the fast path).
    pub fn of(rate: &RateLimit, filter: Option<&MessageFilter>) -> Option<Policy> {
        let p = Policy {
            messages: rate.messages,
            bytes: rate.bytes,
            close: rate.on_exceed == OnExceed::Close,
            deny_text: filter.is_some_and(|f| !f.allow_text),
            deny_binary: filter.is_some_and(|f| !f.allow_binary),
            require_json: filter.is_some_and(|f| f.require_json),
        };
        let active = p.messages.is_some()
            || p.bytes.is_some()
            || p.deny_text
            || p.deny_binary
            || p.require_json;
        active.then_some(p)
    }
}

/// One direction's policy state.
pub struct DirPolicy {
    policy: Policy,
    /// The message bucket's settings and level.
    messages: Option<(Bucket, Tokens)>,
    /// The byte bucket's settings and level.
    bytes: Option<(Bucket, Tokens)>,
    /// Throttled: no new frame starts before this.
    paused_until: Option<Instant>,
    /// Wakes the connection when `paused_until` comes.
    resume: Option<Timer>,
    /// The JSON check of the client's text message under way, when it must be JSON.
    json: Option<JsonCheck>,
    /// Checking this direction's text messages as JSON.
    check_json: bool,
    /// `message_transform`'s rules for this direction, when it has any.
    transform: Option<Transformer>,
    /// The text message being collected for the rules (payload so far, unmasked); `None`
    /// between messages and while one that does not start with `{` streams through.
    collected: Option<Vec<u8>>,
    /// A transformed message waiting to replace the frame that completed it: where that
    /// frame starts in the buffer, its wire size, and the new frame.
    pub pending: Option<(usize, usize, Vec<u8>)>,
}

/// What becomes of a whole text frame on a direction with transform rules.
pub enum Take {
    /// It passes as usual.
    Stream,
    /// It was added to the message being collected: it leaves the buffer.
    Held,
    /// It completed the message: this payload (transformed, or as it came) replaces it.
    Done(Vec<u8>),
}

impl fmt::Debug for DirPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirPolicy")
            .field("policy", &self.policy)
            .field("paused_until", &self.paused_until)
            .finish_non_exhaustive()
    }
}

/// What a policy says about a data frame about to start.
pub enum Verdict {
    /// Pass it.
    Pass,
    /// Not yet: the direction is throttled.
    Wait,
}

impl DirPolicy {
    /// The state for one direction (`from_client`) of a connection under `policy` and
    /// `transform`'s rules.
    pub fn new(
        policy: Policy,
        from_client: bool,
        transform: Option<Transformer>,
    ) -> Box<DirPolicy> {
        Box::new(DirPolicy {
            policy,
            messages: policy.messages.map(|b| (b, Tokens::full(Instant::now()))),
            bytes: policy.bytes.map(|b| (b, Tokens::full(Instant::now()))),
            paused_until: None,
            resume: None,
            json: None,
            check_json: from_client && policy.require_json,
            transform,
            collected: None,
            pending: None,
        })
    }

    /// Whether a throttled direction may go on: arms a timer while it may not (so that the
    /// task wakes when its tokens are back); true once its time has come.
    pub fn poll_resume(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(until) = self.paused_until else {
            self.resume = None;
            return false;
        };
        let timer = self
            .resume
            .get_or_insert_with(|| Timer::after(until.saturating_duration_since(Instant::now())));
        if Pin::new(timer).poll(cx).is_ready() {
            self.resume = None;
            self.paused_until = None;
            return true;
        }
        false
    }

    /// Whether this direction has `message_transform` rules.
    pub fn transforms(&self) -> bool {
        self.transform.is_some()
    }

    /// Whether this direction's text frames must be whole in the buffer before passing.
    pub fn wants_whole_text(&self) -> bool {
        self.check_json || self.transform.is_some()
    }

    /// A whole text frame (`payload`, still masked with `mask`) on a direction with transform
    /// rules: a message whose first frame does not start with `{` streams; one that does is
    /// collected, and its last frame gives the payload that replaces it.
    pub fn transform_frame(
        &mut self,
        payload: &[u8],
        mask: Option<[u8; 4]>,
        first: bool,
        fin: bool,
    ) -> Result<Take, Violation> {
        let Some(t) = self.transform.as_ref() else {
            return Ok(Take::Stream);
        };
        if first {
            let key = mask.unwrap_or_default();
            let plain = payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k);
            self.collected = Transformer::wants(plain).then(Vec::new);
        }
        let Some(message) = self.collected.as_mut() else {
            return Ok(Take::Stream);
        };
        let start = message.len();
        if start + payload.len() > t.max() {
            return Err(Violation::TooBig("message too big for message_transform"));
        }
        message.extend_from_slice(payload);
        if let Some(k) = mask {
            apply_mask(&mut message[start..], k, 0);
        }
        let Some(message) = self.collected.take_if(|_| fin) else {
            return Ok(Take::Held);
        };
        Ok(Take::Done(t.apply(&message)?.unwrap_or(message)))
    }

    /// Checks a frame header (data, ping or pong) at the start of its frame, before any of it
    /// passes (`first`: it starts a message, as a control frame does; `total`: its wire size).
    pub fn admit(&mut self, h: &Header, first: bool, total: u64) -> Result<Verdict, Violation> {
        if first && h.opcode == op::TEXT && self.policy.deny_text {
            return Err(Violation::Unsupported("text messages are not allowed"));
        }
        if first && h.opcode == op::BINARY && self.policy.deny_binary {
            return Err(Violation::Unsupported("binary messages are not allowed"));
        }
        if self.messages.is_none() && self.bytes.is_none() {
            return Ok(Verdict::Pass);
        }
        let now = Instant::now();
        if self.paused_until.is_some_and(|t| now < t) {
            return Ok(Verdict::Wait);
        }
        self.paused_until = None;
        let need_msg = if first { 1.0 } else { 0.0 };
        let size = total as f64;
        let mut wait = Duration::ZERO;
        if let Some((b, t)) = self.messages.as_mut() {
            t.refill(b, now);
            wait = wait.max(t.wait_for(b, need_msg));
        }
        if let Some((b, t)) = self.bytes.as_mut() {
            t.refill(b, now);
            // Throttling lets a frame start once the byte balance is not in debt; closing
            // needs the whole frame's worth.
            let need = if self.policy.close { size } else { 0.0 };
            wait = wait.max(t.wait_for(b, need));
        }
        if wait > Duration::ZERO {
            if self.policy.close {
                return Err(Violation::Policy("rate limit"));
            }
            self.paused_until = Some(now + wait);
            return Ok(Verdict::Wait);
        }
        if let Some((_, t)) = self.messages.as_mut() {
            t.spend(need_msg);
        }
        if let Some((_, t)) = self.bytes.as_mut() {
            t.spend(size);
        }
        Ok(Verdict::Pass)
    }

    /// A whole text frame of the client's (`payload`, still masked with `mask`), before it
    /// passes: fed to the message's JSON check, which the message's last frame must complete.
    /// Nothing is copied: the check keeps a few bytes of state.
    pub fn text_frame(
        &mut self,
        payload: &[u8],
        mask: Option<[u8; 4]>,
        fin: bool,
    ) -> Result<(), Violation> {
        if !self.check_json {
            return Ok(());
        }
        let check = self.json.get_or_insert_with(JsonCheck::default);
        let ok = match mask {
            Some(k) => (payload.iter().zip(k.iter().cycle())).all(|(b, k)| check.feed_byte(b ^ k)),
            None => check.feed(payload),
        };
        let ok = ok && (!fin || check.is_complete());
        if fin || !ok {
            self.json = None;
        }
        if ok {
            Ok(())
        } else {
            Err(Violation::Invalid("invalid JSON"))
        }
    }
}
