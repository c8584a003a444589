//! What ends a connection from outside its frames, watched on every wake-up without a cost
//! per frame: the gateway's graceful shutdown, the token's expiry, `limits.idle_timeout_ms`
//! (nothing arrives) and `limits.ping_interval_ms` (the client stops answering the gateway's
//! pings). Each is an [`Alarm`] for [`super::conn`], which closes both legs through the normal
//! close handshake ([`GatewayClose`] says with what). The timers exist only when configured,
//! in a box of their own: a connection without them holds none.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Instant;

use super::direction::{Direction, Rules};
use super::leg::Leg;
use super::side::Both;
use crate::drain::{Cause, Watcher};
use crate::error::GatewayClose;
use crate::frame::{apply_mask, op, Header};
use crate::reactor::Timer;

/// The payload of the gateway's pings; a client's pong carrying it is the gateway's answer.
const TOKEN: &[u8; 16] = b"kairos-keepalive";

/// Whether the whole pong `frame` (header `h`) answers a gateway ping.
pub(super) fn is_own_pong(frame: &[u8], h: &Header) -> bool {
    if h.len != TOKEN.len() as u64 || frame.len() < h.header_len + TOKEN.len() {
        return false;
    }
    let mut payload = [0u8; 16];
    payload.copy_from_slice(&frame[h.header_len..h.header_len + TOKEN.len()]);
    if let Some(k) = h.mask {
        apply_mask(&mut payload, k, 0);
    }
    &payload == TOKEN
}

/// The gateway's keepalive ping (to the client: unmasked).
pub(super) fn ping_frame() -> Vec<u8> {
    let mut ping = vec![0x80 | op::PING, TOKEN.len() as u8];
    ping.extend_from_slice(TOKEN);
    ping
}

/// What the watch asks of the connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Alarm {
    /// Close both legs with this.
    Close(GatewayClose),
    /// Close both legs with this, and read no more from the client: it is presumed gone, its
    /// close is not waited for.
    Abandon(GatewayClose),
    /// Write the gateway's ping to the client.
    Ping,
}

/// What one connection watches.
pub(super) struct Watch {
    /// The gateway's shutdown.
    drain: Drainage,
    /// The configured timers (`None`: none is).
    timers: Option<Box<Timers>>,
}

/// Where a connection is in the gateway's shutdown.
enum Drainage {
    /// Not watching (no drain to watch, or closing already).
    Done,
    /// Waiting for a drain of its route and backend to begin: the gateway's shutdown, or a
    /// reload that removed them.
    Watching(Watcher),
    /// The drain began: closing with this at the timer, its moment within the spread.
    Leaving(Box<(Timer, GatewayClose)>),
}

/// The timers a connection's config asks for.
struct Timers {
    idle: Option<Timer>,
    ping: Option<Timer>,
    /// Pings sent since the last answer.
    unanswered: u32,
    /// Answers counted so far.
    pongs: u64,
    expiry: Option<Timer>,
}

impl Watch {
    /// Watches `drain`, and starts the timers `rules` ask for.
    pub(super) fn new(rules: &Rules, drain: Option<Watcher>) -> Watch {
        let timers = Timers {
            idle: rules.idle_timeout.map(Timer::after),
            ping: rules.ping_interval.map(Timer::after),
            unanswered: 0,
            pongs: 0,
            expiry: rules
                .expires
                .map(|at| Timer::after(at.saturating_duration_since(Instant::now()))),
        };
        let any = timers.idle.is_some() || timers.ping.is_some() || timers.expiry.is_some();
        Watch {
            drain: drain.map_or(Drainage::Done, Drainage::Watching),
            timers: any.then(|| Box::new(timers)),
        }
    }

    /// The first alarm due, if any; the connection acts on it and asks again. Re-arms the idle
    /// timer while frames arrive (`dirs`' `last_frame`), and the ping timer; a ping is sent only
    /// when the `client` leg can take it.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        rules: &Rules,
        dirs: &Both<Direction>,
        client: &Leg,
    ) -> Option<Alarm> {
        if let Some(close) = self.poll_drain(cx) {
            return Some(Alarm::Close(close));
        }
        let t = self.timers.as_mut()?;
        if fired(&mut t.expiry, cx) {
            t.expiry = None;
            return Some(Alarm::Close(GatewayClose::TokenExpired));
        }
        if let (Some(idle), true) = (rules.idle_timeout, fired(&mut t.idle, cx)) {
            let last = [&dirs.client, &dirs.backend]
                .iter()
                .filter_map(|d| d.last_frame)
                .max();
            let quiet = last.map_or(idle, |l| l.elapsed());
            if quiet >= idle {
                t.idle = None;
                return Some(Alarm::Close(GatewayClose::Idle));
            }
            t.idle = Some(armed(idle - quiet, cx));
        }
        if let (Some(every), true) = (rules.ping_interval, fired(&mut t.ping, cx)) {
            return t.ping(every, cx, dirs.client.keepalive_pongs, client);
        }
        None
    }
}

impl Watch {
    /// The close this connection's drain asks for, once its moment has come: the drain began
    /// (the gateway's shutdown: 1001; a reload that removed its route or backend: 1012) and the
    /// random moment within its spread that this connection drew has passed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Option<GatewayClose> {
        let (due, close) = match &mut self.drain {
            Drainage::Done => return None,
            Drainage::Watching(w) => match w.poll_begun(cx) {
                true => (
                    w.close_at(),
                    match w.cause() {
                        Cause::Shutdown => GatewayClose::Shutdown,
                        Cause::Restart => GatewayClose::Restart,
                    },
                ),
                false => return None,
            },
            Drainage::Leaving(t) => {
                let fired = Pin::new(&mut t.0).poll(cx).is_ready();
                let close = t.1;
                if fired {
                    self.drain = Drainage::Done;
                }
                return fired.then_some(close);
            }
        };
        let now = Instant::now();
        if due <= now {
            self.drain = Drainage::Done;
            return Some(close);
        }
        self.drain = Drainage::Leaving(Box::new((armed(due - now, cx), close)));
        None
    }
}

impl Timers {
    /// The ping timer fired: the client answered since the last time (`pongs` so far), or it
    /// gets another ping, or, after two unanswered, it is presumed gone.
    fn ping(
        &mut self,
        every: std::time::Duration,
        cx: &mut Context<'_>,
        pongs: u64,
        client: &Leg,
    ) -> Option<Alarm> {
        if pongs != self.pongs {
            self.pongs = pongs;
            self.unanswered = 0;
        }
        if self.unanswered >= 2 {
            self.ping = None;
            return Some(Alarm::Abandon(GatewayClose::PingTimeout));
        }
        self.ping = Some(armed(every, cx));
        if client.open_for_frame() {
            self.unanswered += 1;
            return Some(Alarm::Ping);
        }
        None
    }
}

/// Whether `timer` is set and has fired.
fn fired(timer: &mut Option<Timer>, cx: &mut Context<'_>) -> bool {
    timer
        .as_mut()
        .is_some_and(|t| Pin::new(t).poll(cx).is_ready())
}

/// A timer for `after` from now, registered with this task.
fn armed(after: std::time::Duration, cx: &mut Context<'_>) -> Timer {
    let mut next = Timer::after(after);
    let _ = Pin::new(&mut next).poll(cx);
    next
}
