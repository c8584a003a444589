//! The admin answers' JSON, written straight into a string: the same text as serde_json's
//! `json!` for objects of strings, numbers and nested values, with a fraction of its code
//! (each `json!` builds a map of values, one conversion per field type).

use std::fmt::Write;

/// A JSON object being written, fields in order.
pub(super) struct Obj(String);

impl Obj {
    pub(super) fn new() -> Obj {
        Obj(String::from("{"))
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        quote(&mut self.0, k);
        self.0.push(':');
    }

    /// A string field.
    pub(super) fn str(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        quote(&mut self.0, v);
        self
    }

    /// A string field, or null.
    pub(super) fn opt(self, k: &str, v: Option<&str>) -> Obj {
        match v {
            Some(v) => self.str(k, v),
            None => self.raw(k, "null"),
        }
    }

    /// A number field.
    pub(super) fn num(mut self, k: &str, v: u64) -> Obj {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    /// A boolean field.
    pub(super) fn bool(self, k: &str, v: bool) -> Obj {
        self.raw(k, if v { "true" } else { "false" })
    }

    /// A field whose value is JSON already (an array, an object).
    pub(super) fn raw(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        self.0.push_str(v);
        self
    }

    /// The object's text.
    pub(super) fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `[a,b,...]` of JSON texts.
pub(super) fn array(items: impl Iterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

/// `s` as a JSON string.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_it_writes_is_the_json_serde_reads() {
        let nasty = "a\"b\\c\nd\u{1}e\u{7f}é🙂</script>";
        let text = Obj::new()
            .str("s", nasty)
            .opt("none", None)
            .opt("some", Some("x"))
            .num("n", u64::MAX)
            .bool("b", true)
            .raw(
                "list",
                &array(["1".to_string(), "\"two\"".to_string()].into_iter()),
            )
            .raw("empty", &array(std::iter::empty()))
            .end();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["s"], nasty);
        assert!(v["none"].is_null());
        assert_eq!(v["some"], "x");
        assert_eq!(v["n"], u64::MAX);
        assert_eq!(v["b"], true);
        assert_eq!(v["list"], serde_json::json!([1, "two"]));
        assert_eq!(v["empty"], serde_json::json!([]));
    }
}
