//! What ends a connection from outside its frames, watched on every wake-up without a cost
//! per frame: `limits.idle_timeout_ms` (nothing arrives), `limits.ping_interval_ms` (the client
//! stops answering the gateway's pings), the gateway's graceful shutdown (all 1001 on both
//! legs), and the token's expiry (1008). Each goes through the normal close handshake; the
//! timers are armed only when configured.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Instant;

use super::{Conn, Transport, BACKEND, CLIENT};
use crate::drain::Watcher;
use crate::frame::{apply_mask, Header};
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

/// The keepalive timers of one connection.
#[derive(Default)]
pub(super) struct Watch {
    idle: Option<Timer>,
    ping: Option<Timer>,
    /// Pings sent since the last answer.
    unanswered: u32,
    /// Answers counted so far.
    pongs: u64,
    /// The gateway's shutdown: when it begins, both legs get 1001.
    pub(super) drain: Option<Watcher>,
    /// The token's expiry: then both legs get 1008.
    expiry: Option<Timer>,
}

impl<C: Transport, B: Transport> Conn<C, B> {
    /// Starts the timers the config asks for.
    pub(super) fn start_watch(&mut self) {
        if let Some(idle) = self.rules.idle_timeout {
            let now = Some(Instant::now());
            self.dirs[CLIENT].last_frame = now;
            self.dirs[BACKEND].last_frame = now;
            self.watch.idle = Some(Timer::after(idle));
        }
        if let Some(every) = self.rules.ping_interval {
            self.watch.ping = Some(Timer::after(every));
        }
        if let Some(at) = self.rules.expires {
            self.watch.expiry = Some(Timer::after(at.saturating_duration_since(Instant::now())));
        }
    }

    /// Runs the timers: re-arms the idle timer while frames arrive, sends pings, and closes
    /// the connection when it is idle or the client stopped answering.
    pub(super) fn poll_watch(&mut self, cx: &mut Context<'_>) {
        if let Some(w) = self.watch.drain.as_mut() {
            if w.poll_begun(cx) {
                self.watch.drain = None;
                self.close_both("gateway shutting down");
            }
        }
        if let Some(t) = self.watch.expiry.as_mut() {
            if Pin::new(t).poll(cx).is_ready() {
                self.watch.expiry = None;
                self.close_both_with(1008, "token expired");
            }
        }
        if let (Some(idle), Some(t)) = (self.rules.idle_timeout, self.watch.idle.as_mut()) {
            if Pin::new(t).poll(cx).is_ready() {
                let last = self.dirs.iter().filter_map(|d| d.last_frame).max();
                let quiet = last.map_or(idle, |l| l.elapsed());
                if quiet >= idle {
                    self.watch.idle = None;
                    self.close_both("idle timeout");
                } else {
                    let mut next = Timer::after(idle - quiet);
                    let _ = Pin::new(&mut next).poll(cx);
                    self.watch.idle = Some(next);
                }
            }
        }
        if let (Some(every), Some(t)) = (self.rules.ping_interval, self.watch.ping.as_mut()) {
            if Pin::new(t).poll(cx).is_ready() {
                let pongs = self.dirs[CLIENT].keepalive_pongs;
                if pongs != self.watch.pongs {
                    self.watch.pongs = pongs;
                    self.watch.unanswered = 0;
                }
                if self.watch.unanswered >= 2 {
                    self.watch.ping = None;
                    self.close_both("ping timeout");
                    // The client is presumed gone: its close is not waited for.
                    self.legs[CLIENT].done_reading = true;
                    return;
                }
                let leg = &mut self.legs[CLIENT];
                if leg.inject.is_none() && !leg.close_out && !leg.dead {
                    let mut ping = vec![0x89, TOKEN.len() as u8];
                    ping.extend_from_slice(TOKEN);
                    leg.inject = Some((ping, 0));
                    self.watch.unanswered += 1;
                }
                let mut next = Timer::after(every);
                let _ = Pin::new(&mut next).poll(cx);
                self.watch.ping = Some(next);
            }
        }
    }

    /// Closes both legs with 1001 `why`, through the normal close handshake.
    pub(super) fn close_both(&mut self, why: &'static str) {
        self.close_both_with(1001, why);
    }

    /// Closes both legs with `code` and `why`, through the normal close handshake.
    pub(super) fn close_both_with(&mut self, code: u16, why: &'static str) {
        log::debug!("closing: {why}");
        self.summary.errors.push(why.to_string());
        self.start_grace();
        self.queue_close(CLIENT, code, why);
        self.queue_close(BACKEND, code, why);
    }
}
