//! Raw RFC 6455 on both sides of the gateway for `hardening_frames.rs`: frames built and
//! parsed by hand, and a backend that records what reaches it (or misbehaves on request).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
pub use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::channel::{self, Receiver, Sender};
use smol::net::TcpStream;

use crate::common::{
    accept_after_head, connect, next_data, read_head, spawn_backend, upgrade_request, within, STEP,
};

/// How fast the gateway must answer a violation (docs/limits.md: at once, no waiting for payload).
pub const FAST: Duration = Duration::from_secs(1);

/// The masking key of the test clients.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame: first byte `b0`, masked with `mask`, announcing `len` payload bytes, followed by
/// `payload` (masked; it may be shorter than `len`).
pub fn frame(b0: u8, mask: Option<[u8; 4]>, len: u64, payload: &[u8]) -> Vec<u8> {
    let bit = if mask.is_some() { 0x80 } else { 0 };
    let mut f = vec![b0];
    match len {
        0..=125 => f.push(bit | len as u8),
        126..=0xffff => {
            f.push(bit | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(bit | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A frame read from the wire, unmasked.
#[derive(Debug)]
pub struct Received {
    pub b0: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Reads one whole frame (payloads over 64 KiB are refused: no test expects one).
pub async fn read_frame(s: &mut TcpStream) -> std::io::Result<Received> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    assert!(len <= 0xffff, "unexpected frame of {len} bytes");
    let masked = h[1] & 0x80 != 0;
    let mut key = [0u8; 4];
    if masked {
        s.read_exact(&mut key).await?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await?;
    if masked {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i % 4]);
    }
    Ok(Received {
        b0: h[0],
        masked,
        payload,
    })
}

/// The code of a close frame (a final, well-formed one with a UTF-8 reason), or a panic
/// saying what the frame was instead.
pub fn close_code(f: &Received, who: &str) -> u16 {
    assert_eq!(f.b0, 0x88, "{who}: expected a close frame, got {f:?}");
    assert!(f.payload.len() >= 2, "{who}: close without a code: {f:?}");
    assert!(
        std::str::from_utf8(&f.payload[2..]).is_ok(),
        "{who}: reason not UTF-8: {f:?}"
    );
    u16::from_be_bytes([f.payload[0], f.payload[1]])
}

/// Opens a raw client connection to `/ws/chat{query}` and reads the 101.
pub async fn open(gw: SocketAddr, query: &str) -> TcpStream {
    let mut s = TcpStream::connect(gw)
        .await
        .expect("connect to the gateway");
    let req = upgrade_request(&format!("/ws/chat{query}"), "");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "handshake: {head}");
    s
}

/// Reads the client's frames up to the gateway's close (unmasked); returns its code and the
/// data frames before it (the echo of a message a case completed: docs/behaviour.md says what
/// the backend still sends is delivered first).
pub async fn read_close(s: &mut TcpStream, case: &str) -> (u16, Vec<Received>) {
    let mut before = Vec::new();
    loop {
        let f = within(STEP, read_frame(s))
            .await
            .unwrap_or_else(|| panic!("{case}: no frame within {STEP:?}"))
            .unwrap_or_else(|e| panic!("{case}: connection ended without a close frame: {e}"));
        assert!(
            !f.masked,
            "{case}: the gateway masked a frame to the client"
        );
        if f.b0 & 0x0f > 2 {
            return (close_code(&f, case), before);
        }
        before.push(f);
    }
}

/// Answers a close (masked, as a client must).
pub async fn reply_close(s: &mut TcpStream, code: u16) {
    let _ = s
        .write_all(&frame(0x88, Some(KEY), 2, &code.to_be_bytes()))
        .await;
}

/// Asserts the peer closed the TCP connection (FIN, no more bytes) soon after its close frame.
pub async fn expect_eof(s: &mut TcpStream, case: &str) {
    let mut rest = Vec::new();
    match within(FAST * 2, s.read_to_end(&mut rest)).await {
        Some(Ok(_)) => assert!(rest.is_empty(), "{case}: bytes after the close: {rest:?}"),
        Some(Err(e)) => panic!("{case}: connection reset instead of closed: {e}"),
        None => panic!(
            "{case}: TCP connection still open {:?} after the close",
            FAST * 2
        ),
    }
}

/// Lower-case hex of `bytes` (a bad backend's frame travels in the query string).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// What the backend saw on one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// A close frame with this code (within [`FAST`] for a bad backend).
    Close(u16),
    /// A bad backend got its close only after this long.
    SlowClose(u16, Duration),
    /// A data message, ping or pong.
    Other(Message),
    /// tungstenite failed the stream (the gateway passed something bad on).
    Failed(String),
    /// A bad backend wrote its frame.
    BadFrameSent,
    /// The connection ended (the gateway closed it).
    Ended,
}

/// A backend that echoes data and records what it sees; on a request with `?bad=HEX` it
/// writes those bytes after its 101 instead and records the gateway's answer.
pub fn recording_backend() -> (SocketAddr, Receiver<Seen>) {
    let (tx, rx) = channel::unbounded::<Seen>();
    let addr = spawn_backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let head = read_head(&mut s).await;
            let line = head.lines().next().unwrap_or_default().to_string();
            if let Some((_, rest)) = line.split_once("?bad=") {
                let bytes = unhex(rest.split(' ').next().unwrap_or_default());
                return bad_backend(s, &head, &bytes, tx).await;
            }
            let mut ws = accept_after_head(s, &head, "").await;
            while let Some(m) = ws.next().await {
                let seen = match m {
                    Ok(Message::Close(f)) => Seen::Close(f.map_or(1005, |f| f.code.into())),
                    Ok(m) if m.is_text() || m.is_binary() => {
                        let _ = ws.send(m.clone()).await;
                        Seen::Other(m)
                    }
                    Ok(m) => Seen::Other(m),
                    Err(e) => Seen::Failed(e.to_string()),
                };
                let _ = tx.send(seen).await;
            }
            let _ = tx.send(Seen::Ended).await;
        }
    });
    (addr, rx)
}

