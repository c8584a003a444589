//! The gateway's log, read as an operator reads it: every line about a connection says which
//! one (`conn ID PEER: ...`), from accept to close, whichever stage wrote it.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;

/// A line of env_logger's default format: `[TIME LEVEL TARGET] MESSAGE`; its target and
/// message.
fn split(line: &str) -> Option<(&str, &str)> {
    let (head, message) = line.strip_prefix('[')?.split_once("] ")?;
    Some((head.rsplit(' ').next()?, message))
}

/// The connection a message is about, from its `conn ID PEER: ` prefix.
fn conn_of(message: &str) -> Option<(u64, SocketAddr)> {
    let rest = message.strip_prefix("conn ")?;
    let (id, rest) = rest.split_once(' ')?;
    let (peer, _) = rest.split_once(": ")?;
    Some((id.parse().ok()?, peer.parse().ok()?))
}

/// Waits until the backend has received `n` close frames.
async fn closes_reach(closes: &Closes, n: usize) {
    let reached = wait_until(STEP, || closes.lock().unwrap().len() >= n).await;
    assert!(reached, "the backend got {:?}", closes.lock().unwrap());
}

#[test]
fn every_log_line_of_a_connection_carries_its_id_and_peer() {
    let (backend, closes) = id_backend(0);
    let route = r#""message_filter": { "allow_types": ["text"] },"#;
    let mut gw = GatewayProcess::start_with_log(&config_json(backend, "", route), None, "debug");
    let addr = gw.addr();
    let peers = run(async {
        // A breaks the route's policy: 1003 for it, 1001 for its backend.
        let (mut a, _) = connect_id(addr, "/ws/chat").await;
        let a_peer = a.get_ref().local_addr().unwrap();
        a.send(Message::text("hello")).await.unwrap();
        assert_eq!(next_data(&mut a).await, Message::text("hello"));
        a.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        match next_msg(&mut a).await {
            Message::Close(Some(c)) => assert_eq!(u16::from(c.code), 1003),
            other => panic!("expected a close, got {other:?}"),
        }
        while let Some(Ok(_)) = a.next().await {}
        closes_reach(&closes, 1).await;
        // B vanishes without a close frame: its backend gets 1001.
        let (mut b, _) = connect_id(addr, "/ws/chat").await;
        let b_peer = b.get_ref().local_addr().unwrap();
        b.send(Message::text("bye")).await.unwrap();
        assert_eq!(next_data(&mut b).await, Message::text("bye"));
        drop(b);
        closes_reach(&closes, 2).await;
        // C is open when the gateway shuts down: the shutdown closes it.
        let (mut c, _) = connect_id(addr, "/ws/chat").await;
        let c_peer = c.get_ref().local_addr().unwrap();
        gw.signal(rustix::process::Signal::TERM);
        match next_msg(&mut c).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected a close, got {other:?}"),
        }
        while let Some(Ok(_)) = c.next().await {}
        [a_peer, b_peer, c_peer]
    });
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some(), "no exit");
    let lines = gw.stop_and_collect();
    let mut ids: BTreeMap<SocketAddr, u64> = BTreeMap::new();
    let mut said: BTreeMap<SocketAddr, Vec<&str>> = BTreeMap::new();
    for line in &lines {
        let Some((target, message)) = split(line) else {
            continue;
        };
        if !target.starts_with("kairos_gateway::")
            || target == "kairos_gateway::control"
            || target == "kairos_gateway::access"
        {
            // Another crate's line, the process's own (start-up, signals), or the access log
            // (its connection_id field: tests/access_log.rs).
            continue;
        }
        let Some((id, peer)) = conn_of(message) else {
            panic!(
                "a line without its connection: {line}\n\nthe log:\n{}",
                lines.join("\n")
            );
        };
        assert!(peers.contains(&peer), "unknown peer in {line}");
        assert_eq!(
            *ids.entry(peer).or_insert(id),
            id,
            "two ids for {peer}: {line}"
        );
        said.entry(peer).or_default().push(message);
    }
    let distinct: std::collections::BTreeSet<_> = ids.values().collect();
    assert_eq!(distinct.len(), 3, "ids {ids:?}");
    for (peer, wants) in [
        (
            peers[0],
            ["accepted", "client broke the protocol", "closed;"],
        ),
        (
            peers[1],
            [
                "accepted",
                "client connection closed without a close frame",
                "closed;",
            ],
        ),
        (
            peers[2],
            ["accepted", "closing: gateway shutting down", "closed;"],
        ),
    ] {
        let seen = &said[&peer];
        for want in wants {
            assert!(
                seen.iter().any(|m| m.contains(want)),
                "no line with {want:?} for {peer}: {seen:#?}"
            );
        }
    }
}
