//! The close codes the gateway chooses: each is one a peer may receive on the wire, with a
//! reason that fits in a close frame.

use super::*;
use crate::frame::{check_close_payload, parse_header, Violation};

#[test]
fn every_gateway_close_is_a_valid_close_frame() {
    let violations = [
        Violation::Protocol("reserved bits set"),
        Violation::Utf8,
        Violation::TooBig("frame too big"),
        Violation::Unsupported("binary messages are not allowed"),
        Violation::Invalid("invalid JSON"),
        Violation::Policy("rate limit"),
    ];
    let mut all = vec![
        GatewayClose::Shutdown,
        GatewayClose::Idle,
        GatewayClose::PingTimeout,
        GatewayClose::TokenExpired,
        GatewayClose::ClientGone,
        GatewayClose::BackendLost,
        GatewayClose::BackendError,
        GatewayClose::PeerTooBig,
        GatewayClose::HealthProbe,
    ];
    all.extend(violations.map(GatewayClose::Violation));
    for close in all {
        let frame = close.frame(None);
        let h = parse_header(&frame).unwrap().unwrap();
        let payload = &frame[h.header_len..];
        assert!(check_close_payload(payload).is_ok(), "{close:?}");
        assert_eq!(payload[..2], close.code().to_be_bytes(), "{close:?}");
        assert_eq!(&payload[2..], close.reason().as_bytes(), "{close:?}");
    }
}

#[test]
fn violations_get_the_rfc_codes() {
    let code = |v| GatewayClose::Violation(v).code();
    assert_eq!(code(Violation::Protocol("x")), 1002);
    assert_eq!(code(Violation::Unsupported("x")), 1003);
    assert_eq!(code(Violation::Utf8), 1007);
    assert_eq!(code(Violation::Invalid("x")), 1007);
    assert_eq!(code(Violation::Policy("x")), 1008);
    assert_eq!(code(Violation::TooBig("x")), 1009);
    assert_eq!(
        GatewayClose::Violation(Violation::Utf8).reason(),
        "invalid UTF-8 in text"
    );
}

#[test]
fn an_operators_close_takes_only_sendable_codes_short_reasons_and_a_bounded_set_of_them() {
    let close = GatewayClose::operator(4001, "moving you").unwrap();
    assert_eq!((close.code(), close.reason()), (4001, "moving you"));
    // The same reason is kept once.
    let again = GatewayClose::operator(1008, "moving you").unwrap();
    assert!(std::ptr::eq(close.reason(), again.reason()));
    for code in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        assert!(GatewayClose::operator(code, "x").is_err(), "{code}");
    }
    let long = "x".repeat(124);
    assert!(GatewayClose::operator(1000, &long)
        .unwrap_err()
        .contains("123"));
    let frame = GatewayClose::operator(1000, &"y".repeat(123))
        .unwrap()
        .frame(None);
    let h = parse_header(&frame).unwrap().unwrap();
    assert!(check_close_payload(&frame[h.header_len..]).is_ok());
    // At most OPERATOR_REASONS different reasons in a process's life.
    let mut refused = None;
    for i in 0..=OPERATOR_REASONS {
        if let Err(why) = GatewayClose::operator(1000, &format!("reason {i}")) {
            refused = Some(why);
            break;
        }
    }
    assert!(refused.is_some_and(|w| w.contains("reuse one")));
    assert!(
        GatewayClose::operator(1000, "moving you").is_ok(),
        "a kept reason still works"
    );
}
