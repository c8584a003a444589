//! How a relayed connection ends: a leg that breaks the protocol or vanishes, the close frames
//! the gateway writes itself, the grace period, the final shutdown, and the summary.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use crate::reactor::Timer;
use futures_lite::FutureExt;

use super::{Conn, Summary, Transport, BACKEND, CLIENT, CLOSE_GRACE, DRAIN};
use crate::error::close_for_violation;
use crate::frame::{close_frame, Violation};
use crate::metrics::Side;

impl<C: Transport, B: Transport> Conn<C, B> {
    /// Leg `src` broke the protocol: close it with the RFC's code, tell the other side.
    pub(super) fn violation(&mut self, src: usize, v: Violation, clean: bool) {
        let dst = 1 - src;
        let who = if src == CLIENT { "client" } else { "backend" };
        self.summary.errors.push(format!("{who}: {v:?}"));
        log::debug!("{who} broke the protocol: {v:?}");
        self.legs[src].done_reading = true;
        self.start_grace();
        let (code, reason) = close_for_violation(v);
        let (other, other_reason) = match (v, src) {
            (Violation::TooBig(_), _) => (1001, "peer sent too much"),
            (_, CLIENT) => (1001, "client went away"),
            _ => (1011, "backend error"),
        };
        if clean {
            self.queue_close(dst, other, other_reason);
        } else {
            self.legs[dst].dead = true; // its output stopped mid-frame: cut it
        }
        if src == CLIENT && clean {
            self.legs[src].owed = Some((code, reason));
        } else {
            self.queue_close(src, code, reason);
        }
    }

    /// Leg `i` is gone (EOF or I/O error): nothing more is read from or written to it; the
    /// other leg is told, unless it already was.
    pub(super) fn lost(&mut self, i: usize, why: &str) {
        let other = 1 - i;
        let who = if i == CLIENT { "client" } else { "backend" };
        if !self.legs[i].got_close {
            self.summary.errors.push(format!("{who}: {why}"));
            log::debug!("{who} {why}");
        }
        self.legs[i].done_reading = true;
        self.legs[i].dead = true;
        self.legs[i].inject = None;
        self.start_grace();
        if let Some((code, reason)) = self.legs[other].owed.take() {
            self.queue_close(other, code, reason);
        } else if !self.legs[i].got_close {
            let (code, reason) = if i == BACKEND {
                (1011, "backend connection lost")
            } else {
                (1001, "client went away")
            };
            if self.dirs[i].at_boundary() {
                self.queue_close(other, code, reason);
            } else {
                self.legs[other].dead = true;
            }
        }
    }

    pub(super) fn queue_close(&mut self, leg: usize, code: u16, reason: &'static str) {
        if self.legs[leg].close_out || self.legs[leg].dead {
            return;
        }
        self.summary.closes.push((Side::Gateway, code));
        let l = &mut self.legs[leg];
        let mask = (leg == BACKEND).then(rand::random::<[u8; 4]>);
        let mut frame = close_frame(code, reason, mask);
        // A keepalive ping partly written goes out whole first; one not started is dropped.
        if let Some((ping, pos)) = l.inject.take().filter(|(_, pos)| *pos > 0) {
            frame.splice(0..0, ping[pos..].iter().copied());
        }
        l.inject = Some((frame, 0));
        l.close_out = true;
    }

    /// Sends FIN to each leg whose close handshake is complete while the other leg is still
    /// closing (the relay is about to wait for it): the leg sent its close frame, and the close
    /// frame to it is written and flushed. Nothing more is read from or written to it, so it
    /// need not wait for the other leg, up to [`CLOSE_GRACE`]. When both complete together,
    /// [`Conn::finish`] closes them as before.
    pub(super) fn shut_complete_legs(&mut self) {
        for leg in [CLIENT, BACKEND] {
            let l = &self.legs[leg];
            let to_it = &self.dirs[1 - leg];
            let complete = l.got_close && l.close_out && l.inject.is_none() && !l.unflushed;
            if complete && to_it.is_empty() && !l.dead && !l.shut {
                match leg {
                    CLIENT => self.client.shutdown_write(),
                    _ => self.backend.shutdown_write(),
                }
                self.legs[leg].shut = true;
            }
        }
    }

    pub(super) fn start_grace(&mut self) {
        if self.grace.is_none() {
            self.grace = Some(Timer::after(CLOSE_GRACE));
        }
    }

    /// How the relay went, once it is over.
    pub(super) fn summary(&mut self) -> Summary {
        let [up, down] = &self.dirs;
        let mut s = std::mem::take(&mut self.summary);
        s.traffic.messages = [up.counts, down.counts];
        s.traffic.bytes = [up.bytes, down.bytes];
        for (side, d) in [(Side::Client, up), (Side::Backend, down)] {
            if let Some(code) = d.close_code {
                s.closes.push((side, code));
            }
        }
        s
    }

    /// Shuts both legs down and reads what they still send for a moment, so that the last
    /// frames are not lost to a reset.
    pub(super) async fn finish(self: Box<Self>) {
        // A client whose close frame was read has nothing more to send: it is dropped at once,
        // before the backend's drain (the server closes first, as RFC 6455 asks; closing sends
        // the FIN). The backend leg is read to its end, so that the backend closes first and
        // the TIME_WAIT state (and its port) stays there. A leg that is read on gets a FIN now,
        // unless it sent its close frame (then it closes by itself): one system call less per
        // connection. A client already done gets its FIN now too when the backend may keep it
        // waiting (with a TLS close_notify first on the TLS listener).
        let Conn {
            mut client,
            mut backend,
            legs,
            ..
        } = *self;
        let done = [
            legs[CLIENT].got_close || legs[CLIENT].dead,
            legs[BACKEND].dead,
        ];
        if (!done[CLIENT] || !legs[BACKEND].got_close) && !legs[CLIENT].shut {
            client.shutdown_write();
        }
        if !done[BACKEND] && !legs[BACKEND].got_close {
            backend.shutdown_write();
        }
        let client = (!done[CLIENT]).then_some(client);
        drain_legs(client, backend, done).await;
    }
}

/// Most bytes read from a closed connection's legs while they are drained, together: what a
/// well-behaved peer still has in flight is far less; a peer that streams on gets a reset.
const DRAIN_MAX: usize = 64 * 1024;

/// Reads per leg before the drain yields to the other connections of its worker.
const DRAIN_READS_PER_POLL: usize = 16;

/// Reads and discards what the legs not `done` still send, until each has ended, [`DRAIN`]
/// has passed since the start, or [`DRAIN_MAX`] bytes were read, whatever the peers do; it
/// yields after [`DRAIN_READS_PER_POLL`] reads of a leg.
async fn drain_legs<C: Transport, B: Transport>(
    mut client: Option<C>,
    mut backend: B,
    mut done: [bool; 2],
) {
    let deadline = Timer::after(DRAIN);
    let mut scratch = [0u8; 512];
    let mut left = DRAIN_MAX;
    let drain = poll_fn(|cx| {
        let mut open = 0;
        for (i, finished) in done.iter_mut().enumerate() {
            let mut reads = 0;
            while !*finished {
                if left == 0 {
                    *finished = true; // enough: what is left is reset
                    break;
                }
                let room = scratch.len().min(left);
                let r = match (i, client.as_mut()) {
                    (CLIENT, Some(c)) => Pin::new(c).poll_read(cx, &mut scratch[..room]),
                    (CLIENT, None) => Poll::Ready(Ok(0)),
                    _ => Pin::new(&mut backend).poll_read(cx, &mut scratch[..room]),
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
                    Poll::Ready(_) => *finished = true,
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
