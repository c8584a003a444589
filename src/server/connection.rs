//! One connection's life: TLS (when the listener has it), request head, route, connection
//! limits, token, backend, 101, relay; and its counters.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::FutureExt;

use super::admit::{admit, authorize, transforms, Admitted, Claims};
use super::Generation;
use crate::admission::{self, Ticket};
use crate::auth;
use crate::balance::{self, Lease};
use crate::config::{Config, Route};
use crate::connections;
use crate::error::Error;
use crate::handshake::{self, Request, Upgrade};
use crate::metrics::RouteStats;
use crate::net::Stream;
use crate::plural::count;
use crate::reactor::Timer;
use crate::relay::{self, Both, Label, Policy, Rules, Transformer};
use crate::route;
use crate::upstream::{self, ClientSide};

/// Runs the stages of one connection.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, gen: Arc<Generation>, id: u64) {
    // The TLS handshake and the request head share one limit, counted from here.
    let accepted = Instant::now();
    let head_deadline = accepted + gen.config.limits.handshake_timeout;
    let mut facts = Facts {
        id,
        client: peer.ip(),
        user: None,
        accepted,
    };
    let _ = stream.set_nodelay(true);
    log::debug!("conn {id} {peer}: accepted");
    // On this worker thread's edge-triggered driver for the connection's whole life.
    let mut stream = match Stream::accepted(stream) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("conn {id} {peer}: cannot register the connection: {e}");
            return;
        }
    };
    let config = &gen.config;
    #[cfg(feature = "tls-listener")]
    if let Some(tls) = &config.listener_tls {
        let accepted = tls_handshake(tls, stream, head_deadline).await;
        stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                log::debug!("conn {id} {peer}: TLS handshake failed: {e}");
                let error = Some(format!("TLS handshake failed: {e}"));
                return facts.log(config, None, None, error);
            }
        };
    }
    // The handshake's state (request, headers, TLS and DNS futures) lives in its own box and is
    // gone before the relay starts: an idle relayed connection keeps only what it needs. A
    // shutdown (or an upgrade's hand-over) lets it finish: the connection is then drained
    // like every relayed one, and its client never sees a failed handshake.
    let opened = Box::pin(open(&mut stream, peer, &gen, &mut facts, head_deadline)).await;
    let o = match opened {
        Ok(Opening::Relay(o)) => o,
        Ok(Opening::Answered) => return,
        Err(Refused(e, at)) => {
            let stats = at.and_then(|i| gen.stats.get(i)).unwrap_or(&gen.unrouted);
            // Boxed: its buffers are not part of every connection's task.
            Box::pin(refuse(&mut stream, peer, id, &e, stats)).await;
            let route = at.and_then(|i| config.routes.get(i));
            return facts.log(config, route, e.status(), Some(e.to_string()));
        }
    };
    let handshake = accepted.elapsed();
    let stats = &gen.stats[o.at];
    stats.opened();
    stats.handshake_took(handshake);
    let rules = rules(config, &config.routes[o.at], o.deflate, o.expires);
    let early = Both {
        client: o.client_early,
        backend: o.backend_early,
    };
    let label = Label { id, peer };
    // Relayed, the connection watches the drain of its route and backend (begun by the
    // shutdown, or by a reload that removes them) instead of the gateway's.
    let drain = gen.drain_of(o.at, o.chosen);
    let listed = list(facts, &gen, o.at, o.chosen);
    let entry = listed.entry();
    // Its backend was drained while its handshake went on (the drain's list of open
    // connections could not have it): it closes as it starts.
    if gen.balancers.state(o.at, o.chosen) == crate::balance::BackendState::Drained {
        entry.ask(Some((crate::error::GatewayClose::Drained, Instant::now())));
    }
    let summary = relay::run(
        stream,
        o.backend,
        early,
        rules,
        o.transforms,
        drain,
        Some(entry.clone()),
        label,
    );
    let summary = summary.await;
    stats.closed(&summary.traffic, &summary.closes, accepted.elapsed());
    let totals = summary.totals();
    let route = &config.routes[o.at];
    let backend = route.backends.get(o.chosen).map(|b| b.origin());
    let error = (!summary.errors.is_empty()).then(|| summary.errors.join("; "));
    crate::access::log(
        &crate::access::Entry {
            id,
            client: entry.client,
            route: Some(route.external.as_str()),
            backend,
            status: Some(101),
            handshake: Some(handshake),
            duration: accepted.elapsed(),
            ending: Some(&summary.ending),
            traffic: Some(totals),
            user: entry.user.as_deref(),
            error,
        },
        config.access_json,
    );
    log::debug!(
        "conn {id} {peer}: closed; {} to backend, {} to client{}",
        count(totals[0].0 as usize, "message"),
        totals[1].0,
        if summary.errors.is_empty() {
            String::new()
        } else {
            format!("; {}", summary.errors.join("; "))
        }
    );
}

