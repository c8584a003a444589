//! Query strings: the token parameter (found, removed for the backend, redacted in logs) and
//! the `query:` sticky key.

use std::borrow::Cow;

use super::path::escape_at;

/// Removes every `name=...` parameter from a query string, whatever the encoding of its name
/// (`access%5Ftoken` too, as a backend may decode it); `None` when nothing is left.
pub fn strip_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_param(pair, name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Whether the `key=value` pair `pair` is the parameter `name` (its key percent-decoded).
fn is_param(pair: &str, name: &str) -> bool {
    let key = pair.split_once('=').map_or(pair, |(k, _)| k);
    percent_decode(key) == name
}

/// `target` (a path and query) for a log line: the value of every `name` parameter replaced by
/// `[redacted]`, so that no token reaches a log. Borrowed when there is nothing to hide.
pub fn redact<'t>(target: &'t str, name: &str) -> Cow<'t, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    if !query.split('&').any(|pair| is_param(pair, name)) {
        return Cow::Borrowed(target);
    }
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_param(pair, name) => Cow::Owned(format!("{k}=[redacted]")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", pairs.join("&")))
}

/// The values of every `name=...` parameter in a query string (names and values
/// percent-decoded).
pub fn query_params<'q>(query: &'q str, name: &'q str) -> impl Iterator<Item = String> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Every `name=value` pair of a query string, percent-decoded.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// The value of the first `name=...` parameter in a query string (percent-decoded).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query_params(query, name).next()
}

/// Minimal percent-decoding (`+` stays `+`: JWTs never contain spaces).
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(v) = escape_at(bytes, i) {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_helpers() {
        assert_eq!(
            strip_query_param("a=1&access_token=x&b=2", "access_token").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(strip_query_param("access_token=x", "access_token"), None);
        assert_eq!(
            query_param("a=1&access_token=x%2Ey", "access_token").as_deref(),
            Some("x.y")
        );
        assert_eq!(query_param("a=1", "access_token"), None);
        assert_eq!(
            query_param("access%5Ftoken=t", "access_token").as_deref(),
            Some("t")
        );
        assert_eq!(
            strip_query_param("access%5ftoken=t&b=2", "access_token").as_deref(),
            Some("b=2")
        );
        assert_eq!(
            query_params("access_token=a&access_token=b", "access_token").count(),
            2
        );
    }

    #[test]
    fn redaction_hides_every_spelling_of_the_parameter() {
        let t = "access_token";
        assert_eq!(redact("/ws?a=1", t), "/ws?a=1");
        assert_eq!(redact("/ws", t), "/ws");
        assert_eq!(
            redact("/ws?a=1&access_token=eyJ.x.y&access%5Ftoken=z&b", t),
            "/ws?a=1&access_token=[redacted]&access%5Ftoken=[redacted]&b"
        );
        assert_eq!(redact("/ws?access_token", t), "/ws?access_token");
    }
}
