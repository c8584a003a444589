//! The one error type of a proxied connection, and the only place where an error is mapped to
//! an HTTP status (before the upgrade) or a WebSocket close code (after it). The refusals the
//! stages name ([`AuthError`], [`Capacity`], [`PerClient`]) are declared beside it, so that it
//! imports nothing of the stages (only the frame rules' `Violation`).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::frame::Violation;

/// Everything that can end a connection early. `Display` says what happened and, where it helps,
/// what to fix.
#[derive(Debug)]
pub enum Error {
    /// The request head is not valid HTTP/1.1 (the text says which part).
    BadRequest(String),
    /// The request head is longer than `limits.max_request_head_bytes`.
    HeadTooLarge(usize),
    /// The request head has more header lines than the gateway reads.
    TooManyHeaders(usize),
    /// The request head was not complete within `limits.handshake_timeout_ms`.
    HandshakeTimeout(Duration),
    /// The client closed or broke the connection before its 101 (its request incomplete, or
    /// while its backend was connected: that attempt is abandoned).
    ClientGone(String),
    /// The client sent more than this many bytes between its request head and its 101.
    TooMuchEarlyData(usize),
    /// No route has this `external_path`.
    NotFound(String),
    /// The route exists but the method is not GET.
    MethodNotAllowed(String),
    /// A plain GET without `Upgrade: websocket`.
    NotUpgrade,
    /// An upgrade request without a valid `Sec-WebSocket-Key` (or otherwise malformed).
    BadUpgrade(String),
    /// `Sec-WebSocket-Version` other than 13.
    BadVersion(String),
    /// The route needs a token and the request has none, or a bad one.
    Unauthorized(AuthError),
    /// A route policy refuses the request (an `Origin` not in `allowed_origins`, or none where
    /// `require_origin` wants one); the text says which.
    Forbidden(String),
    /// The backend refused the TCP connection, or its name did not resolve.
    BackendUnreachable {
        /// `ws://host:port/path` of the attempt.
        url: String,
        /// What the OS said.
        reason: String,
    },
    /// TCP connect, TLS and WebSocket handshake together took longer than
    /// `limits.backend_connect_timeout_ms`.
    BackendTimeout {
        /// `ws://host:port/path` of the attempt.
        url: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The backend answered the upgrade with this non-101 status.
    BackendStatus {
        /// `ws://host:port/path` of the attempt.
        url: String,
        /// The status the backend answered.
        status: u16,
        /// The backend's `WWW-Authenticate` (passed on with a 401).
        www_authenticate: Option<String>,
    },
    /// The backend broke the handshake in some other way (TLS, garbage, bad accept key...).
    BackendFailed {
        /// `ws://host:port/path` of the attempt.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The gateway is shutting down (graceful shutdown under way).
    ShuttingDown,
    /// Every backend of the route is marked down by its health check or has an open circuit
    /// breaker.
    NoBackend {
        /// The route's `external_path`.
        route: String,
        /// When one may be usable again.
        retry_after: Duration,
    },
    /// Too many connections already wait for the lookup of this backend name (the resolver
    /// stalls on it).
    ResolverBusy {
        /// The backend's host name.
        host: String,
        /// How many may wait for one name.
        max_waiting: usize,
        /// The `Retry-After` announced.
        retry_after: Duration,
    },
    /// An open-connection limit is reached: `limits.max_connections` or the route's
    /// `max_connections`.
    Overloaded {
        /// Which limit.
        what: Capacity,
        /// The `Retry-After` announced.
        retry_after: Duration,
    },
    /// The client address is over a per-address limit of the route (`rate_limit`).
    TooManyRequests {
        /// Which limit, and the address.
        what: PerClient,
        /// The `Retry-After` announced (when a handshake token is back, for the rate).
        retry_after: Duration,
    },
}

impl Error {
    /// The HTTP status answered to the client before the upgrade; `None` means the connection is
    /// closed without an answer (timeout, client gone).
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            Error::BadRequest(_) | Error::BadUpgrade(_) | Error::TooMuchEarlyData(_) => 400,
            Error::HeadTooLarge(_) | Error::TooManyHeaders(_) => 431,
            Error::HandshakeTimeout(_) | Error::ClientGone(_) => return None,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::NotUpgrade | Error::BadVersion(_) => 426,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::BackendUnreachable { .. } | Error::BackendFailed { .. } => 502,
            Error::BackendTimeout { .. } => 504,
            Error::NoBackend { .. }
            | Error::ShuttingDown
            | Error::Overloaded { .. }
            | Error::ResolverBusy { .. } => 503,
            Error::TooManyRequests { .. } => 429,
            Error::BackendStatus { status, .. } if (400..500).contains(status) => *status,
            Error::BackendStatus { .. } => 502,
        })
    }

    /// Extra response headers that go with `status()`.
    pub fn headers(&self) -> Option<(&'static str, Cow<'_, str>)> {
        let (name, value): (_, Cow<'_, str>) = match self {
            Error::MethodNotAllowed(_) => ("Allow", "GET".into()),
            Error::NotUpgrade => ("Upgrade", "websocket".into()),
            Error::BadVersion(_) => ("Sec-WebSocket-Version", "13".into()),
            Error::Unauthorized(_) => ("WWW-Authenticate", "Bearer".into()),
            Error::BackendStatus {
                status: 401,
                www_authenticate,
                ..
            } => (
                "WWW-Authenticate",
                www_authenticate.as_deref().unwrap_or("Bearer").into(),
            ),
            Error::NoBackend { retry_after, .. }
            | Error::ResolverBusy { retry_after, .. }
            | Error::Overloaded { retry_after, .. }
            | Error::TooManyRequests { retry_after, .. } => (
                "Retry-After",
                retry_seconds(*retry_after).to_string().into(),
            ),
            _ => return None,
        };
        Some((name, value))
    }

    /// The text sent to the client: the `Display` text, except that backend failures do not
    /// reveal the backend's internal address or the OS error (those are in the gateway's log).
    pub fn client_message(&self) -> String {
        match self {
            Error::BackendUnreachable { .. } => {
                "bad gateway: the backend is unreachable (details in the gateway log)".into()
            }
            Error::BackendTimeout { after, .. } => format!(
                "gateway timeout: the backend did not complete the handshake within {} ms",
                after.as_millis()
            ),
            Error::BackendStatus { status, .. } => {
                format!("the backend refused the upgrade with HTTP {status}")
            }
            Error::BackendFailed { .. } => {
                "bad gateway: the backend's handshake failed (details in the gateway log)".into()
            }
            Error::ResolverBusy { retry_after, .. } => format!(
                "service unavailable: the backend's address is still being looked up; \
                 retry in {} s",
                retry_seconds(*retry_after)
            ),
            other => other.to_string(),
        }
    }

    /// The `reason` label of `kairos_rejections_total` for a refusal by a connection limit.
    pub fn rejection_reason(&self) -> Option<&'static str> {
        match self {
            Error::Overloaded { what, .. } => Some(what.reason()),
            Error::TooManyRequests { what, .. } => Some(what.reason()),
            Error::Forbidden(_) => Some("origin"),
            _ => None,
        }
    }

    /// Whether an operator should see this at `warn` (the rest is the client's own fault and
    /// logged at `debug`).
    pub fn is_operator_problem(&self) -> bool {
        matches!(
            self,
            Error::BackendUnreachable { .. }
                | Error::BackendTimeout { .. }
                | Error::BackendStatus { .. }
                | Error::BackendFailed { .. }
                | Error::NoBackend { .. }
        )
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
fn retry_seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::HeadTooLarge(max) => write!(
                f,
                "request head is larger than {max} bytes (limits.max_request_head_bytes)"
            ),
            Error::TooManyHeaders(max) => {
                write!(f, "request head has more than {max} header lines")
            }
            Error::HandshakeTimeout(t) => write!(
                f,
                "request head not complete within {} ms (limits.handshake_timeout_ms)",
                t.as_millis()
            ),
            Error::ClientGone(why) => write!(f, "client went away during the handshake: {why}"),
            Error::TooMuchEarlyData(max) => write!(
                f,
                "more than {max} bytes sent before the 101: wait for the 101 before sending frames"
            ),
            Error::NotFound(path) => write!(f, "no route for path {path}"),
            Error::MethodNotAllowed(m) => write!(f, "method {m} not allowed: use GET"),
            Error::NotUpgrade => write!(
                f,
                "this path is a WebSocket route: send Upgrade: websocket and Connection: Upgrade"
            ),
            Error::BadUpgrade(why) => write!(f, "malformed WebSocket upgrade: {why}"),
            Error::BadVersion(v) => write!(
                f,
                "Sec-WebSocket-Version {v:?} is not supported: use 13 (RFC 6455)"
            ),
            Error::Unauthorized(why) => write!(f, "unauthorized: {why}"),
            Error::Forbidden(why) => write!(f, "forbidden: {why}"),
            Error::BackendUnreachable { url, reason } => {
                write!(f, "backend {url} unreachable: {reason}")
            }
            Error::BackendTimeout { url, after } => write!(
                f,
                "backend {url} did not complete the handshake within {} ms \
                 (limits.backend_connect_timeout_ms)",
                after.as_millis()
            ),
            Error::BackendStatus { url, status, .. } => {
                write!(f, "backend {url} answered the upgrade with HTTP {status}")
            }
            Error::BackendFailed { url, reason } => {
                write!(f, "backend {url} handshake failed: {reason}")
            }
            Error::ShuttingDown => write!(f, "the gateway is shutting down; retry shortly"),
            Error::NoBackend { route, retry_after } => write!(
                f,
                "no backend of route {route} is available (each is marked down by its health \
                 check or has an open circuit breaker); retry in {} s",
                retry_seconds(*retry_after)
            ),
            Error::ResolverBusy {
                host,
                max_waiting,
                retry_after,
            } => write!(
                f,
                "{max_waiting} connections already wait for the lookup of {host} (the resolver \
                 stalls on it); retry in {} s",
                retry_seconds(*retry_after)
            ),
            Error::Overloaded { what, retry_after } => {
                write!(f, "{what}; retry in {} s", retry_seconds(*retry_after))
            }
            Error::TooManyRequests { what, retry_after } => {
                write!(f, "{what}; retry in {} s", retry_seconds(*retry_after))
            }
        }
    }
}

