//! systemd's readiness protocol (`sd_notify`): when the service manager set `NOTIFY_SOCKET`,
//! the gateway tells it `READY=1` once its workers accept, `RELOADING=1` (with the monotonic
//! time systemd's `Type=notify-reload` asks for) then `READY=1` around a reload, and
//! `STOPPING=1` when a graceful shutdown begins. After a binary upgrade, the new process is the
//! main one: the old one says `MAINPID=` and nothing more, and the new one no `READY=1` of
//! its own (it is not the main process until then). Without `NOTIFY_SOCKET` nothing is sent. A
//! message that cannot be sent is logged at debug: the gateway serves either way.

use std::os::unix::net::UnixDatagram;

/// The workers accept connections.
pub fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A reload begins (followed by [`ready`] when it ends, applied or not).
pub fn reloading() {
    // The clock is read only for a service manager that listens.
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let usec = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = usec.tv_sec as u64 * 1_000_000 + usec.tv_nsec as u64 / 1000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// An upgrade's new process, `pid`, serves in this one's place: it is the service's main
/// process from now on (this one drains and exits without telling the service manager more).
pub fn main_pid(pid: u32) {
    send(&format!(
        "MAINPID={pid}\nSTATUS=serving (upgraded from {})",
        std::process::id()
    ));
}

/// A graceful shutdown begins.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

/// Sends `message` to `NOTIFY_SOCKET`: a path, or an abstract name when it starts with `@`.
fn send(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)
            }
            None => socket.send_to(message.as_bytes(), &target),
        }
    });
    if let Err(e) = sent {
        log::debug!("cannot notify the service manager ({message:?}): {e}");
    }
}
