//! Stage 3: match a request path against the routes and build the backend path.
//!
//! Pure functions, no I/O. Paths are compared segment by segment on the raw (not
//! percent-decoded) text, so `/ws/%2e%2e/admin` is never taken for `/ws/../admin`. A `{name}`
//! segment matches any one non-empty segment except `.` and `..` (in any encoding) and segments
//! holding an encoded slash or a backslash (`%2f`, `%5c`, `\`: a backend that decodes them
//! would see more than one segment), and its text is substituted into the internal path. When several routes match, the one with the most
//! literal segments wins; among equals, the first in the file.

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A compiled `external_path` or `internal_path` (`/rooms/{room}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Compiles a path pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        if !text.starts_with('/') {
            return Err(format!("{text:?} must start with /"));
        }
        if text.contains(['?', '#', ' ']) || text.chars().any(|c| c.is_control()) {
            return Err(format!(
                "{text:?} must be a plain path (no query, fragment, space or control character)"
            ));
        }
        let mut segments = Vec::new();
        for seg in text[1..].split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(format!("{text:?}: bad parameter segment {seg:?}"));
                }
                if segments.contains(&Segment::Param(name.to_string())) {
                    return Err(format!("{text:?}: parameter {{{name}}} appears twice"));
                }
                segments.push(Segment::Param(name.to_string()));
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "{text:?}: a parameter must be a whole segment, like /rooms/{{room}}"
                ));
            } else if is_dot_segment(seg) {
                return Err(format!("{text:?}: . and .. segments are not allowed"));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(PathPattern {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Names of the `{name}` segments, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Whether both patterns match exactly the same paths (parameter names aside).
    pub fn same_shape(&self, other: &PathPattern) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }

    fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// Matches a request path (without query); returns the captured parameters in order.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let mut captures = Vec::new();
        let mut parts = rest.split('/');
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    if part.is_empty() || is_dot_segment(part) || hides_a_separator(part) {
                        return None;
                    }
                    captures.push((name.as_str(), part));
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(captures)
    }

    /// Builds a path from this pattern, taking each `{name}` from `captures`.
    pub fn render(&self, captures: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(lit) => out.push_str(lit),
                Segment::Param(name) => {
                    let value = captures
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| *v)
                        .unwrap_or_default();
                    out.push_str(value);
                }
            }
        }
        out
    }
}

/// `.` or `..`, also percent-encoded (`%2e`, `%2E`), which some backends decode.
fn is_dot_segment(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    let decoded = lower.replace("%2e", ".");
    decoded == "." || decoded == ".."
}

/// An encoded `/` or `\`, or a raw `\`: a backend that decodes or normalises it would split
/// the segment (and could then meet a `..`).
fn hides_a_separator(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    lower.contains("%2f") || lower.contains("%5c") || seg.contains('\\')
}

/// A matched route: its index and the captured `{name}` segments.
pub type Match<'a, 'p> = (usize, Vec<(&'a str, &'p str)>);

/// Picks the best route for `path` among `patterns` (index, captures), or `None` (404).
pub fn find<'a, 'p>(
    patterns: impl Iterator<Item = &'a PathPattern>,
    path: &'p str,
) -> Option<Match<'a, 'p>> {
    let mut best: Option<(usize, Match<'a, 'p>)> = None;
    for (i, pattern) in patterns.enumerate() {
        if let Some(captures) = pattern.matches(path) {
            let score = pattern.literal_count();
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, (i, captures)));
            }
        }
    }
    best.map(|(_, m)| m)
}

/// The origin form (`/path?query`) of a request target. An absolute-form target
/// (`http://host/path?q`, also `https`, `ws`, `wss`), which RFC 9112 3.2.2 says a server must
/// accept, gives its path and query (`/` when it has no path); anything else is returned as is.
pub fn origin_form(target: &str) -> std::borrow::Cow<'_, str> {
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

/// Removes every `name=...` parameter from a query string, whatever the encoding of its name
/// (`access%5Ftoken` too, as a backend may decode it); `None` when nothing is left.
pub fn strip_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && percent_decode(key) != name
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The values of every `name=...` parameter in a query string (names and values
/// percent-decoded).
pub fn query_params<'q>(query: &'q str, name: &'q str) -> impl Iterator<Item = String> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// The value of the first `name=...` parameter in a query string (percent-decoded).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query_params(query, name).next()
}

/// Minimal percent-decoding (`+` stays `+`: JWTs never contain spaces).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
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

    #[test]
    fn parse_rejects_bad_patterns() {
        for bad in [
            "ws",
            "/a/{",
            "/a/{}",
            "/a/x{y}",
            "/a/{x}/{x}",
            "/a/..",
            "/a?b",
            "/a/%2E",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn matching_table() {
        type Case<'a> = (&'a str, &'a str, Option<&'a [(&'a str, &'a str)]>);
        let cases: &[Case] = &[
            ("/ws/chat", "/ws/chat", Some(&[])),
            ("/ws/chat", "/ws/chat/", None),
            ("/ws/chat", "/ws/chatty", None),
            ("/ws/chat", "/ws", None),
            ("/rooms/{room}", "/rooms/blue", Some(&[("room", "blue")])),
            ("/rooms/{room}", "/rooms/", None),
            ("/rooms/{room}", "/rooms/..", None),
            ("/rooms/{room}", "/rooms/%2e%2E", None),
            ("/rooms/{room}", "/rooms/a%2F..%2fadmin", None),
            ("/rooms/{room}", "/rooms/a%5c..", None),
            ("/rooms/{room}", "/rooms/a\\b", None),
            ("/rooms/{room}", "/rooms/a%20b", Some(&[("room", "a%20b")])),
            ("/rooms/{room}", "/rooms/a/b", None),
            ("/ws/chat", "/ws/%2e%2e/chat", None),
            ("/", "/", Some(&[])),
        ];
        for (pattern, path, want) in cases {
            let pat = p(pattern);
            let got = pat.matches(path);
            assert_eq!(got.as_deref(), *want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn render_substitutes_params() {
        let pat = p("/rooms/{room}/{user}");
        let caps = pat.matches("/rooms/r1/bob").unwrap();
        assert_eq!(p("/ws/{user}/in/{room}").render(&caps), "/ws/bob/in/r1");
        assert_eq!(p("/ws").render(&caps), "/ws");
    }

    #[test]
    fn most_specific_route_wins() {
        let pats = [p("/ws/{x}"), p("/ws/chat"), p("/ws/{y}")];
        assert_eq!(find(pats.iter(), "/ws/chat").unwrap().0, 1);
        assert_eq!(find(pats.iter(), "/ws/other").unwrap().0, 0);
        assert!(find(pats.iter(), "/nope").is_none());
    }

    #[test]
    fn query_helpers() {
        assert_eq!(split_target("/a?b=1"), ("/a", Some("b=1")));
        assert_eq!(split_target("/a"), ("/a", None));
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
}
