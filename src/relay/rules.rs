//! What a direction checks in each frame header: the connection's rules (limits, negotiated
//! extensions, policies) against the frame sequence.

use std::time::{Duration, Instant};

use super::policy::Policy;
use super::side::{Both, Side};
use crate::frame::{op, Header, Violation};

/// Limits and negotiated extensions that shape the checks.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Largest frame payload.
    pub max_frame: u64,
    /// Largest message (sum of its frames' payloads) each side may send.
    pub max_message: Both<u64>,
    /// permessage-deflate was negotiated: RSV1 may be set on a message's first frame.
    pub deflate: bool,
    /// `limits.idle_timeout_ms`.
    pub idle_timeout: Option<Duration>,
    /// `limits.ping_interval_ms`.
    pub ping_interval: Option<Duration>,
    /// The route's message policies (`None`: the fast path).
    pub policy: Option<Policy>,
    /// When the connection's token expires (then both legs get
    /// [`GatewayClose::TokenExpired`](crate::error::GatewayClose::TokenExpired)).
    pub expires: Option<Instant>,
}

/// A data message in progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct Message {
    /// Its payload is checked as UTF-8 (text, not compressed).
    pub text: bool,
    /// A binary message (else text), for the counters.
    pub binary: bool,
    /// Payload bytes so far.
    pub len: u64,
    /// A fragment was found not to be UTF-8.
    pub invalid: bool,
}

/// Validates a header against the frame sequence and the rules; returns whether the payload
/// must be checked as UTF-8.
pub(super) fn check(
    h: &Header,
    rules: &Rules,
    from: Side,
    message: &mut Option<Message>,
) -> Result<bool, Violation> {
    let from_client = from == Side::Client;
    if from_client && h.mask.is_none() {
        return Err(Violation::Protocol("unmasked frame from the client"));
    }
    if !from_client && h.mask.is_some() {
        return Err(Violation::Protocol("masked frame from the backend"));
    }
    let rsv1_ok = rules.deflate && matches!(h.opcode, op::TEXT | op::BINARY);
    if h.rsv & 0x30 != 0 || (h.rsv & 0x40 != 0 && !rsv1_ok) {
        return Err(Violation::Protocol("reserved bits set"));
    }
    if h.len > rules.max_frame {
        return Err(Violation::TooBig("frame too big"));
    }
    if h.is_control() {
        if !matches!(h.opcode, op::CLOSE | op::PING | op::PONG) {
            return Err(Violation::Protocol("unknown control opcode"));
        }
        if h.len > 125 || !h.fin {
            return Err(Violation::Protocol(
                "control frame over 125 bytes or fragmented",
            ));
        }
        return Ok(false);
    }
    data_frame(h, rules.max_message[from], message)
}

/// A data frame's place in its message (a message of at most `max` bytes); returns whether
/// its payload must be checked as UTF-8.
fn data_frame(h: &Header, max: u64, message: &mut Option<Message>) -> Result<bool, Violation> {
    let text = match (h.opcode, message.as_mut()) {
        (op::CONTINUATION, Some(m)) => {
            m.len += h.len;
            if m.len > max {
                return Err(Violation::TooBig("message too big"));
            }
            if m.invalid && h.fin {
                return Err(Violation::Utf8);
            }
            m.text && !m.invalid
        }
        (op::CONTINUATION, None) => {
            return Err(Violation::Protocol("continuation frame without a message"))
        }
        (op::TEXT | op::BINARY, None) => {
            if h.len > max {
                return Err(Violation::TooBig("message too big"));
            }
            // A compressed text message is checked by the peer after inflating it.
            let text = h.opcode == op::TEXT && h.rsv & 0x40 == 0;
            *message = Some(Message {
                text,
                binary: h.opcode == op::BINARY,
                len: h.len,
                invalid: false,
            });
            text
        }
        (op::TEXT | op::BINARY, Some(_)) => {
            return Err(Violation::Protocol("new message inside a fragmented one"))
        }
        _ => return Err(Violation::Protocol("unknown data opcode")),
    };
    Ok(text)
}
