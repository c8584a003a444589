//! `message_transform` inside the relay: a direction's rules, with the values known at connect
//! time (the token's claims, the connection's id, the client's address, the route) filled in,
//! applied to each whole text message that is a JSON object.
//!
//! Which messages: a text message whose first non-blank character is `{` is collected whole
//! and must be a JSON object (else 1007): a message the gateway cannot read must not reach the
//! other side untransformed, where a more lenient parser might read a spoofed member in it.
//! Any other text message, and every binary one, streams through unchanged, frame by frame.

use serde_json::{Map, Value};

use crate::config::{Pointer, Rule, Source};
use crate::frame::Violation;

/// What a connection's rules need to know about it.
pub struct Context<'a> {
    /// The verified token's claims (on an `auth_required` route).
    pub claims: Option<&'a Map<String, Value>>,
    /// The connection's id.
    pub id: u64,
    /// The client's address, as `trusted_proxies` decides it.
    pub client: std::net::IpAddr,
    /// The route's `external_path`.
    pub route: &'a str,
}

/// One rule, ready to apply.
#[derive(Debug)]
enum Op {
    Set(Pointer, Value),
    SetReceivedAt(Pointer),
    Remove(Pointer),
    Rename(Pointer, Pointer),
}

/// A direction's rules for one connection.
#[derive(Debug)]
pub struct Transformer {
    ops: Vec<Op>,
    /// `message_transform.max_message_bytes`.
    max: usize,
}

/// Why a message could not be transformed (the sender gets 1007 with this reason).
const NOT_AN_OBJECT: &str = "message_transform: a message starting with { must be a JSON object";
const THROUGH: &str = "message_transform: a rule's path goes through a value that is not an object";

impl Transformer {
    /// `rules` for one connection, for messages of at most `max` bytes; `Err(claim)` when the
    /// token lacks a claim a rule takes.
    pub fn new(rules: &[Rule], max: usize, cx: &Context<'_>) -> Result<Transformer, String> {
        let mut ops = Vec::with_capacity(rules.len());
        for rule in rules {
            ops.push(match rule {
                Rule::Set(p, source) => match source {
                    Source::Claim(c) => match cx.claims.and_then(|m| m.get(c)) {
                        Some(v) => Op::Set(p.clone(), v.clone()),
                        None => return Err(c.clone()),
                    },
                    Source::ConnectionId => Op::Set(p.clone(), cx.id.into()),
                    Source::ClientAddress => Op::Set(p.clone(), cx.client.to_string().into()),
                    Source::Route => Op::Set(p.clone(), cx.route.into()),
                    Source::ReceivedAt => Op::SetReceivedAt(p.clone()),
                    Source::Value(v) => Op::Set(p.clone(), v.clone()),
                },
                Rule::Remove(p) => Op::Remove(p.clone()),
                Rule::Rename(p, q) => Op::Rename(p.clone(), q.clone()),
            });
        }
        Ok(Transformer { ops, max })
    }

    /// The largest message the rules are applied to (a larger one that starts with `{` is
    /// refused with 1009).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether a text message whose first frame's payload is `first` is collected whole:
    /// its first non-blank byte is `{`, or the frame has none yet.
    pub fn wants(first: impl IntoIterator<Item = u8>) -> bool {
        let mut bytes = first.into_iter();
        match bytes.find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            Some(b) => b == b'{',
            None => true,
        }
    }

    /// The whole message `text` transformed: `Ok(None)` when it passes unchanged (it does not
    /// start with `{`), else its new payload (compact JSON).
    pub fn apply(&self, text: &[u8]) -> Result<Option<Vec<u8>>, Violation> {
        let text = std::str::from_utf8(text).map_err(|_| Violation::Utf8)?;
        if !Transformer::wants(text.bytes()) || text.trim().is_empty() {
            return Ok(None);
        }
        let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(text) else {
            return Err(Violation::Invalid(NOT_AN_OBJECT));
        };
        let mut now = None;
        for op in &self.ops {
            let done = match op {
                Op::Set(p, v) => set(&mut doc, p, v.clone()),
                Op::SetReceivedAt(p) => {
                    let at = now.get_or_insert_with(|| crate::clock::rfc3339_now().into());
                    set(&mut doc, p, Value::clone(at))
                }
                Op::Remove(p) => {
                    take(&mut doc, p);
                    true
                }
                Op::Rename(p, q) => match take(&mut doc, p) {
                    Some(v) => set(&mut doc, q, v),
                    None => true,
                },
            };
            if !done {
                return Err(Violation::Invalid(THROUGH));
            }
        }
        serde_json::to_vec(&Value::Object(doc))
            .map(Some)
            .map_err(|_| Violation::Invalid(NOT_AN_OBJECT))
    }
}

/// Sets `p` to `v`, creating missing parent objects; false when a parent is not an object.
fn set(doc: &mut Map<String, Value>, p: &Pointer, v: Value) -> bool {
    let Some((last, parents)) = p.tokens.split_last() else {
        return false;
    };
    let mut at = doc;
    for token in parents {
        let next = at
            .entry(token.as_str())
            .or_insert_with(|| Value::Object(Map::new()));
        match next {
            Value::Object(m) => at = m,
            _ => return false,
        }
    }
    at.insert(last.clone(), v);
    true
}

/// Takes the value at `p` out (the other members keep their order); `None` when there is none.
fn take(doc: &mut Map<String, Value>, p: &Pointer) -> Option<Value> {
    let (last, parents) = p.tokens.split_last()?;
    let mut at = doc;
    for token in parents {
        match at.get_mut(token.as_str()) {
            Some(Value::Object(m)) => at = m,
            _ => return None,
        }
    }
    at.shift_remove(last.as_str())
}

#[cfg(test)]
mod tests;
