//! The client's side while its backend is connected: between its request head and its 101.
//!
//! A client that closes or resets now has no one to relay for: the backend attempt must end at
//! once (a blackholed backend would otherwise hold a socket and a connection-limit place for
//! the connect timeout, times the retries). RFC 6455 has a client wait for the 101 before it
//! sends frames, but some send them at once; those bytes are kept, in order after the ones read
//! with the head, for the relay, up to [`MAX_EARLY_BYTES`].

use futures_lite::{AsyncRead, AsyncReadExt};

use crate::error::Error;

/// Most bytes a client may send between the end of its request head and its 101 (the ones
/// read with the head included). A frame or two fits; a client streaming more before it is
/// answered is refused, so that a slow backend cannot make the gateway buffer without bound.
pub const MAX_EARLY_BYTES: usize = 64 * 1024;

/// Reads what the client sends while it waits for its 101, appending it to `early` (the bytes
/// that followed its head). Ends only when the client is gone (EOF, reset: `ClientGone`) or
/// sent more than [`MAX_EARLY_BYTES`] in all (`TooMuchEarlyData`); raced against the backend
/// connect, so that either ends that connect. Dropping it loses no byte read.
pub async fn watch<S: AsyncRead + Unpin>(client: &mut S, early: &mut Vec<u8>) -> Error {
    // Small: early frames are rare, and this lives in every handshake under way.
    let mut chunk = [0u8; 512];
    loop {
        // Each read takes what the socket holds; only one that would block waits for the next
        // readiness edge (the driver is edge-triggered), so nothing is left unread.
        let n = match client.read(&mut chunk).await {
            Ok(0) => return Error::ClientGone("closed before its 101".to_string()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Error::ClientGone(format!("broken before its 101: {e}")),
        };
        if early.len() + n > MAX_EARLY_BYTES {
            return Error::TooMuchEarlyData(MAX_EARLY_BYTES);
        }
        early.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_bytes_in_order_until_the_client_closes() {
        let mut early = b"first".to_vec();
        let sent: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut client = futures_lite::io::Cursor::new(sent.clone());
        let end = smol::block_on(watch(&mut client, &mut early));
        assert!(matches!(end, Error::ClientGone(_)), "{end:?}");
        assert_eq!(early, [&b"first"[..], &sent].concat());
    }

    #[test]
    fn refuses_a_client_that_sends_more_than_the_bound() {
        let mut early = vec![0; 1000];
        let mut client = futures_lite::io::Cursor::new(vec![1u8; MAX_EARLY_BYTES]);
        let end = smol::block_on(watch(&mut client, &mut early));
        assert!(matches!(end, Error::TooMuchEarlyData(_)), "{end:?}");
        assert!(early.len() <= MAX_EARLY_BYTES);
        // Exactly the bound is kept.
        let mut early = vec![0; 1000];
        let mut client = futures_lite::io::Cursor::new(vec![1u8; MAX_EARLY_BYTES - 1000]);
        let end = smol::block_on(watch(&mut client, &mut early));
        assert!(matches!(end, Error::ClientGone(_)), "{end:?}");
        assert_eq!(early.len(), MAX_EARLY_BYTES);
    }
}
