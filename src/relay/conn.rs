//! The state machine of one relayed connection (docs/lifecycle.md): [`Phase::Relaying`] while
//! frames flow both ways, [`Phase::Closing`] once a leg is finished (its close frame came, it
//! vanished, or it broke a rule) and the other has [`CLOSE_GRACE`], then the final drain. Every
//! transition happens here; [`closing`], [`watch`] and the policies return decisions to it,
//! [`leg`] and [`Direction`] do the I/O and the frame checks.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::FutureExt;

use super::closing::{self, Act};
use super::direction::{Direction, Event, Rules};
use super::leg::{self, Leg, Read, Wrote};
use super::live::Live;
use super::policy::DirPolicy;
use super::side::{Both, Side};
use super::transform::Transformer;
use super::watch::{self, Alarm, Watch};
use super::Ending;
use super::{Label, Summary, Transport, CLOSE_GRACE};
use crate::drain::Watcher;
use crate::error::GatewayClose;
use crate::frame::Violation;
use crate::metrics::{self, Traffic};
use crate::reactor::Timer;

/// Where the connection is in its life.
enum Phase {
    /// Frames flow both ways.
    Relaying,
    /// A leg is finished: the other has until `grace` fires to finish too.
    Closing {
        /// Fires [`CLOSE_GRACE`] after the first leg finished.
        grace: Timer,
    },
}

/// One relayed connection (on the heap: the connection's task holds a pointer, and nothing
/// large moves when the relay starts or finishes).
pub(super) struct Conn<C, B> {
    client: C,
    backend: B,
    /// `dirs[side]`: what `side` sends, on its way to the other side.
    dirs: Both<Direction>,
    legs: Both<Leg>,
    rules: Rules,
    phase: Phase,
    watch: Watch,
    /// What ended a leg, if it was not a clean close (for the connection's last log line).
    errors: Vec<String>,
    /// The close frames the gateway sent (the peers' own are added at the end).
    closes: Vec<(metrics::Side, u16)>,
    /// The first close the gateway chose, and who ended the connection first.
    /// Boxed when the first close comes: an open connection keeps a pointer.
    ending: Option<Box<(Option<GatewayClose>, Option<metrics::Side>)>>,
    /// The route's counters, fed while the connection is open.
    pub(super) live: Option<Live>,
    label: Label,
}

impl<C: Transport, B: Transport> Conn<C, B> {
    /// A connection between `client` and `backend` under `rules`, watching `drain`.
    pub(super) fn new(
        client: C,
        backend: B,
        rules: Rules,
        transforms: Both<Option<Box<Transformer>>>,
        drain: Option<Watcher>,
        label: Label,
    ) -> Self {
        let Both {
            client: mut up,
            backend: mut down,
        } = transforms;
        let mut dir = |side: Side| {
            let mut d = Direction::new(side);
            let transform = match side {
                Side::Client => up.take(),
                Side::Backend => down.take(),
            };
            d.policy = match (rules.policy, transform) {
                (None, None) => None,
                (p, t) => Some(DirPolicy::new(
                    p.unwrap_or_default(),
                    side == Side::Client,
                    t.map(|b| *b),
                )),
            };
            if rules.idle_timeout.is_some() {
                d.last_frame = Some(std::time::Instant::now());
            }
            d
        };
        Conn {
            client,
            backend,
            dirs: Both {
                client: dir(Side::Client),
                backend: dir(Side::Backend),
            },
            legs: Both::default(),
            rules,
            phase: Phase::Relaying,
            watch: Watch::new(&rules, drain),
            errors: Vec::new(),
            closes: Vec::new(),
            ending: None,
            live: None,
            label,
        }
    }

    /// Takes the bytes each side sent past its handshake.
    pub(super) fn start(&mut self, early: Both<Vec<u8>>) {
        for side in Side::BOTH {
            if !early[side].is_empty() {
                self.dirs[side].load(&early[side]);
                self.process(side);
            }
        }
    }

    /// Relays until both legs are finished (or the grace period is over).
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_watch(cx);
        for _ in 0..64 {
            let up = self.step(Side::Client, cx);
            let down = self.step(Side::Backend, cx);
            if self.is_done() {
                return Poll::Ready(());
            }
            if !up && !down {
                if self.rules.policy.is_some() && self.poll_throttle(cx) {
                    continue;
                }
                if matches!(self.phase, Phase::Closing { .. }) {
                    self.shut_complete_legs();
                }
                if let Phase::Closing { grace } = &mut self.phase {
                    if Pin::new(grace).poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                return self.pending();
            }
        }
        // Busy: let other connections run.
        cx.waker().wake_by_ref();
        self.pending()
    }

    /// The end of a wake-up that leaves the connection open: its traffic goes to the live
    /// counters when due.
    fn pending(&mut self) -> Poll<()> {
        if let Some(live) = &mut self.live {
            let (up, down) = (&mut self.dirs.client.flow, &mut self.dirs.backend.flow);
            live.poll(up, down);
        }
        Poll::Pending
    }

