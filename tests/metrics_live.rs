//! Live numbers (issue 17): the messages and bytes of an open connection reach `/metrics`
//! within 10 s (without an atomic per frame: each connection adds what it relayed at the next 5 s
//! tick), counted once; and per-route histograms of handshake time and
//! connection duration.

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;

const TEXT: &str =
    r#"kairos_messages_total{route="/ws/chat",direction="client_to_backend",type="text"}"#;
const BYTES: &str = r#"kairos_bytes_total{route="/ws/chat",direction="backend_to_client"}"#;

#[test]
fn an_open_connections_traffic_reaches_metrics_within_10_s_and_is_counted_once() {
    let gw = GatewayProcess::start(&admin_config(start_echo()), None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    run(async {
        let mut ws = connect(addr, "/ws/chat").await;
        for i in 0..5 {
            let m = Message::text(format!("message {i}"));
            ws.send(m.clone()).await.expect("send");
            assert_eq!(next_data(&mut ws).await, m);
        }
        let sent = Instant::now();
        // The connection stays open (and idle) while /metrics is read.
        let mut seen = None;
        while sent.elapsed() < Duration::from_secs(10) {
            let text = http_get(admin, "/metrics").await.body;
            if metric(&text, TEXT) == Some(5.0) {
                seen = Some((sent.elapsed(), metric(&text, BYTES)));
                break;
            }
            smol::Timer::after(Duration::from_millis(200)).await;
        }
        let (after, bytes) = seen.expect("the open connection's messages within 10 s");
        eprintln!("counted {after:?} after the last message");
        // 5 unmasked text frames of 9 bytes each, to the client.
        assert_eq!(bytes, Some(5.0 * 11.0));
        ws.close(None).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
        // Once closed, the rest is added, and nothing twice.
        let closed = |text: &str| {
            metric(text, TEXT) == Some(5.0)
                && metric(
                    text,
                    r#"kairos_connection_duration_seconds_count{route="/ws/chat"}"#,
                ) == Some(1.0)
        };
        let mut text = String::new();
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            text = http_get(admin, "/metrics").await.body;
            if closed(&text) {
                break;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert!(closed(&text), "{text}");
        assert_eq!(
            metric(&text, BYTES),
            Some(5.0 * 11.0 + 2.0),
            "the close frame's 2 bytes"
        );
        let handshakes = r#"kairos_handshake_seconds_count{route="/ws/chat"}"#;
        assert_eq!(metric(&text, handshakes), Some(1.0));
        let le = r#"kairos_connection_duration_seconds_bucket{route="/ws/chat",le="+Inf"}"#;
        assert_eq!(metric(&text, le), Some(1.0));
        promtool_check(&text);
    });
}
