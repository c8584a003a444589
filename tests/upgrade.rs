//! Binary upgrade on SIGUSR2 and systemd socket activation (issue 16): the new process takes
//! the listening sockets (public and admin) and serves; the old one stops accepting and drains
//! with 1001 within the spread; a new binary that exits or is never ready leaves the old one
//! serving. Sockets passed by systemd (`LISTEN_FDS`) are served and never shut down.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::cli::Temp;
use common::*;
use futures_lite::StreamExt;
use rustix::process::{Pid, Signal};

/// `server.close_spread_ms` of these tests.
const SPREAD: Duration = Duration::from_millis(500);

fn config(backend: SocketAddr) -> String {
    config_json(
        backend,
        r#""server": { "close_spread_ms": 500, "shutdown_timeout_ms": 5000 },
           "admin": { "host": "127.0.0.1", "port": 0 },"#,
        "",
    )
}

/// A process the test did not start itself (the upgrade's new one): stopped when dropped.
struct Adopted(Pid);

impl Adopted {
    fn alive(&self) -> bool {
        // A zombie counts as gone: its parent, the test's old process, has exited.
        std::fs::read_to_string(format!("/proc/{}/stat", self.0.as_raw_nonzero()))
            .is_ok_and(|s| !s.contains(") Z "))
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, Signal::KILL);
    }
}

/// The pid in the old process's line that the new one accepts.
fn new_process(gw: &GatewayProcess) -> Adopted {
    let line = gw
        .wait_for("upgrade: new process ", STEP)
        .expect("the upgrade hands over");
    let pid = line
        .split_once("upgrade: new process ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<i32>().ok())
        .and_then(Pid::from_raw)
        .expect("the new process's pid");
    Adopted(pid)
}

async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    assert_eq!(next_data(ws).await, Message::text(text));
}

/// The close `ws` gets within `limit`: its code and when.
async fn closed_within(ws: &mut Ws, limit: Duration, start: Instant) -> (u16, Duration) {
    loop {
        match within(limit, ws.next()).await {
            Some(Some(Ok(Message::Close(c)))) => {
                return (c.map_or(1005, |c| u16::from(c.code)), start.elapsed())
            }
            Some(Some(Ok(_))) => continue,
            other => panic!("expected a close within {limit:?}, got {other:?}"),
        }
    }
}

#[test]
fn sigusr2_hands_the_sockets_to_a_new_process_and_the_old_one_drains() {
    let mut gw = GatewayProcess::start(&config(start_echo()), None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        let mut before = connect(addr, "/ws/chat").await;
        echoes(&mut before, "before").await;
        let start = Instant::now();
        gw.signal(Signal::USR2);
        let new = new_process(&gw);
        // Accepted since the hand-over: the new process serves it.
        let mut after = connect(addr, "/ws/chat").await;
        echoes(&mut after, "after").await;
        let (code, at) = closed_within(&mut before, SPREAD + STEP, start).await;
        assert_eq!(code, 1001, "the old process's connection gets 1001");
        assert!(at < SPREAD + Duration::from_secs(3), "closed after {at:?}");
        drop(before);
        let status = gw
            .wait_exit(STEP)
            .expect("the old process exits once drained");
        assert_eq!(status.code(), Some(0));
        // The old process is gone; its successor still relays, accepts and answers admin.
        assert!(new.alive());
        echoes(&mut after, "still here").await;
        let mut later = connect(addr, "/ws/chat").await;
        echoes(&mut later, "later").await;
        assert_eq!(http_get(admin, "/readyz").await.status, 200);
    });
}

/// A copy of the gateway binary in `dir`, and a config to start it with.
fn copied_binary(dir: &Temp) -> PathBuf {
    let copy = dir.0.join("kairos-gateway");
    std::fs::copy(env!("CARGO_BIN_EXE_kairos-gateway"), &copy).expect("copy the binary");
    copy
}

/// Replaces the binary at `path` with a shell script (as an installer would: a new file,
/// renamed over the old).
fn replace_with_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let next = path.with_extension("new");
    std::fs::write(&next, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&next, path).expect("rename over the binary");
}

