//! Stage 5: connect to the backend (`ws://` or `wss://`), send the forwarded upgrade request,
//! and check its answer. Everything here runs under `limits.backend_connect_timeout_ms`.
//!
//! Hands the relay a connected stream, the bytes the backend sent after its 101, and the
//! response headers to pass back to the client.

mod answer;
mod request;
pub mod resolve;

use futures_lite::FutureExt;

use crate::balance::{Lease, Plan};
use crate::config::{Backend, Config, Route};
use crate::error::Error;
use crate::handshake::Headers;
use crate::metrics::RouteStats;
use crate::net::Stream;
use crate::reactor::Timer;
use answer::handshake;
pub use request::{request_head, ClientSide};
use resolve::Failure;

/// A backend that accepted the upgrade.
pub struct Upgraded {
    /// The connection.
    pub stream: Stream,
    /// Bytes the backend sent right after its 101 (already frames).
    pub leftover: Vec<u8>,
    /// End-to-end headers of the backend's 101, for the client (its subprotocol and
    /// extension among them).
    pub headers: Headers,
    /// permessage-deflate was negotiated (frames may carry RSV1).
    pub deflate: bool,
}

/// Connects to `backend`, asks for `path_and_query`, and waits for its 101, all within the
/// backend connect timeout.
async fn connect(
    config: &Config,
    backend: &Backend,
    path_and_query: &str,
    client: &ClientSide<'_>,
) -> Result<Upgraded, Error> {
    // The URL names the attempt in errors and logs: never with a token in it.
    let shown = crate::route::redact(path_and_query, config.token_param());
    let url = format!("{}{shown}", backend.origin());
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
/// no backend could be tried at all (all down or open, or too many connections waiting for
/// the lookup of each name: that is the gateway's limit, and no breaker hears of it): 503
/// with `Retry-After`.
pub async fn connect_any(
    config: &Config,
    route: &Route,
    plan: &mut Plan,
    path_and_query: &str,
    client: &ClientSide<'_>,
    stats: &RouteStats,
) -> Result<(usize, Upgraded, Option<Lease>), Error> {
    // What may be tried: a log line never counts attempts that cannot happen.
    let attempts = (1 + route.max_retries as usize).min(plan.candidates());
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
                let next = after_failure(route, n, attempts, plan.has_more());
                let (id, peer) = (client.id, client.peer);
                let which = match attempts {
                    1 => String::new(),
                    _ => format!("attempt {n}/{attempts}: "),
                };
                if matches!(e, Error::ResolverBusy { .. }) {
                    // The gateway's own limit, not the backend's failure: no verdict.
                    drop(attempt);
                    log::debug!("conn {id} {peer}: {which}{e}; {next}");
                } else {
                    attempt.failed(&e.to_string());
                    log::warn!("conn {id} {peer}: {which}{e}; {next}");
                }
                failure = Some(reported(failure, e));
            }
        }
    }
    Err(failure.unwrap_or_else(|| Error::NoBackend {
        route: route.external.as_str().to_string(),
        retry_after: plan.retry_after(),
    }))
}

/// What follows failed attempt `n` of `attempts`, for its log line.
fn after_failure(route: &Route, n: usize, attempts: usize, has_more: bool) -> &'static str {
    if n < attempts && has_more {
        "trying the next backend"
    } else if attempts > 1 {
        "giving up"
    } else if route.backends.len() == 1 {
        "no other backend to try"
    } else if route.max_retries == 0 {
        "not retried (retry.max_retries is 0)"
    } else {
        "no other backend is usable (down or circuit open)"
    }
}

/// The failure the client hears of, of the one so far and a new one: a real failure over a
/// timeout (504 means that every attempt timed out), and either over a lookup refused for
/// too many waiters (503 means that no attempt was made); else the newer.
fn reported(prev: Option<Error>, new: Error) -> Error {
    let rank = |e: &Error| match e {
        Error::ResolverBusy { .. } => 0,
        Error::BackendTimeout { .. } => 1,
        _ => 2,
    };
    match prev {
        Some(prev) if rank(&prev) > rank(&new) => prev,
        _ => new,
    }
}

/// A TCP (and for `wss://`, TLS) connection to `backend`; `url` names it in errors.
pub(crate) async fn open(config: &Config, backend: &Backend, url: &str) -> Result<Stream, Error> {
    let unreachable = |reason: String| Error::BackendUnreachable {
        url: url.to_string(),
        reason,
    };
    let resolved = resolve::Resolver::system()
        .resolve(&backend.host, backend.port, config.limits.dns_cache)
        .await;
    let addrs = resolved.map_err(|f| match f {
        Failure::Busy => Error::ResolverBusy {
            host: backend.host.clone(),
            max_waiting: resolve::MAX_WAITING_PER_NAME,
            retry_after: resolve::FAILURE_TTL,
        },
        Failure::Failed(why) => unreachable(why),
    })?;
    let mut last = None;
    let mut tcp = None;
    for &addr in addrs.iter() {
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
    tls_client(config, backend, url, tcp).await
}

/// TLS over the connected `tcp` to a `wss://` backend. (A build without `tls-backend` has
/// none: its config refuses `wss://`.)
#[cfg(not(feature = "tls-backend"))]
async fn tls_client(_: &Config, _: &Backend, url: &str, _: Stream) -> Result<Stream, Error> {
    Err(Error::BackendFailed {
        url: url.to_string(),
        reason: "this build has no TLS client".to_string(),
    })
}

/// TLS over the connected `tcp` to a `wss://` backend.
#[cfg(feature = "tls-backend")]
async fn tls_client(
    config: &Config,
    backend: &Backend,
    url: &str,
    tcp: Stream,
) -> Result<Stream, Error> {
    use futures_rustls::pki_types::ServerName;
    let tls = config
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
    Ok(Stream::TlsClient(Box::new(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failure_is_reported_over_a_timeout_and_either_over_a_busy_resolver() {
        let busy = || Error::ResolverBusy {
            host: "h".into(),
            max_waiting: 1,
            retry_after: Duration::from_secs(1),
        };
        let timeout = || Error::BackendTimeout {
            url: "ws://h".into(),
            after: Duration::from_secs(1),
        };
        let refused = || Error::BackendUnreachable {
            url: "ws://h".into(),
            reason: "refused".into(),
        };
        let status = |prev: Option<Error>, new: Error| reported(prev, new).status();
        assert_eq!(status(None, busy()), Some(503));
        assert_eq!(status(Some(busy()), timeout()), Some(504));
        assert_eq!(status(Some(timeout()), busy()), Some(504));
        assert_eq!(status(Some(refused()), timeout()), Some(502));
        assert_eq!(status(Some(timeout()), refused()), Some(502));
        assert_eq!(status(Some(refused()), busy()), Some(502));
    }
}
