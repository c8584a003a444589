//! Stage 6: relay messages both ways until both legs are closed.
//!
//! Two pumps run in the connection's one task, one per direction. Each reads a message from its
//! leg and awaits its delivery (write + flush) on the other before reading again: a slow reader
//! on one side stops the gateway reading the other (backpressure, no queue).
//!
//! Control frames: tungstenite answers a ping on the leg it came from; the ping is also
//! forwarded, and the other side's pong to that forwarded ping is swallowed, so a peer never
//! gets a duplicate pong. Unsolicited pongs are forwarded. A close frame is forwarded with its
//! code and reason; tungstenite completes the handshake on each leg. When one leg is finished,
//! the other gets [`CLOSE_GRACE`] to finish its own handshake, then both sockets are dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Bytes, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use smol::lock::Mutex as AsyncMutex;
use smol::Timer;

use crate::config::Limits;
use crate::error::{close_for_peer_failure, close_for_ws_error};

/// How long the second leg may take to finish once the first one is done, and how long any one
/// close frame may take to be written.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Read buffer per socket: small, as an edge proxy holds many idle connections.
const READ_BUFFER: usize = 4096;

/// Outstanding forwarded pings remembered per leg (their pongs are swallowed).
const MAX_PINGS: usize = 8;

/// The WebSocket settings of both legs.
pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_message_bytes.max(limits.max_frame_bytes) + (1 << 20))
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_frame_bytes))
}

/// Which side of the gateway a leg faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The client that connected to the gateway.
    Client = 0,
    /// The backend the gateway connected to.
    Backend = 1,
}

impl Leg {
    fn other(self) -> Leg {
        match self {
            Leg::Client => Leg::Backend,
            Leg::Backend => Leg::Client,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Leg::Client => "client",
            Leg::Backend => "backend",
        }
    }
}

/// State shared by the two pumps of one connection.
#[derive(Default)]
struct State {
    /// Payloads of pings forwarded *to* each leg, whose pongs must not be forwarded back.
    pings_to: [VecDeque<Bytes>; 2],
    /// Whether a close frame was sent on each leg (by us or by tungstenite's automatic reply).
    close_sent: [bool; 2],
    /// A close owed to a leg that broke the protocol, sent once the other leg's close handshake
    /// is done, so that replies still in flight to it arrive first (as they would without us).
    deferred: [Option<(CloseCode, &'static str)>; 2],
}

/// How the relay ended (for the connection's log line).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Messages relayed client -> backend.
    pub to_backend: u64,
    /// Messages relayed backend -> client.
    pub to_client: u64,
    /// What ended each leg, if it was not a clean close.
    pub errors: Vec<String>,
}

struct Shared<C, B> {
    client_tx: AsyncMutex<WebSocketSender<C>>,
    backend_tx: AsyncMutex<WebSocketSender<B>>,
    state: Mutex<State>,
    summary: Mutex<Summary>,
}

impl<C, B> Shared<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends `msg` on `leg`, bounded by [`CLOSE_GRACE`] for close frames.
    async fn send(&self, leg: Leg, msg: Message) -> Result<(), String> {
        let is_close = matches!(msg, Message::Close(_));
        let send = async {
            let res = match leg {
                Leg::Client => self.client_tx.lock().await.send(msg).await,
                Leg::Backend => self.backend_tx.lock().await.send(msg).await,
            };
            res.map_err(|e| e.to_string())
        };
        if !is_close {
            return send.await;
        }
        send.or(async {
            Timer::after(CLOSE_GRACE).await;
            Err("close frame not written in time".to_string())
        })
        .await
    }

    /// Sends a close frame on `leg` unless one was already sent there.
    async fn close(&self, leg: Leg, code: CloseCode, reason: &'static str) {
        if self.mark_close_sent(leg) {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = self.send(leg, Message::Close(Some(frame))).await;
        }
    }

    /// Records that a close goes out on `leg`; false if one already had.
    fn mark_close_sent(&self, leg: Leg) -> bool {
        let mut st = lock(&self.state);
        !std::mem::replace(&mut st.close_sent[leg as usize], true)
    }

    fn close_was_sent(&self, leg: Leg) -> bool {
        lock(&self.state).close_sent[leg as usize]
    }

