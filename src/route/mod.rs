//! Stage 3: match a request path against the routes and build the backend path.
//!
//! Pure functions, no I/O. Paths are matched in their RFC 3986 normal form ([`normalize`]:
//! `/ws/%61dmin` is `/ws/admin`), segment by segment, case-sensitively. A `{name}` segment
//! matches any one non-empty segment that is not `.` or `..` and holds no separator a backend
//! could split or cut it at (`/`, `\`, `;`, `?`, `#`, raw or percent-encoded) and no control
//! byte; its text is substituted into the internal path. When several routes match, the one
//! with the most literal segments wins; among equals, the first in the file.

mod path;
mod query;

pub use path::{normalize, origin_form, split_target};
pub use query::{query_pairs, query_param, query_params, redact, strip_query_param};

use path::{capturable, is_dot_segment};

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A compiled `external_path` or `internal_path` (`/rooms/{room}`). The default, empty one
/// matches no path (a route's paths before its config sets them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
                let normal = normalize(seg, false).map_err(|e| format!("{text:?}: {e}"))?;
                segments.push(Segment::Literal(normal.into_owned()));
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

    /// Matches a request path (without query, in [`normalize`]d form); returns the captured
    /// parameters in order.
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
                    if !capturable(part) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
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
            "/a/%zz",
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
            ("/rooms/{room}", "/rooms/x#", None),
            ("/rooms/{room}", "/rooms/x%23", None),
            ("/rooms/{room}", "/rooms/a;b=1", None),
            ("/rooms/{room}", "/rooms/a%3Fb", None),
            ("/rooms/{room}", "/rooms/a%0Ab", None),
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
    fn patterns_are_normalised_like_paths() {
        assert!(p("/ws/%61dmin").matches("/ws/admin").is_some());
        assert!(p("/ws/a%2fb").same_shape(&p("/ws/a%2Fb")));
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
}
