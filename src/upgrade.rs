//! Binary upgrade (SIGUSR2, nginx's signal for it): the running gateway starts the binary at
//! the path it was started from, with the same arguments, and hands it its listening sockets;
//! once the new process says it is ready, the old one stops accepting and drains. Nothing is
//! refused meanwhile: the sockets never stop listening, and a connect always finds a process
//! that accepts it.
//!
//! The sockets go over a Unix socket in the abstract namespace whose name the new process
//! finds in `KAIROS_UPGRADE_SOCKET` (as `SCM_RIGHTS`; taking over inherited descriptor numbers
//! would need unsafe code). Only the process the gateway started gets them: the peer's
//! credentials are checked. The exchange, one line each way:
//!
//! - old -> new: `kairos-gateway-upgrade 1 public [admin] [systemd]`, with the descriptors;
//! - new -> old: `ready`, once its workers accept.
//!
//! A new process that exits, or is not ready within [`READY_TIMEOUT`], is killed, and the old
//! one goes on serving.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::config::Config;
use crate::sockets::{self, Sockets};

/// How long the new process has to take the sockets and start accepting.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that tells a new process where its sockets are.
const ENV: &str = "KAIROS_UPGRADE_SOCKET";
/// The first words of the old process's line.
const HELLO: &str = "kairos-gateway-upgrade 1";
/// How often the old process looks at the new one while it waits.
const TICK: Duration = Duration::from_millis(20);

/// The old process's listening sockets, to hand over.
pub struct Offer<'a> {
    /// The public listener.
    pub public: &'a TcpListener,
    /// The admin listener, when there is one of its own.
    pub admin: Option<&'a TcpListener>,
    /// Whether systemd owns them (the new process must not shut them down either).
    pub systemd: bool,
}

/// Starts the new process and hands it `offer`; returns its pid once it accepts
/// connections. `Err` says what went wrong; the new process is gone by then. `cancel` (a
/// shutdown began meanwhile) stops the upgrade and the new process.
pub fn hand_over(offer: &Offer<'_>, cancel: &AtomicBool) -> Result<u32, String> {
    let name = format!(
        "kairos-gateway-upgrade-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let rendezvous = SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| UnixListener::bind_addr(&a))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot open the upgrade socket @{name}: {e}"))?;
    let (program, args) = command_line();
    let mut child = Command::new(&program)
        .args(&args)
        .env(ENV, &name)
        // Socket activation's variables were this process's; the sockets come from it now.
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let pid = child.id();
    log::info!(
        "upgrade: started {} (pid {pid}); handing it the listening sockets",
        program.to_string_lossy()
    );
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut watch = Watch {
        child: &mut child,
        deadline,
        cancel,
    };
    let done = connected(&rendezvous, &mut watch).and_then(|stream| {
        send(&stream, offer).map_err(|e| format!("cannot pass the sockets: {e}"))?;
        ready(stream, &mut watch)?;
        // A shutdown that began meanwhile wins: the new process goes.
        match cancel.load(Ordering::SeqCst) {
            true => Err("the gateway began shutting down as it became ready".into()),
            false => Ok(()),
        }
    });
    match done {
        Ok(()) => Ok(pid),
        Err(e) => {
            // Killed before it serves (or after, when cancelled): it must not keep the sockets.
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("new process {pid}: {e}"))
        }
    }
}

/// The path this process was started as (not `/proc/self/exe`, which names the replaced
/// binary) and its arguments.
fn command_line() -> (OsString, Vec<OsString>) {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .filter(|p| !p.is_empty())
        .or_else(|| std::env::current_exe().ok().map(Into::into))
        .unwrap_or_else(|| "kairos-gateway".into());
    (program, args.collect())
}

/// What the old process watches while it waits for the new one.
struct Watch<'a> {
    child: &'a mut Child,
    deadline: Instant,
    cancel: &'a AtomicBool,
}

impl Watch<'_> {
    /// `Err` when the wait is over: the new process exited, time is up, or a shutdown began.
    fn check(&mut self, waiting_for: &str) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("exited ({status}) before {waiting_for}"));
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(format!(
                "the gateway began shutting down before {waiting_for}"
            ));
        }
        if Instant::now() >= self.deadline {
            return Err(format!(
                "not done within {} s: {waiting_for} did not happen",
                READY_TIMEOUT.as_secs()
            ));
        }
        Ok(())
    }
}

