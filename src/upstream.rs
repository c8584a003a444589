//! Stage 5: connect to the backend (`ws://` or `wss://`), send the forwarded upgrade request,
//! and check its answer. Everything here runs under `limits.backend_connect_timeout_ms`.
//!
//! Hands the relay a connected stream, the bytes the backend sent after its 101, and the
//! response headers to pass back to the client.

use std::net::SocketAddr;
use std::sync::Arc;

use async_tungstenite::tungstenite::handshake::client::generate_key;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::{AsyncWriteExt, FutureExt};
use futures_rustls::pki_types::ServerName;
use futures_rustls::rustls;

use crate::balance::{Lease, Plan};
use crate::config::{Backend, Config, Route};
use crate::error::Error;
use crate::handshake::{read_response, Head, Request, Upgrade};
use crate::metrics::RouteStats;
use crate::net::Stream;
use crate::reactor::Timer;

/// Largest backend response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Headers never copied from one leg to the other (RFC 7230 6.1 hop-by-hop, plus the ones this
/// proxy sets itself on each leg). `jwt.forward_claims` may not name them either.
pub(crate) const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// A backend that accepted the upgrade.
pub struct Upgraded {
    /// The connection.
    pub stream: Stream,
    /// Bytes the backend sent right after its 101 (already frames).
    pub leftover: Vec<u8>,
    /// End-to-end headers of the backend's 101, for the client (its subprotocol and
    /// extension among them).
    pub headers: Vec<(String, Vec<u8>)>,
    /// permessage-deflate was negotiated (frames may carry RSV1).
    pub deflate: bool,
}

/// What the client side contributes to the backend request.
pub struct ClientSide<'a> {
    /// The parsed request.
    pub request: &'a Request,
    /// Its upgrade fields.
    pub upgrade: &'a Upgrade,
    /// The client's address.
    pub peer: SocketAddr,
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

/// Connects to `backend`, asks for `path_and_query`, and waits for its 101, all within the
/// backend connect timeout.
async fn connect(
    config: &Config,
    backend: &Backend,
    path_and_query: &str,
    client: &ClientSide<'_>,
) -> Result<Upgraded, Error> {
    let url = format!("{}{}", backend.origin(), path_and_query);
    let limit = config.limits.backend_connect_timeout;
    let attempt = async {
        let stream = open(config, backend, &url).await?;
        handshake(stream, backend, path_and_query, client, &url).await
    };
    attempt
        .or(async {
            Timer::after(limit).await;
            Err(Error::BackendTimeout {
                url: url.clone(),
                after: limit,
            })
        })
        .await
}

/// Tries the backends of `plan`, best first, at most `1 + route.max_retries` of them, until
/// one accepts; each failure is logged and told to that backend's circuit breaker. A 4xx
/// answer is the backend's answer and is not retried. When every attempt failed: the last
/// failure that was not a timeout (502), or a timeout (504) when all of them timed out. When
/// no backend could be tried at all (all down or open): 503 with `Retry-After`.
pub async fn connect_any(
    config: &Config,
    route: &Route,
    plan: &mut Plan,
    path_and_query: &str,
    client: &ClientSide<'_>,
    stats: &RouteStats,
) -> Result<(usize, Upgraded, Option<Lease>), Error> {
    let attempts = 1 + route.max_retries as usize;
    let mut failure = None;
    let mut n = 0;
    while n < attempts {
        let Some(attempt) = plan.next_attempt() else {
            break;
        };
        n += 1;
        let i = attempt.backend();
        let Some(backend) = route.backends.get(i) else {
            continue;
        };
        let started = std::time::Instant::now();
        match connect(config, backend, path_and_query, client).await {
            Ok(up) => {
                stats.connected(&backend.origin(), started.elapsed());
                return Ok((i, up, attempt.succeeded()));
            }
            Err(
                e @ Error::BackendStatus {
                    status: 400..=499, ..
                },
            ) => {
                attempt.succeeded();
                return Err(e);
            }
            Err(e) => {
                attempt.failed(&e.to_string());
                let next = if n < attempts && plan.has_more() {
                    "trying the next backend"
                } else {
                    "giving up"
                };
                log::warn!("{} attempt {n}/{attempts}: {e}; {next}", client.peer);
                // A timeout never hides an earlier non-timeout failure: 504 means all timed out.
                let timeout = |e: &Error| matches!(e, Error::BackendTimeout { .. });
                failure = match failure {
                    Some(prev) if timeout(&e) && !timeout(&prev) => Some(prev),
                    _ => Some(e),
                };
            }
        }
    }
    Err(failure.unwrap_or_else(|| Error::NoBackend {
        route: route.external.as_str().to_string(),
        retry_after: plan.retry_after(),
    }))
}

/// A TCP (and for `wss://`, TLS) connection to `backend`; `url` names it in errors.
pub(crate) async fn open(config: &Config, backend: &Backend, url: &str) -> Result<Stream, Error> {
    let unreachable = |reason: String| Error::BackendUnreachable {
        url: url.to_string(),
        reason,
    };
    // An IP address needs no resolver (which runs on a blocking thread).
    let addrs = match backend.host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![std::net::SocketAddr::new(ip, backend.port)],
        Err(_) => smol::net::resolve((backend.host.as_str(), backend.port))
            .await
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", backend.host)))?,
    };
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match Stream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        unreachable(last.map_or_else(|| "no address".to_string(), |e| e.to_string()))
    })?;
    // Small frames must not wait for Nagle: this is an interactive relay.
    let _ = tcp.tcp().set_nodelay(true);
    if !backend.tls {
        return Ok(tcp);
    }
    // TLS runs on async-io.
    let tcp = tcp.into_async().map_err(|e| unreachable(e.to_string()))?;
    let tls: Arc<rustls::ClientConfig> =
        config
            .backend_tls
            .clone()
            .ok_or_else(|| Error::BackendFailed {
                url: url.to_string(),
                reason: "no TLS client configuration".to_string(),
            })?;
    let name = ServerName::try_from(backend.host.clone()).map_err(|e| Error::BackendFailed {
        url: url.to_string(),
        reason: format!("invalid TLS server name: {e}"),
    })?;
    let stream = futures_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::BackendFailed {
            url: url.to_string(),
            reason: format!("TLS: {e}"),
        })?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// The request head sent to the backend.