/// The TLS listener's handshake with a client, done by `deadline`.
#[cfg(feature = "tls-listener")]
async fn tls_handshake(
    tls: &crate::config::ServerTls,
    stream: Stream,
    deadline: Instant,
) -> std::io::Result<Stream> {
    let limit = deadline.saturating_duration_since(Instant::now());
    Box::pin(crate::net::accept_tls(tls.clone(), stream, limit)).await
}

/// The relay's rules for a connection on `route`.
fn rules(config: &Config, route: &Route, deflate: bool, expires: Option<Instant>) -> Rules {
    let limits = &config.limits;
    let global = limits.max_message_bytes as u64;
    let filter = route.filter.as_ref();
    let max = |side: Option<usize>| side.map_or(global, |n| n as u64);
    Rules {
        max_frame: limits.max_frame_bytes as u64,
        max_message: Both {
            client: max(filter.and_then(|f| f.max_up)),
            backend: max(filter.and_then(|f| f.max_down)),
        },
        deflate,
        idle_timeout: limits.idle_timeout,
        ping_interval: limits.ping_interval,
        policy: Policy::of(&route.rate_limit, filter),
        expires,
    }
}

/// When a connection opened with `claims` must close: its token's `exp` (plus the leeway the
/// token was accepted with), when `jwt.enforce_expiry`.
fn expiry(config: &Config, claims: Option<&Claims>) -> Option<Instant> {
    let jwt = config.jwt.as_ref().filter(|j| j.enforce_expiry)?;
    let exp = claims?.get("exp")?.as_f64()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let left = (exp + jwt.leeway_seconds as f64 - now).max(0.0);
    Instant::now().checked_add(Duration::try_from_secs_f64(left).ok()?)
}

/// What the handshake hands to the relay.
struct Opened {
    /// The route's position in `config.routes`.
    at: usize,
    /// The backend's position in the route's `backends`.
    chosen: usize,
    client_early: Vec<u8>,
    backend: Stream,
    backend_early: Vec<u8>,
    deflate: bool,
    /// When its token expires.
    expires: Option<Instant>,
    /// Each side's `message_transform` rules (boxed: this struct lives as long as the
    /// connection, and most routes have none).
    transforms: Both<Option<Box<Transformer>>>,
    /// Counts the connection on its backend while it lives.
    _lease: Option<Lease>,
    /// Counts it for the connection limits while it lives.
    _ticket: Ticket,
}

/// How the handshake stage ended well.
enum Opening {
    /// Upgraded: relay it.
    Relay(Box<Opened>),
    /// A plain request for the admin endpoints (sharing the public listener), answered.
    Answered,
}

/// Puts a connection about to be relayed in the table of open connections (`GET /connections`)
/// until the returned place is dropped.
fn list(facts: Facts, gen: &Generation, at: usize, chosen: usize) -> connections::Listed {
    let opened = SystemTime::now()
        .checked_sub(facts.accepted.elapsed())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    connections::Listed::new(connections::Entry::new(
        facts.id,
        facts.client,
        facts.user,
        opened,
        (gen.config.clone(), at, chosen),
        gen.stats[at].clone(),
    ))
}

/// What the access log says of a connection, learnt as its handshake goes.
struct Facts {
    id: u64,
    /// The client's address, as `trusted_proxies` decides it (the peer until the request is
    /// read).
    client: std::net::IpAddr,
    /// The token's `sub`, once verified.
    user: Option<Box<str>>,
    accepted: Instant,
}

