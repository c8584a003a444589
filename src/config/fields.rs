//! A small reader over `serde_json::Value` that collects *every* problem (not only the first, as
//! derived serde would) and warns about unknown fields by their full path.

use serde_json::{Map, Value};

/// Problems found so far: errors stop the load, warnings do not.
#[derive(Debug, Default)]
pub struct Report {
    /// One line each, naming the field.
    pub errors: Vec<String>,
    /// Unknown fields and skipped routers.
    pub warnings: Vec<String>,
}

/// The fields of one JSON object, read by name; `finish` warns about the ones never read.
pub struct Fields<'a> {
    /// Prefix for messages, e.g. `routers[2] (/ws/chat): ` (may be empty).
    ctx: String,
    /// Path of this object from the root, e.g. `routers[2].` (may be empty).
    path: String,
    map: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Reads `value` as an object; reports an error and returns `None` if it is not one.
    pub fn new(ctx: &str, path: &str, value: &'a Value, report: &mut Report) -> Option<Self> {
        match value.as_object() {
            Some(map) => Some(Fields {
                ctx: ctx.to_string(),
                path: path.to_string(),
                map,
                seen: Vec::new(),
            }),
            None => {
                // `routers[2] (?): ` already names a router; only the root needs a name.
                let name = match path.trim_end_matches('.') {
                    "" if ctx.is_empty() => "the config: ".to_string(),
                    "" => String::new(),
                    name => format!("{name}: "),
                };
                report.errors.push(format!(
                    "{ctx}{name}must be a JSON object, found {}",
                    kind(value)
                ));
                None
            }
        }
    }

    /// The full name of a field, for messages.
    pub fn name(&self, key: &str) -> String {
        format!("{}{}{}", self.ctx, self.path, key)
    }

    /// The raw value of a field (`null` counts as present).
    pub fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key)
    }

    /// Records an error about `key` (`parse` escapes the control characters of every problem,
    /// so that each prints as one line).
    pub fn error(&self, report: &mut Report, key: &str, msg: impl std::fmt::Display) {
        report.errors.push(format!("{}: {msg}", self.name(key)));
    }

    /// An optional string field.
    pub fn string(&mut self, report: &mut Report, key: &'static str) -> Option<&'a str> {
        match self.raw(key)? {
            Value::String(s) => Some(s),
            other => {
                self.error(
                    report,
                    key,
                    format!("must be a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A required string field.
    pub fn required_string(&mut self, report: &mut Report, key: &'static str) -> Option<&'a str> {
        if !self.map.contains_key(key) {
            self.seen.push(key);
            self.error(report, key, "is required");
            return None;
        }
        self.string(report, key)
    }

    /// An optional boolean field.
    pub fn bool(&mut self, report: &mut Report, key: &'static str, default: bool) -> bool {
        match self.raw(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.error(
                    report,
                    key,
                    format!("must be true or false, found {}", kind(other)),
                );
                default
            }
        }
    }

    /// An optional integer field within `min..=max`.
    pub fn int(
        &mut self,
        report: &mut Report,
        key: &'static str,
        min: u64,
        max: u64,
        default: u64,
    ) -> u64 {
        match self.raw(key) {
            None => default,
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.error(
                        report,
                        key,
                        format!("must be an integer from {min} to {max}, found {v}"),
                    );
                    default
                }
            },
        }
    }

    /// An optional array of strings.
    pub fn strings(&mut self, report: &mut Report, key: &'static str) -> Option<Vec<&'a str>> {
        let v = self.raw(key)?;
        let list = v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>());
        if list.is_none() {
            self.error(
                report,
                key,
                format!("must be an array of strings, found {v}"),
            );
        }
        list
    }

    /// Warns about every field that was never read.
    pub fn finish(self, report: &mut Report) {
        for key in self.map.keys() {
            if !self.seen.contains(&key.as_str()) {
                report.warnings.push(format!(
                    "{}{}{}: unknown field, ignored",
                    self.ctx,
                    self.path,
                    key.escape_debug()
                ));
            }
        }
    }
}

/// A JSON value's kind, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `line` with its control characters (line breaks in a quoted path, say) escaped, so that a
/// problem always prints as one line.
pub fn one_line(line: String) -> String {
    if !line.chars().any(char::is_control) {
        return line;
    }
    let mut escaped = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    escaped
}
