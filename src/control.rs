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
//! - SIGUSR2: binary upgrade ([`crate::upgrade`]). Once the new process accepts, this one stops
//!   accepting and drains as on SIGTERM (1001, spread), without refusing anything; a new
//!   process that fails leaves this one serving.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::auth::JwtVerifier;
use crate::config::{self, Config};
use crate::error::GatewayClose;
use crate::metrics;
use crate::plural::count;
use crate::reactor::{self, Timer};
use crate::server::{self, Gateway};
use crate::signals::{Registered, Signal, Signals};

/// Loads and validates the config at `path`, builds its token verifier to check it, logs its
/// warnings, and applies the listen environment (`KAIROS_HOST`, `KAIROS_PORT`); `Err` lists
/// every problem. What `--check`, the start and a reload all go through.
pub fn load(path: &Path) -> Result<Config, Vec<String>> {
    // `auth` builds the verifier from the `jwt` block (each generation builds its own): what it
    // refuses (an algorithm, a key) is a problem of the file like any other.
    let loaded = config::load_file(path, &|jwt| JwtVerifier::from_config(jwt).map(drop))
        .map_err(|e| e.problems)?;
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

/// The config file's contents, to tell a change: at most one byte over the size a config may
/// have (a device or a pipe named as the config never ends).
pub fn snapshot(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).ok()?;
    file.take(config::MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

enum Event {
    Signal(std::io::Result<Signal>),
    Poll,
    /// An upgrade ended: the new process's pid once it accepts, or why it failed.
    Upgraded(Result<u32, String>),
}

/// An upgrade under way: its outcome, and its cancel flag.
struct Upgrading(
    async_channel::Receiver<Result<u32, String>>,
    Arc<AtomicBool>,
);

/// Handles signals (registered before the gateway listened, so that none is missed) and
/// reloads until a shutdown or an upgrade ends; returns the process exit status. `contents`
/// is the file as read before the config in force was loaded from it; `admin` is the admin
/// listener, handed over with the public one on an upgrade.
pub fn run(
    gateway: Gateway,
    path: PathBuf,
    contents: Option<Vec<u8>>,
    signals: Registered,
    admin: Option<Arc<TcpListener>>,
) -> u8 {
    reactor::block_on(async {
        let signals = match signals.listen() {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot read signals ({e}); stop the gateway with SIGKILL");
                std::future::pending().await
            }
        };
        let mut last = contents;
        let mut upgrading: Option<Upgrading> = None;
        loop {
            let poll = gateway.config().reload_poll;
            let event = async { Event::Signal(signals.next().await) }
                .or(async {
                    match poll {
                        Some(every) => Timer::after(every).await,
                        None => std::future::pending().await,
                    };
                    Event::Poll
                })
                .or(async {
                    match &upgrading {
                        Some(Upgrading(done, _)) => match done.recv().await {
                            Ok(outcome) => Event::Upgraded(outcome),
                            Err(_) => Event::Upgraded(Err("the upgrade thread ended".into())),
                        },
                        None => std::future::pending().await,
                    }
                })
                .await;
            match event {
                Event::Signal(Ok(Signal::Hup)) => {
                    last = snapshot(&path);
                    reload(&gateway, &path, "SIGHUP");
                }
                Event::Signal(Ok(Signal::Usr2)) if upgrading.is_some() => {
                    log::warn!("SIGUSR2: an upgrade is already under way; ignored");
                }
                Event::Signal(Ok(Signal::Usr2)) => {
                    upgrading = upgrade(&gateway, admin.clone());
                }
                Event::Upgraded(Ok(pid)) => return hand_over(&gateway, &signals, pid).await,
                Event::Upgraded(Err(e)) => {
                    log::error!("upgrade failed: {e}; this process keeps serving");
                    upgrading = None;
                }
                Event::Signal(Ok(sig)) => {
                    if let Some(upgrade) = upgrading {
                        upgrade.cancel().await;
                    }
                    return shutdown(&gateway, &signals, sig).await;
                }
                Event::Signal(Err(e)) => {
                    log::error!("signal handling failed ({e}); signals are ignored now");
                    std::future::pending::<()>().await;
                }
                Event::Poll => {
                    let now = snapshot(&path);
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
    crate::notify::reloading();
    apply(gateway, path, why);
    crate::notify::ready();
}

/// The reload itself: load, check, swap, and say what happened.
fn apply(gateway: &Gateway, path: &Path, why: &str) {
    let shown = path.display();
    let new = match load(path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                log::error!("reload: {p}");
            }
            log::error!(
                "reload ({why}): {} in {shown}; the config in force stays",
                count(problems.len(), "problem")
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
        Ok(retired) => {
            let config = gateway.config();
            log::info!(
                "reload ({why}): {shown} applied to new connections ({}){}",
                count(config.routes.len(), "route"),
                match retired {
                    0 => String::new(),
                    n => format!(
                        "; the connections of {} it removed get 1012 over the next {} ms",
                        count(n, "route backend"),
                        config.close_spread.as_millis()
                    ),
                }
            );
            metrics::reloaded(true);
        }
        Err(e) => {
            log::error!("reload ({why}): {e}; the config in force stays");
            metrics::reloaded(false);
        }
    }
}

impl Upgrading {
    /// Stops the upgrade for a shutdown: the new process is killed, or (ready just before it
    /// heard) told to shut down too, before this one stops listening.
    async fn cancel(self) {
        let Upgrading(done, cancel) = self;
        cancel.store(true, Ordering::SeqCst);
        if let Ok(Ok(pid)) = done.recv().await {
            let pid = rustix::process::Pid::from_raw(pid as i32);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        log::warn!("the upgrade under way was cancelled by the shutdown");
    }
}

/// Starts an upgrade on a thread of its own (it waits on the new process); `None` when the
/// thread cannot start (logged).
fn upgrade(gateway: &Gateway, admin: Option<Arc<TcpListener>>) -> Option<Upgrading> {
    let (done, outcome) = async_channel::bounded(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let (g, c) = (gateway.clone(), cancel.clone());
    let started = std::thread::Builder::new()
        .name("kairos-upgrade".into())
        .spawn(move || {
            let offer = crate::upgrade::Offer {
                public: g.listener(),
                admin: admin.as_deref(),
                systemd: g.systemd_socket(),
            };
            let _ = done.send_blocking(crate::upgrade::hand_over(&offer, &c));
        });
    match started {
        Ok(_) => Some(Upgrading(outcome, cancel)),
        Err(e) => {
            log::error!(
                "SIGUSR2: cannot start the upgrade thread: {e}; this process keeps serving"
            );
            None
        }
    }
}

/// The upgrade's new process `pid` accepts: this one stops accepting and drains; returns the
/// exit status.
async fn hand_over(gateway: &Gateway, signals: &Signals, pid: u32) -> u8 {
    gateway.hand_over();
    crate::notify::main_pid(pid);
    log::info!(
        "upgrade: new process {pid} accepts connections; this one ({}) stopped accepting: \
         {} get {} over the next {} ms, then it exits (waiting up to {} ms; a second signal \
         exits at once)",
        std::process::id(),
        count(server::open_connections(), "open connection"),
        GatewayClose::Shutdown.code(),
        gateway.config().close_spread.as_millis(),
        gateway.config().shutdown_timeout.as_millis()
    );
    drained(signals, gateway.config().shutdown_timeout).await
}

/// Graceful shutdown; returns the exit status.
async fn shutdown(gateway: &Gateway, signals: &Signals, sig: Signal) -> u8 {
    let timeout = gateway.config().shutdown_timeout;
    // First stop, then say so: whoever reads the line sees the gateway draining.
    gateway.begin_shutdown();
    gateway.stop_listening().await;
    crate::notify::stopping();
    log::info!(
        "{}: shutting down: no new connections; {} get {} over the next {} ms \
         (waiting up to {} ms; a second signal exits at once)",
        sig.name(),
        count(server::open_connections(), "open connection"),
        GatewayClose::Shutdown.code(),
        gateway.config().close_spread.as_millis(),
        timeout.as_millis()
    );
    drained(signals, timeout).await
}

/// Waits until every connection has closed, `timeout` has passed, or a second SIGTERM or
/// SIGINT came; returns the exit status.
async fn drained(signals: &Signals, timeout: Duration) -> u8 {
    let deadline = Instant::now() + timeout;
    let drained = async {
        while server::open_connections() > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(10)).await;
        }
        let left = server::open_connections();
        if left > 0 {
            log::warn!(
                "shutdown: {} still open after the timeout; exiting",
                count(left, "connection")
            );
        } else {
            log::info!("shutdown: every connection closed; exiting");
        }
        0
    };
    let again = async {
        // Another SIGTERM or SIGINT; a SIGHUP or SIGUSR2 now changes nothing.
        while let Ok(Signal::Hup | Signal::Usr2) = signals.next().await {}
        log::warn!(
            "second signal: exiting now with {} open",
            count(server::open_connections(), "connection")
        );
        1
    };
    drained.or(again).await
}