impl Facts {
    /// The access log line of a connection that ended before it was relayed: on `route`
    /// (`None`: before one matched), answered with `status` (`None`: no answer), and why.
    fn log(
        &self,
        config: &Config,
        route: Option<&Route>,
        status: Option<u16>,
        error: Option<String>,
    ) {
        let entry = crate::access::Entry {
            id: self.id,
            client: self.client,
            route: route.map(|r| r.external.as_str()),
            backend: None,
            status,
            handshake: None,
            duration: self.accepted.elapsed(),
            ending: None,
            traffic: None,
            user: self.user.as_deref(),
            error,
        };
        crate::access::log(&entry, config.access_json);
    }
}

/// Why a connection is refused, and on which route (`None`: before one matched).
pub(super) struct Refused(pub(super) Error, pub(super) Option<usize>);

/// Everything before the relay: request (complete by `head_deadline`), route, connection
/// limits, token, backend, 101. `Err` when the connection is to be refused; `ClientGone`
/// when the client left before its 101 (during the backend connect, or as it was written).
async fn open(
    stream: &mut Stream,
    peer: SocketAddr,
    gen: &Generation,
    facts: &mut Facts,
    head_deadline: Instant,
) -> Result<Opening, Refused> {
    let (config, id) = (&gen.config, facts.id);
    let limits = &config.limits;
    let read = handshake::read_request(stream, limits.max_request_head_bytes)
        .or(async {
            Timer::after(head_deadline.saturating_duration_since(Instant::now())).await;
            Err(Error::HandshakeTimeout(limits.handshake_timeout))
        })
        .await;
    let (mut request, mut early) = read.map_err(|e| Refused(e, None))?;
    if cfg!(feature = "admin")
        && config.admin_on_public()
        && crate::admin::is_admin_request(&request)
    {
        let reply = crate::admin::reply(&request, || gen.status(false));
        crate::admin::respond(stream, &reply).await;
        let path = route::split_target(&request.target).0;
        log::debug!("conn {id} {peer}: admin {path} answered");
        return Ok(Opening::Answered);
    }
    drop_underscored(&mut request, id, peer);
    let admitted = admit(config, &request)?;
    let client_ip = admission::client_ip(peer.ip(), &config.trusted_proxies, &request);
    facts.client = client_ip;
    // The connection limits before the token: a client over its own limit (or a full route)
    // costs no signature check. A refused token drops the ticket, giving its places back.
    let entered = gen.gates.enter(config, admitted.at, client_ip);
    let ticket = entered.map_err(|e| Refused(e, Some(admitted.at)))?;
    let claims = authorize(config, gen.jwt.as_ref(), &admitted, &request)?;
    facts.user = (claims.as_ref())
        .and_then(|c| c.get("sub"))
        .map(|sub| auth::claim_header_value(sub).unwrap_or_default().into());
    let sides = transforms(&admitted, claims.as_ref(), id, client_ip)?;
    let Admitted {
        at,
        route,
        target,
        query,
        upgrade,
    } = admitted;
    if route.filter.as_ref().is_some_and(|f| f.require_json) || route.transform.is_some() {
        // Compressed text cannot be checked as JSON nor transformed: permessage-deflate is
        // not offered.
        request
            .headers
            .retain(|n, _| !n.eq_ignore_ascii_case("Sec-WebSocket-Extensions"));
    }
    let expires = expiry(config, claims.as_ref());
    let trusted_peer = admission::is_trusted(peer.ip(), &config.trusted_proxies);
    let sticky = route.sticky.as_ref().and_then(|s| {
        balance::sticky_key(s, &request, query.as_deref(), claims.as_ref(), peer.ip())
    });
    let mut plan = gen.balancers.plan(at, peer.ip(), sticky.as_deref());
    let forwarded = claim_headers(config, claims.as_ref(), id, peer);
    let who = Who {
        id,
        peer,
        trusted_peer,
        client_ip,
    };
    let client = client_side(config, route, &request, &upgrade, who, &forwarded);
    let stats = &gen.stats[at];
    let connected = upstream::connect_any(config, route, &mut plan, &target, &client, stats);
    // A client that leaves before its 101 ends the connect: dropped, it closes the backend
    // socket and frees the lease and ticket, and no breaker hears of it.
    let watched = async { Err(handshake::watch_early(stream, &mut early).await) };
    let connected = connected.or(watched).await;
    let (chosen, upgraded, lease) = connected.map_err(|e| Refused(e, Some(at)))?;
    log::debug!(
        "conn {id} {peer}: {} -> routers[{}] -> {}{}",
        route::split_target(&request.target).0,
        route.index,
        route.backends[chosen].origin(),
        route::redact(&target, config.token_param())
    );
    let accept = derive_accept_key(upgrade.key.as_bytes());
    if let Err(e) = handshake::write_switching(stream, &accept, &upgraded.headers).await {
        let gone = Error::ClientGone(format!("before the 101 was sent: {e}"));
        return Err(Refused(gone, Some(at)));
    }
    stats.handshake(101);
    log::debug!("conn {id} {peer}: upgraded");
    Ok(Opening::Relay(Box::new(Opened {
        at,
        chosen,
        client_early: early,
        backend: upgraded.stream,
        backend_early: upgraded.leftover,
        deflate: upgraded.deflate,
        expires,
        transforms: sides,
        _lease: lease,
        _ticket: ticket,
    })))
}

