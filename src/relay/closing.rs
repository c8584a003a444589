//! How a relayed connection ends, as decisions for [`super::conn`]: what each leg gets when
//! one breaks the protocol or vanishes, which legs get a FIN at the end, and the final drain
//! (the only I/O here: reading what the peers still send, within bounds).

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use futures_lite::FutureExt;

use super::leg::Leg;
use super::side::{Both, Side};
use super::{Transport, DRAIN};
use crate::error::GatewayClose;
use crate::frame::Violation;
use crate::reactor::Timer;

/// What the gateway does to one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    /// Queue this close frame for it (written at the next frame boundary).
    Close(GatewayClose),
    /// Owe it this close frame: sent once the other leg's close handshake is done.
    Owe(GatewayClose),
    /// Cut it (TCP closed without a close frame): its output stopped mid-frame.
    Cut,
}

/// What each leg gets when one of them ends badly.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Ending {
    /// The leg that ended.
    pub to_it: Option<Act>,
    /// The other leg.
    pub to_other: Option<Act>,
}

/// Leg `src` broke a rule (`clean`: the stream to the other leg still ends on a frame
/// boundary). It gets the rule's close code; the other leg is told why, or cut. A client that
/// broke a rule gets its close after the backend's close handshake, so that what the backend
/// still sends arrives first: it sees what it would see talking to the backend directly.
pub(super) fn violation(src: Side, v: Violation, clean: bool) -> Ending {
    let other = match (v, src) {
        (Violation::TooBig(_), _) => GatewayClose::PeerTooBig,
        (_, Side::Client) => GatewayClose::ClientGone,
        (_, Side::Backend) => GatewayClose::BackendError,
    };
    let own = GatewayClose::Violation(v);
    Ending {
        to_it: Some(if src == Side::Client && clean {
            Act::Owe(own)
        } else {
            Act::Close(own)
        }),
        to_other: Some(if clean { Act::Close(other) } else { Act::Cut }),
    }
}

/// Leg `src` is gone (EOF or I/O error; `it` is its state, `to_it` the stream that was going to
/// it): nothing more is read from or written to it. The other leg gets what it is owed, or is
/// told, unless the leg had closed properly.
pub(super) fn lost(src: Side, it: &Leg, other: &Leg, at_boundary: bool) -> Option<Act> {
    if let Some(close) = other.owed {
        return Some(Act::Close(close));
    }
    if it.got_close {
        return None;
    }
    if !at_boundary {
        return Some(Act::Cut);
    }
    Some(Act::Close(match src {
        Side::Backend => GatewayClose::BackendLost,
        Side::Client => GatewayClose::ClientGone,
    }))
}

/// What happens to each leg once the relay is over.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Last {
    /// Send FIN (no more writes).
    pub fin: Both<bool>,
    /// Read what it still sends, for a moment, before closing it.
    pub drain: Both<bool>,
}

/// Which legs get a FIN and which are drained. A client whose close frame was read has
/// nothing more to send: it is dropped at once, before the backend's drain (the server closes
/// first, as RFC 6455 asks; closing sends the FIN). The backend leg is read to its end, so that
/// the backend closes first and the TIME_WAIT state (and its port) stays there. A leg that is
/// read on gets a FIN now, unless it sent its close frame (then it closes by itself): one
/// system call less per connection. A client already done gets its FIN now too when the
/// backend may keep it waiting (with a TLS close_notify first on the TLS listener).
pub(super) fn last(legs: &Both<Leg>) -> Last {
    let (client, backend) = (&legs.client, &legs.backend);
    let done = Both {
        client: client.got_close || client.dead,
        backend: backend.dead,
    };
    Last {
        fin: Both {
            client: (!done.client || !backend.got_close) && !client.shut,
            backend: !done.backend && !backend.got_close,
        },
        drain: Both {
            client: !done.client,
            backend: !done.backend,
        },
    }
}

/// Most bytes read from a closed connection's legs while they are drained, together: what a
/// well-behaved peer still has in flight is far less; a peer that streams on gets a reset.
const DRAIN_MAX: usize = 64 * 1024;

/// Reads per leg before the drain yields to the other connections of its worker.
const DRAIN_READS_PER_POLL: usize = 16;

/// Reads and discards what the legs to drain still send, until each has ended, [`DRAIN`]
/// has passed since the start, or [`DRAIN_MAX`] bytes were read, whatever the peers do; it
/// yields after [`DRAIN_READS_PER_POLL`] reads of a leg. The legs are closed when it returns
/// (a client not drained was dropped before).
pub(super) async fn drain<C: Transport, B: Transport>(
    mut client: Option<C>,
    mut backend: B,
    backend_too: bool,
) {
    let deadline = Timer::after(DRAIN);
    let mut scratch = [0u8; 512];
    let mut left = DRAIN_MAX;
    let mut done = Both {
        client: client.is_none(),
        backend: !backend_too,
    };
    let drain = poll_fn(|cx| {
        let mut open = 0;
        for side in Side::BOTH {
            let mut reads = 0;
            while !done[side] {
                if left == 0 {
                    done[side] = true; // enough: what is left is reset
                    break;
                }
                let room = scratch.len().min(left);
                let r = match (side, client.as_mut()) {
                    (Side::Client, Some(c)) => Pin::new(c).poll_read(cx, &mut scratch[..room]),
                    (Side::Client, None) => Poll::Ready(Ok(0)),
                    (Side::Backend, _) => {
                        Pin::new(&mut backend).poll_read(cx, &mut scratch[..room])
                    }
                };
                match r {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        left -= n;
                        reads += 1;
                        if reads < DRAIN_READS_PER_POLL {
                            continue;
                        }
                        // Busy: let the worker's other connections run.
                        cx.waker().wake_by_ref();
                        open += 1;
                    }
                    Poll::Pending => open += 1,
                    Poll::Ready(_) => done[side] = true,
                }
                break;
            }
        }
        if open == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    drain
        .or(async {
            deadline.await;
        })
        .await;
}
