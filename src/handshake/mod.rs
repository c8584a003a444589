//! Stage 2: read and bound the client's HTTP upgrade request, check it is a valid RFC 6455
//! upgrade, and answer: 101 (once the backend accepted) or an error response.
//!
//! The head is read here, not by tungstenite's accept callback, because the answer must wait for
//! the backend. Bytes the client sent after the head (an early first frame) are handed on; while
//! the backend is connected the client is watched ([`watch_early`]): if it leaves, so does the
//! attempt.

mod early;
mod head;

use std::time::Duration;

use crate::reactor::Timer;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};

use crate::error::{reason_phrase, Error};
pub use early::{watch as watch_early, MAX_EARLY_BYTES};
use head::Span;
pub use head::{Head, Headers, Lines, Request, Response};

/// Most headers accepted in one request or response head.
const MAX_HEADERS: usize = 100;

/// Reads a request head of at most `max` bytes. Returns it and the bytes read past its end.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<(Request, Vec<u8>), Error> {
    let parse = |b: &[u8]| {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut h);
        Ok(match req.parse(b)? {
            httparse::Status::Complete(n) => Some((
                n,
                head::spans(b, req.headers),
                (
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                    req.version.unwrap_or(0),
                ),
            )),
            httparse::Status::Partial => None,
        })
    };
    let (head, rest, spans, (method, target, minor_version)) =
        read_head(stream, max, Vec::new(), parse).await?;
    let request = Request {
        method,
        target,
        minor_version,
        headers: Headers::new(head, spans),
    };
    Ok((request, rest))
}

/// Most interim (1xx other than 101) answers skipped before a backend's final answer.
const MAX_INTERIM: usize = 8;

/// Reads a backend's final answer: its first response head of at most `max` bytes that is
/// not an interim answer. Interim answers (a `100 Continue`, say: some servers send one before
/// their 101) are skipped, at most [`MAX_INTERIM`] of them. Returns the answer and the bytes
/// read past its end.
pub async fn read_final_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<(Response, Vec<u8>), String> {
    let mut carried = Vec::new();
    for _ in 0..=MAX_INTERIM {
        let (res, rest) = read_response(stream, max, carried).await?;
        if res.status == 101 || !(100..200).contains(&res.status) {
            return Ok((res, rest));
        }
        carried = rest;
    }
    Err(format!(
        "more than {MAX_INTERIM} interim (1xx) answers before the final one"
    ))
}

/// Reads a response head of at most `max` bytes, starting with the bytes `carried` over from
/// an earlier read (past an interim answer). Returns it and the bytes read past its end.
async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    carried: Vec<u8>,
) -> Result<(Response, Vec<u8>), String> {
    let parse = |b: &[u8]| {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut h);
        Ok(match res.parse(b)? {
            httparse::Status::Complete(n) => {
                Some((n, head::spans(b, res.headers), res.code.unwrap_or(0)))
            }
            httparse::Status::Partial => None,
        })
    };
    let (head, rest, spans, status) =
        read_head(stream, max, carried, parse)
            .await
            .map_err(|e| match e {
                Error::BadRequest(why) => format!("invalid HTTP response: {why}"),
                Error::HeadTooLarge(n) => format!("response head larger than {n} bytes"),
                Error::TooManyHeaders(n) => {
                    format!("response head with more than {n} header lines")
                }
                Error::ClientGone(why) => {
                    format!("connection closed before the response head: {why}")
                }
                other => other.to_string(),
            })?;
    let headers = Headers::new(head, spans);
    Ok((Response { status, headers }, rest))
}

/// What `parse` found in a complete head: its length, its header lines, and the rest of what
/// it extracts (request line or status).
type Parsed<T> = Option<(usize, Vec<Span>, T)>;

/// Reads until `parse` finds a complete head, after the bytes `carried` (already read).
/// Each read is parsed once; the head is copied out of nothing. Returns the head's bytes, the
/// bytes read past it, and what `parse` found.
async fn read_head<S, P, T>(
    stream: &mut S,
    max: usize,
    carried: Vec<u8>,
    parse: P,
) -> Result<(Vec<u8>, Vec<u8>, Vec<Span>, T), Error>
where
    S: AsyncRead + Unpin,
    P: Fn(&[u8]) -> Result<Parsed<T>, httparse::Error>,
{
    let mut len = carried.len();
    let mut buf = carried;
    buf.resize(max.min(1024).max(len), 0);
    // What was carried over is parsed before anything more is read.
    let mut read_more = len == 0;
    loop {
        if read_more {
            if len == buf.len() {
                if buf.len() >= max {
                    return Err(Error::HeadTooLarge(max));
                }
                buf.resize((buf.len() * 2).min(max), 0);
            }
            let n = stream
                .read(&mut buf[len..])
                .await
                .map_err(|e| Error::ClientGone(e.to_string()))?;
            if n == 0 {
                let why = if len == 0 {
                    "no request sent"
                } else {
                    "request head incomplete"
                };
                return Err(Error::ClientGone(why.to_string()));
            }
            len += n;
        }
        read_more = true;
        match parse(&buf[..len]) {
            Ok(Some((head_len, spans, found))) => {
                let rest = buf[head_len..len].to_vec();
                buf.truncate(head_len);
                return Ok((buf, rest, spans, found));
            }
            Ok(None) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders(MAX_HEADERS)),
            Err(e) => return Err(Error::BadRequest(e.to_string())),
        }
    }
}

