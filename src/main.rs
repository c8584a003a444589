//! `kairos-gateway`: command line, logging, config loading, and the executor threads. The only
//! place where errors are printed for the user.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use kairos_gateway::config::{Backend, Config};
use kairos_gateway::plural::count;
use kairos_gateway::server::Gateway;
use kairos_gateway::{admin, control, sockets, upgrade};

const HELP: &str = "\
kairos-gateway: a WebSocket reverse proxy

USAGE:
    kairos-gateway [--config PATH] [--check] [--demo] [--version] [--help]

OPTIONS:
    --config PATH   config file (default: $KAIROS_CONFIG_PATH, else ./config.json)
    --check         validate the config, print every problem or \"config OK: N routes\", exit
    --demo          also run the example echo backend in-process on the address of the
                    config's first backend, which must be ws:// on this machine
                    (ws://localhost:3000 in the shipped config.json)
    --version       print the version
    --help          print this help

ENVIRONMENT:
    KAIROS_CONFIG_PATH   config file when --config is not given
    KAIROS_HOST          listen host (overrides server.host; default 0.0.0.0)
    KAIROS_PORT          listen port (overrides server.port; default 5900)
    RUST_LOG             log filter (default info), e.g. RUST_LOG=debug
";

struct Args {
    config: Option<PathBuf>,
    check: bool,
    demo: bool,
}

enum Cmd {
    Run(Args),
    Print(String),
}

fn parse_args() -> Result<Cmd, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        config: None,
        check: false,
        demo: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") | Short('c') => args.config = Some(parser.value()?.into()),
            Long("check") => args.check = true,
            Long("demo") => args.demo = true,
            Long("version") | Short('V') => {
                return Ok(Cmd::Print(format!(
                    "kairos-gateway {}",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            Long("help") | Short('h') => return Ok(Cmd::Print(HELP.to_string())),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Cmd::Run(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Cmd::Run(a)) => a,
        Ok(Cmd::Print(text)) => {
            println!("{}", text.trim_end());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kairos-gateway: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (path, from) = config_path(args.config);
    if let Err(e) = config_file_exists(&path, from) {
        eprintln!("error: {e}\nkairos-gateway: no config file; nothing started");
        return ExitCode::FAILURE;
    }
    // Read before the config is parsed (and long before the gateway listens): a change made
    // from here on, by whoever saw the gateway listen, is seen as a change and reloaded.
    let contents = control::snapshot(&path);
    let config = match control::load(&path) {
        Ok(c) => c,
        Err(problems) => {
            // A config can be wrong in a million places; the first ones say enough.
            const SHOWN: usize = 50;
            for p in problems.iter().take(SHOWN) {
                eprintln!("error: {p}");
            }
            if problems.len() > SHOWN {
                eprintln!("error: ... and {} more", problems.len() - SHOWN);
            }
            eprintln!(
                "kairos-gateway: {} in the config; nothing started",
                count(problems.len(), "problem")
            );
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        println!("config OK: {}", count(config.routes.len(), "route"));
        return ExitCode::SUCCESS;
    }
    match run(Arc::new(config), path, contents, args.demo) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file to load, made absolute (every message names the file it means, and a
/// reload reads the same file), and where its name came from.
fn config_path(flag: Option<PathBuf>) -> (PathBuf, &'static str) {
    let (path, from) = match flag {
        Some(p) => (p, "given with --config"),
        // Empty counts as unset, as for KAIROS_HOST / KAIROS_PORT.
        None => match std::env::var_os("KAIROS_CONFIG_PATH").filter(|p| !p.is_empty()) {
            Some(p) => (PathBuf::from(p), "from KAIROS_CONFIG_PATH"),
            None => (
                PathBuf::from("config.json"),
                "the default: config.json in the current directory",
            ),
        },
    };
    (std::path::absolute(&path).unwrap_or(path), from)
}

/// A config path that names nothing, or a directory, is the command line's mistake: say which
/// file was tried and how to name another. Any other problem is the config loader's to report.
fn config_file_exists(path: &Path, from: &str) -> Result<(), String> {
    let shown = path.display();
    let what = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Ok(meta) if meta.is_dir() => "is a directory",
        _ => return Ok(()),
    };
    Err(format!(
        "config file {shown} {what} ({from}); give the path of a config file with \
         --config PATH (or KAIROS_CONFIG_PATH)"
    ))
}

/// Serves until a shutdown; returns the exit status.
fn run(
    config: Arc<Config>,
    path: PathBuf,
    contents: Option<Vec<u8>>,
    demo: bool,
) -> Result<u8, String> {
    raise_open_files_limit();
    if demo {
        start_demo_backend(&config)?;
    }
    // Before listening: a SIGTERM from now on is a graceful shutdown, never a kill.
    let signals =
        kairos_gateway::signals::register().map_err(|e| format!("cannot handle signals: {e}"))?;
    // An upgrade's sockets, systemd's, or bound here.
    let (sockets, handover) = match upgrade::receive(&config) {
        Some(taken) => taken.map(|(s, h)| (s, Some(h)))?,
        None => (sockets::open(&config)?, None),
    };
    let origin = sockets.origin;
    let gateway =
        Gateway::new(config.clone(), sockets.public, sockets.systemd).map_err(|e| e.to_string())?;
    let addr = gateway.local_addr().map_err(|e| e.to_string())?;
    log::info!(
        "kairos-gateway {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    if handover.is_some() || sockets.systemd {
        log::info!("the listening sockets came {origin}");
        if config.port != 0 && config.port != addr.port() {
            log::warn!(
                "server.port is {}, but the socket passed listens on {addr}: it is used (the \
                 config's port takes a restart without passed sockets)",
                config.port
            );
        }
    }
    let admin = sockets.admin.map(Arc::new);
    if config.admin_on_public() {
        log::warn!("admin endpoints (/metrics, /healthz, /readyz) are served on the public listener {addr}, as admin asks");
    } else if let Some(listener) = &admin {
        let g: admin::GatewayRef = Arc::new(gateway.clone());
        let at =
            admin::start(listener.clone(), g, gateway.handed_over()).map_err(|e| e.to_string())?;
        log::info!(
            "admin listening on {at} (/, /status, /connections, /metrics, /healthz, /readyz)"
        );
    }
    for r in &config.routes {
        let backends: Vec<String> = r
            .backends
            .iter()
            .map(|b| format!("{}{}", b.origin(), r.internal.as_str()))
            .collect();
        log::info!(
            "route {} -> {}{}{}",
            r.external.as_str(),
            backends.join(", "),
            if r.backends.len() > 1 {
                format!(" ({})", r.strategy.name())
            } else {
                String::new()
            },
            if r.auth_required {
                " (JWT required)"
            } else {
                ""
            }
        );
    }
    gateway
        .start_health_checks()
        .map_err(|e| format!("cannot start the health check thread: {e}"))?;
    log::info!("{}", count(config.workers, "worker thread"));
    for i in 0..config.workers {
        let gateway = gateway.clone();
        std::thread::Builder::new()
            .name(format!("kairos-{i}"))
            .spawn(move || gateway.run_worker())
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
    }
    match handover {
        // The old process tells the service manager this one is the main process now.
        Some(h) => h.ready(),
        None => kairos_gateway::notify::ready(),
    }
    Ok(control::run(gateway, path, contents, signals, admin))
}

/// Each proxied connection holds two sockets: the soft open-files limit (often 1024) would cap
/// the gateway at about 500 connections. Raise it to the hard limit, as nginx's
/// `worker_rlimit_nofile` would; past it, accepts fail and are logged once a second.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (lim.current, lim.maximum) else {
        return; // unlimited
    };
    let target = hard.unwrap_or(u64::MAX).min(1 << 20);
    if target > soft {
        let new = Rlimit {
            current: Some(target),
            maximum: hard,
        };
        match setrlimit(Resource::Nofile, new) {
            Ok(()) => log::info!("open files limit raised from {soft} to {target}"),
            Err(e) => log::warn!("open files limit {soft}; cannot raise it to {target}: {e}"),
        }
    } else {
        log::info!(
            "open files limit {soft} (about {} proxied connections)",
            soft / 2
        );
    }
}

/// `--demo`: the echo backend on the first backend's address, which must be `ws://` and a
/// loopback address of this machine (`localhost`, `127.0.0.1`, `::1`, or a name that resolves
/// to one): anywhere else the route would never reach it, so nothing is started and the
/// gateway does not start either. Says which other backends of the config it does not serve.
fn start_demo_backend(config: &Config) -> Result<(), String> {
    let Some((route, b)) = config
        .routes
        .first()
        .and_then(|r| Some((r.external.as_str(), r.backends.first()?)))
    else {
        return Err("--demo needs at least one route in the config".to_string());
    };
    let not_started = |why: String| {
        format!(
            "--demo: the echo backend was not started: route {route}'s first backend {} {why}; \
             point it at ws://localhost:PORT, or run without --demo",
            b.origin()
        )
    };
    if b.tls {
        return Err(not_started(
            "is wss:// (the echo backend serves ws:// only)".into(),
        ));
    }
    let ip = loopback_of(b).map_err(not_started)?;
    let addr = kairos_gateway::echo::start(SocketAddr::new(ip, b.port)).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (something already listens there: run without --demo to use it)"
        } else {
            ""
        };
        format!(
            "--demo: cannot start the echo backend on {}: {e}{hint}",
            b.origin()
        )
    })?;
    log::info!(
        "--demo: echo backend started on ws://{addr}, for route {route}'s backend {}",
        b.origin()
    );
    let mut others: Vec<String> = Vec::new();
    for other in config.routes.iter().flat_map(|r| &r.backends) {
        let served = !other.tls && other.port == addr.port() && loopback_of(other) == Ok(ip);
        if !served && !others.contains(&other.origin()) {
            others.push(other.origin());
        }
    }
    if !others.is_empty() {
        log::warn!(
            "--demo: no echo backend for {} (only the first route's first backend gets one)",
            others.join(", ")
        );
    }
    Ok(())
}

/// The loopback address `backend`'s host names (`localhost` is 127.0.0.1, as the gateway's
/// resolver tries it first); `Err` says why it names none.
fn loopback_of(backend: &Backend) -> Result<IpAddr, String> {
    let host = backend.host.as_str();
    if host
        .strip_suffix('.')
        .unwrap_or(host)
        .eq_ignore_ascii_case("localhost")
    {
        return Ok(Ipv4Addr::LOCALHOST.into());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ip.is_loopback() {
            true => Ok(ip),
            false => Err("is not a loopback address (localhost, 127.0.0.1, ::1)".into()),
        };
    }
    let ips: Vec<IpAddr> = (host, backend.port)
        .to_socket_addrs()
        .map_err(|e| format!("does not resolve ({e})"))?
        .map(|a| a.ip())
        .collect();
    match ips.iter().find(|ip| ip.is_loopback()) {
        Some(ip) => Ok(*ip),
        None => {
            let shown: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            Err(format!(
                "resolves to [{}], no loopback address",
                shown.join(", ")
            ))
        }
    }
}
