//! `kairos-gateway`: command line, logging, config loading, and the executor threads. The only
//! place where errors are printed for the user.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kairos_gateway::config::Config;
use kairos_gateway::server::Gateway;
use kairos_gateway::{admin, control};

const HELP: &str = "\
kairos-gateway: a WebSocket reverse proxy

USAGE:
    kairos-gateway [--config PATH] [--check] [--demo] [--version] [--help]

OPTIONS:
    --config PATH   config file (default: $KAIROS_CONFIG_PATH, else ./config.json)
    --check         validate the config, print every problem or \"config OK: N routes\", exit
    --demo          also run the example echo backend in-process on the address of the
                    config's first backend (ws://localhost:3000 in the shipped config.json)
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
    let path = args
        .config
        .or_else(|| {
            // Empty counts as unset, as for KAIROS_HOST / KAIROS_PORT.
            std::env::var_os("KAIROS_CONFIG_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("config.json"));
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
                "kairos-gateway: {} problem(s) in the config; nothing started",
                problems.len()
            );
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        println!("config OK: {} routes", config.routes.len());
        return ExitCode::SUCCESS;
    }
    match run(Arc::new(config), path, args.demo) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until a shutdown; returns the exit status.
fn run(config: Arc<Config>, path: PathBuf, demo: bool) -> Result<u8, String> {
    raise_open_files_limit();
    if demo {
        start_demo_backend(&config)?;
    }
    // Before listening: a SIGTERM from now on is a graceful shutdown, never a kill.
    let signals =
        kairos_gateway::signals::register().map_err(|e| format!("cannot handle signals: {e}"))?;
    let gateway = Gateway::bind(config.clone()).map_err(|e| e.to_string())?;
    let addr = gateway.local_addr().map_err(|e| e.to_string())?;
    log::info!(
        "kairos-gateway {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    if config.admin_on_public() {
        log::warn!("admin endpoints (/metrics, /healthz, /readyz) are served on the public listener {addr}, as admin asks");
    } else if let Some((host, port)) = &config.admin {
        let g = gateway.clone();
        let admin =
            admin::start(host, *port, Arc::new(move || g.status())).map_err(|e| e.to_string())?;
        log::info!("admin listening on {admin} (/metrics, /healthz, /readyz)");
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
    log::info!("{} worker thread(s)", config.workers);
    for i in 0..config.workers {
        let gateway = gateway.clone();
        std::thread::Builder::new()
            .name(format!("kairos-{i}"))
            .spawn(move || gateway.run_worker())
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
    }
    Ok(control::run(gateway, path, signals))
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

/// `--demo`: the echo backend on the first backend's address (which must be local and ws://).
fn start_demo_backend(config: &Config) -> Result<(), String> {
    let Some(b) = config.routes.first().map(|r| &r.backends[0]) else {
        return Err("--demo needs at least one route in the config".to_string());
    };
    if b.tls {
        return Err(format!(
            "--demo serves ws:// only; the first backend is {}",
            b.origin()
        ));
    }
    let ip: IpAddr = match (b.host.as_str(), b.port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .find(|a| a.ip().is_loopback())
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    if !ip.is_loopback() {
        return Err(format!(
            "--demo runs the echo backend on this machine; the first backend {} is not local",
            b.origin()
        ));
    }
    let addr = kairos_gateway::echo::start(SocketAddr::new(ip, b.port)).map_err(|e| {
        format!(
            "--demo: cannot start the echo backend on {}: {e}",
            b.origin()
        )
    })?;
    log::info!("demo echo backend started on ws://{addr}");
    Ok(())
}
