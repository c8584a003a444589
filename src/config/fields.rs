//! How every block of the config is read. A type declares its fields once, in its
//! [`Object::fields`]: one line per field, naming it, its check (type, range) and where its
//! value goes (its default is the type's `Default`); then its checks across fields. [`read`]
//! walks a JSON object with it and reports *every* problem, each naming the field's full path
//! and what to fix: a wrong type or range, a missing required field, and an unknown field
//! (with the closest known one: a misspelt `auth_requried` must never leave a route open).
//!
//! Field lines rather than derived serde, which stops at the first problem and names no path;
//! and rather than a static table of setters, whose function pointers cost relocations and
//! unwind entries (bench/results/config-mechanism.md has the sizes of the three).

use std::fmt::Display;

use serde_json::{Map, Value};

use super::Env;

/// Problems found so far: errors stop the load, warnings do not.
#[derive(Debug, Default)]
pub struct Report {
    /// One line each, naming the field.
    pub errors: Vec<String>,
    /// Skipped routers (of another Kairos protocol).
    pub warnings: Vec<String>,
}

/// A JSON object of the config, read by [`read`].
pub trait Object: Default {
    /// Reads the fields, one line each (`f.int("port", 0, 65535, |n| self.port = n as u16)`),
    /// in the order their problems are reported and known fields are listed; then checks
    /// across fields (`f.at().error("sticky.key", ...)`).
    fn fields(&mut self, f: &mut Fields);
}

/// Reads `v` as a `T`: [`Object::fields`], then every unknown field. `None` when `v` is not
/// an object (reported); else the object, each field that had a problem (reported) left at
/// its default.
pub fn read<T: Object>(v: &Value, at: &mut At) -> Option<T> {
    let map = at.as_object(v)?;
    let mut t = T::default();
    let mut f = Fields::new(map, at.child(""));
    t.fields(&mut f);
    f.finish();
    Some(t)
}

/// Where the reader is: the message prefix of the object being read
/// (`routers[2] (/ws/chat): backends[0].`), the field being read, the report, and the
/// [`Env`] of the whole load.
pub struct At<'r> {
    prefix: String,
    key: &'static str,
    report: &'r mut Report,
    /// What the load was given besides the text.
    pub env: &'r Env<'r>,
}

impl<'r> At<'r> {
    /// The root: no prefix.
    pub fn root(report: &'r mut Report, env: &'r Env<'r>) -> Self {
        At {
            prefix: String::new(),
            key: "",
            report,
            env,
        }
    }

    /// Where an object nested here is read: `prefix` is its own (`backends[0].`, or
    /// `routers[2] (/ws/chat): `), after this object's.
    pub fn child(&mut self, prefix: &str) -> At<'_> {
        At {
            prefix: format!("{}{prefix}", self.prefix),
            key: "",
            report: self.report,
            env: self.env,
        }
    }

    /// The full name of the field being read (`routers[2] (/ws/chat): retry.max_retries`).
    pub fn name(&self) -> String {
        format!("{}{}", self.prefix, self.key)
    }

    /// Reports a problem of the field being read.
    pub fn fail(&mut self, msg: impl Display) {
        let line = format!("{}: {msg}", self.name());
        self.report.errors.push(line);
    }

    /// Reports a problem of field `key` of this object (a check across fields).
    pub fn error(&mut self, key: &str, msg: impl Display) {
        let line = format!("{}{key}: {msg}", self.prefix);
        self.report.errors.push(line);
    }

    /// Reports a problem that names its place itself.
    pub fn problem(&mut self, line: String) {
        self.report.errors.push(line);
    }

    /// Records a warning.
    pub fn warn(&mut self, line: String) {
        self.report.warnings.push(line);
    }

    /// Reports each field of `map`, the value of the field being read, that is not in `known`.
    pub fn unknown_fields(&mut self, map: &Map<String, Value>, known: &[&str]) {
        let prefix = format!("{}.", self.name());
        unknown_fields(self.report, &prefix, map, known);
    }

    /// Errors reported so far (to tell whether a part was read without one).
    pub fn errors(&self) -> usize {
        self.report.errors.len()
    }

    /// Reads the value of the field being read as an object of type `T`.
    pub fn object<T: Object>(&mut self, v: &Value) -> Option<T> {
        let prefix = format!("{}.", self.key);
        read(v, &mut self.child(&prefix))
    }

    /// Reads item `i` of the array being read as an object of type `T` (its fields are
    /// named `key[i].field`).
    pub fn item<T: Object>(&mut self, i: usize, v: &Value) -> Option<T> {
        let prefix = format!("{}[{i}].", self.key);
        read(v, &mut self.child(&prefix))
    }

    /// `v` as an object, or `None` with the problem reported.
    fn as_object<'v>(&mut self, v: &'v Value) -> Option<&'v Map<String, Value>> {
        if let Value::Object(map) = v {
            return Some(map);
        }
        // `routers[2] (?): ` already names a router; only the root needs a name.
        let name = match self.prefix.strip_suffix('.') {
            Some(path) => format!("{path}: "),
            None if self.prefix.is_empty() => "the config: ".to_string(),
            None => self.prefix.clone(),
        };
        let line = format!("{name}must be a JSON object, found {}", kind(v));
        self.report.errors.push(line);
        None
    }
}

/// The fields of one JSON object, asked for by name; every name asked for is a known field,
/// and [`read`] reports the others. A setter gets the checked value (and, to refuse it with
/// [`At::fail`], the [`At`] of the field).
pub struct Fields<'a, 'r> {
    map: &'a Map<String, Value>,
    at: At<'r>,
    seen: Vec<&'static str>,
    /// The message when the next field asked for is missing (`None`: it is optional).
    need: Option<&'static str>,
}

