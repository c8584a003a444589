//! Request targets as the routes see them: the origin form, path and query apart, and the
//! normal form of RFC 3986 6.2.2 that routes are matched on and backends receive.
//!
//! Normalising is what makes a route a trust boundary: `/ws/%61dmin` is `/ws/admin` to most
//! backends, so it must be `/ws/admin` to the routes too. Escapes of unreserved characters are
//! decoded, every other escape is upper-cased, and bytes that may not stand raw in a URI (`#`,
//! `\`, `"`, non-ASCII...) are percent-encoded. Case is significant (RFC 3986 6.2.2.1 makes
//! only the scheme and host case-insensitive).

use std::borrow::Cow;

/// RFC 3986 unreserved characters: an escape of one of them means the character itself.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes that stand raw in a normalised path: `pchar` and `/` (RFC 3986 3.3), and `?` in a
/// query (3.4).
fn plain(b: u8, query: bool) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
        || (query && b == b'?')
}

/// The byte an escape `%XY` at `bytes[at]` stands for, if there is one there.
pub(super) fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    if bytes.get(at) != Some(&b'%') {
        return None;
    }
    let (h, l) = (hex(bytes.get(at + 1))?, hex(bytes.get(at + 2))?);
    Some((h * 16 + l) as u8)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `%XY` (upper-case hex) for `b`.
fn push_escape(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
}

/// The RFC 3986 6.2.2 normal form of a path (`query`: false) or query (true); borrowed when it
/// is normal already. An `%` not followed by two hex digits is an error.
pub fn normalize(text: &str, query: bool) -> Result<Cow<'_, str>, String> {
    let bytes = text.as_bytes();
    if bytes.iter().all(|&b| plain(b, query)) {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let Some(v) = escape_at(bytes, i) else {
                let what = if query { "query" } else { "path" };
                return Err(format!(
                    "invalid percent-encoding in the {what}: % must be followed by two hex digits"
                ));
            };
            if unreserved(v) {
                out.push(v);
            } else {
                push_escape(&mut out, v);
            }
            i += 3;
            continue;
        }
        if plain(b, query) {
            out.push(b);
        } else {
            push_escape(&mut out, b);
        }
        i += 1;
    }
    // Only ASCII was pushed: every other byte was encoded.
    Ok(Cow::Owned(out.into_iter().map(char::from).collect()))
}

/// `.` or `..`, also percent-encoded (`%2e`, `%2E`), which some backends decode.
pub(super) fn is_dot_segment(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    let decoded = lower.replace("%2e", ".");
    decoded == "." || decoded == ".."
}

/// Bytes a `{name}` capture may not hold, raw or percent-encoded: separators a backend may
/// split or cut the path at (`/`, `\`, `;` path parameters, `?`, `#`) and control bytes.
fn forbidden_in_capture(b: u8) -> bool {
    b < 0x20 || b == 0x7f || matches!(b, b'/' | b'\\' | b';' | b'?' | b'#')
}

/// Whether `seg` may be captured by a `{name}` segment: not empty, not a dot segment, and
/// free of [`forbidden_in_capture`] bytes in any encoding.
pub(super) fn capturable(seg: &str) -> bool {
    if seg.is_empty() || is_dot_segment(seg) {
        return false;
    }
    let bytes = seg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = match escape_at(bytes, i) {
            Some(v) => {
                i += 2;
                v
            }
            None => bytes[i],
        };
        if forbidden_in_capture(b) {
            return false;
        }
        i += 1;
    }
    true
}

/// The origin form (`/path?query`) of a request target. An absolute-form target
/// (`http://host/path?q`, also `https`, `ws`, `wss`), which RFC 9112 3.2.2 says a server must
/// accept, gives its path and query (`/` when it has no path); anything else is returned as is.
pub fn origin_form(target: &str) -> Cow<'_, str> {
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    let scheme = ["http://", "https://", "ws://", "wss://"]
        .into_iter()
        .find(|s| lower(s.len()).as_deref() == Some(*s));
    let Some(scheme) = scheme else {
        return target.into();
    };
    let rest = &target[scheme.len()..];
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => rest[i..].into(),
        Some(i) => format!("/{}", &rest[i..]).into(),
        None => "/".into(),
    }
}

/// Splits a request target into path and query (without the `?`).
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        for (path, want) in [
            ("/ws/chat", "/ws/chat"),
            ("/ws/%61dmin", "/ws/admin"),
            ("/ws/%41%7e%2D%5f%2e", "/ws/A~-_."),
            ("/ws/a%2fb", "/ws/a%2Fb"),
            ("/ws/a%3bb", "/ws/a%3Bb"),
            ("/ws/x#", "/ws/x%23"),
            ("/ws/a\\b", "/ws/a%5Cb"),
            ("/ws/caf\u{e9}", "/ws/caf%C3%A9"),
            ("/ws/a;b=1", "/ws/a;b=1"),
            ("/ws/ADMIN", "/ws/ADMIN"),
        ] {
            assert_eq!(normalize(path, false).unwrap(), want, "{path}");
        }
        assert_eq!(normalize("a=1&b=?/x%3d", true).unwrap(), "a=1&b=?/x%3D");
        assert_eq!(normalize("a=#", true).unwrap(), "a=%23");
        for bad in ["/ws/%", "/ws/%4", "/ws/%zz", "/ws/%4g"] {
            assert!(normalize(bad, false).is_err(), "{bad}");
        }
        assert!(matches!(normalize("/ws/chat", false), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn what_a_capture_may_hold() {
        for ok in ["blue", "a%20b", "A.B", "caf%C3%A9", "%25", "a:b", "a@b"] {
            assert!(capturable(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "%2e", "%2E%2e", "a;b", "a%3Bb", "a%3bb", "a#", "a%23", "a%3F",
            "a%2F..", "a%2f", "a\\b", "a%5C", "a%00", "a%0a", "a%7F", "a%1f",
        ] {
            assert!(!capturable(bad), "{bad}");
        }
    }

    #[test]
    fn origin_form_of_absolute_targets() {
        for (target, want) in [
            ("/ws/chat?a=1", "/ws/chat?a=1"),
            ("http://h/ws/chat?a=1", "/ws/chat?a=1"),
            ("HTTPS://h:443/ws", "/ws"),
            ("wss://h", "/"),
            ("ws://h?x=1", "/?x=1"),
            ("*", "*"),
            ("ftp://h/ws", "ftp://h/ws"),
            ("http:/ws", "http:/ws"),
        ] {
            assert_eq!(origin_form(target), want, "{target}");
        }
    }
}
