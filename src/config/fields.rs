//! A small reader over `serde_json::Value` that collects *every* problem (not only the first, as
//! derived serde would). An unknown field is one of them, named by its full path with the
//! closest known field of its object: a misspelt `auth_requried` must never leave a route open.

use serde_json::{Map, Value};

/// Problems found so far: errors stop the load, warnings do not.
#[derive(Debug, Default)]
pub struct Report {
    /// One line each, naming the field.
    pub errors: Vec<String>,
    /// Skipped routers (of another Kairos protocol).
    pub warnings: Vec<String>,
}

/// The fields of one JSON object, read by name; `finish` reports the ones never read as errors.
/// The known fields of the object are the ones its reader asked for, so a reader asks for
/// every one of them before `finish`, whatever the values it found.
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

    /// Reports every field that was never read as an error (see [`unknown_fields`]).
    pub fn finish(self, report: &mut Report) {
        let prefix = format!("{}{}", self.ctx, self.path);
        unknown_fields(report, &prefix, self.map, &self.seen);
    }
}

/// Reports each field of `map` that is not in `known` as an error, `PREFIXNAME: unknown field`,
/// with the known field it is closest to (`did you mean "auth_required"?`), or, when none is
/// close, every known field of the object.
pub fn unknown_fields(report: &mut Report, prefix: &str, map: &Map<String, Value>, known: &[&str]) {
    let mut listed: Vec<&str> = Vec::new();
    for k in known {
        if !listed.contains(k) {
            listed.push(k);
        }
    }
    for key in map.keys().filter(|k| !listed.contains(&k.as_str())) {
        let hint = match closest(key, &listed) {
            Some(k) => format!("did you mean \"{k}\"?"),
            None => format!("known fields: {}", listed.join(", ")),
        };
        report.errors.push(format!(
            "{prefix}{}: unknown field; {hint}",
            key.escape_debug()
        ));
    }
}

/// The name in `known` closest to `name`, ignoring case, if it is close enough to be what was
/// meant: at most one edit (insertion, deletion, substitution or swap of two neighbours) per
/// three characters of `name`, and at least one (as rustc suggests names).
pub fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let len = name.chars().count();
    let limit = len.max(3) / 3;
    known
        .iter()
        // Names whose lengths differ by more than the limit are further apart than it (and a
        // huge unknown name costs nothing).
        .filter(|k| k.chars().count().abs_diff(len) <= limit)
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`, ignoring case
/// (the optimal string alignment distance).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    // Three rows of the table: two rows back (for swaps), the last one, and this one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    let mut row: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
        }
        std::mem::swap(&mut before, &mut last);
        std::mem::swap(&mut last, &mut row);
    }
    last[b.len()]
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
