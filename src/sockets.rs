//! Where the listening sockets come from, before anything listens: the old process of a binary
//! upgrade hands them over ([`crate::upgrade`]), systemd passes them (socket activation:
//! `LISTEN_FDS`), or the gateway binds `server.host:server.port` and the `admin` address
//! itself.
//!
//! Sockets systemd passes stay systemd's, which keeps them listening across the gateway's
//! restarts: the gateway never shuts them down, it only stops accepting on them
//! ([`Sockets::systemd`]).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use crate::config::Config;
use crate::plural::count;

/// Pending connections the kernel queues before `accept` (nginx uses 511).
pub const LISTEN_BACKLOG: i32 = 1024;

/// The listening sockets of one process.
pub struct Sockets {
    /// The public listener.
    pub public: TcpListener,
    /// The admin listener, when the config has one of its own.
    pub admin: Option<TcpListener>,
    /// Where they came from, for the log.
    pub origin: &'static str,
    /// Whether systemd owns them (so that the shutdown must leave them listening).
    pub systemd: bool,
}

/// The sockets for `config`, from systemd when `LISTEN_FDS` names this process, else bound.
/// (An upgrade's sockets come from [`crate::upgrade::receive`].)
pub fn open(config: &Config) -> Result<Sockets, String> {
    let mut passed = listenfd::ListenFd::from_env();
    if passed.len() == 0 {
        let public = bind(&config.host, config.port, "").map_err(|e| e.to_string())?;
        return Ok(Sockets {
            public,
            admin: admin(config, None)?,
            origin: "bound",
            systemd: false,
        });
    }
    let n = passed.len();
    if n > 2 {
        return Err(format!(
            "systemd passed {} (LISTEN_FDS); the gateway takes one (public) or two (public, \
             then admin): check the ListenStream= lines of the .socket unit",
            count(n, "socket")
        ));
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    // Named `public` and `admin` (FileDescriptorName=), else in the unit's order.
    let at = |name: &str, default: usize| names.iter().position(|n| *n == name).unwrap_or(default);
    let (p, a) = (at("public", 0), at("admin", 1));
    let take = |fds: &mut listenfd::ListenFd, i: usize, what: &str| {
        let shown = format!("the {what} socket systemd passed (descriptor {})", 3 + i);
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => inherited(l).map_err(|e| format!("{shown}: {e}")),
            Ok(None) => Err(format!("{shown} is not there")),
            Err(e) => Err(format!("{shown}: {e} (a TCP socket is needed)")),
        }
    };
    let public = take(&mut passed, p, "public")?;
    let admin_socket = match n {
        2 => Some(take(&mut passed, a, "admin")?),
        _ => None,
    };
    Ok(Sockets {
        public,
        admin: admin(config, admin_socket)?,
        origin: "from systemd (socket activation)",
        systemd: true,
    })
}

/// The admin listener for `config`: `given` (inherited) when there is one, else bound.
pub fn admin(config: &Config, given: Option<TcpListener>) -> Result<Option<TcpListener>, String> {
    let wanted = cfg!(feature = "admin") && !config.admin_on_public();
    match (&config.admin, given) {
        (Some(_), Some(l)) if wanted => Ok(Some(l)),
        (Some((host, port)), None) if wanted => bind(host, *port, "admin: ")
            .map(Some)
            .map_err(|e| e.to_string()),
        (_, Some(l)) => {
            let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            log::warn!(
                "an admin socket ({at}) was passed, but the config has no admin listener of \
                 its own: it is closed"
            );
            Ok(None)
        }
        (_, None) => Ok(None),
    }
}

/// Binds `host:port` (the first address it resolves to), listens with [`LISTEN_BACKLOG`] and
/// makes it non-blocking. An error names the address (after `what`).
pub fn bind(host: &str, port: u16, what: &str) -> io::Result<TcpListener> {
    let shown = format!("{host}:{port}");
    let named =
        |e: io::Error| io::Error::new(e.kind(), format!("{what}cannot listen on {shown}: {e}"));
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(named)?
        .next()
        .ok_or_else(|| named(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
    let listener = TcpListener::bind(addr).map_err(named)?;
    // std listens with a backlog of 128: a burst of connects overflows it and costs the
    // clients a 1 s SYN retry. Listening again on the bound socket raises it (the kernel
    // caps it at net.core.somaxconn).
    rustix::net::listen(&listener, LISTEN_BACKLOG).map_err(|e| named(io::Error::from(e)))?;
    listener.set_nonblocking(true).map_err(named)?;
    Ok(listener)
}

/// Readies a socket this process did not bind: non-blocking, closed on exec (systemd passes
/// it inheritable), and listening (a socket unit with `Accept=yes` passes connections).
pub fn inherited(listener: TcpListener) -> io::Result<TcpListener> {
    use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
    fcntl_setfd(&listener, fcntl_getfd(&listener)? | FdFlags::CLOEXEC)?;
    if !rustix::net::sockopt::socket_acceptconn(&listener)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening socket (Accept=yes in the .socket unit passes connections; \
             the gateway needs Accept=no)",
        ));
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}
