//! Which headers cross the gateway, in one place. The backend's request carries the client's
//! end-to-end headers minus the ones listed here; the client's 101 carries the backend's minus
//! the hop-by-hop ones. `config` asks [`reserved_for_claims`] to refuse `forward_claims` names
//! the gateway owns. Imports nothing of the crate.

/// Hop-by-hop and framing headers (RFC 9110 7.6.1, 6.4 and 10.1.1), and the ones the gateway
/// writes itself on each leg. `Proxy-*` is matched by prefix in [`hop_or_owned`].
const NEVER_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "expect",
    "upgrade",
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
];

/// A header (lowercase name) that never goes from one leg to the other as it is: hop-by-hop,
/// framing, `Expect`, any `Proxy-*`, or one the gateway sets on each leg itself.
pub fn hop_or_owned(lower: &str) -> bool {
    NEVER_FORWARDED.contains(&lower) || lower.starts_with("proxy-")
}

/// The client-address and scheme headers: `Forwarded`, `X-Real-IP` and every
/// `X-Forwarded-*`. The gateway writes its own; it keeps a trusted proxy's.
pub fn is_forwarding(lower: &str) -> bool {
    lower == "forwarded" || lower == "x-real-ip" || lower.starts_with("x-forwarded-")
}

/// Whether a client's request header (lowercase name) may be copied to the backend request, as
/// far as its name tells (the `Connection` list and the `jwt` block have their say after).
/// Names with `_` never pass (nginx's `underscores_in_headers off`): CGI, WSGI, PHP and Rails
/// read `X_User_Id` as `X-User-Id`, so one would slip past the identity headers' rules.
pub fn from_client(lower: &str) -> bool {
    !lower.contains('_') && !hop_or_owned(lower) && !is_forwarding(lower)
}

/// Whether a header of the backend's 101 (lowercase name) may go to the client.
pub fn from_backend(lower: &str) -> bool {
    !hop_or_owned(lower) && !is_forwarding(lower)
}

/// Whether `jwt.forward_claims` may not set this header (lowercase name): one the gateway owns
/// or never forwards, `Authorization`, or `Sec-WebSocket-Protocol`.
pub fn reserved_for_claims(lower: &str) -> bool {
    !from_client(lower) || lower == "authorization" || lower == "sec-websocket-protocol"
}

/// The header names that `Connection` header values list (lowercase): hop-by-hop for this
/// message, so never copied to the other leg (RFC 9110 7.6.1).
pub fn connection_listed<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_client_may_send_on() {
        for ok in [
            "origin",
            "cookie",
            "authorization",
            "x-user-id",
            "user-agent",
        ] {
            assert!(from_client(ok), "{ok}");
        }
        for no in [
            "x_user_id",
            "x-user_id",
            "expect",
            "te",
            "trailer",
            "transfer-encoding",
            "content-length",
            "proxy-authorization",
            "proxy-connection",
            "forwarded",
            "x-real-ip",
            "x-forwarded-for",
            "x-forwarded-prefix",
            "host",
            "connection",
        ] {
            assert!(!from_client(no), "{no}");
        }
        assert!(reserved_for_claims("authorization"));
        assert!(reserved_for_claims("x_tenant"));
        assert!(!reserved_for_claims("x-tenant"));
        assert_eq!(
            connection_listed(["Upgrade, X-Secret", " ,keep-alive"].into_iter()),
            ["upgrade", "x-secret", "keep-alive"]
        );
    }
}