    /// Sends the close owed to `leg`, if any.
    async fn send_deferred(&self, leg: Leg) {
        let owed = lock(&self.state).deferred[leg as usize].take();
        if let Some((code, reason)) = owed {
            self.close(leg, code, reason).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wraps both sockets (with the bytes already read past each handshake) and relays until both
/// legs are closed.
pub async fn run<C, B>(
    client: C,
    client_early: Vec<u8>,
    backend: B,
    backend_early: Vec<u8>,
    limits: &Limits,
) -> Summary
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
{
    let cfg = ws_config(limits);
    let client =
        WebSocketStream::from_partially_read(client, client_early, Role::Server, Some(cfg)).await;
    let backend =
        WebSocketStream::from_partially_read(backend, backend_early, Role::Client, Some(cfg)).await;
    let (client_tx, mut client_rx) = client.split();
    let (backend_tx, mut backend_rx) = backend.split();
    let shared = Shared {
        client_tx: AsyncMutex::new(client_tx),
        backend_tx: AsyncMutex::new(backend_tx),
        state: Mutex::new(State::default()),
        summary: Mutex::new(Summary::default()),
    };
    let up = pump(Leg::Client, &mut client_rx, &shared);
    let down = pump(Leg::Backend, &mut backend_rx, &shared);
    both_with_grace(up, down, CLOSE_GRACE).await;
    shared.send_deferred(Leg::Client).await;
    let summary = lock(&shared.summary).clone();
    summary
}

/// Reads messages from leg `from` and delivers them to the other leg until `from` is finished.
async fn pump<S, C, B>(from: Leg, rx: &mut WebSocketReceiver<S>, shared: &Shared<C, B>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let to = from.other();
    loop {
        let msg = match rx.next().await {
            None => return, // close handshake complete on this leg
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                log::debug!("{} leg failed: {e}", from.name());
                lock(&shared.summary)
                    .errors
                    .push(format!("{}: {e}", from.name()));
                let own = close_for_ws_error(&e);
                let (code, reason) = match own {
                    Some((CloseCode::Size, _)) => (CloseCode::Away, "peer sent too much"),
                    _ => close_for_peer_failure(from == Leg::Backend),
                };
                if from == Leg::Client {
                    lock(&shared.state).deferred[from as usize] = own;
                } else if let Some((own_code, own_reason)) = own {
                    shared.close(from, own_code, own_reason).await;
                }
                shared.close(to, code, reason).await;
                return;
            }
        };
        let forward = match msg {
            Message::Close(frame) => {
                if shared.close_was_sent(from) {
                    // The reply to a close we sent: this leg's handshake is done.
                    shared.send_deferred(to).await;
                    continue;
                }
                // tungstenite has queued the reply on this leg.
                shared.mark_close_sent(from);
                if !shared.mark_close_sent(to) {
                    continue;
                }
                Message::Close(frame)
            }
            Message::Ping(payload) => {
                let mut st = lock(&shared.state);
                let q = &mut st.pings_to[to as usize];
                if q.len() == MAX_PINGS {
                    // Answered here already; forwarding more would only flood the peer.
                    continue;
                }
                q.push_back(payload.clone());
                Message::Ping(payload)
            }
            Message::Pong(payload) => {
                let mut st = lock(&shared.state);
                let q = &mut st.pings_to[from as usize];
                if let Some(i) = q.iter().position(|p| *p == payload) {
                    q.drain(..=i);
                    continue;
                }
                Message::Pong(payload)
            }
            other => other,
        };
        log::trace!("{} -> {}: {:?}", from.name(), to.name(), kind(&forward));
        let counted = matches!(forward, Message::Text(_) | Message::Binary(_));
        if let Err(e) = shared.send(to, forward).await {
            log::debug!("writing to {} failed: {e}", to.name());
            lock(&shared.summary)
                .errors
                .push(format!("{}: {e}", to.name()));
            shared.mark_close_sent(to);
            let (code, reason) = close_for_peer_failure(to == Leg::Backend);
            shared.close(from, code, reason).await;
            return;
        }
        if counted {
            let mut s = lock(&shared.summary);
            match from {
                Leg::Client => s.to_backend += 1,
                Leg::Backend => s.to_client += 1,
            }
        }
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
        Message::Frame(_) => "frame",
    }
}

/// Runs both futures; once one is done, the other gets at most `grace` more.
async fn both_with_grace<A: Future<Output = ()>, B: Future<Output = ()>>(
    a: A,
    b: B,
    grace: Duration,
) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let (mut a_done, mut b_done) = (false, false);
    let mut timer: Option<Timer> = None;
    std::future::poll_fn(|cx| {
        if !a_done && a.as_mut().poll(cx).is_ready() {
            a_done = true;
        }
        if !b_done && b.as_mut().poll(cx).is_ready() {
            b_done = true;
        }
        if a_done && b_done {
            return Poll::Ready(());
        }
        if a_done || b_done {
            let t = timer.get_or_insert_with(|| Timer::after(grace));
            if t.poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}