/// The new process's connection to the rendezvous socket (from it and no other process).
fn connected(rendezvous: &UnixListener, watch: &mut Watch<'_>) -> Result<UnixStream, String> {
    let want = watch.child.id();
    loop {
        match rendezvous.accept() {
            Ok((stream, _)) => {
                let peer = rustix::net::sockopt::socket_peercred(&stream);
                if peer.is_ok_and(|c| c.pid.as_raw_nonzero().get() as u32 == want) {
                    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                    return Ok(stream);
                }
                log::warn!(
                    "upgrade: a process other than {want} connected to the upgrade socket; ignored"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("the upgrade socket failed: {e}")),
        }
        watch.check("it asked for the sockets")?;
        std::thread::sleep(TICK);
    }
}

/// Sends the line and the descriptors.
fn send(stream: &UnixStream, offer: &Offer<'_>) -> io::Result<()> {
    let mut fds = vec![offer.public.as_fd()];
    let mut line = format!("{HELLO} public");
    if let Some(admin) = offer.admin {
        fds.push(admin.as_fd());
        line.push_str(" admin");
    }
    if offer.systemd {
        line.push_str(" systemd");
    }
    line.push('\n');
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let iov = [IoSlice::new(line.as_bytes())];
    rustix::net::sendmsg(stream, &iov, &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Waits for the new process's `ready`.
fn ready(mut stream: UnixStream, watch: &mut Watch<'_>) -> Result<(), String> {
    stream
        .set_read_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Err("closed the upgrade socket before it was ready".into()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(b"ready\n") {
                    return Ok(());
                }
                if got.len() > buf.len() || got.contains(&b'\n') {
                    return Err(format!("said {:?}", String::from_utf8_lossy(&got)));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("the upgrade socket failed: {e}")),
        }
        watch.check("it was ready")?;
    }
}

/// The new process's side: where to say it is ready.
pub struct Handover(UnixStream);

impl Handover {
    /// Tells the old process that this one accepts connections (it then stops accepting).
    pub fn ready(mut self) {
        if let Err(e) = self.0.write_all(b"ready\n") {
            log::warn!("upgrade: cannot tell the old process this one is ready: {e}");
        }
    }
}

/// In a process started by an upgrade (`KAIROS_UPGRADE_SOCKET` set): the sockets of the old
/// process, and where to say this one is ready. `None` otherwise.
pub fn receive(config: &Config) -> Option<Result<(Sockets, Handover), String>> {
    let name = std::env::var_os(ENV)?;
    let taken = take(name.as_encoded_bytes()).and_then(|(public, admin, systemd, stream)| {
        let public = sockets::inherited(public).map_err(|e| format!("the public socket: {e}"))?;
        let admin = admin
            .map(sockets::inherited)
            .transpose()
            .map_err(|e| format!("the admin socket: {e}"))?;
        let sockets = Sockets {
            public,
            admin: sockets::admin(config, admin)?,
            origin: "from the process that upgraded into this one",
            systemd,
        };
        Ok((sockets, Handover(stream)))
    });
    Some(taken.map_err(|e| format!("upgrade: {e}")))
}

type Taken = (TcpListener, Option<TcpListener>, bool, UnixStream);

/// Connects to the old process and receives its line and sockets.
fn take(name: &[u8]) -> Result<Taken, String> {
    let shown = String::from_utf8_lossy(name);
    let stream = SocketAddr::from_abstract_name(name)
        .and_then(|a| UnixStream::connect_addr(&a))
        .map_err(|e| format!("cannot reach the old process at @{shown} ({ENV}): {e}"))?;
    stream
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 128];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let got = rustix::net::recvmsg(&stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
        .map_err(|e| format!("no sockets from the old process: {e}"))?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let line = String::from_utf8_lossy(&buf[..got.bytes]);
    let words: Vec<&str> = line.split_whitespace().collect();
    let has = |w: &str| words.contains(&w);
    let want = 1 + usize::from(has("admin"));
    if !line.starts_with(HELLO) || !has("public") || fds.len() != want {
        return Err(format!(
            "unexpected hand-over from the old process: {line:?} with {} descriptors",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter().map(TcpListener::from);
    let public = fds.next().ok_or("no public socket")?;
    Ok((public, fds.next(), has("systemd"), stream))
}
