//! Out of file descriptors (`ulimit -n 256`, 1000 clients): the gateway logs its accept
//! errors once a second, not once per attempt, keeps running, and serves again as soon as
//! descriptors are free.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;

#[test]
fn out_of_fds_logs_once_a_second_keeps_running_and_serves_again() {
    // This process itself holds the 1000 client sockets.
    let now = raise_open_files(4096);
    assert!(
        now >= 1200,
        "this test needs ulimit -n >= 1200 for its clients, have {now}"
    );
    let limits = r#""limits": { "handshake_timeout_ms": 60000 },"#;
    let mut gw = GatewayProcess::start(&config_json(start_echo(), limits, ""), Some(256));
    let addr: SocketAddr = gw.addr();
    // 1000 clients that connect and say nothing: the gateway runs out of descriptors.
    let clients: Vec<TcpStream> = (0..1000)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    let first = gw.wait_for("accept failed", Duration::from_secs(10));
    assert!(
        first.is_some(),
        "no accept error logged with 1000 clients and 256 fds"
    );
    // Still out of descriptors for the next 3 s: about one line a second, not thousands.
    let lines = gw.count_for("accept failed", Duration::from_millis(3200));
    assert!(
        (2..=4).contains(&lines),
        "{lines} accept error lines in 3.2 s (want about one a second)"
    );
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway exited");
    drop(clients);
    // Descriptors free up as the gateway sees those clients leave: it serves again.
    run(async {
        let start = Instant::now();
        let mut ws = loop {
            match within(Duration::from_secs(2), try_connect(addr, "/ws/chat", &[])).await {
                Some(Ok((ws, _))) => break ws,
                _ if start.elapsed() < Duration::from_secs(20) => continue,
                _ => panic!("gateway did not serve again within 20 s"),
            }
        };
        ws.send(Message::text("back")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("back"));
    });
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway exited");
}