/// Accepts, writes `bytes` (never the payload they may announce), records the close the
/// gateway sends and the end of the connection.
async fn bad_backend(s: TcpStream, head: &str, bytes: &[u8], tx: Sender<Seen>) {
    let _ws = accept_after_head(s.clone(), head, "").await; // never polled: raw from here
    let mut s = s;
    s.write_all(bytes).await.unwrap();
    let t = Instant::now();
    let _ = tx.send(Seen::BadFrameSent).await;
    let seen = match within(STEP, read_frame(&mut s)).await {
        Some(Ok(f)) if f.masked && f.payload.len() >= 2 && f.b0 == 0x88 => {
            let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
            match t.elapsed() {
                d if d < FAST => Seen::Close(code),
                d => Seen::SlowClose(code, d),
            }
        }
        Some(Ok(f)) => Seen::Failed(format!("not a masked close frame: {f:?}")),
        Some(Err(e)) => Seen::Failed(format!("no close frame: {e}")),
        None => Seen::Failed("no close frame in time".into()),
    };
    let _ = tx.send(seen).await;
    let mut rest = Vec::new();
    let end = match within(STEP, s.read_to_end(&mut rest)).await {
        Some(Ok(_)) if rest.is_empty() => Seen::Ended,
        other => Seen::Failed(format!("after the close: {other:?}, {rest:?}")),
    };
    let _ = tx.send(end).await;
}

/// What the backend saw on the case's connection, up to its end.
pub async fn backend_events(rx: &Receiver<Seen>, case: &str) -> Vec<Seen> {
    let mut events = Vec::new();
    loop {
        let ev = within(STEP, rx.recv())
            .await
            .unwrap_or_else(|| panic!("{case}: backend connection not ended; saw {events:?}"))
            .expect("backend channel open");
        let end = ev == Seen::Ended;
        events.push(ev);
        if end {
            return events;
        }
    }
}

/// A well-behaved client on the same gateway still gets its echo.
pub async fn assert_still_echoes(gw: SocketAddr) {
    let mut ws = connect(gw, "/ws/chat").await;
    ws.send(Message::text("still alive")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("still alive"));
    ws.close(None).await.unwrap();
}
