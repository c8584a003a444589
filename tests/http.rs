//! Answers before the upgrade: status codes, headers, bodies, head limits and timeouts.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

fn assert_body_matches_length(r: &RawResponse) {
    let len: usize = r
        .header("Content-Length")
        .expect("Content-Length present")
        .parse()
        .expect("numeric Content-Length");
    assert_eq!(len, r.body.len(), "Content-Length vs body in {r:?}");
    assert!(!r.body.trim().is_empty(), "error body must say why");
}

#[test]
fn unknown_path_is_404() {
    let gw = echo_gateway();
    let r = run(raw_http(gw, upgrade_request("/nope", "").as_bytes()));
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/nope"), "{}", r.body);
    assert_body_matches_length(&r);
    assert_eq!(run(refused_status(gw, "/ws/chat/extra", &[])), 404);
}

#[test]
fn other_method_is_405_with_allow() {
    let gw = echo_gateway();
    let req = upgrade_request("/ws/chat", "").replacen("GET", "POST", 1);
    let r = run(raw_http(gw, req.as_bytes()));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow").as_deref(), Some("GET"));
    assert_body_matches_length(&r);
}

#[test]
fn plain_get_is_426_with_upgrade_header() {
    let gw = echo_gateway();
    let r = run(raw_http(gw, b"GET /ws/chat HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status, 426);
    assert_eq!(r.header("Upgrade").as_deref(), Some("websocket"));
    assert_body_matches_length(&r);
}

#[test]
fn bad_or_missing_key_is_400() {
    let gw = echo_gateway();
    for key in ["", "Sec-WebSocket-Key: short\r\n"] {
        let req = format!(
            "GET /ws/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n{key}\r\n"
        );
        let r = run(raw_http(gw, req.as_bytes()));
        assert_eq!(r.status, 400, "key line {key:?}");
        assert!(r.body.contains("Sec-WebSocket-Key"), "{}", r.body);
        assert_body_matches_length(&r);
    }
}

#[test]
fn wrong_version_is_426_with_version_13() {
    let gw = echo_gateway();
    let req = upgrade_request("/ws/chat", "").replace("Version: 13", "Version: 8");
    let r = run(raw_http(gw, req.as_bytes()));
    assert_eq!(r.status, 426);
    assert_eq!(r.header("Sec-WebSocket-Version").as_deref(), Some("13"));
    assert_body_matches_length(&r);
}

#[test]
fn oversized_head_is_431() {
    let backend = start_echo();
    let gw = start_gateway(&config_json(
        backend,
        r#""limits": {"max_request_head_bytes": 1024},"#,
        "",
    ));
    let big = format!("X-Big: {}\r\n", "a".repeat(2000));
    let r = run(raw_http(gw, upgrade_request("/ws/chat", &big).as_bytes()));
    assert_eq!(r.status, 431);
    assert_body_matches_length(&r);
    // Just under the limit still works.
    let ok = format!("X-Big: {}\r\n", "a".repeat(700));
    run(async {
        let (_ws, res) = try_connect(gw, "/ws/chat", &[("X-Big", &ok[7..ok.len() - 2])])
            .await
            .expect("head under the limit is accepted");
        assert_eq!(res.status(), 101);
    });
}

#[test]
fn error_answer_is_readable_after_client_sent_more() {
    let gw = echo_gateway();
    run(async {
        let s = TcpStream::connect(gw).await.unwrap();
        let mut req = upgrade_request("/nope", "").into_bytes();
        req.extend(std::iter::repeat_n(b'x', 256 * 1024));
        // Write without waiting: the gateway answers after the head while we still send.
        let writer = async {
            let _ = s.clone().write_all(&req).await;
        };
        let mut buf = Vec::new();
        let reader = async {
            let _ = within(STEP, s.clone().read_to_end(&mut buf)).await;
        };
        futures_lite::future::zip(writer, reader).await;
        let r = parse_raw(&buf);
        assert_eq!(r.status, 404, "{r:?}");
        assert_body_matches_length(&r);
    });
}

#[test]
fn incomplete_head_is_cut_at_timeout_counted_from_accept() {
    let backend = start_echo();
    let gw = start_gateway(&config_json(
        backend,
        r#""limits": {"handshake_timeout_ms": 400},"#,
        "",
    ));
    run(async {
        let mut s = TcpStream::connect(gw).await.unwrap();
        let start = Instant::now();
        // Trickle a byte every 50 ms: each read is quick, but the head never completes.
        let head = upgrade_request("/ws/chat", "");
        let mut closed_at = None;
        for b in head.as_bytes() {
            if s.write_all(&[*b]).await.is_err() {
                closed_at = Some(start.elapsed());
                break;
            }
            let mut probe = [0u8; 64];
            let read = within(Duration::from_millis(50), s.read(&mut probe)).await;
            if let Some(Ok(0)) | Some(Err(_)) = read {
                closed_at = Some(start.elapsed());
                break;
            }
        }
        let at = closed_at.expect("the gateway never closed a trickling client");
        assert!(at >= Duration::from_millis(350), "closed too early: {at:?}");
        assert!(at < Duration::from_secs(3), "closed too late: {at:?}");
    });
}

#[test]
fn http10_and_bad_target_are_400() {
    let gw = echo_gateway();
    let req = upgrade_request("/ws/chat", "").replace("HTTP/1.1", "HTTP/1.0");
    assert_eq!(run(raw_http(gw, req.as_bytes())).status, 400);
    let req = upgrade_request("*", "");
    assert_eq!(run(raw_http(gw, req.as_bytes())).status, 400);
    let r = run(raw_http(gw, b"GARBAGE\x00\r\n\r\n"));
    assert_eq!(r.status, 400);
}

#[test]
fn percent_encoded_dots_do_not_reach_other_routes() {
    let gw = echo_gateway();
    assert_eq!(run(refused_status(gw, "/ws/%2e%2e/chat", &[])), 404);
    assert_eq!(run(refused_status(gw, "/ws/../ws/chat", &[])), 404);
}
