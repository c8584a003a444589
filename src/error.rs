//! The one error type of a proxied connection, and the only place where an error is mapped to
//! an HTTP status (before the upgrade) or a WebSocket close code (after it). The refusals the
//! stages name ([`AuthError`], [`Capacity`], [`PerClient`]) are declared beside it, so that it
//! imports nothing of the stages (only the frame rules' `Violation`).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

mod close;
mod refusals;

pub use close::{GatewayClose, OPERATOR_REASONS};
pub use refusals::{AuthError, Capacity, PerClient};

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
            Error::NoBackend { .. } | Error::Overloaded { .. } | Error::ResolverBusy { .. } => 503,
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

#[cfg(test)]
mod tests;
