//! The signals the gateway handles, as futures: each handler writes a byte to its own
//! self-pipe (signal-hook's safe registration), whose read end is on the control thread's
//! driver ([`crate::reactor::Pipe`]).

use std::io;
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use std::task::Poll;

use crate::reactor::Pipe;

/// A signal the gateway acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: graceful shutdown.
    Term,
    /// SIGINT (Ctrl-C): graceful shutdown.
    Int,
    /// SIGHUP: reload the config.
    Hup,
    /// SIGUSR2: binary upgrade ([`crate::upgrade`]).
    Usr2,
}

impl Signal {
    const ALL: [(Signal, i32); 4] = [
        (Signal::Term, SIGTERM),
        (Signal::Int, SIGINT),
        (Signal::Hup, SIGHUP),
        (Signal::Usr2, SIGUSR2),
    ];

    /// The signal's name, as `kill -l` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
            Signal::Hup => "SIGHUP",
            Signal::Usr2 => "SIGUSR2",
        }
    }
}

/// The handlers, registered (so that no signal is missed from here on); their pipes are read
/// once [`Registered::listen`] puts them on a driver.
pub struct Registered(Vec<(Signal, UnixStream)>);

/// Registers the handlers of every [`Signal`].
pub fn register() -> io::Result<Registered> {
    let mut pipes = Vec::with_capacity(Signal::ALL.len());
    for (signal, number) in Signal::ALL {
        let (read, write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(number, write)?;
        pipes.push((signal, read));
    }
    Ok(Registered(pipes))
}

impl Registered {
    /// Puts the pipes on this thread's driver.
    pub fn listen(self) -> io::Result<Signals> {
        let mut pipes = Vec::with_capacity(self.0.len());
        for (signal, read) in self.0 {
            pipes.push((signal, Pipe::new(read)?));
        }
        Ok(Signals(pipes))
    }
}

/// The signals, readable.
pub struct Signals(Vec<(Signal, Pipe)>);

impl Signals {
    /// The next signal (of those that arrived since the last call, the first in
    /// [`Signal`]'s order).
    pub async fn next(&self) -> io::Result<Signal> {
        std::future::poll_fn(|cx| {
            for (signal, pipe) in &self.0 {
                if let Poll::Ready(r) = pipe.poll_recv(cx) {
                    return Poll::Ready(r.map(|()| *signal));
                }
            }
            Poll::Pending
        })
        .await
    }
}
