//! systemd's readiness protocol (issue 16): with `NOTIFY_SOCKET` set, the gateway says
//! `READY=1` once it serves, `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around a
//! reload, and `STOPPING=1` when its graceful shutdown begins.

mod common;

use std::os::unix::net::UnixDatagram;

use common::*;
use rustix::process::Signal;

/// The next message on `socket` (within [`STEP`]).
fn next(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(STEP)).expect("timeout");
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn the_service_manager_hears_ready_reloading_and_stopping() {
    let path = std::env::temp_dir().join(format!("kairos-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let json = config_json(start_echo(), "", "");
    let var = format!("NOTIFY_SOCKET={}", path.display());
    let mut gw = GatewayProcess::start_with_env(&json, &[&var]);
    let addr = gw.addr();
    assert!(next(&socket).starts_with("READY=1"));
    // It serves by then.
    run(async { connect(addr, "/ws/chat").await });
    gw.signal(Signal::HUP);
    let reloading = next(&socket);
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|n| n.parse::<u64>().ok());
    assert!(usec.is_some_and(|n| n > 0), "{reloading:?}");
    assert!(next(&socket).starts_with("READY=1"));
    gw.signal(Signal::TERM);
    assert!(next(&socket).starts_with("STOPPING=1"));
    assert_eq!(gw.wait_exit(STEP).and_then(|s| s.code()), Some(0));
    let _ = std::fs::remove_file(&path);
}