    /// Whether nothing more can pass: each side sends nothing more, and what it sent is out
    /// (or its destination is gone).
    fn is_done(&self) -> bool {
        Side::BOTH.iter().all(|&side| {
            let to = &self.legs[side.other()];
            self.legs[side].finished_reading()
                && (self.dirs[side].is_empty() || to.dead)
                && (to.inject.is_none() || to.dead)
        })
    }

    /// One round of writing then reading for what `src` sends; true if it made progress.
    fn step(&mut self, src: Side, cx: &mut Context<'_>) -> bool {
        let mut progress = self.write(src, cx);
        let d = &mut self.dirs[src];
        d.compact();
        d.grow_if_full();
        if self.can_read(src) {
            progress |= self.read(src, cx);
        }
        progress
    }

    fn can_read(&self, src: Side) -> bool {
        let d = &self.dirs[src];
        !self.legs[src].finished_reading()
            && (self.legs[src.other()].inject.is_none() || !d.at_boundary())
            && d.has_room()
    }

    /// Writes what `src` sent to the other leg.
    fn write(&mut self, src: Side, cx: &mut Context<'_>) -> bool {
        let dst = src.other();
        let (d, leg) = (&mut self.dirs[src], &mut self.legs[dst]);
        let wrote = match dst {
            Side::Client => leg::write(d, leg, &mut self.client, cx),
            Side::Backend => leg::write(d, leg, &mut self.backend, cx),
        };
        match wrote {
            Wrote::Nothing => false,
            Wrote::Some => true,
            Wrote::Failed => {
                self.lost(dst, "write failed");
                true
            }
        }
    }

    /// Reads what `src` sends.
    fn read(&mut self, src: Side, cx: &mut Context<'_>) -> bool {
        let d = &mut self.dirs[src];
        let read = match src {
            Side::Client => leg::read(d, &mut self.client, cx),
            Side::Backend => leg::read(d, &mut self.backend, cx),
        };
        match read {
            Read::Idle => false,
            Read::Data => {
                self.process(src);
                true
            }
            Read::Lost(why) => {
                self.lost(src, why);
                true
            }
        }
    }

    /// Checks what `src` sent and reacts to its close frame or its violation.
    fn process(&mut self, src: Side) {
        let dst = src.other();
        let to = &self.legs[dst];
        let forward_close = !to.close_out && !to.dead && to.owed.is_none();
        let stop = to.inject.is_some();
        match self.dirs[src].process(&self.rules, forward_close, stop) {
            Ok(Event::None) => {}
            Ok(Event::Close { forwarded }) => {
                self.ended(None, src.closer());
                self.legs[src].got_close = true;
                self.legs[src].done_reading = true;
                self.start_closing();
                if forwarded {
                    self.legs[dst].close_out = true;
                } else if let Some(close) = self.legs[dst].owed.take() {
                    self.queue_close(dst, close);
                }
            }
            Err((v, clean)) => self.violation(src, v, clean),
        }
    }

    /// Leg `src` broke a rule: nothing more is read from it; each leg gets what
    /// [`closing::violation`] says.
    fn violation(&mut self, src: Side, v: Violation, clean: bool) {
        log::debug!("{}: {src} broke the protocol: {v:?}", self.label);
        self.errors.push(format!("{src}: {v:?}"));
        self.legs[src].done_reading = true;
        self.start_closing();
        let ending = closing::violation(src, v, clean);
        self.act(src.other(), ending.to_other);
        self.act(src, ending.to_it);
    }

    /// Leg `src` is gone (EOF or I/O error): nothing more is read from or written to it; the
    /// other leg gets what [`closing::lost`] says.
    fn lost(&mut self, src: Side, why: &str) {
        self.ended(None, src.closer());
        if !self.legs[src].got_close {
            log::debug!("{}: {src} {why}", self.label);
            self.errors.push(format!("{src}: {why}"));
        }
        let it = &mut self.legs[src];
        it.done_reading = true;
        it.dead = true;
        it.inject = None;
        self.start_closing();
        let at_boundary = self.dirs[src].at_boundary();
        let act = closing::lost(src, &self.legs[src], &self.legs[src.other()], at_boundary);
        self.act(src.other(), act);
    }

    /// Notes who ended the connection first, and the gateway's first close of its own.
    fn ended(&mut self, close: Option<GatewayClose>, by: metrics::Side) {
        let e = self.ending.get_or_insert_with(Box::default);
        e.1.get_or_insert(by);
        if e.0.is_none() {
            e.0 = close;
        }
    }

    /// Closes both legs with `close`, through the normal close handshake.
    fn close_both(&mut self, close: GatewayClose) {
        log::debug!("{}: closing: {}", self.label, close.reason());
        self.errors.push(close.reason().to_string());
        self.start_closing();
        self.queue_close(Side::Client, close);
        self.queue_close(Side::Backend, close);
    }

