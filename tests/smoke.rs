mod common;
use async_tungstenite::tungstenite::Message;
use common::*;

#[test]
fn text_echo_through_gateway() {
    let gw = echo_gateway();
    run(async {
        let mut ws = connect(gw, "/ws/chat").await;
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    });
}
