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
