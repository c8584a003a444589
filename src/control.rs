//! The main thread's job once the workers run: signals and the config file.
//!
//! - SIGTERM or SIGINT: graceful shutdown. No new connections; every open one gets
//!   [`GatewayClose::Shutdown`] on both legs (503 before its 101); the process exits 0 once
//!   they are all closed, or after `server.shutdown_timeout_ms`.
//!   A second signal exits at once (status 1).
//! - SIGHUP, or a change of the config file's contents (checked every
//!   `server.reload_poll_ms`): reload. A valid config applies to new connections at once (open
//!   ones keep the config they started with); an invalid one is rejected with every problem
//!   logged, and the config in force stays.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use futures_lite::{FutureExt, StreamExt};

use crate::config::{self, Config};
use crate::error::GatewayClose;
use crate::metrics;
use crate::server::{self, Gateway};

/// The signals the gateway handles (registered before it listens, so that none is missed).
pub fn signals() -> std::io::Result<Signals> {
    Signals::new([Signal::Term, Signal::Int, Signal::Hup])
}

/// Loads and validates the config at `path`, logs its warnings, and applies the listen
/// environment (`KAIROS_HOST`, `KAIROS_PORT`); `Err` lists every problem.
pub fn load(path: &Path) -> Result<Config, Vec<String>> {
    let loaded = config::load_file(path).map_err(|e| e.problems)?;
    for w in &loaded.warnings {
        log::warn!("{}: {w}", path.display());
    }
    let mut config = loaded.config;
    config
        .apply_listen_env(
            std::env::var("KAIROS_HOST").ok(),
            std::env::var("KAIROS_PORT").ok(),
        )
        .map_err(|e| e.problems)?;
    Ok(config)
}

enum Event {
    Signal(Option<std::io::Result<Signal>>),
    Poll,
}

/// Handles signals and reloads until a shutdown ends; returns the process exit status.
pub fn run(gateway: Gateway, path: PathBuf, mut signals: Signals) -> u8 {
    smol::block_on(async {
        let mut last = std::fs::read(&path).ok();
        loop {
            let poll = gateway.config().reload_poll;
            let event = async { Event::Signal(signals.next().await) }
                .or(async {
                    match poll {
                        Some(every) => smol::Timer::after(every).await,
                        None => std::future::pending().await,
                    };
                    Event::Poll
                })
                .await;
            match event {
                Event::Signal(Some(Ok(Signal::Hup))) => {
                    last = std::fs::read(&path).ok();
                    reload(&gateway, &path, "SIGHUP");
                }
                Event::Signal(Some(Ok(sig))) => {
                    return shutdown(&gateway, &mut signals, sig).await;
                }
                Event::Signal(other) => {
                    log::error!("signal handling failed ({other:?}); signals are ignored now");
                    signals = match self::signals() {
                        Ok(s) => s,
                        Err(_) => std::future::pending().await,
                    };
                }
                Event::Poll => {
                    let now = std::fs::read(&path).ok();
                    if now.is_some() && now != last {
                        last = now;
                        reload(&gateway, &path, "the config file changed");
                    }
                }
            }
        }
    })
}

/// Loads the config again and applies it, or logs why not.
fn reload(gateway: &Gateway, path: &Path, why: &str) {
    let shown = path.display();
    let new = match load(path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                log::error!("reload: {p}");
            }
            log::error!(
                "reload ({why}): {} problem(s) in {shown}; the config in force stays",
                problems.len()
            );
            metrics::reloaded(false);
            return;
        }
    };
    let old = gateway.config();
    for (what, changed) in [
        (
            "server.host/server.port",
            (&old.host, old.port) != (&new.host, new.port),
        ),
        ("server.workers", old.workers != new.workers),
        ("admin", old.admin != new.admin),
    ] {
        if changed {
            log::warn!("reload: {what} changed; that takes a restart (the rest applies now)");
        }
    }
    match gateway.swap(new) {
        Ok(()) => {
            log::info!(
                "reload ({why}): {shown} applied to new connections ({} routes)",
                gateway.config().routes.len()
            );
            metrics::reloaded(true);
        }
        Err(e) => {
            log::error!("reload ({why}): {e}; the config in force stays");
            metrics::reloaded(false);
        }
    }
}

/// Graceful shutdown; returns the exit status.
async fn shutdown(gateway: &Gateway, signals: &mut Signals, sig: Signal) -> u8 {
    let timeout = gateway.config().shutdown_timeout;
    // First stop, then say so: whoever reads the line sees the gateway draining.
    gateway.begin_shutdown();
    log::info!(
        "{}: shutting down: no new connections; {} open connection(s) get {} \
         (waiting up to {} ms; a second signal exits at once)",
        if sig == Signal::Int {
            "SIGINT"
        } else {
            "SIGTERM"
        },
        server::open_connections(),
        GatewayClose::Shutdown.code(),
        timeout.as_millis()
    );
    let deadline = Instant::now() + timeout;
    let drained = async {
        while server::open_connections() > 0 && Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        let left = server::open_connections();
        if left > 0 {
            log::warn!("shutdown: {left} connection(s) still open after the timeout; exiting");
        } else {
            log::info!("shutdown: every connection closed; exiting");
        }
        0
    };
    let again = async {
        // Another SIGTERM or SIGINT; a SIGHUP now changes nothing.
        while let Some(Ok(Signal::Hup)) = signals.next().await {}
        log::warn!(
            "second signal: exiting now with {} connection(s) open",
            server::open_connections()
        );
        1
    };
    drained.or(again).await
}
