//! Malformed frames through a real gateway: each case opens a raw TCP connection, does the
//! handshake by hand, writes the bad bytes (often a header whose payload never comes) and
//! checks the close code each leg gets (docs/behaviour.md, "Close codes"), that it comes at once,
//! and that both TCP connections end. After the bad peers, a normal client still echoes.

mod common;

#[path = "hardening_frames/wire.rs"]
mod wire;

use std::time::Instant;

use common::*;
use wire::*;

/// The gateway's `limits` for these tests: small frames, so a length prefix can exceed them.
const LIMITS: &str = r#""limits": {"max_frame_bytes": 4096},"#;

/// A case: its name, the bytes a peer sends, the close code that peer must get.
type Case = (String, Vec<u8>, u16);

/// A client frame of opcode byte `b0` announcing `len` bytes, followed by `payload` (which may
/// be shorter: the rest is never sent).
fn cf(b0: u8, len: u64, payload: &[u8]) -> Vec<u8> {
    frame(b0, Some(KEY), len, payload)
}

/// A client frame with all its payload.
fn whole(b0: u8, payload: &[u8]) -> Vec<u8> {
    cf(b0, payload.len() as u64, payload)
}

/// A client close frame with `code` (and no reason).
fn close_with(code: u16) -> Vec<u8> {
    whole(0x88, &code.to_be_bytes())
}

fn case(name: impl Into<String>, bytes: Vec<u8>, code: u16) -> Case {
    (name.into(), bytes, code)
}

/// Sends each case on a fresh connection to a gateway in front of the recording echo backend;
/// checks the client's 1002/1007/1009, the backend's 1001, the timing and the TCP ends; then a
/// normal client on the same gateway.
fn run_client_cases(cases: Vec<Case>) {
    let (backend, seen) = recording_backend();
    let gw = start_gateway(&config_json(backend, LIMITS, ""));
    run_for(STEP * 3, async {
        for (name, bytes, code) in &cases {
            let mut s = open(gw, "").await;
            let t = Instant::now();
            s.write_all(bytes).await.unwrap();
            let (got, _echoed) = read_close(&mut s, name).await;
            let took = t.elapsed();
            assert_eq!(got, *code, "{name}: client got close {got}, want {code}");
            assert!(took < FAST, "{name}: close took {took:?}");
            eprintln!("client {name}: close {got} after {took:?}");
            expect_eof(&mut s, name).await;
            // The backend's leg was closed first (1001), then its TCP connection; before, it
            // got only the valid messages the case completed (a bad frame passed on would
            // make tungstenite fail the stream).
            let mut events = backend_events(&seen, name).await;
            events.retain(|e| !matches!(e, Seen::Other(_)));
            assert_eq!(
                events,
                [Seen::Close(1001), Seen::Ended],
                "{name}: backend saw {events:?}"
            );
        }
        assert_still_echoes(gw).await;
    });
}

#[test]
fn client_reserved_bits_close_1002() {
    run_client_cases(vec![
        case("RSV1 on text", cf(0xc1, 5, b""), 1002),
        case("RSV2 on binary", cf(0xa2, 5, b""), 1002),
        case("RSV3 on text", cf(0x91, 5, b""), 1002),
        case("RSV1 on ping", cf(0xc9, 5, b""), 1002),
        case(
            "RSV1 on a continuation",
            [whole(0x01, b"ab"), cf(0xc0, 5, b"")].concat(),
            1002,
        ),
    ]);
}

#[test]
fn client_unknown_opcodes_close_1002() {
    let cases = (0x3..=0x7)
        .chain(0xb..=0xf)
        .map(|op: u8| case(format!("opcode {op:#x}"), cf(0x80 | op, 5, b""), 1002))
        .collect();
    run_client_cases(cases);
}

#[test]
fn client_bad_control_frames_close_1002() {
    run_client_cases(vec![
        case("ping of 126 bytes", cf(0x89, 126, b""), 1002),
        case("pong of 126 bytes", cf(0x8a, 126, b""), 1002),
        case("close of 200 bytes", cf(0x88, 200, b""), 1002),
        case(
            "ping of 126 bytes, 64-bit length",
            {
                let mut f = cf(0x89, 0x1_0000, b"");
                f[2..10].copy_from_slice(&126u64.to_be_bytes()); // same header, length 126
                f
            },
            1002,
        ),
        case("ping with FIN=0", cf(0x09, 5, b""), 1002),
        case("close with FIN=0", cf(0x08, 2, b""), 1002),
    ]);
}

