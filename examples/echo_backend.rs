//! A WebSocket echo server for trying the gateway: `cargo run --example echo_backend -- [PORT]`
//! (default 3000, on 127.0.0.1). Text and binary messages come back as they were sent.

use std::net::{Ipv4Addr, SocketAddr};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 3000,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            eprintln!("usage: echo_backend [PORT]   (PORT: 0-65535, default 3000)");
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
    if let Err(e) = kairos_gateway::echo::serve(listener) {
        eprintln!("echo_backend: {e}");
        std::process::exit(1);
    }
}