impl std::error::Error for Error {}

/// Text of a standard HTTP status line for the codes the gateway answers.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A close frame the gateway itself chooses, after the upgrade (before it, an [`Error`] and its
/// [`Error::status`]). A peer's own close frames pass through untouched; these are the only
/// codes and reasons the gateway writes, and this is the only place that names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayClose {
    /// Graceful shutdown (SIGTERM, SIGINT): both legs.
    Shutdown,
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

/// Why a request was refused with 401. The text is sent to the client in the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the header nor the query.
    Missing,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// `iss` missing or not the configured issuer.
    WrongIssuer,
    /// `aud` missing or not the configured audience.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(String),
    /// The token's `alg` is not in `jwt.algorithms`.
    AlgorithmNotAllowed(String),
    /// Not a JWT at all (shape, base64, JSON), or two tokens at once.
    Malformed(String),
}

impl AuthError {
    /// A short fixed label for the metrics (`kairos_auth_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            AuthError::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => write!(
                f,
                "missing token: send Authorization: Bearer <token> or the token query parameter"
            ),
            AuthError::Expired => write!(f, "token expired"),
            AuthError::NotYetValid => write!(f, "token not yet valid (nbf)"),
            AuthError::BadSignature => write!(f, "bad token signature"),
            AuthError::WrongIssuer => write!(f, "wrong token issuer (iss)"),
            AuthError::WrongAudience => write!(f, "wrong token audience (aud)"),
            AuthError::MissingClaim(c) => write!(f, "token is missing the required claim {c:?}"),
            AuthError::AlgorithmNotAllowed(a) => write!(f, "token algorithm {a} not allowed"),
            AuthError::Malformed(why) => write!(f, "malformed token: {why}"),
        }
    }
}