    fn act(&mut self, side: Side, act: Option<Act>) {
        match act {
            Some(Act::Close(close)) => self.queue_close(side, close),
            Some(Act::Owe(close)) => self.legs[side].owed = Some(close),
            Some(Act::Cut) => self.legs[side].dead = true,
            None => {}
        }
    }

    /// Queues `close` for leg `side`, unless a close already went to it or it is gone (a
    /// close it was owed is then moot).
    fn queue_close(&mut self, side: Side, close: GatewayClose) {
        let l = &mut self.legs[side];
        l.owed = None;
        if l.close_out || l.dead {
            return;
        }
        self.closes.push((metrics::Side::Gateway, close.code()));
        self.ended(Some(close), metrics::Side::Gateway);
        let l = &mut self.legs[side];
        let mask = (side == Side::Backend).then(rand::random::<[u8; 4]>);
        let mut frame = close.frame(mask);
        // A keepalive ping partly written goes out whole first; one not started is dropped.
        if let Some((ping, pos)) = l.inject.take().filter(|(_, pos)| *pos > 0) {
            frame.splice(0..0, ping[pos..].iter().copied());
        }
        l.inject = Some((frame, 0));
        l.close_out = true;
    }

    fn start_closing(&mut self) {
        if let Phase::Relaying = self.phase {
            self.phase = Phase::Closing {
                grace: Timer::after(CLOSE_GRACE),
            };
        }
    }

    /// Sends FIN to each leg whose close handshake is complete while the other leg is still
    /// closing (the relay is about to wait for it), once nothing more goes to it. Nothing more
    /// is read from or written to it, so it need not wait for the other leg, up to
    /// [`CLOSE_GRACE`]. When both complete together, [`Conn::finish`] closes them.
    fn shut_complete_legs(&mut self) {
        for side in Side::BOTH {
            let l = &self.legs[side];
            if l.handshake_done() && self.dirs[side.other()].is_empty() && !l.dead && !l.shut {
                match side {
                    Side::Client => self.client.shutdown_write(),
                    Side::Backend => self.backend.shutdown_write(),
                }
                self.legs[side].shut = true;
            }
        }
    }

    /// Acts on what the watch, and an operator, say is due.
    fn poll_watch(&mut self, cx: &mut Context<'_>) {
        if let Some(close) = self.live.as_mut().and_then(|l| l.poll_asked(cx)) {
            self.close_both(close);
        }
        while let Some(alarm) = self
            .watch
            .poll(cx, &self.rules, &self.dirs, &self.legs.client)
        {
            match alarm {
                Alarm::Close(close) => self.close_both(close),
                Alarm::Abandon(close) => {
                    self.close_both(close);
                    self.legs.client.done_reading = true;
                }
                Alarm::Ping => self.legs.client.inject = Some((watch::ping_frame(), 0)),
            }
        }
    }

    /// Resumes each throttled direction whose time has come; true if one was.
    fn poll_throttle(&mut self, cx: &mut Context<'_>) -> bool {
        let mut resumed = false;
        for side in Side::BOTH {
            let policy = self.dirs[side].policy.as_mut();
            if policy.is_some_and(|p| p.poll_resume(cx)) {
                self.process(side);
                resumed = true;
            }
        }
        resumed
    }

    /// How the relay went, once it is over.
    pub(super) fn summary(&mut self) -> Summary {
        let mut closes = std::mem::take(&mut self.closes);
        for side in Side::BOTH {
            if let Some(code) = self.dirs[side].close_code {
                closes.push((side.closer(), code));
            }
        }
        let peer =
            |d: &mut Direction| Some((d.close_code?, d.close_reason.take().map(|r| (*r).into())));
        let ending = Ending {
            client: peer(&mut self.dirs.client),
            backend: peer(&mut self.dirs.backend),
            gateway: self.ending.as_ref().and_then(|e| e.0),
            first: self.ending.as_ref().and_then(|e| e.1),
        };
        let traffic = Traffic {
            client_to_backend: self.dirs.client.flow,
            backend_to_client: self.dirs.backend.flow,
        };
        Summary {
            ending,
            errors: std::mem::take(&mut self.errors),
            counted: self.live.as_ref().map(|l| l.entry.counts()),
            traffic,
            closes,
        }
    }

    /// Gives each leg its FIN or drains it, as [`closing::last`] says, then closes both.
    pub(super) async fn finish(self: Box<Self>) {
        let last = closing::last(&self.legs);
        let Conn {
            mut client,
            mut backend,
            ..
        } = *self;
        if last.fin.client {
            client.shutdown_write();
        }
        if last.fin.backend {
            backend.shutdown_write();
        }
        let client = last.drain.client.then_some(client);
        closing::drain(client, backend, last.drain.backend).await;
    }
}
