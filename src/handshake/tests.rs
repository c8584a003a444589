//! Unit tests of the request-head reader and the upgrade checks.
use super::*;

fn req(headers: &[(&str, &str)]) -> Request {
    Request {
        method: "GET".into(),
        target: "/".into(),
        minor_version: 1,
        headers: headers.iter().copied().collect(),
    }
}

const OK: &[(&str, &str)] = &[
    ("Host", "x"),
    ("Upgrade", "websocket"),
    ("Connection", "keep-alive, Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[test]
fn upgrade_checks() {
    assert!(check_upgrade(&req(OK)).is_ok());
    let without = |name: &str| {
        req(&OK
            .iter()
            .copied()
            .filter(|(n, _)| *n != name)
            .collect::<Vec<_>>())
    };
    assert!(matches!(
        check_upgrade(&without("Upgrade")),
        Err(Error::NotUpgrade)
    ));
    assert!(matches!(
        check_upgrade(&without("Connection")),
        Err(Error::NotUpgrade)
    ));
    assert!(matches!(
        check_upgrade(&without("Sec-WebSocket-Key")),
        Err(Error::BadUpgrade(_))
    ));
    let mut v8 = OK.to_vec();
    v8[3] = ("Sec-WebSocket-Version", "8");
    assert!(matches!(
        check_upgrade(&req(&v8)),
        Err(Error::BadVersion(_))
    ));
    let mut badkey = OK.to_vec();
    badkey[4] = ("Sec-WebSocket-Key", "short");
    assert!(matches!(
        check_upgrade(&req(&badkey)),
        Err(Error::BadUpgrade(_))
    ));
    let mut two = OK.to_vec();
    two.push(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="));
    assert!(matches!(
        check_upgrade(&req(&two)),
        Err(Error::BadUpgrade(_))
    ));
}

#[test]
fn read_request_splits_leftover() {
    let data = b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n\x81\x00".to_vec();
    let mut cursor = futures_lite::io::Cursor::new(data);
    let (r, rest) = smol::block_on(read_request(&mut cursor, 8192)).unwrap();
    assert_eq!(r.target, "/a?b");
    assert_eq!(rest, b"\x81\x00");
    let mut big = futures_lite::io::Cursor::new(vec![b'a'; 10_000]);
    assert!(matches!(
        smol::block_on(read_request(&mut big, 8192)),
        Err(Error::HeadTooLarge(8192)) | Err(Error::BadRequest(_))
    ));
}

#[test]
fn host_must_be_a_host() {
    for ok in [
        "x",
        "localhost:5900",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:5900",
        "a.b-c.example",
        "xn--caf-dma.example",
    ] {
        assert!(is_valid_host(ok), "{ok}");
    }
    for bad in [
        "",
        "evil\"; for=1.2.3.4",
        "a b",
        "a/b",
        "a\\b",
        "user@host",
        "[::1",
        "[::1]x",
        "[zz]",
        "h:port",
        "h:123456",
    ] {
        assert!(!is_valid_host(bad), "{bad}");
    }
}
