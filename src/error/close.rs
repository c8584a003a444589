//! Every close frame the gateway itself writes, with its code and reason.

use crate::frame::Violation;

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

    /// The close frame, masked with `mask` (towards a backend) or not (towards a client).
    pub fn frame(&self, mask: Option<[u8; 4]>) -> Vec<u8> {
        crate::frame::close_frame(self.code(), self.reason(), mask)
    }
}
