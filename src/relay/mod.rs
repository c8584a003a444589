//! Stage 6: relay frames both ways until both legs are closed.
//!
//! A frame-level relay: each direction parses frame headers, checks every RFC 6455 rule the
//! gateway is responsible for (masking, reserved bits, opcodes, control frames, fragmentation,
//! UTF-8 of text, close codes, size limits), re-masks client frames in place with a key of its
//! own, and writes them on without reassembling messages. A direction holds a buffer only while
//! bytes are in flight; an idle connection holds none. A direction reads again only when what
//! it read was written (backpressure: a slow reader slows its sender through TCP).
//!
//! Pings, pongs and close frames are passed through, so the peer answers them; the close
//! handshake is the peers' own. The gateway writes a close frame itself only when a leg breaks
//! the protocol or vanishes, or a timer or the shutdown ends the connection (every such close
//! is a [`crate::error::GatewayClose`]), at a frame boundary of the other stream. Once one leg
//! is finished, the other gets [`CLOSE_GRACE`]; a leg whose close handshake is complete gets
//! its FIN at once, without waiting for the other. `docs/lifecycle.md` draws the states.
//!
//! The files: `conn` the state machine (the one `impl Conn`), `side` the two legs by name,
//! `leg` a leg's state and I/O, `direction` a direction's buffer and `direction/frames` the
//! frames through it by kind, `rules` the header checks, `policy` and `json` a route's message
//! policies, `watch` the timers and the shutdown, `closing` the decisions of the end and the
//! final drain, `buffer` the counted buffers, `transport` what a leg must offer.

mod buffer;
mod closing;
mod conn;
mod direction;
mod json;
mod leg;
mod live;
mod policy;
mod rules;
mod side;
mod transform;
mod transport;
mod watch;

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::GatewayClose;

pub use buffer::held as buffers_held;
use conn::Conn;
pub use direction::Rules;
pub use live::start_ticks as start_live_ticks;
pub use policy::Policy;
pub use side::{Both, Side};
pub use transform::{Context, Transformer};
pub use transport::Transport;

/// How long the second leg may take to finish once the first is done.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a closed connection is drained for its peer's last bytes before it is dropped.
const DRAIN: Duration = Duration::from_secs(1);

/// How the relay ended (for the connection's log line).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// What ended a leg, if it was not a clean close.
    pub errors: Vec<String>,
    /// Messages and bytes each way not counted yet (the whole connection's when it had no
    /// live counts), for the metrics.
    pub traffic: crate::metrics::Traffic,
    /// The close frames each side sent (the gateway's own included): who, and the code.
    pub closes: Vec<(crate::metrics::Side, u16)>,
    /// Who ended the connection and how (for the access log).
    pub ending: Ending,
    /// What the live counts took out of `traffic` before the end: data messages and wire
    /// bytes, client to backend then backend to client.
    pub counted: Option<[(u64, u64); 2]>,
}

impl Summary {
    /// The whole connection's data messages and wire bytes, client to backend then backend to
    /// client.
    pub fn totals(&self) -> [(u64, u64); 2] {
        let [up, down] = self.counted.unwrap_or_default();
        let t = &self.traffic;
        [
            (
                up.0 + t.client_to_backend.messages.data(),
                up.1 + t.client_to_backend.bytes,
            ),
            (
                down.0 + t.backend_to_client.messages.data(),
                down.1 + t.backend_to_client.bytes,
            ),
        ]
    }
}

/// Who ended a relayed connection, and with which close frames.
#[derive(Debug, Default, Clone)]
pub struct Ending {
    /// The close frame the client sent: its code (1005 without one) and reason.
    pub client: Option<(u16, Option<Box<str>>)>,
    /// The close frame the backend sent.
    pub backend: Option<(u16, Option<Box<str>>)>,
    /// The first close the gateway chose itself (a violation, a timeout, a drain).
    pub gateway: Option<GatewayClose>,
    /// Who ended it first: a side's close frame or its leaving, or the gateway's own close.
    pub first: Option<crate::metrics::Side>,
}

/// Which connection a log line is about: every line starts with it (`conn ID PEER`).
#[derive(Debug, Clone, Copy)]
pub struct Label {
    /// The connection's number, in the order of accepts.
    pub id: u64,
    /// The client's address, as accepted.
    pub peer: SocketAddr,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {} {}", self.id, self.peer)
    }
}

/// Relays between `client` and `backend` (with the bytes each sent past its handshake) until
/// both legs are closed, then shuts both down. `transforms` are each side's
/// `message_transform` rules, applied to what that side sends. Once `drain` says the gateway is shutting down,
/// both legs get [`crate::error::GatewayClose::Shutdown`].
#[allow(clippy::too_many_arguments)]
pub async fn run<C: Transport, B: Transport>(
    client: C,
    backend: B,
    early: Both<Vec<u8>>,
    rules: Rules,
    transforms: Both<Option<Box<Transformer>>>,
    drain: Option<crate::drain::Watcher>,
    entry: Option<std::sync::Arc<crate::connections::Entry>>,
    label: Label,
) -> Summary {
    let mut conn = Box::new(Conn::new(client, backend, rules, transforms, drain, label));
    conn.live = entry.map(live::Live::new);
    conn.start(early);
    poll_fn(|cx| conn.poll(cx)).await;
    let summary = conn.summary();
    // Boxed: the close handshake's future (about 1 KiB) would otherwise size this future, and
    // so every idle connection's task, for a step each connection takes once, at its end.
    Box::pin(conn.finish()).await;
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay's state is the bulk of what an idle connection costs: it must not grow
    /// unnoticed (1,376 bytes before the state machine had one owner, 936 after: the timers
    /// and the throttles went into boxes of their own, held only when configured).
    #[test]
    fn a_connection_state_stays_small() {
        let size = std::mem::size_of::<Conn<crate::net::Stream, crate::net::Stream>>();
        assert!(size <= 1_000, "Conn is {size} bytes");
    }
}
