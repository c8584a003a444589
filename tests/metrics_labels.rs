//! Metric labels a client can choose are bounded: its close codes are counted by range, so no
//! client can add series to `/metrics` at will. Real binary, real admin listener.
// Helpers of the tests a build without every feature leaves out.
#![cfg_attr(not(full), allow(dead_code, unused_imports))]

mod common;

use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use common::*;
use futures_lite::StreamExt;

#[test]
#[cfg(feature = "admin")]
fn client_close_codes_are_labelled_by_range_in_metrics() {
    let (backend, _) = id_backend(0);
    let json = admin_config(backend);
    let gw = GatewayProcess::start(&json, None);
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    let series = |side: &str, code: &str| {
        format!(r#"kairos_closes_total{{route="/ws/chat",side="{side}",code="{code}"}}"#)
    };
    run(async {
        for code in [1000, 3001, 3999, 4321] {
            let (mut ws, _) = connect_id(addr, "/ws/chat").await;
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            };
            ws.close(Some(frame)).await.unwrap();
            // The close handshake ends with the connection.
            assert!(
                within(STEP, async { while let Some(Ok(_)) = ws.next().await {} })
                    .await
                    .is_some()
            );
        }
        // Counted when each connection ends.
        let deadline = std::time::Instant::now() + STEP;
        let text = loop {
            let text = http_get(admin, "/metrics").await.body;
            let counted = metric(&text, &series("client", "4xxx")) == Some(1.0)
                && metric(&text, &series("client", "3xxx")) == Some(2.0);
            if counted || std::time::Instant::now() > deadline {
                break text;
            }
            smol::Timer::after(Duration::from_millis(20)).await; // poll, not spin
        };
        let closes: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kairos_closes_total{"))
            .collect();
        for (side, code, n) in [
            ("client", "1000", 1.0),
            ("client", "3xxx", 2.0),
            ("client", "4xxx", 1.0),
        ] {
            let got = metric(&text, &series(side, code));
            assert_eq!(got, Some(n), "{side} {code} in {closes:#?}");
        }
        for code in ["3001", "3999", "4321"] {
            let chosen = format!(r#"code="{code}""#);
            assert!(
                !closes.iter().any(|l| l.contains(&chosen)),
                "a client-chosen code is a label value: {closes:#?}"
            );
        }
        promtool_check(&text);
    });
}