/// An open-connection limit that is reached (answered 503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// `limits.max_connections`: the whole gateway.
    Gateway {
        /// The limit.
        max: usize,
    },
    /// The route's `max_connections`.
    Route {
        /// The route's `external_path`.
        route: String,
        /// The limit.
        max: usize,
    },
}

/// A per-address limit a client is over (answered 429).
#[derive(Debug, Clone, PartialEq)]
pub enum PerClient {
    /// `rate_limit.connections_per_ip`.
    Connections {
        /// The client (its address, or its IPv6 network).
        client: String,
        /// The limit.
        max: u32,
    },
    /// `rate_limit.handshakes_per_second_per_ip`.
    Handshakes {
        /// The client (its address, or its IPv6 network).
        client: String,
        /// The limit: new connections a second.
        rate: f64,
        /// The limit: new connections at once.
        burst: f64,
    },
}

impl Capacity {
    /// The `reason` label of `kairos_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Capacity::Gateway { .. } => "max_connections",
            Capacity::Route { .. } => "route_max_connections",
        }
    }
}

impl PerClient {
    /// The `reason` label of `kairos_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PerClient::Connections { .. } => "connections_per_ip",
            PerClient::Handshakes { .. } => "handshakes_per_ip",
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Gateway { max } => write!(
                f,
                "the gateway has {max} open connections, its limit (limits.max_connections)"
            ),
            Capacity::Route { route, max } => write!(
                f,
                "route {route} has {max} open connections, its limit (max_connections)"
            ),
        }
    }
}

impl fmt::Display for PerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PerClient::Connections { client, max } => write!(
                f,
                "{client} has {max} open connections on this route, its limit \
                 (rate_limit.connections_per_ip)"
            ),
            PerClient::Handshakes {
                client,
                rate,
                burst,
            } => write!(
                f,
                "too many new connections from {client}: this route allows {rate} a second, \
                 {burst} at once (rate_limit.handshakes_per_second_per_ip)"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
