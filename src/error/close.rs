//! Every close frame the gateway itself writes, with its code and reason.

use std::sync::{Mutex, PoisonError};

use crate::frame::Violation;

/// How many different reasons operators' closes may use in a process's life.
pub const OPERATOR_REASONS: usize = 64;

/// The reasons of operators' closes so far.
static REASONS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// A close frame the gateway itself chooses, after the upgrade (before it, an [`super::Error`] and its
/// [`super::Error::status`]). A peer's own close frames pass through untouched; these are the only
/// codes and reasons the gateway writes, and this is the only place that names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayClose {
    /// Graceful shutdown (SIGTERM, SIGINT): both legs.
    Shutdown,
    /// A reload removed the connection's route, or its backend from the route: both legs.
    Restart,
    /// `limits.idle_timeout_ms`: no frame from either side for that long; both legs.
    Idle,
    /// `limits.ping_interval_ms`: two of the gateway's pings in a row went unanswered; both legs.
    PingTimeout,
    /// `jwt.enforce_expiry`: the connection's token expired; both legs.
    TokenExpired,
    /// To the backend: the client vanished (TCP closed without a close frame) or broke a rule.
    ClientGone,
    /// To the client: the backend's TCP closed without a close frame.
    BackendLost,
    /// To the client: the backend broke a rule.
    BackendError,
    /// To the other leg, when one went over a size limit.
    PeerTooBig,
    /// To the leg that broke a rule (RFC 6455 7.4.1): the rule's code and text.
    Violation(Violation),
    /// A health check's own WebSocket, closed as soon as its handshake passed.
    HealthProbe,
    /// An operator's close (`POST /connections/.../close`): the code and reason asked for
    /// ([`GatewayClose::operator`]); both legs.
    Operator(u16, &'static str),
    /// An operator drained the connection's backend (`POST /backends/drain`); both legs.
    Drained,
}

impl GatewayClose {
    /// The close code.
    pub fn code(&self) -> u16 {
        self.code_and_reason().0
    }

    /// The close reason (at most 123 bytes, as a close frame allows).
    pub fn reason(&self) -> &'static str {
        self.code_and_reason().1
    }

    /// The one table of the gateway's close codes and reasons.
    fn code_and_reason(&self) -> (u16, &'static str) {
        match *self {
            GatewayClose::Shutdown => (1001, "gateway shutting down"),
            GatewayClose::Restart => (1012, "service restart"),
            GatewayClose::Idle => (1001, "idle timeout"),
            GatewayClose::PingTimeout => (1001, "ping timeout"),
            GatewayClose::TokenExpired => (1008, "token expired"),
            GatewayClose::ClientGone => (1001, "client went away"),
            GatewayClose::BackendLost => (1011, "backend connection lost"),
            GatewayClose::BackendError => (1011, "backend error"),
            GatewayClose::PeerTooBig => (1001, "peer sent too much"),
            GatewayClose::HealthProbe => (1000, ""),
            GatewayClose::Operator(code, reason) => (code, reason),
            GatewayClose::Drained => (1012, "backend drained"),
            GatewayClose::Violation(v) => match v {
                Violation::Protocol(why) => (1002, why),
                Violation::Unsupported(why) => (1003, why),
                Violation::Utf8 => (1007, "invalid UTF-8 in text"),
                Violation::Invalid(why) => (1007, why),
                Violation::Policy(why) => (1008, why),
                Violation::TooBig(why) => (1009, why),
            },
        }
    }

    /// An operator's close with `code` and `reason`, or what is wrong with them: a code a
    /// close frame may carry (1000-1003, 1007-1013, 3000-4999) and a reason of at most 123
    /// bytes. Reasons are kept for the life of the process (a close frame's reason is a
    /// `&'static str`): at most [`OPERATOR_REASONS`] different ones.
    pub fn operator(code: u16, reason: &str) -> Result<GatewayClose, String> {
        if !crate::frame::close_code_allowed(code) {
            return Err(format!(
                "code {code} cannot be sent: use 1000-1003, 1007-1013 or 3000-4999"
            ));
        }
        if reason.len() > 123 {
            return Err(format!(
                "the reason is {} bytes: a close frame holds 123 at most",
                reason.len()
            ));
        }
        let mut kept = REASONS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = kept.iter().find(|r| **r == reason) {
            return Ok(GatewayClose::Operator(code, r));
        }
        if kept.len() >= OPERATOR_REASONS {
            return Err(format!(
                "{OPERATOR_REASONS} different close reasons were used since the start: reuse one"
            ));
        }
        let r: &'static str = Box::leak(reason.into());
        kept.push(r);
        Ok(GatewayClose::Operator(code, r))
    }

    /// The close frame, masked with `mask` (towards a backend) or not (towards a client).
    pub fn frame(&self, mask: Option<[u8; 4]>) -> Vec<u8> {
        crate::frame::close_frame(self.code(), self.reason(), mask)
    }
}