/// Starts the copy at `binary` (so that its path can be given a new binary).
fn start_copy(json: &str, binary: &Path) -> GatewayProcess {
    GatewayProcess::start_script(json, r#"exec "$2" --config "$1""#, &[binary])
}

/// The old process still accepts, relays `open`, and answers `/readyz`.
async fn still_serving(addr: SocketAddr, admin: SocketAddr, open: &mut Ws) {
    echoes(open, "still").await;
    let mut fresh = connect(addr, "/ws/chat").await;
    echoes(&mut fresh, "fresh").await;
    assert_eq!(http_get(admin, "/readyz").await.status, 200);
}

#[test]
fn a_new_binary_that_exits_leaves_the_old_one_serving() {
    let dir = Temp::dir();
    let binary = copied_binary(&dir);
    let mut gw = start_copy(&config(start_echo()), &binary);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    replace_with_script(&binary, "echo 'broken build' >&2; exit 3");
    run(async {
        let mut open = connect(addr, "/ws/chat").await;
        gw.signal(Signal::USR2);
        let failed = gw.wait_for("upgrade failed", STEP).expect("an error");
        assert!(failed.contains("ERROR"), "{failed}");
        assert!(failed.contains("exited (exit status: 3)"), "{failed}");
        assert!(failed.contains("keeps serving"), "{failed}");
        still_serving(addr, admin, &mut open).await;
        assert!(gw.child.try_wait().expect("try_wait").is_none());
    });
}

#[test]
fn a_new_binary_never_ready_is_killed_and_the_old_one_serves_throughout() {
    let dir = Temp::dir();
    let binary = copied_binary(&dir);
    let mut gw = start_copy(&config(start_echo()), &binary);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    let pidfile = dir.0.join("stuck.pid");
    replace_with_script(
        &binary,
        &format!("echo $$ > '{}'; exec sleep 60", pidfile.display()),
    );
    run(async {
        let mut open = connect(addr, "/ws/chat").await;
        gw.signal(Signal::USR2);
        assert!(
            wait_until(STEP, || pidfile.exists()).await,
            "the new binary ran"
        );
        // While the new one hangs, the old one serves as before.
        still_serving(addr, admin, &mut open).await;
        let limit = kairos_gateway::upgrade::READY_TIMEOUT + STEP;
        let failed = gw.wait_for("upgrade failed", limit).expect("an error");
        assert!(failed.contains("not done within 10 s"), "{failed}");
        let stuck = std::fs::read_to_string(&pidfile).expect("pid");
        let stuck = Pid::from_raw(stuck.trim().parse().expect("a pid")).expect("pid");
        let gone = Adopted(stuck);
        assert!(
            wait_until(STEP, || !gone.alive()).await,
            "the stuck process is killed"
        );
        still_serving(addr, admin, &mut open).await;
        assert!(gw.child.try_wait().expect("try_wait").is_none());
    });
}

#[test]
fn a_shutdown_during_an_upgrade_cancels_it_and_stops_the_new_process() {
    let dir = Temp::dir();
    let binary = copied_binary(&dir);
    let mut gw = start_copy(&config(start_echo()), &binary);
    gw.addr();
    let pidfile = dir.0.join("stuck.pid");
    replace_with_script(
        &binary,
        &format!("echo $$ > '{}'; exec sleep 60", pidfile.display()),
    );
    run(async {
        gw.signal(Signal::USR2);
        assert!(
            wait_until(STEP, || pidfile.exists()).await,
            "the new binary ran"
        );
        let stuck = std::fs::read_to_string(&pidfile).expect("pid");
        let stuck = Adopted(Pid::from_raw(stuck.trim().parse().expect("a pid")).expect("pid"));
        gw.signal(Signal::TERM);
        gw.wait_for("cancelled by the shutdown", STEP)
            .expect("the upgrade is cancelled");
        assert!(
            wait_until(STEP, || !stuck.alive()).await,
            "the new process is stopped"
        );
    });
    assert_eq!(gw.wait_exit(STEP).and_then(|s| s.code()), Some(0));
}

/// Python binds two listening sockets, says their ports on stderr, puts them at descriptors 3
/// and 4 and becomes the gateway with systemd's variables (`LISTEN_PID` is its own pid, which
/// `exec` keeps).
const ACTIVATE: &str = r#"
import os, socket, sys
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    socks.append(s)
print("PORTS", *[s.getsockname()[1] for s in socks], file=sys.stderr, flush=True)
high = [os.dup(s.fileno()) for s in socks]
for s in socks:
    s.close()
os.dup2(high[0], 13); os.dup2(high[1], 14)
os.dup2(13, 3); os.dup2(14, 4)
os.environ.update(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="public:admin")
os.execv(sys.argv[1], [sys.argv[1], "--config", sys.argv[2]])
"#;

#[test]
fn systemd_socket_activation_serves_the_passed_sockets_and_never_shuts_them_down() {
    let code = Path::new(ACTIVATE);
    let mut gw = GatewayProcess::start_script(
        &config(start_echo()),
        r#"exec python3 -c "$2" "$0" "$1""#,
        &[code],
    );
    let ports = gw
        .wait_for("PORTS ", STEP)
        .expect("python bound the sockets");
    let ports: Vec<u16> = ports
        .split_whitespace()
        .skip(1)
        .filter_map(|p| p.parse().ok())
        .collect();
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    assert_eq!((addr.port(), admin.port()), (ports[0], ports[1]));
    run(async {
        let mut open = connect(addr, "/ws/chat").await;
        echoes(&mut open, "activated").await;
        assert_eq!(http_get(admin, "/healthz").await.status, 200);
        gw.signal(Signal::TERM);
        gw.wait_for("shutting down", STEP)
            .expect("the drain begins");
        // Draining, the gateway no longer accepts, but the socket systemd keeps still listens:
        // a connect waits in its queue for the next instance instead of being refused.
        let queued = std::net::TcpStream::connect(addr);
        assert!(queued.is_ok(), "refused: {queued:?}");
        let (code, _) = closed_within(&mut open, SPREAD + STEP, Instant::now()).await;
        assert_eq!(code, 1001);
    });
    assert_eq!(gw.wait_exit(STEP).and_then(|s| s.code()), Some(0));
}
