//! Which headers cross the gateway, in one place. The backend's request carries the client's
//! end-to-end headers minus the ones listed here; the client's 101 carries the backend's minus
//! the hop-by-hop ones. `config` asks [`reserved_for_claims`] to refuse `forward_claims` names
//! the gateway owns. Imports nothing of the crate.

/// Whether `name` starts with `prefix` (lowercase), in any case.
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// A header (name in any case, as all names here) that never goes from one leg to the other
/// as it is: hop-by-hop, framing and `Expect` (RFC 9110 7.6.1, 6.4 and 10.1.1), any
/// `Proxy-*`, or one the gateway sets on each leg itself.
pub fn hop_or_owned(name: &str) -> bool {
    // Lowercased on the stack: every name listed is shorter than this buffer.
    let mut buf = [0u8; 32];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return has_prefix(name, "proxy-");
    };
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    matches!(
        &*lower,
        b"connection"
            | b"keep-alive"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"content-length"
            | b"expect"
            | b"upgrade"
            | b"host"
            | b"sec-websocket-key"
            | b"sec-websocket-version"
            | b"sec-websocket-accept"
            | b"sec-websocket-extensions"
    ) || lower.starts_with(b"proxy-")
}

/// The client-address and scheme headers: `Forwarded`, `X-Real-IP` and every
/// `X-Forwarded-*`. The gateway writes its own; it keeps a trusted proxy's.
pub fn is_forwarding(name: &str) -> bool {
    name.eq_ignore_ascii_case("forwarded")
        || name.eq_ignore_ascii_case("x-real-ip")
        || has_prefix(name, "x-forwarded-")
}

/// Whether a client's request header may be copied to the backend request, as
/// far as its name tells (the `Connection` list and the `jwt` block have their say after).
/// Names with `_` never pass (nginx's `underscores_in_headers off`): CGI, WSGI, PHP and Rails
/// read `X_User_Id` as `X-User-Id`, so one would slip past the identity headers' rules.
pub fn from_client(name: &str) -> bool {
    !name.contains('_') && !hop_or_owned(name) && !is_forwarding(name)
}

/// Whether a header of the backend's 101 may go to the client.
pub fn from_backend(name: &str) -> bool {
    !hop_or_owned(name) && !is_forwarding(name)
}

/// Whether `jwt.forward_claims` may not set this header: one the gateway owns or never
/// forwards, `Authorization`, or `Sec-WebSocket-Protocol`.
pub fn reserved_for_claims(name: &str) -> bool {
    !from_client(name)
        || name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("sec-websocket-protocol")
}

/// The header names that `Connection` header values list: hop-by-hop for this message, so
/// never copied to the other leg (RFC 9110 7.6.1). See [`is_listed`].
pub fn connection_listed<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether `name` is one of the `listed` names, in any case.
pub fn is_listed(listed: &[&str], name: &str) -> bool {
    listed.iter().any(|l| l.eq_ignore_ascii_case(name))
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
            "Proxy-A-Header-Name-Longer-Than-Thirty-Two-Bytes",
            "Sec-WebSocket-Extensions",
            "TE",
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
        assert!(!from_client("X-Forwarded-Host") && !from_client("PROXY-Authorization"));
        assert!(from_client("X-User-Id") && !from_backend("Sec-WebSocket-Accept"));
        assert!(reserved_for_claims("Authorization"));
        assert!(reserved_for_claims("authorization"));
        assert!(reserved_for_claims("x_tenant"));
        assert!(!reserved_for_claims("x-tenant"));
        assert_eq!(
            connection_listed(["Upgrade, X-Secret", " ,keep-alive"].into_iter()),
            ["Upgrade", "X-Secret", "keep-alive"]
        );
        assert!(is_listed(&["Upgrade", "X-Secret"], "x-secret"));
    }
}
