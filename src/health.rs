//! Active health checks (`routers[].health_check`): one probe loop per backend of each route
//! that has them, on a thread of its own with its own I/O driver. A probe is a WebSocket
//! handshake on the route's `internal_path`, closed at once (normal closure), or an HTTP GET of the
//! backend's `health_check_path` expecting 2xx. `unhealthy_threshold` failures in a row mark a
//! backend down (it gets no new connections; open ones are left alone), `healthy_threshold`
//! successes in a row mark it up again. The thread of a generation's checks ends as soon as its
//! [`Checks`] is dropped (a reload replaced the generation), a probe under way included.

use std::io;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_executor::LocalExecutor;
use async_tungstenite::tungstenite::handshake::client::generate_key;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::{AsyncWriteExt, FutureExt};

use crate::balance::Balancers;
use crate::config::{Backend, Config, HealthCheck, Route};
use crate::error::GatewayClose;
use crate::handshake::{self, read_final_response, Head};
use crate::net::Stream;
use crate::plural::count;
use crate::reactor::{self, Timer};
use crate::upstream;

/// Largest probe response head read.
const MAX_HEAD: usize = 16 * 1024;

/// How long a probe waits for the backend's side of the close handshake (not part of the
/// verdict: the handshake already passed).
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// One generation's running health checks: dropping it stops them at once.
pub struct Checks {
    /// Never sent on: its drop closes the channel, which wakes the checks' thread.
    _stop: async_channel::Sender<()>,
}

/// Starts the probe loops of every route with a health check on a `kairos-health` thread,
/// which runs until the returned [`Checks`] is dropped; `None` when no route has one.
pub fn start(config: Arc<Config>, balancers: &Arc<Balancers>) -> io::Result<Option<Checks>> {
    if config.routes.iter().all(|r| r.health.is_none()) {
        return Ok(None);
    }
    let balancers = Arc::downgrade(balancers);
    let (stop, stopped) = async_channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("kairos-health".into())
        .spawn(move || {
            let ex = LocalExecutor::new();
            for (at, route) in config.routes.iter().enumerate() {
                let Some(check) = route.health else {
                    continue;
                };
                for backend in 0..route.backends.len() {
                    let watch = watch(config.clone(), balancers.clone(), check, at, backend);
                    ex.spawn(watch).detach();
                }
            }
            // Until the generation is replaced (the receive fails: nothing is ever sent); then
            // dropping `ex` drops every loop, with its probe, sockets and timers, and the
            // thread ends.
            let _ = reactor::block_on(ex.run(stopped.recv()));
        })?;
    Ok(Some(Checks { _stop: stop }))
}

/// Probes one backend every `check.interval` for as long as `balancers` lives (and its
/// [`Checks`]).
async fn watch(
    config: Arc<Config>,
    balancers: Weak<Balancers>,
    check: HealthCheck,
    at: usize,
    index: usize,
) {
    let route = &config.routes[at];
    let backend = &route.backends[index];
    let name = format!(
        "routers[{}] ({}): backend {}",
        route.index,
        route.external.as_str(),
        backend.origin()
    );
    let (mut passed, mut failed, mut up) = (0u32, 0u32, true);
    loop {
        let started = Instant::now();
        let verdict = probe(&config, route, backend)
            .or(async {
                Timer::after(check.timeout).await;
                Err(format!("no answer within {} ms", check.timeout.as_millis()))
            })
            .await;
        // A passed WebSocket probe still closes politely (not part of the verdict).
        let verdict = match verdict {
            Ok(Some(mut stream)) => {
                close(&mut stream, CLOSE_WAIT.min(check.timeout)).await;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(why) => Err(why),
        };
        let Some(balancers) = balancers.upgrade() else {
            return;
        };
        match verdict {
            Ok(()) => {
                (passed, failed) = (passed.saturating_add(1), 0);
                if !up && passed >= check.healthy_threshold {
                    up = true;
                    balancers.set_up(at, index, true);
                    let passed = count(passed as usize, "health check");
                    log::info!("{name} is up: {passed} in a row passed");
                }
            }
            Err(why) => {
                (passed, failed) = (0, failed.saturating_add(1));
                log::debug!("{name}: health check failed: {why}");
                if up && failed >= check.unhealthy_threshold {
                    up = false;
                    balancers.set_up(at, index, false);
                    log::warn!(
                        "{name} is down: {} in a row failed (last: {why}); \
                         it gets no new connections until it passes {} in a row",
                        count(failed as usize, "health check"),
                        count(check.healthy_threshold as usize, "health check")
                    );
                }
            }
        }
        drop(balancers);
        Timer::after(check.interval.saturating_sub(started.elapsed())).await;
    }
}

/// One probe of `backend`: `Err` says what failed; a passed WebSocket probe returns its
/// connection, to be closed.
async fn probe(
    config: &Config,
    route: &Route,
    backend: &Backend,
) -> Result<Option<Stream>, String> {
    let path = match &backend.health_check_path {
        Some(p) => p.clone(),
        None => route.internal.render(&[]),
    };
    let url = format!("{}{path}", backend.origin());
    let mut stream = upstream::open(config, backend, &url)
        .await
        .map_err(|e| e.to_string())?;
    let get = |extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kairos-gateway health check\r\n\
             {extra}\r\n",
            backend.host_header()
        )
    };
    let key = generate_key();
    let request = match backend.health_check_path {
        Some(_) => get("Accept: */*\r\nConnection: close\r\n"),
        None => get(&format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\n"
        )),
    };
    let io = |e: io::Error| format!("{url}: {e}");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let (res, _) = read_final_response(&mut stream, MAX_HEAD)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if backend.health_check_path.is_some() {
        return match res.status {
            200..=299 => Ok(None),
            other => Err(format!("{url} answered HTTP {other}, not 2xx")),
        };
    }
    if res.status != 101 {
        return Err(format!(
            "{url} answered the upgrade with HTTP {}",
            res.status
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    if res.header("Sec-WebSocket-Accept").map(str::trim) != Some(accept.as_str()) {
        return Err(format!("{url}: wrong or missing Sec-WebSocket-Accept"));
    }
    Ok(Some(stream))
}

/// Sends a masked close frame ([`GatewayClose::HealthProbe`]) and waits up to `wait` for the
/// backend's close.
async fn close(stream: &mut Stream, wait: Duration) {
    let frame = GatewayClose::HealthProbe.frame(Some(rand::random()));
    if stream.write_all(&frame).await.is_ok() && stream.flush().await.is_ok() {
        handshake::drain(stream, wait, 4096).await;
    }
}
