//! `message_transform`: rules that rewrite a route's JSON text messages, one list per
//! direction, applied in order. Paths are JSON Pointers (RFC 6901).

use serde_json::Value;

use super::fields::{At, Fields, Object};

/// A JSON Pointer (RFC 6901), decoded: its reference tokens in order. Never empty: a rule
/// names a member, not the whole message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pointer {
    /// The reference tokens (`~1` decoded to `/`, `~0` to `~`).
    pub tokens: Vec<String>,
    /// As written in the config (for logs).
    pub text: String,
}

impl Pointer {
    /// Parses `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pointer, &'static str> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(match text {
                "" => "names the whole message: a rule needs a member, such as \"/from\"",
                _ => "not a JSON Pointer: it must start with / (\"/from\", \"/meta/user\")",
            });
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => token.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => {
                            return Err("not a JSON Pointer: ~ must be followed by 0 (~) or 1 (/)")
                        }
                    },
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            tokens,
            text: text.to_string(),
        })
    }
}

/// Where a `set` rule's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `from_claim`: a claim of the verified token (the route needs `auth_required`).
    Claim(String),
    /// `"from": "connection_id"`: the gateway's id of the connection (a number).
    ConnectionId,
    /// `"from": "client_address"`: the client's address as `trusted_proxies` decides it.
    ClientAddress,
    /// `"from": "route"`: the route's `external_path`.
    Route,
    /// `"from": "received_at"`: when the gateway had the whole message (RFC 3339, UTC, ms).
    ReceivedAt,
    /// `value`: a constant.
    Value(Value),
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `{"set": P, ...}`: P gets the value (missing parent objects are created).
    Set(Pointer, Source),
    /// `{"remove": P}`.
    Remove(Pointer),
    /// `{"rename": P, "to": Q}`: P's value moves to Q (nothing happens when P is absent).
    Rename(Pointer, Pointer),
}

/// The default of `message_transform.max_message_bytes`.
pub const DEFAULT_TRANSFORM_MAX: usize = 1024 * 1024;

/// `message_transform`: the rules for each direction.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageTransform {
    /// `client_to_backend`: applied to the client's messages.
    pub client_to_backend: Vec<Rule>,
    /// `backend_to_client`: applied to the backend's messages.
    pub backend_to_client: Vec<Rule>,
    /// `max_message_bytes` (1 MiB): the largest message the rules are applied to. A message
    /// is parsed and written again on its worker thread, without a pause: this bounds how long
    /// one message can hold the thread's other connections up.
    pub max_message_bytes: usize,
}

impl Default for MessageTransform {
    /// No rules, the default size.
    fn default() -> MessageTransform {
        MessageTransform {
            client_to_backend: Vec::new(),
            backend_to_client: Vec::new(),
            max_message_bytes: DEFAULT_TRANSFORM_MAX,
        }
    }
}

impl MessageTransform {
    /// The claims its rules take from the token, each once.
    pub fn claims(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for rule in self.client_to_backend.iter().chain(&self.backend_to_client) {
            if let Rule::Set(_, Source::Claim(c)) = rule {
                if !names.contains(&c.as_str()) {
                    names.push(c);
                }
            }
        }
        names
    }
}

impl Object for MessageTransform {
    fn fields(&mut self, f: &mut Fields) {
        f.any("client_to_backend", |v, at| {
            self.client_to_backend = rules(v, at)
        });
        f.any("backend_to_client", |v, at| {
            self.backend_to_client = rules(v, at)
        });
        f.int("max_message_bytes", 16, 1 << 30, |n| {
            self.max_message_bytes = n as usize
        });
    }
}

/// A list of rules; each that has a problem is reported (by index) and left out.
fn rules(v: &Value, at: &mut At) -> Vec<Rule> {
    let Some(list) = v.as_array() else {
        at.fail(format_args!(
            "must be an array of rules such as {{\"set\": \"/from\", \"from_claim\": \"sub\"}}"
        ));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let errors = at.errors();
        let spec: Option<Spec> = at.item(i, item);
        if let Some(rule) = spec.and_then(|s| s.rule) {
            if at.errors() == errors {
                out.push(rule);
            }
        }
    }
    out
}

/// A rule as written: every field a rule may have, then one check that they make one rule.
#[derive(Default)]
struct Spec {
    rule: Option<Rule>,
}

