//! The backend's answer to the upgrade request: interim answers skipped, the 101 checked
//! (accept key, subprotocol and extension it may choose), and the headers the client gets.

use async_tungstenite::tungstenite::handshake::client::generate_key;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::AsyncWriteExt;

use super::request::{deflate_offers, is_deflate, request_head, ClientSide};
use super::Upgraded;
use crate::config::Backend;
use crate::error::Error;
use crate::handshake::{read_final_response, Head};
use crate::headers;
use crate::net::Stream;

/// Largest backend response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Sends the upgrade request on `stream` and checks the backend's answer; `url` names the
/// attempt in errors (its token parameter redacted).
pub(super) async fn handshake(
    mut stream: Stream,
    backend: &Backend,
    path_and_query: &str,
    client: &ClientSide<'_>,
    url: &str,
) -> Result<Upgraded, Error> {
    let failed = |reason: String| Error::BackendFailed {
        url: url.to_string(),
        reason,
    };
    let key = generate_key();
    let head = request_head(backend, path_and_query, client, &key);
    stream
        .write_all(&head)
        .await
        .map_err(|e| failed(format!("sending the upgrade request: {e}")))?;
    stream
        .flush()
        .await
        .map_err(|e| failed(format!("sending the upgrade request: {e}")))?;
    let (res, leftover) = read_final_response(&mut stream, MAX_RESPONSE_HEAD)
        .await
        .map_err(failed)?;
    if res.status != 101 {
        return Err(Error::BackendStatus {
            url: url.to_string(),
            status: res.status,
            www_authenticate: res.header("WWW-Authenticate").map(str::to_string),
        });
    }
    if res.header_raw("Sec-WebSocket-Protocol").count() > 1 {
        return Err(failed("chose more than one subprotocol".to_string()));
    }
    let accept = derive_accept_key(key.as_bytes());
    if res.header("Sec-WebSocket-Accept").map(str::trim) != Some(accept.as_str()) {
        return Err(failed("wrong or missing Sec-WebSocket-Accept".to_string()));
    }
    if !res
        .header("Upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    {
        return Err(failed("101 without Upgrade: websocket".to_string()));
    }
    let extensions: Vec<&[u8]> = res.header_raw("Sec-WebSocket-Extensions").collect();
    let deflate = match extensions.as_slice() {
        [] => false,
        [one] => {
            let text = std::str::from_utf8(one).unwrap_or_default();
            if !is_deflate(text) || text.contains(',') || deflate_offers(client.request).is_none() {
                return Err(failed(format!(
                    "negotiated extension {text:?}, which was not offered"
                )));
            }
            true
        }
        _ => return Err(failed("negotiated more than one extension".to_string())),
    };
    if let Some(p) = res.header("Sec-WebSocket-Protocol") {
        if !client.upgrade.protocols.iter().any(|o| o == p.trim()) {
            return Err(failed(format!(
                "chose subprotocol {p:?}, which the client did not offer"
            )));
        }
    }
    let listed = headers::connection_listed(res.header_all("Connection"));
    let kept: Vec<bool> = (res.headers.iter())
        .map(|(n, _)| {
            (n.eq_ignore_ascii_case("sec-websocket-extensions") && deflate)
                || (headers::from_backend(n) && !headers::is_listed(&listed, n))
        })
        .collect();
    let mut headers = res.headers;
    let mut line = 0;
    headers.retain(|_, _| {
        line += 1;
        kept[line - 1]
    });
    Ok(Upgraded {
        stream,
        leftover,
        headers,
        deflate,
    })
}
