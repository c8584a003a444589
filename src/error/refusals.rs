//! The refusals the stages name, declared here so that the error module imports none of
//! them: a token's (401), an open-connection limit's (503) and a per-address limit's (429).

use std::fmt;

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
