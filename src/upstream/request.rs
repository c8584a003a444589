//! The upgrade request the backend gets: the gateway's own upgrade fields, the client's
//! end-to-end headers as [`crate::headers`] allows them, the identity headers from the token,
//! and the client-address headers, which only the gateway (or a trusted proxy) writes.

use std::io::Write;
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
    /// Whether the client's header `name` is left out of the backend request for the `jwt`
    /// block's sake: a `forward_claims` header, or a stripped `Authorization`.
    fn withheld(&self, name: &str) -> bool {
        (self.strip_authorization && name.eq_ignore_ascii_case("authorization"))
            || self
                .claim_headers
                .iter()
                .any(|(_, h)| h.eq_ignore_ascii_case(name))
    }
}

/// A request head being written: one buffer, each line appended in place (formatted values
/// too), so that building it allocates once.
struct HeadWriter {
    out: Vec<u8>,
}

impl HeadWriter {
    /// `Name: value` and the line end.
    fn line(&mut self, name: &str, value: &[u8]) {
        self.line_with(name, |out| out.extend_from_slice(value));
    }

    /// `Name: ` then whatever `value` writes, then the line end.
    fn line_with(&mut self, name: &str, value: impl FnOnce(&mut Vec<u8>)) {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        value(&mut self.out);
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Writes `args` into `out` (writing to a `Vec` cannot fail).
fn put(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
}

/// The request head sent to the backend.
pub fn request_head(
    backend: &Backend,
    path_and_query: &str,
    client: &ClientSide<'_>,
    key: &str,
) -> Vec<u8> {
    let req = client.request;
    let mut w = HeadWriter {
        out: Vec::with_capacity(512 + req.headers.bytes_len()),
    };
    put(
        &mut w.out,
        format_args!("GET {path_and_query} HTTP/1.1\r\n"),
    );
    w.line_with("Host", |out| {
        put(out, format_args!("{}", backend.host_header()))
    });
    w.line("Upgrade", b"websocket");
    w.line("Connection", b"Upgrade");
    w.line("Sec-WebSocket-Key", key.as_bytes());
    w.line("Sec-WebSocket-Version", b"13");
    let listed = headers::connection_listed(req.header_all("Connection"));
    for (name, value) in &req.headers {
        if headers::from_client(name)
            && !headers::is_listed(&listed, name)
            && !client.withheld(name)
        {
            w.line(name, value);
        }
    }
    for (name, value) in client.claims {
        w.line(name, value.as_bytes());
    }
    if let Some(offers) = deflate_offers(req) {
        w.line("Sec-WebSocket-Extensions", offers.as_bytes());
    }
    forwarding(client, &mut w);
    w.out.extend_from_slice(b"\r\n");
    w.out
}

/// The client-address and scheme headers. From a peer that is not a trusted proxy, whatever
/// the client wrote is gone ([`headers::from_client`]) and the gateway's own values stand:
/// `X-Forwarded-For` (the peer), `X-Forwarded-Proto`, `X-Forwarded-Host` (the client's `Host`),
/// `X-Real-IP` and `Forwarded` (RFC 7239). From a trusted proxy, its values are kept:
/// `X-Forwarded-For` and `Forwarded` get this hop appended, the others are written only when
/// it sent none.
fn forwarding(client: &ClientSide<'_>, w: &mut HeadWriter) {
    let req = client.request;
    let host = req.header("Host").unwrap_or_default();
    let peer = client.peer.ip().to_canonical();
    let trusted = client.trusted_peer;
    // What a trusted proxy sent of a forwarding header; nothing from anyone else.
    let kept = |name: &'static str| trusted.then(|| req.header_raw(name)).into_iter().flatten();
    // Its values, then this hop's.
    let appended = |out: &mut Vec<u8>, name: &'static str, ours: std::fmt::Arguments<'_>| {
        for value in kept(name) {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
        put(out, ours);
    };
    w.line_with("X-Forwarded-For", |out| {
        appended(out, "X-Forwarded-For", format_args!("{peer}"))
    });
    w.line_with("Forwarded", |out| {
        let host = Quoted(host);
        let proto = client.proto;
        match peer {
            IpAddr::V6(ip) => appended(
                out,
                "Forwarded",
                format_args!("for=\"[{ip}]\";host={host};proto={proto}"),
            ),
            IpAddr::V4(ip) => appended(
                out,
                "Forwarded",
                format_args!("for={ip};host={host};proto={proto}"),
            ),
        }
    });
    if trusted {
        // Every other X-Forwarded-* a trusted proxy sent, as it sent it.
        for (name, value) in &req.headers {
            if headers::has_prefix(name, "x-forwarded-")
                && !name.eq_ignore_ascii_case("x-forwarded-for")
            {
                w.line(name, value);
            }
        }
    }
    for (name, ours) in [
        ("X-Forwarded-Proto", client.proto),
        ("X-Forwarded-Host", host),
    ] {
        if kept(name).next().is_none() && !ours.is_empty() {
            w.line(name, ours.as_bytes());
        }
    }
    match kept("X-Real-IP").next() {
        Some(theirs) => w.line("X-Real-IP", theirs),
        None => w.line_with("X-Real-IP", |out| {
            put(out, format_args!("{}", client.client_ip.to_canonical()))
        }),
    }
}

/// `text` as an RFC 7230 quoted-string, when displayed.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        f.write_char('"')?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
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