impl Object for Spec {
    fn fields(&mut self, f: &mut Fields) {
        let (mut set, mut remove, mut rename, mut to) = (None, None, None, None);
        let mut source: Vec<(&str, Source)> = Vec::new();
        f.text("set", |p, at| set = pointer(p, at));
        f.text("from_claim", |c, at| match c.is_empty() {
            true => at.fail("must name a claim, such as \"sub\""),
            false => source.push(("from_claim", Source::Claim(c.to_string()))),
        });
        f.text("from", |name, at| match from(name) {
            Some(s) => source.push(("from", s)),
            None => at.fail(format_args!(
                "{name:?} is not \"connection_id\", \"client_address\", \"route\" or \"received_at\""
            )),
        });
        f.any("value", |v, _| {
            source.push(("value", Source::Value(v.clone())))
        });
        f.text("remove", |p, at| remove = pointer(p, at));
        f.text("rename", |p, at| rename = pointer(p, at));
        f.text("to", |p, at| to = pointer(p, at));
        let given = ["set", "remove", "rename"].map(|k| f.given(k));
        let given_to = f.given("to");
        let at = f.at();
        self.rule = match (given, set, remove, rename) {
            ([true, false, false], Some(p), _, _) => match source.len() {
                1 => source.pop().map(|(_, s)| Rule::Set(p, s)),
                0 => fail(at, "set", "needs its value: from_claim, from or value"),
                _ => fail(at, "set", "takes one of from_claim, from and value, not several"),
            },
            ([false, true, false], _, Some(p), _) => Some(Rule::Remove(p)),
            ([false, false, true], _, _, Some(p)) => match to {
                Some(q) => Some(Rule::Rename(p, q)),
                None if !given_to => fail(at, "to", "is required by rename"),
                None => None, // reported where it was read
            },
            ([false, false, false], ..) => fail(
                at,
                "set",
                "a rule needs one of set, remove and rename (\"set\": \"/from\", \"from_claim\": \"sub\")",
            ),
            (g, ..) if g.iter().filter(|on| **on).count() > 1 => {
                fail(at, "set", "a rule does one thing: one of set, remove and rename")
            }
            _ => None, // a pointer with a problem: reported where it was read
        };
        if let (Some(Rule::Remove(_) | Rule::Rename(..)), Some((key, _))) =
            (&self.rule, source.first())
        {
            at.error(key, "only goes with set");
        }
        if given_to && matches!(self.rule, Some(Rule::Set(..) | Rule::Remove(_))) {
            at.error("to", "only goes with rename");
        }
    }
}

/// Reports `msg` for field `key` of the rule; no rule.
fn fail(at: &mut At, key: &str, msg: &str) -> Option<Rule> {
    at.error(key, msg);
    None
}

/// `text` as a pointer, or `None` with its problem reported.
fn pointer(text: &str, at: &mut At) -> Option<Pointer> {
    Pointer::parse(text).map_err(|why| at.fail(why)).ok()
}

/// The `from` source named `name`.
fn from(name: &str) -> Option<Source> {
    Some(match name {
        "connection_id" => Source::ConnectionId,
        "client_address" => Source::ClientAddress,
        "route" => Source::Route,
        "received_at" => Source::ReceivedAt,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The problems of a config whose one route has `route_extra` fields.
    fn problems(route_extra: Value) -> Vec<String> {
        let mut route = json!({"protocol": "websocket", "external_path": "/ws/chat",
            "internal_path": "/", "methods": ["GET"], "backends": [{"host": "ws://h", "port": 1}]});
        for (k, v) in route_extra.as_object().unwrap() {
            route[k] = v.clone();
        }
        let cfg = json!({"version": 1, "jwt": {"secret": "0123456789abcdef0123456789abcdef"},
            "routers": [route]});
        match crate::config::parse(&cfg.to_string(), std::path::Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn mistakes_name_the_rule_and_the_field() {
        let rules = |list: Value| json!({"message_transform": {"client_to_backend": list}});
        let cases = [
            (json!([{"remove": "/a"}, {"set": "from", "value": 1}]),
             "routers[0] (/ws/chat): message_transform.client_to_backend[1].set: not a JSON Pointer: it must start with /"),
            (json!([{"set": "/a"}]),
             "message_transform.client_to_backend[0].set: needs its value: from_claim, from or value"),
            (json!([{"set": "/a", "value": 1, "from": "route"}]),
             "message_transform.client_to_backend[0].set: takes one of from_claim, from and value"),
            (json!([{"set": "/a", "from": "time"}]),
             "message_transform.client_to_backend[0].from: \"time\" is not \"connection_id\""),
            (json!([{"rename": "/a"}]), "message_transform.client_to_backend[0].to: is required by rename"),
            (json!([{"remove": "/a", "value": 1}]), "message_transform.client_to_backend[0].value: only goes with set"),
            (json!([{"remove": "/a", "to": "/b"}]), "message_transform.client_to_backend[0].to: only goes with rename"),
            (json!([{"remove": "/a", "rename": "/b", "to": "/c"}]), "a rule does one thing"),
            (json!([{"remvoe": "/a"}]), "client_to_backend[0].remvoe: unknown field; did you mean \"remove\"?"),
            (json!([{}]), "needs one of set, remove and rename"),
            (json!([5]), "client_to_backend[0]"),
            (json!({"set": "/a"}), "message_transform.client_to_backend: must be an array of rules"),
            (json!([{"set": "", "value": 1}]), "names the whole message"),
        ];
        for (list, want) in cases {
            let found = problems(rules(list.clone()));
            assert!(found.iter().any(|p| p.contains(want)), "{list}: {found:?}");
        }
        let typo = problems(json!({"message_transform": {"client_to_backnd": []}}));
        assert!(
            typo[0].contains("message_transform.client_to_backnd: unknown field"),
            "{typo:?}"
        );
    }

    #[test]
    fn a_claim_needs_auth_required() {
        let rule = json!({"client_to_backend": [{"set": "/from", "from_claim": "sub"}]});
        let found = problems(json!({"message_transform": rule.clone()}));
        assert!(found[0].contains("message_transform: a rule sets a value from_claim \"sub\", which needs auth_required"), "{found:?}");
        assert!(problems(json!({"message_transform": rule, "auth_required": true})).is_empty());
    }

    #[test]
    fn pointers() {
        let p = Pointer::parse("/a~1b/c~0d/").unwrap();
        assert_eq!(p.tokens, ["a/b", "c~d", ""]);
        assert!(Pointer::parse("").is_err());
        assert!(Pointer::parse("from").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert!(Pointer::parse("/a~").is_err());
    }
}