impl<'a, 'r> Fields<'a, 'r> {
    fn new(map: &'a Map<String, Value>, at: At<'r>) -> Self {
        Fields {
            map,
            at,
            seen: Vec::new(),
            need: None,
        }
    }

    /// The next field asked for must be there; `message` says so (`"is required (1-65535)"`).
    pub fn required(&mut self, message: &'static str) -> &mut Self {
        self.need = Some(message);
        self
    }

    /// An integer from `min` to `max`.
    pub fn int(&mut self, name: &'static str, min: u64, max: u64, set: impl FnOnce(u64)) {
        if let Some(Got::Int(n)) = self.take(name, Shape::Int(min, max)) {
            set(n);
        }
    }

    /// `true` or `false`.
    pub fn flag(&mut self, name: &'static str, set: impl FnOnce(bool)) {
        if let Some(Got::Bool(b)) = self.take(name, Shape::Bool) {
            set(b);
        }
    }

    /// A string.
    pub fn text(&mut self, name: &'static str, set: impl FnOnce(&'a str, &mut At)) {
        if let Some(Got::Str(s)) = self.take(name, Shape::Str) {
            set(s, &mut self.at);
        }
    }

    /// An array of strings.
    pub fn texts(&mut self, name: &'static str, set: impl FnOnce(Vec<&'a str>, &mut At)) {
        if let Some(Got::Strs(list)) = self.take(name, Shape::Strs) {
            set(list, &mut self.at);
        }
    }

    /// Any value: the setter checks it (a block with a type of its own: [`At::object`]).
    pub fn any(&mut self, name: &'static str, set: impl FnOnce(&'a Value, &mut At)) {
        if let Some(Got::Any(v)) = self.take(name, Shape::Any) {
            set(v, &mut self.at);
        }
    }

    /// A block with no type of its own: `fields` reads its fields (into the object that
    /// holds it).
    pub fn nested(&mut self, name: &'static str, fields: impl FnOnce(&mut Fields)) {
        let Some(Got::Any(v)) = self.take(name, Shape::Any) else {
            return;
        };
        let mut at = self.at.child(&format!("{name}."));
        if let Some(map) = at.as_object(v) {
            let mut inner = Fields::new(map, at);
            fields(&mut inner);
            inner.finish();
        }
    }

    /// Whether field `name` is in the object as written (for defaults that depend on it).
    pub fn given(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Where problems of this object go (a check across fields: `f.at().error(...)`).
    pub fn at(&mut self) -> &mut At<'r> {
        &mut self.at
    }

    /// Marks `name` known and, when it is there, checks it against `shape`: `None` when it is
    /// missing or wrong (reported).
    fn take(&mut self, name: &'static str, shape: Shape) -> Option<Got<'a>> {
        self.seen.push(name);
        self.at.key = name;
        let need = self.need.take();
        match (self.map.get(name), need) {
            (Some(v), _) => check(shape, v, &mut self.at),
            (None, Some(msg)) => {
                self.at.fail(msg);
                None
            }
            (None, None) => None,
        }
    }

    /// Reports every field that was never asked for.
    fn finish(self) {
        let At { prefix, report, .. } = self.at;
        unknown_fields(report, &prefix, self.map, &self.seen);
    }
}

/// What a field must hold.
#[derive(Clone, Copy)]
enum Shape {
    Int(u64, u64),
    Bool,
    Str,
    Strs,
    Any,
}

/// A value that passed its [`Shape`]'s check.
enum Got<'v> {
    Int(u64),
    Bool(bool),
    Str(&'v str),
    Strs(Vec<&'v str>),
    Any(&'v Value),
}

/// Checks `v` against `shape`; `None` with the problem reported.
fn check<'v>(shape: Shape, v: &'v Value, at: &mut At) -> Option<Got<'v>> {
    let got = match (shape, v) {
        (Shape::Int(min, max), _) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(Got::Int(n)),
            _ => {
                at.fail(format_args!(
                    "must be an integer from {min} to {max}, found {v}"
                ));
                return None;
            }
        },
        (Shape::Bool, Value::Bool(b)) => Some(Got::Bool(*b)),
        (Shape::Str, Value::String(s)) => Some(Got::Str(s)),
        (Shape::Strs, _) => strings(v).map(Got::Strs),
        (Shape::Any, _) => Some(Got::Any(v)),
        _ => None,
    };
    if got.is_none() {
        let want = match shape {
            Shape::Bool => "true or false",
            Shape::Str => "a string",
            _ => "an array of strings",
        };
        // An array that is not all strings is quoted: which member is wrong shows.
        let found = match shape {
            Shape::Strs => v.to_string(),
            _ => kind(v).to_string(),
        };
        at.fail(format_args!("must be {want}, found {found}"));
    }
    got
}

/// `v` as an array of strings.
fn strings(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(Value::as_str).collect()
}

/// Reports each field of `map` that is not in `known` as an error, `PREFIXNAME: unknown field`,
/// with the known field it is closest to (`did you mean "auth_required"?`), or, when none is
/// close, every known field of the object.
fn unknown_fields(report: &mut Report, prefix: &str, map: &Map<String, Value>, known: &[&str]) {
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        let hint = match closest(key, known) {
            Some(k) => format!("did you mean \"{k}\"?"),
            None => format!("known fields: {}", known.join(", ")),
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
