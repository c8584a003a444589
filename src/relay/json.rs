//! The JSON check of `message_filter.require_json`: RFC 8259's grammar as a state machine fed
//! a message's bytes as its frames pass, in a few bytes of state (the nesting is a bit stack
//! of [`MAX_DEPTH`] bits): no copy of the message is kept.
//!
//! It accepts exactly what `serde_json::from_slice::<serde::de::IgnoredAny>` accepts (tested
//! against it), but for nesting deeper than [`MAX_DEPTH`], which it refuses. Like serde_json
//! it leaves the UTF-8 of strings alone: the relay checks a text message's UTF-8 itself.

/// How deep arrays and objects may nest: as deep as serde_json parses into a value
/// (`serde_json::Value` or a struct; its recursion limit of 128 refuses the 128th level). A
/// deeper message is refused: many parsers would refuse it too, and a recursive one could fail
/// on it.
pub const MAX_DEPTH: u32 = 127;

/// Where the check is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a value (whitespace allowed).
    Value,
    /// After `[`: a value or `]`.
    FirstItem,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,`, a closing bracket, or (at the top) the end.
    AfterValue,
    /// Inside a string (a key when `key`).
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// In a `\u` escape, `left` hex digits to go.
    Hex { key: bool, left: u8 },
    /// In `true`, `false` or `null`: the bytes still to come.
    Literal(&'static [u8]),
    /// In a number.
    Number(Num),
    /// Not JSON.
    Invalid,
}

/// Where a number is: `-`, `0`, digits after 1-9, `.`, fraction digits, `e`, its sign, its
/// digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Point,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    /// The number after `b`, or `None` when `b` is not part of it.
    fn next(self, b: u8) -> Option<Num> {
        use Num::*;
        Some(match (self, b) {
            (Minus, b'0') => Zero,
            (Minus, b'1'..=b'9') | (Int, b'0'..=b'9') => Int,
            (Zero | Int, b'.') => Point,
            (Point | Frac, b'0'..=b'9') => Frac,
            (Zero | Int | Frac, b'e' | b'E') => E,
            (E, b'+' | b'-') => ESign,
            (E | ESign | Exp, b'0'..=b'9') => Exp,
            _ => return None,
        })
    }

    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

/// A JSON text being checked, one byte at a time.
#[derive(Debug, Clone)]
pub struct JsonCheck {
    state: State,
    /// Open arrays and objects.
    depth: u32,
    /// Bit `i`: the container at depth `i + 1` is an object (else an array).
    objects: u128,
}

impl Default for JsonCheck {
    fn default() -> Self {
        JsonCheck {
            state: State::Value,
            depth: 0,
            objects: 0,
        }
    }
}

impl JsonCheck {
    /// Feeds the next bytes; false once the text cannot be JSON any more.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed_byte(b))
    }

    /// Feeds one byte; false once the text cannot be JSON any more.
    pub fn feed_byte(&mut self, b: u8) -> bool {
        self.state = self.next(b);
        self.state != State::Invalid
    }

    /// Whether the bytes fed so far are one whole JSON text.
    pub fn is_complete(&self) -> bool {
        self.depth == 0
            && match self.state {
                State::AfterValue => true,
                State::Number(n) => n.complete(),
                _ => false,
            }
    }

    fn next(&mut self, b: u8) -> State {
        use State::*;
        match self.state {
            Str { key } => match b {
                b'"' if key => Colon,
                b'"' => AfterValue,
                b'\\' => Escape { key },
                0..=0x1f => Invalid,
                _ => Str { key },
            },
            Escape { key } => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Str { key },
                b'u' => Hex { key, left: 4 },
                _ => Invalid,
            },
            Hex { key, left } if b.is_ascii_hexdigit() => match left {
                1 => Str { key },
                _ => Hex {
                    key,
                    left: left - 1,
                },
            },
            Literal([first, rest @ ..]) if *first == b => match rest {
                [] => AfterValue,
                _ => Literal(rest),
            },
            Number(n) => match n.next(b) {
                Some(n) => Number(n),
                None if n.complete() => {
                    self.state = AfterValue;
                    self.next(b)
                }
                None => Invalid,
            },
            Hex { .. } | Literal(_) | Invalid => Invalid,
            s if matches!(b, b' ' | b'\t' | b'\n' | b'\r') => s,
            Value => self.value(b),
            FirstItem if b == b']' => self.close(false),
            FirstItem => self.value(b),
            FirstKey if b == b'}' => self.close(true),
            FirstKey | Key if b == b'"' => Str { key: true },
            Colon if b == b':' => Value,
            AfterValue => match b {
                b',' if self.depth > 0 && self.in_object() => Key,
                b',' if self.depth > 0 => Value,
                b']' => self.close(false),
                b'}' => self.close(true),
                _ => Invalid,
            },
            FirstKey | Key | Colon => Invalid,
        }
    }

    /// The state after `b`, the first byte of a value.
    fn value(&mut self, b: u8) -> State {
        use State::*;
        match b {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => Str { key: false },
            b't' => Literal(b"rue"),
            b'f' => Literal(b"alse"),
            b'n' => Literal(b"ull"),
            b'-' => Number(Num::Minus),
            b'0' => Number(Num::Zero),
            b'1'..=b'9' => Number(Num::Int),
            _ => Invalid,
        }
    }

    fn in_object(&self) -> bool {
        self.objects >> (self.depth - 1) & 1 == 1
    }

    fn open(&mut self, object: bool) -> State {
        if self.depth >= MAX_DEPTH {
            return State::Invalid;
        }
        let bit = 1u128 << self.depth;
        if object {
            self.objects |= bit;
        } else {
            self.objects &= !bit;
        }
        self.depth += 1;
        if object {
            State::FirstKey
        } else {
            State::FirstItem
        }
    }

    fn close(&mut self, object: bool) -> State {
        if self.depth == 0 || self.in_object() != object {
            return State::Invalid;
        }
        self.depth -= 1;
        State::AfterValue
    }
}

#[cfg(test)]
mod tests;
