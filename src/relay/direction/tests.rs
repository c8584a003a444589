//! A direction's buffer on a `require_json` route: it holds a large text frame whole (and
//! nothing else of it), then goes back to its usual size while bytes keep flowing.

use super::*;
use crate::relay::policy::{DirPolicy, Policy};
use crate::relay::side::Both;

/// A client direction checking text messages as JSON, with 4 MiB limits.
fn json_direction() -> (Direction, Rules) {
    let policy = Policy {
        require_json: true,
        ..Policy::default()
    };
    let rules = Rules {
        max_frame: 4 << 20,
        max_message: Both {
            client: 4 << 20,
            backend: 4 << 20,
        },
        deflate: false,
        idle_timeout: None,
        ping_interval: None,
        policy: Some(policy),
        expires: None,
    };
    let mut d = Direction::new(Side::Client);
    d.policy = Some(DirPolicy::new(policy, true, None));
    (d, rules)
}

/// A masked client text frame.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    f
}

/// Runs `input` through `d` as the relay's loop does for a peer that keeps sending (the
/// direction is never idle, so its buffer is never dropped for idleness): the output is
/// written at once, then the buffer is compacted or grown, then up to `chunk` bytes are read.
/// Returns the largest buffer held.
fn pump(d: &mut Direction, rules: &Rules, input: &[u8], chunk: usize) -> Result<usize, Violation> {
    let (mut at, mut largest) = (0, 0);
    loop {
        let n = d.ready - d.start;
        d.written(n);
        d.compact();
        d.grow_if_full();
        if at == input.len() {
            return Ok(largest);
        }
        let size = if d.busy { BUF } else { SMALL_BUF };
        let buf = d.buf.get_or_insert_with(|| Buf::new(size));
        largest = largest.max(buf.len());
        let space = buf.len() - d.end;
        assert!(space > 0, "no room to read");
        let n = space.min(chunk).min(input.len() - at);
        buf[d.end..d.end + n].copy_from_slice(&input[at..at + n]);
        d.busy |= n == space;
        d.end += n;
        at += n;
        d.process(rules, true, false).map_err(|(v, _)| v)?;
    }
}

fn capacity(d: &Direction) -> usize {
    d.buf.as_ref().map_or(0, |b| b.len())
}

#[test]
fn a_large_json_frame_is_held_whole_once_then_the_buffer_shrinks_back() {
    let (mut d, rules) = json_direction();
    let big = format!(r#"{{"data": "{}"}}"#, "x".repeat(1 << 20));
    let mut input = text_frame(big.as_bytes());
    let frame = input.len();
    for i in 0..200 {
        input.extend(text_frame(format!(r#"{{"n": {i}}}"#).as_bytes()));
    }
    let largest = pump(&mut d, &rules, &input, 64 * 1024).expect("valid JSON passes");
    assert_eq!(d.flow.messages.text, 201, "text messages passed");
    assert!(
        largest <= frame + BUF,
        "held {largest} bytes for a {frame}-byte frame"
    );
    assert!(
        capacity(&d) <= BUF,
        "{} bytes still held after it",
        capacity(&d)
    );
    // A small message that fills the small buffer does not bring the large one back.
    let more = text_frame(format!(r#"{{"s": "{}"}}"#, "y".repeat(3000)).as_bytes());
    let largest = pump(&mut d, &rules, &more, 64 * 1024).expect("valid JSON passes");
    assert!(largest <= BUF, "a 3 KB message took {largest} bytes");
}

#[test]
fn a_large_frame_that_is_not_json_is_refused_before_any_of_it_passes() {
    let (mut d, rules) = json_direction();
    let bad = format!(r#"{{"data": "{}}}"#, "x".repeat(1 << 20)); // no closing quote
    let input = text_frame(bad.as_bytes());
    let refused = pump(&mut d, &rules, &input, 64 * 1024);
    assert!(matches!(refused, Err(Violation::Invalid(_))), "{refused:?}");
    assert_eq!(d.flow.bytes, 0, "bytes of the invalid frame passed");
}