#[test]
fn client_bad_fragment_order_closes_1002() {
    run_client_cases(vec![
        case("continuation without a start", cf(0x80, 5, b""), 1002),
        case(
            "non-final continuation without a start",
            cf(0x00, 5, b""),
            1002,
        ),
        case(
            "text inside an open text message",
            [whole(0x01, b"abc"), cf(0x81, 5, b"")].concat(),
            1002,
        ),
        case(
            "binary inside an open binary message",
            [whole(0x02, b"abc"), cf(0x82, 5, b"")].concat(),
            1002,
        ),
        case(
            "text inside an open binary message",
            [whole(0x02, b"abc"), cf(0x01, 5, b"")].concat(),
            1002,
        ),
        case(
            "continuation after a finished message",
            [whole(0x01, b"ab"), whole(0x80, b"c"), cf(0x80, 5, b"")].concat(),
            1002,
        ),
    ]);
}

#[test]
fn client_bad_close_payloads_close_1002_or_1007() {
    let mut cases: Vec<Case> = [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
        .into_iter()
        .map(|code| case(format!("close code {code}"), close_with(code), 1002))
        .collect();
    cases.push(case("close payload of 1 byte", whole(0x88, &[0x03]), 1002));
    cases.push(case(
        "close reason not UTF-8",
        whole(0x88, &[0x03, 0xe8, b'o', 0xff]),
        1007,
    ));
    cases.push(case(
        "close reason a lone surrogate",
        whole(0x88, &[0x0f, 0xa0, 0xed, 0xa0, 0x80]),
        1007,
    ));
    run_client_cases(cases);
}

#[test]
fn client_framing_errors_close_1002() {
    let top_bit = |len: u64| {
        let mut f = vec![0x82, 0x80 | 127];
        f.extend_from_slice(&len.to_be_bytes());
        f // the mask and payload never come
    };
    run_client_cases(vec![
        case("unmasked text frame", vec![0x81, 0x05], 1002),
        case("unmasked ping", vec![0x89, 0x00], 1002),
        case("unmasked close", vec![0x88, 0x02, 0x03, 0xe8], 1002),
        case("64-bit length 2^63", top_bit(1 << 63), 1002),
        case("64-bit length 2^64-1", top_bit(u64::MAX), 1002),
    ]);
}

#[test]
fn client_invalid_utf8_closes_1007() {
    run_client_cases(vec![
        case("one frame, 0xff", whole(0x81, &[b'h', 0xff]), 1007),
        case("one frame, overlong", whole(0x81, &[0xc0, 0xaf]), 1007),
        case(
            "one frame, surrogate",
            whole(0x81, &[0xed, 0xa0, 0x80]),
            1007,
        ),
        case(
            "one frame, over U+10FFFF",
            whole(0x81, &[0xf4, 0x90, 0x80, 0x80]),
            1007,
        ),
        case(
            "one frame, ends mid code point",
            whole(0x81, &[b'a', 0xe2, 0x82]),
            1007,
        ),
        case(
            "split code point completed wrongly in the final fragment",
            [whole(0x01, &[b'a', b'b', 0xe2, 0x82]), whole(0x80, b"(")].concat(),
            1007,
        ),
        case(
            "message ends mid code point across fragments",
            [whole(0x01, &[b'a', 0xe2]), whole(0x80, &[0x82])].concat(),
            1007,
        ),
        case(
            "invalid byte in the final fragment",
            [
                whole(0x01, "é".as_bytes()),
                whole(0x00, b"ok"),
                whole(0x80, &[0xff]),
            ]
            .concat(),
            1007,
        ),
    ]);
}

#[test]
fn client_length_over_max_frame_bytes_closes_1009() {
    run_client_cases(vec![
        case(
            "16-bit length 65535, nothing after",
            cf(0x82, 65535, b""),
            1009,
        ),
        case(
            "16-bit length 4097 text, nothing after",
            cf(0x81, 4097, b""),
            1009,
        ),
        case(
            "64-bit length 2^40, nothing after",
            cf(0x82, 1 << 40, b""),
            1009,
        ),
        case(
            "64-bit length 2^63-1, nothing after",
            cf(0x82, (1 << 63) - 1, b""),
            1009,
        ),
        case(
            "continuation with 64-bit length 2^40",
            [whole(0x02, b"ab"), cf(0x80, 1 << 40, b"")].concat(),
            1009,
        ),
    ]);
}

/// A non-final fragment that is not UTF-8 is passed on (docs/behaviour.md, "Relay"): the backend (the real echo
/// backend, which checks fragments itself) or the gateway fails the message; the client gets
/// 1007 either way and its connection ends.
#[test]
fn client_invalid_utf8_in_a_non_final_fragment_closes_1007() {
    let gw = start_gateway(&config_json(start_echo(), LIMITS, ""));
    run_for(STEP, async {
        let mut s = open(gw, "").await;
        let t = Instant::now();
        let bytes = [whole(0x01, &[b'a', 0xff]), whole(0x80, b"b")].concat();
        s.write_all(&bytes).await.unwrap();
        let name = "invalid non-final fragment";
        assert_eq!(read_close(&mut s, name).await.0, 1007);
        assert!(t.elapsed() < FAST, "{:?}", t.elapsed());
        reply_close(&mut s, 1007).await;
        expect_eof(&mut s, name).await;
        assert_still_echoes(gw).await;
    });
}

/// Each backend case: the backend writes `bytes` after its 101 and must get `code`; the
/// client gets `client_code`.
fn run_backend_cases(cases: Vec<(Case, u16)>) {
    let (backend, seen) = recording_backend();
    let gw = start_gateway(&config_json(backend, LIMITS, ""));
    run_for(STEP * 3, async {
        for ((name, bytes, code), client_code) in &cases {
            let mut s = open(gw, &format!("?bad={}", hex(bytes))).await;
            let t = Instant::now();
            let (got, before) = read_close(&mut s, name).await;
            assert_eq!(got, *client_code, "{name}: client got close {got}");
            assert!(before.is_empty(), "{name}: reached the client: {before:?}");
            assert!(t.elapsed() < FAST, "{name}: {:?}", t.elapsed());
            eprintln!("backend {name}: client got {got} after {:?}", t.elapsed());
            // The client completes the close handshake, as it should; then its TCP ends.
            reply_close(&mut s, got).await;
            expect_eof(&mut s, name).await;
            let events = backend_events(&seen, name).await;
            assert_eq!(
                events,
                [Seen::BadFrameSent, Seen::Close(*code), Seen::Ended],
                "{name}: backend saw {events:?}"
            );
        }
        assert_still_echoes(gw).await;
    });
}

/// A backend case: `bytes` from the backend, which must get `code`; the client gets `client`.
fn bad(name: &str, bytes: Vec<u8>, code: u16, client: u16) -> (Case, u16) {
    (case(name, bytes, code), client)
}

#[test]
fn backend_protocol_errors_close_it_1002_and_client_1011() {
    let top_bit = [&[0x82, 127, 0x80][..], &[0; 7]].concat();
    run_backend_cases(vec![
        bad(
            "masked server frame",
            vec![0x81, 0x85, 1, 2, 3, 4],
            1002,
            1011,
        ),
        bad("RSV1 on text", vec![0xc1, 0x05], 1002, 1011),
        bad("RSV2 on binary", vec![0xa2, 0x05], 1002, 1011),
        bad("RSV3 on ping", vec![0x99, 0x00], 1002, 1011),
        bad("ping of 126 bytes", vec![0x89, 126, 0x00, 126], 1002, 1011),
        bad(
            "close of 300 bytes",
            vec![0x88, 126, 0x01, 0x2c],
            1002,
            1011,
        ),
        bad("ping with FIN=0", vec![0x09, 0x05], 1002, 1011),
        bad("opcode 0x3", vec![0x83, 0x05], 1002, 1011),
        bad("opcode 0xb", vec![0x8b, 0x05], 1002, 1011),
        bad("continuation without a start", vec![0x80, 0x05], 1002, 1011),
        bad("close code 1005", vec![0x88, 0x02, 0x03, 0xed], 1002, 1011),
        bad("64-bit length 2^63", top_bit, 1002, 1011),
    ]);
}

#[test]
fn backend_invalid_utf8_and_oversize_frames() {
    run_backend_cases(vec![
        bad("text not UTF-8", vec![0x81, 0x02, b'h', 0xff], 1007, 1011),
        bad(
            "text ends mid code point",
            vec![0x81, 0x02, b'a', 0xe2],
            1007,
            1011,
        ),
        bad(
            "close reason not UTF-8",
            vec![0x88, 0x03, 0x03, 0xe8, 0xff],
            1007,
            1011,
        ),
        bad(
            "16-bit length over the limit",
            vec![0x82, 126, 0xff, 0xff],
            1009,
            1001,
        ),
        bad(
            "64-bit length 2^40",
            frame(0x82, None, 1 << 40, b""),
            1009,
            1001,
        ),
    ]);
}
