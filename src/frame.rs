//! RFC 6455 frame headers, masking, and the checks the relay applies to every frame it passes
//! on. Pure functions and small state machines, no I/O.

/// Opcodes.
pub mod op {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// Longest frame header: 2 bytes, 8 bytes of length, 4 of mask.
pub const MAX_HEADER: usize = 14;

/// What a peer did wrong; each maps to its RFC 6455 close code and reason in one place,
/// `GatewayClose::Violation` in `error.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Breaks the framing rules.
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8.
    Utf8,
    /// A frame or message over the configured limits.
    TooBig(&'static str),
    /// A message of a type the route does not take.
    Unsupported(&'static str),
    /// A message whose content the route refuses, such as text that is not JSON.
    Invalid(&'static str),
    /// Over the route's message or byte rate.
    Policy(&'static str),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN bit.
    pub fin: bool,
    /// RSV1..3 as the top three bits of the first byte (`0x70` mask).
    pub rsv: u8,
    /// Opcode.
    pub opcode: u8,
    /// Masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
    /// Bytes the header takes on the wire.
    pub header_len: usize,
}

impl Header {
    /// Whether this is a control frame (close, ping, pong or reserved 0xB-0xF).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses the header at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let len = u64::from_be_bytes(a);
            if len >> 63 != 0 {
                return Err(Violation::Protocol("64-bit length with the top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(b) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([b[0], b[1], b[2], b[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        opcode: b0 & 0x0f,
        mask,
        len,
        header_len: at,
    }))
}

/// Writes a header into `out`; returns its length.
pub fn encode_header(
    out: &mut [u8; MAX_HEADER],
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
) -> usize {
    out[0] = if fin { 0x80 } else { 0 } | (opcode & 0x0f);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = match len {
        0..=125 => {
            out[1] = mask_bit | len as u8;
            2
        }
        126..=0xffff => {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&len.to_be_bytes());
            10
        }
    };
    if let Some(m) = mask {
        out[at..at + 4].copy_from_slice(&m);
        at += 4;
    }
    at
}

/// XORs `data` with `key`, starting at byte `offset` of the key cycle.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let k = [
        key[offset % 4],
        key[(offset + 1) % 4],
        key[(offset + 2) % 4],
        key[(offset + 3) % 4],
    ];
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// Incremental UTF-8 check across chunks and fragments; fails as soon as a byte makes the
/// text invalid (a code point split between chunks is carried over).
#[derive(Debug, Default, Clone)]
pub struct Utf8Check {
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Check {
    /// Feeds more bytes; false as soon as the text cannot be valid.
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        if self.carry_len > 0 {
            let have = usize::from(self.carry_len);
            let need = sequence_len(self.carry[0]).saturating_sub(have);
            let take = need.min(data.len());
            self.carry[have..have + take].copy_from_slice(&data[..take]);
            let now = have + take;
            data = &data[take..];
            match std::str::from_utf8(&self.carry[..now]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() && now < 4 => {
                    self.carry_len = now as u8;
                    return true;
                }
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let tail = &data[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the text ended on a complete code point.
    pub fn is_complete(&self) -> bool {
        self.carry_len == 0
    }

    /// Forgets any carried bytes (next message).
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }
}

/// Length of the UTF-8 sequence a lead byte starts (1 for invalid leads: they fail anyway).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Checks a close frame's (unmasked) payload: empty, or a valid code and a UTF-8 reason.
pub fn check_close_payload(p: &[u8]) -> Result<(), Violation> {
    match p.len() {
        0 => Ok(()),
        1 => Err(Violation::Protocol("close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !close_code_allowed(code) {
                return Err(Violation::Protocol("close frame with an invalid code"));
            }
            std::str::from_utf8(&p[2..]).map_err(|_| Violation::Utf8)?;
            Ok(())
        }
    }
}

/// The code a close frame without one counts as (RFC 6455 7.1.5; never sent on the wire).
pub const NO_CODE: u16 = 1005;

/// Codes a peer may send (RFC 6455 7.4; 1004-1006 and 1015 are never sent on the wire).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A close frame built by the gateway, masked with `mask` (towards a backend) or not.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    whole_frame(op::CLOSE, &payload, mask)
}

/// A whole (final) frame of `opcode` holding `payload`, masked with `mask` (towards a backend)
/// or not (towards a client).
pub fn whole_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut head = [0u8; MAX_HEADER];
    let n = encode_header(&mut head, true, opcode, mask, payload.len() as u64);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[n..], m, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for len in [0u64, 5, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut b = [0u8; MAX_HEADER];
                let n = encode_header(&mut b, true, op::BINARY, mask, len);
                let h = parse_header(&b[..n]).unwrap().unwrap();
                assert_eq!((h.len, h.mask, h.header_len, h.fin), (len, mask, n, true));
                assert_eq!(parse_header(&b[..n - 1]).unwrap(), None);
            }
        }
        let top = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(parse_header(&top).is_err());
    }

    #[test]
    fn mask_is_an_involution_at_any_offset() {
        let orig: Vec<u8> = (0..100u8).collect();
        let mut d = orig.clone();
        apply_mask(&mut d[..37], [9, 8, 7, 6], 0);
        apply_mask(&mut d[37..], [9, 8, 7, 6], 37);
        let mut slow = orig.clone();
        for (i, b) in slow.iter_mut().enumerate() {
            *b ^= [9, 8, 7, 6][i % 4];
        }
        assert_eq!(d, slow);
    }

    #[test]
    fn utf8_split_anywhere() {
        let text = "héllo wörld €𝄞 ok".as_bytes();
        for cut in 0..text.len() {
            for cut2 in cut..text.len() {
                let mut c = Utf8Check::default();
                assert!(c.feed(&text[..cut]) && c.feed(&text[cut..cut2]) && c.feed(&text[cut2..]));
                assert!(c.is_complete());
            }
        }
        let mut c = Utf8Check::default();
        assert!(c.feed(&[0xf4]));
        assert!(!c.feed(&[0x90])); // over U+10FFFF: fails at once
        let mut c = Utf8Check::default();
        assert!(c.feed(&[0xe2, 0x82]));
        assert!(!c.is_complete());
        assert!(!Utf8Check::default().feed(&[0xff]));
    }

    #[test]
    fn close_payload_checks() {
        assert!(check_close_payload(&[]).is_ok());
        assert!(check_close_payload(&[3]).is_err());
        assert!(check_close_payload(&1000u16.to_be_bytes()).is_ok());
        assert!(check_close_payload(&999u16.to_be_bytes()).is_err());
        assert!(check_close_payload(&1005u16.to_be_bytes()).is_err());
        assert!(check_close_payload(&[0x03, 0xe8, 0xff]).is_err());
        let f = close_frame(1001, "bye", None);
        assert_eq!(f, [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
    }
}
