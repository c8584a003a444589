//! A WebSocket echo server for trying the gateway: `cargo run --example echo_backend -- [PORT]
//! [--name NAME]` (default port 3000, on 127.0.0.1). Text and binary messages come back as they
//! were sent. With `--name`, each client first gets one text message `backend NAME` (so that
//! clients behind gateways and balancers can tell which backend served them; `bench/rolling.sh`).

use std::net::{Ipv4Addr, SocketAddr};

const USAGE: &str = "usage: echo_backend [PORT] [--name NAME]   (PORT: 0-65535, default 3000; \
                     --name: send `backend NAME` first on every connection)";

fn parse_args() -> Result<(u16, Option<String>), lexopt::Error> {
    use lexopt::prelude::*;
    let (mut port, mut name) = (None, None);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("name") => name = Some(parser.value()?.string()?),
            Value(v) if port.is_none() => port = Some(v.parse()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok((port.unwrap_or(3000), name))
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (port, name) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo_backend: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo_backend: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("echo backend listening on ws://{a}"),
        Err(e) => eprintln!("echo_backend: {e}"),
    }
    let greeting = name.map(|n| format!("backend {n}"));
    if let Err(e) = kairos_gateway::echo::serve_greeting(listener, greeting) {
        eprintln!("echo_backend: {e}");
        std::process::exit(1);
    }
}