/// What a valid upgrade request carries.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// `Sec-WebSocket-Protocol` offers, in order.
    pub protocols: Vec<String>,
}

/// Checks the request is a well-formed RFC 6455 upgrade (the method was checked by the caller).
pub fn check_upgrade(req: &Request) -> Result<Upgrade, Error> {
    if req.minor_version != 1 {
        return Err(Error::BadRequest(
            "HTTP/1.1 is required for a WebSocket upgrade".to_string(),
        ));
    }
    if !req.has_token("Upgrade", "websocket") || !req.has_token("Connection", "upgrade") {
        return Err(Error::NotUpgrade);
    }
    if req.header_raw("Host").count() != 1 || req.header("Host").is_none() {
        return Err(Error::BadUpgrade(
            "exactly one Host header is required".to_string(),
        ));
    }
    if !req.header("Host").is_some_and(is_valid_host) {
        return Err(Error::BadRequest(
            "the Host header must be a host name or address with an optional port".to_string(),
        ));
    }
    match single(req, "Sec-WebSocket-Version") {
        Ok(None) => {
            return Err(Error::BadUpgrade(
                "missing Sec-WebSocket-Version".to_string(),
            ))
        }
        Ok(Some("13")) => {}
        Ok(Some(v)) => return Err(Error::BadVersion(v.to_string())),
        Err(Several) => {
            return Err(Error::BadUpgrade(
                "several Sec-WebSocket-Version headers".to_string(),
            ))
        }
    }
    let key = match single(req, "Sec-WebSocket-Key") {
        Ok(Some(k)) if is_valid_key(k.trim()) => k.trim().to_string(),
        Ok(None) => return Err(Error::BadUpgrade("missing Sec-WebSocket-Key".to_string())),
        Ok(Some(_)) => {
            return Err(Error::BadUpgrade(
                "Sec-WebSocket-Key must be 16 bytes in base64".to_string(),
            ))
        }
        Err(Several) => {
            return Err(Error::BadUpgrade(
                "several Sec-WebSocket-Key headers".to_string(),
            ))
        }
    };
    let protocols = req
        .header_all("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    Ok(Upgrade { key, protocols })
}

/// A header that must appear once was there several times.
struct Several;

/// The value of the header `name`, which may appear at most once; one that is not UTF-8
/// reads `(not UTF-8)`, which is never a valid value.
fn single<'a>(req: &'a Request, name: &'a str) -> Result<Option<&'a str>, Several> {
    let mut all = req
        .header_raw(name)
        .map(|v| std::str::from_utf8(v).unwrap_or("(not UTF-8)"));
    let first = all.next();
    match all.next() {
        Some(_) => Err(Several),
        None => Ok(first),
    }
}

/// RFC 3986 3.2.2 and 3.2.3: `uri-host [":" port]`, where the host is a bracketed IPv6
/// address or a reg-name / IPv4 address (unreserved, sub-delims and `%` escapes). The gateway
/// copies it into `X-Forwarded-Host` and `Forwarded`: nothing else may pass.
fn is_valid_host(value: &str) -> bool {
    let value = value.trim();
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip6, "")) => (ip6, None),
            Some((ip6, after)) => match after.strip_prefix(':') {
                Some(port) => (ip6, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match value.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        },
    };
    let ip6 = value.starts_with('[');
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| {
            if ip6 {
                b.is_ascii_hexdigit() || b == b':' || b == b'.'
            } else {
                b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
            }
        });
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// A key is the base64 of 16 bytes: 22 characters and `==`.
fn is_valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
}

/// Writes the 101 answer; `extra` are the backend's end-to-end response headers.
pub async fn write_switching<S: AsyncWrite + Unpin>(
    stream: &mut S,
    accept: &str,
    extra: &Headers,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
    out.extend_from_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Answers `err` with its status, headers and a short text body; true if an answer was
/// written (the caller then shuts down writing and [`drain`]s, so that the client reads the
/// answer even if it had sent more bytes). Errors without a status are not answered.
pub async fn write_error<S: AsyncWrite + Unpin>(stream: &mut S, err: &Error) -> bool {
    let Some(status) = err.status() else {
        return false;
    };
    let body = format!("{}\n", err.client_message());
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    if let Some((name, value)) = err.headers() {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(&value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await
    };
    sent.await.is_ok()
}

/// Reads and discards up to `max` bytes or until `limit` passes or the peer closes.
pub async fn drain<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration, max: usize) {
    let read_all = async {
        let mut buf = [0u8; 2048];
        let mut total = 0;
        while total < max {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    read_all
        .or(async {
            Timer::after(limit).await;
        })
        .await;
}

#[cfg(test)]
mod tests;