/// The headers `jwt.forward_claims` sets from the verified token's claims: made once per
/// connection, whatever the number of attempts. A claim whose value holds a control character
/// is left out (logged).
fn claim_headers<'c>(
    config: &'c Config,
    claims: Option<&Claims>,
    id: u64,
    peer: SocketAddr,
) -> Vec<(&'c str, String)> {
    match (config.jwt.as_ref(), claims) {
        (Some(jwt), Some(claims)) => {
            auth::claim_headers(&jwt.forward_claims, claims, |claim, header| {
                log::debug!(
                    "conn {id} {peer}: claim {claim:?} not forwarded as {header}: \
                 its value holds a control character"
                )
            })
        }
        _ => Vec::new(),
    }
}

/// Client header names with `_` are dropped before any stage reads the request (nginx's
/// `underscores_in_headers off`): many backends read `X_User_Id` as `X-User-Id`.
fn drop_underscored(request: &mut Request, id: u64, peer: SocketAddr) {
    if request.headers.iter().any(|(n, _)| n.contains('_')) {
        request.headers.retain(|name, _| {
            let keep = !name.contains('_');
            if !keep {
                log::debug!(
                    "conn {id} {peer}: header {:?} dropped: names with _ are not forwarded",
                    name.escape_debug().to_string()
                );
            }
            keep
        });
    }
}

/// Who a connection is: its id, its peer, whether that peer is a trusted proxy, and the client
/// address `trusted_proxies` decides.
#[derive(Clone, Copy)]
struct Who {
    id: u64,
    peer: SocketAddr,
    trusted_peer: bool,
    client_ip: std::net::IpAddr,
}

/// What the backend request takes from the client's side: its request and upgrade fields,
/// who it is, the listener's scheme, and what the `jwt` block adds or withholds.
fn client_side<'a>(
    config: &'a Config,
    route: &Route,
    request: &'a Request,
    upgrade: &'a Upgrade,
    who: Who,
    claims: &'a [(&'a str, String)],
) -> ClientSide<'a> {
    let jwt = config.jwt.as_ref();
    ClientSide {
        request,
        upgrade,
        id: who.id,
        peer: who.peer,
        trusted_peer: who.trusted_peer,
        client_ip: who.client_ip,
        proto: if config.listener_tls.is_some() {
            "https"
        } else {
            "http"
        },
        claim_headers: jwt.map_or(&[], |j| j.forward_claims.as_slice()),
        claims,
        strip_authorization: route.auth_required && jwt.is_some_and(|j| j.strip_authorization),
    }
}

/// Logs why a connection was refused, counts it, and answers it.
async fn refuse(stream: &mut Stream, peer: SocketAddr, id: u64, err: &Error, stats: &RouteStats) {
    match err.status() {
        Some(status) if err.is_operator_problem() => {
            log::warn!("conn {id} {peer}: {status}: {err}")
        }
        Some(status) => log::debug!("conn {id} {peer}: {status}: {err}"),
        None => log::debug!("conn {id} {peer}: closed: {err}"),
    }
    if let Some(status) = err.status() {
        stats.handshake(status);
    }
    if let Error::Unauthorized(why) = err {
        stats.auth_failed(why.reason());
    }
    if let Some(reason) = err.rejection_reason() {
        stats.rejected(reason);
    }
    if handshake::write_error(stream, err).await {
        stream.shutdown_write();
        handshake::drain(stream, Duration::from_millis(500), 64 * 1024).await;
    }
}
