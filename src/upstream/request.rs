//! The upgrade request the backend gets: the gateway's own upgrade fields, the client's
//! end-to-end headers as [`crate::headers`] allows them, the identity headers from the token,
//! and the client-address headers, which only the gateway (or a trusted proxy) writes.

use std::net::{IpAddr, SocketAddr};

use crate::config::Backend;
use crate::handshake::{Head, Request, Upgrade};
use crate::headers;

/// What the client side contributes to the backend request.
pub struct ClientSide<'a> {
    /// The parsed request.
    pub request: &'a Request,
    /// Its upgrade fields.
    pub upgrade: &'a Upgrade,
    /// The connection's id (for log lines).
    pub id: u64,
    /// The socket peer's address.
    pub peer: SocketAddr,
    /// The peer is one of `server.trusted_proxies`: its forwarding headers are kept (and
    /// extended), not replaced.
    pub trusted_peer: bool,
    /// The client's address as `trusted_proxies` decides it (the peer, or the address a
    /// trusted peer's `X-Forwarded-For` names): the `X-Real-IP` written when none is kept.
    pub client_ip: IpAddr,
    /// `http` or `https` (the listener's scheme).
    pub proto: &'a str,
    /// `jwt.forward_claims` as (claim, header): the client's own headers of those names are
    /// never passed on, on any route, so that it cannot pose as another user.
    pub claim_headers: &'a [(String, String)],
    /// The headers set from the verified token's claims, as (header, value): made once per
    /// connection, checked free of control characters.
    pub claims: &'a [(&'a str, String)],
    /// The client's `Authorization` header is not passed on (`jwt.strip_authorization`, on a
    /// route with `auth_required`).
    pub strip_authorization: bool,
}

impl ClientSide<'_> {
    /// Whether the client's header `lower` (lowercase) is left out of the backend request for
    /// the `jwt` block's sake: a `forward_claims` header, or a stripped `Authorization`.
    fn withheld(&self, lower: &str) -> bool {
        (self.strip_authorization && lower == "authorization")
            || self
                .claim_headers
                .iter()
                .any(|(_, h)| h.eq_ignore_ascii_case(lower))
    }
}

/// The request head sent to the backend.
pub fn request_head(
    backend: &Backend,
    path_and_query: &str,
    client: &ClientSide<'_>,
    key: &str,
) -> Vec<u8> {
    let req = client.request;
    let mut out = format!("GET {path_and_query} HTTP/1.1\r\n").into_bytes();
    out.reserve(512);
    let mut line = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    line("Host", backend.host_header().as_bytes());
    line("Upgrade", b"websocket");
    line("Connection", b"Upgrade");
    line("Sec-WebSocket-Key", key.as_bytes());
    line("Sec-WebSocket-Version", b"13");
    let listed = headers::connection_listed(req.header_all("Connection"));
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if headers::from_client(&lower) && !listed.contains(&lower) && !client.withheld(&lower) {
            line(name, value);
        }
    }
    for (name, value) in client.claims {
        line(name, value.as_bytes());
    }
    if let Some(offers) = deflate_offers(req) {
        line("Sec-WebSocket-Extensions", offers.as_bytes());
    }
    forwarding(client, &mut line);
    out.extend_from_slice(b"\r\n");
    out
}

/// The client-address and scheme headers. From a peer that is not a trusted proxy, whatever
/// the client wrote is gone ([`headers::from_client`]) and the gateway's own values stand:
/// `X-Forwarded-For` (the peer), `X-Forwarded-Proto`, `X-Forwarded-Host` (the client's `Host`),
/// `X-Real-IP` and `Forwarded` (RFC 7239). From a trusted proxy, its values are kept:
/// `X-Forwarded-For` and `Forwarded` get this hop appended, the others are written only when
/// it sent none.
fn forwarding(client: &ClientSide<'_>, line: &mut impl FnMut(&str, &[u8])) {
    let req = client.request;
    let host = req.header("Host").unwrap_or_default();
    let peer = client.peer.ip().to_canonical();
    // What a trusted proxy sent of a forwarding header; nothing from anyone else.
    let kept = |name: &'static str| -> Vec<&[u8]> {
        match client.trusted_peer {
            true => req.header_raw(name).collect(),
            false => Vec::new(),
        }
    };
    let appended = |name: &'static str, ours: &str| -> Vec<u8> {
        let mut all = kept(name).join(&b", "[..]);
        if !all.is_empty() {
            all.extend_from_slice(b", ");
        }
        all.extend_from_slice(ours.as_bytes());
        all
    };
    line(
        "X-Forwarded-For",
        &appended("X-Forwarded-For", &peer.to_string()),
    );
    let node = match peer {
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let element = format!("for={node};host={};proto={}", quoted(host), client.proto);
    line("Forwarded", &appended("Forwarded", &element));
    if client.trusted_peer {
        // Every other X-Forwarded-* a trusted proxy sent, as it sent it.
        for (name, value) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("x-forwarded-") && lower != "x-forwarded-for" {
                line(name, value);
            }
        }
    }
    for (name, ours) in [
        ("X-Forwarded-Proto", client.proto),
        ("X-Forwarded-Host", host),
    ] {
        if kept(name).is_empty() && !ours.is_empty() {
            line(name, ours.as_bytes());
        }
    }
    match kept("X-Real-IP").first() {
        Some(theirs) => line("X-Real-IP", theirs),
        None => line(
            "X-Real-IP",
            client.client_ip.to_canonical().to_string().as_bytes(),
        ),
    }
}

/// `text` as an RFC 7230 quoted-string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The client's permessage-deflate offers (the only extension passed through: its frames go
/// through untouched, compressed end to end); other extensions are dropped from the offer.
pub(super) fn deflate_offers(req: &Request) -> Option<String> {
    let offers: Vec<&str> = req
        .header_all("Sec-WebSocket-Extensions")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|o| is_deflate(o))
        .collect();
    (!offers.is_empty()).then(|| offers.join(", "))
}

/// Whether an extension offer or answer is permessage-deflate.
pub(super) fn is_deflate(extension: &str) -> bool {
    let name = extension.split(';').next().unwrap_or_default().trim();
    name.eq_ignore_ascii_case("permessage-deflate")
}