pub fn request_head(
    backend: &Backend,
    path_and_query: &str,
    client: &ClientSide<'_>,
    key: &str,
) -> Vec<u8> {
    let req = client.request;
    let mut out = Vec::with_capacity(512);
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
    let named_by_connection = connection_options(req);
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if !NOT_FORWARDED.contains(&lower.as_str())
            && !named_by_connection.contains(&lower)
            && !client.withheld(&lower)
        {
            line(name, value);
        }
    }
    for (name, value) in client.claims {
        line(name, value.as_bytes());
    }
    if let Some(offers) = deflate_offers(req) {
        line("Sec-WebSocket-Extensions", offers.as_bytes());
    }
    let ip = client.peer.ip().to_string();
    let xff: Vec<&str> = req.header_all("X-Forwarded-For").collect();
    let xff = if xff.is_empty() {
        ip
    } else {
        format!("{}, {ip}", xff.join(", "))
    };
    line("X-Forwarded-For", xff.as_bytes());
    line("X-Forwarded-Proto", client.proto.as_bytes());
    if let Some(host) = req.header("Host") {
        line("X-Forwarded-Host", host.as_bytes());
    }
    let mut head = format!("GET {path_and_query} HTTP/1.1\r\n").into_bytes();
    head.extend_from_slice(&out);
    head.extend_from_slice(b"\r\n");
    head
}

/// The client's permessage-deflate offers (the only extension passed through: its frames go
/// through untouched, compressed end to end); other extensions are dropped from the offer.
fn deflate_offers(req: &Request) -> Option<String> {
    let offers: Vec<&str> = req
        .header_all("Sec-WebSocket-Extensions")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|o| is_deflate(o))
        .collect();
    (!offers.is_empty()).then(|| offers.join(", "))
}

fn is_deflate(extension: &str) -> bool {
    let name = extension.split(';').next().unwrap_or_default().trim();
    name.eq_ignore_ascii_case("permessage-deflate")
}

/// The header names a `Connection` header lists (lowercase): hop-by-hop for this message, so
/// never copied to the other leg (RFC 7230 6.1).
fn connection_options(head: &impl Head) -> Vec<String> {
    head.header_all("Connection")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

async fn handshake(
    mut stream: Stream,
    backend: &Backend,
    path_and_query: &str,
    client: &ClientSide<'_>,
    url: &str,
) -> Result<Upgraded, Error> {
    let failed = |reason: String| Error::BackendFailed {
        url: url.to_string(),
        reason,
    };
    let key = generate_key();
    let head = request_head(backend, path_and_query, client, &key);
    stream
        .write_all(&head)
        .await
        .map_err(|e| failed(format!("sending the upgrade request: {e}")))?;
    stream
        .flush()
        .await
        .map_err(|e| failed(format!("sending the upgrade request: {e}")))?;
    let (res, leftover) = read_response(&mut stream, MAX_RESPONSE_HEAD)
        .await
        .map_err(failed)?;
    if res.status != 101 {
        return Err(Error::BackendStatus {
            url: url.to_string(),
            status: res.status,
            www_authenticate: res.header("WWW-Authenticate").map(str::to_string),
        });
    }
    if res.header_raw("Sec-WebSocket-Protocol").count() > 1 {
        return Err(failed("chose more than one subprotocol".to_string()));
    }
    let accept = derive_accept_key(key.as_bytes());
    if res.header("Sec-WebSocket-Accept").map(str::trim) != Some(accept.as_str()) {
        return Err(failed("wrong or missing Sec-WebSocket-Accept".to_string()));
    }
    if !res
        .header("Upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    {
        return Err(failed("101 without Upgrade: websocket".to_string()));
    }
    let extensions: Vec<&[u8]> = res.header_raw("Sec-WebSocket-Extensions").collect();
    let deflate = match extensions.as_slice() {
        [] => false,
        [one] => {
            let text = std::str::from_utf8(one).unwrap_or_default();
            if !is_deflate(text) || text.contains(',') || deflate_offers(client.request).is_none() {
                return Err(failed(format!(
                    "negotiated extension {text:?}, which was not offered"
                )));
            }
            true
        }
        _ => return Err(failed("negotiated more than one extension".to_string())),
    };
    if let Some(p) = res.header("Sec-WebSocket-Protocol") {
        if !client.upgrade.protocols.iter().any(|o| o == p.trim()) {
            return Err(failed(format!(
                "chose subprotocol {p:?}, which the client did not offer"
            )));
        }
    }
    let named_by_connection = connection_options(&res);
    let headers = res
        .headers
        .into_iter()
        .filter(|(n, _)| {
            let lower = n.to_ascii_lowercase();
            (lower == "sec-websocket-extensions" && deflate)
                || (!NOT_FORWARDED.contains(&lower.as_str())
                    && !named_by_connection.contains(&lower))
        })
        .collect();
    Ok(Upgraded {
        stream,
        leftover,
        headers,
        deflate,
    })
}
