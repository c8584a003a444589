//! Fuzz targets run as proptest suites in the normal `cargo test`: the request-head parser
//! (`handshake::read_request`, `check_upgrade`) and route matching (`route::*`).
//!
//! The default case counts keep `cargo test` fast; a long run raises them:
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz_head`.
//! No case can hang: every reader is a finite slice that is always ready, and `read_request` is
//! polled exactly once, so it must finish without waiting (a `Pending` fails the case).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::AsyncRead;
use kairos_gateway::error::Error;
use kairos_gateway::handshake::{check_upgrade, read_request, Head, Request};
use kairos_gateway::route::{self, PathPattern};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// The default `limits.max_request_head_bytes`.
const MAX_HEAD: usize = 8192;

/// Proptest's defaults (so `PROPTEST_CASES` applies); `cases` when that is not set.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

/// A finite, always-ready reader: `data` in chunks of `sizes` (cycled), then EOF, or a
/// connection reset when `reset` is set.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: &'a [usize],
    turn: usize,
    reset: bool,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let rest = &this.data[this.pos..];
        if rest.is_empty() {
            return Poll::Ready(match this.reset {
                true => Err(io::ErrorKind::ConnectionReset.into()),
                false => Ok(0),
            });
        }
        let size = match this.sizes {
            [] => usize::MAX,
            s => s[this.turn % s.len()].max(1),
        };
        let n = size.min(buf.len()).min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        this.pos += n;
        this.turn += 1;
        Poll::Ready(Ok(n))
    }
}

type Outcome = Result<(Request, Vec<u8>), Error>;

/// `read_request` over `data` in `sizes` chunks; the outcome and how many bytes it read.
fn read(data: &[u8], sizes: &[usize], reset: bool) -> (Outcome, usize) {
    let mut r = Chunked {
        data,
        pos: 0,
        sizes,
        turn: 0,
        reset,
    };
    let once = futures_lite::future::poll_once(read_request(&mut r, MAX_HEAD));
    let outcome = smol::block_on(once)
        .expect("read_request waited on an always-ready finite reader: it would hang");
    (outcome, r.pos)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The head is `input[..consumed - early.len()]`, ends with an empty line, holds what was parsed;
/// the early bytes are exactly the input that followed it.
fn check_outcome(input: &[u8], out: &Outcome, consumed: usize) -> Result<(), TestCaseError> {
    use Error::{BadRequest, ClientGone, HeadTooLarge, TooManyHeaders};
    let (req, early) = match out {
        Ok(ok) => ok,
        Err(e @ (BadRequest(_) | HeadTooLarge(MAX_HEAD) | TooManyHeaders(_) | ClientGone(_))) => {
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e:?}"))),
    };
    prop_assert!(consumed <= input.len() && early.len() <= consumed);
    let head_len = consumed - early.len();
    prop_assert_eq!(&input[head_len..consumed], early.as_slice());
    let head = &input[..head_len];
    prop_assert!(head_len <= MAX_HEAD);
    prop_assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"));
    let line = format!("{} {} HTTP/1.{}", req.method, req.target, req.minor_version);
    prop_assert!(contains(head, line.as_bytes()), "request line {:?}", line);
    prop_assert!(req.headers.len() <= 100);
    for (name, value) in &req.headers {
        prop_assert!(!name.is_empty() && contains(head, name.as_bytes()) && contains(head, value));
    }
    check_upgrade_result(req)?;
    check_target(&req.target)
}

/// `check_upgrade` never panics; when it accepts, the request really is a version 13 upgrade.
fn check_upgrade_result(req: &Request) -> Result<(), TestCaseError> {
    let Ok(up) = check_upgrade(req) else {
        return Ok(());
    };
    prop_assert_eq!(req.minor_version, 1);
    prop_assert!(req.has_token("Upgrade", "websocket") && req.has_token("Connection", "upgrade"));
    prop_assert_eq!(req.header_raw("Host").count(), 1, "exactly one Host header");
    prop_assert_eq!(req.header_raw("Sec-WebSocket-Version").count(), 1);
    prop_assert_eq!(req.header("Sec-WebSocket-Version"), Some("13"));
    prop_assert_eq!(req.header_raw("Sec-WebSocket-Key").count(), 1);
    prop_assert!(up.key.len() == 24 && up.key.ends_with("=="));
    let clean = |p: &String| !p.is_empty() && !p.contains(',') && p.trim() == p;
    prop_assert!(up.protocols.iter().all(clean));
    Ok(())
}

/// Samples from a `|`-separated pool.
fn pick(pool: &'static str) -> impl Strategy<Value = &'static str> + Clone {
    select(pool.split('|').collect::<Vec<_>>())
}

fn pick_bytes(pool: &'static str) -> impl Strategy<Value = Vec<u8>> + Clone {
    pick(pool).prop_map(|s| s.as_bytes().to_vec())
}

/// Path segments, many of them hostile.
const SEGMENTS: &str = "ws|chat|rooms|lobby|api|v1|stream|a|b|c|..|.|%2e|%2E%2e|.%2e|%2e.||%00|\
    %2f|..;|x%2F..|é|%|%zz|{x}";
const PAIRS: &str = "access_token=t|access%5Ftoken=t|access%5ftoken=|access_token|a=1||b=%|%=x|\
    access_token=%2|=|c=d=e|access%255Ftoken=t|%e9=%ff|é=ü";
const NAMES: &str = "Host|host|Upgrade|Connection|Sec-WebSocket-Key|Sec-WebSocket-Version|\
    Sec-WebSocket-Protocol|Authorization|X-Forwarded-For";
const VALUES: &str =
    "websocket|WebSocket|Upgrade|keep-alive, Upgrade|13|8| 13 ||x|chat, superchat|\
    dGhlIHNhbXBsZSBub25jZQ==| , ,|Bearer abc";

fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        16 => pick_bytes(SEGMENTS),
        2 => vec(33u8.., 0..8), // URI bytes, maybe not UTF-8
        1 => vec(any::<u8>(), 0..8),
        1 => (1usize..9000).prop_map(|n| vec![b'a'; n]),
    ]
}

/// Query strings around `access_token`, with broken and double percent-encodings.
fn query() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        12 => pick(PAIRS).prop_map(String::from),
        2 => "[!-~]{0,12}",
        1 => any::<String>(),
    ];
    vec(pair, 0..6).prop_map(|p| p.join("&"))
}

/// Request targets: segments joined by `/` (so `//` happens), maybe a query; some in
/// absolute form, or with a scheme that is not.
fn target() -> impl Strategy<Value = Vec<u8>> {
    let q = prop::option::of(query());
    let scheme = pick("http://h|HTTPS://h:1|ws://|wss://h?|http:|ftp://h|*");
    let scheme = prop_oneof![8 => Just(""), 1 => scheme];
    (scheme, vec(segment(), 0..8), q, any::<bool>()).prop_map(|(scheme, segs, q, lead)| {
        let mut t = scheme.as_bytes().to_vec();
        if lead {
            t.push(b'/');
        }
        t.extend(segs.join(&b'/'));
        if let Some(q) = q {
            t.push(b'?');
            t.extend(q.bytes());
        }
        t
    })
}

/// Upgrade-related headers with good, bad, non-UTF-8 and very long values.
fn header() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let name = prop_oneof![20 => pick_bytes(NAMES), 1 => vec(any::<u8>(), 0..12)];
    let value = prop_oneof![
        12 => pick_bytes(VALUES),
        3 => vec(prop_oneof![32u8..127, 128u8..], 0..40), // text and obs-text
        1 => vec(any::<u8>(), 0..40),
        1 => (0usize..10_000).prop_map(|n| vec![b'v'; n]),
    ];
    (name, value)
}

/// A head: request line, headers, the empty line when `end`, then `early`.
fn build_head(line: &[u8], headers: &[(Vec<u8>, Vec<u8>)], eol: &str, end: bool) -> Vec<u8> {
    let mut h = line.to_vec();
    for (name, value) in headers {
        h.extend([eol.as_bytes(), name, b": ", value].concat());
    }
    h.extend(eol.as_bytes());
    if end {
        h.extend(eol.as_bytes());
    }
    h
}

/// Near-valid heads: request line, many headers, maybe the empty line, then early bytes.
fn near_valid_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![8 => Just("GET"), 1 => pick("get|POST||G ET|GET\0")];
    let version = prop_oneof![8 => Just("HTTP/1.1"), 1 => pick("HTTP/1.0|HTTP/2|http/1.1|")];
    let eol = prop_oneof![8 => Just("\r\n"), 1 => pick("\n|\r")];
    let headers = prop_oneof![4 => vec(header(), 0..12), 1 => vec(header(), 0..110)];
    let parts = (
        method,
        target(),
        version,
        eol,
        headers,
        prop::bool::weighted(0.9),
    );
    (parts, vec(any::<u8>(), 0..32)).prop_map(|((m, target, v, eol, headers, end), early)| {
        let line = [m.as_bytes(), b" ", &target, b" ", v.as_bytes()].concat();
        [build_head(&line, &headers, eol, end), early].concat()
    })
}

/// A `Sec-WebSocket-Key`: 16 bytes in base64.
fn ws_key() -> impl Strategy<Value = String> {
    let b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (
        vec(select(b64.chars().collect::<Vec<_>>()), 21),
        pick("A|Q|g|w"),
    )
        .prop_map(|(body, last)| format!("{}{last}==", String::from_iter(body)))
}

const UPGRADE: &str = "Host: gw.example|Upgrade: websocket|Connection: keep-alive, Upgrade|\
    Sec-WebSocket-Version: 13";

/// An upgrade request in random header order: (bytes, path, key, early bytes). With `noise`,
/// up to two headers of [`header`] are added (duplicates, bad values) and one may be dropped.
fn upgrade(noise: bool) -> impl Strategy<Value = (Vec<u8>, String, String, Vec<u8>)> {
    let path = vec("[a-zA-Z0-9_~-]{1,12}", 0..5).prop_map(|s| format!("/{}", s.join("/")));
    let extra = vec(("X-[A-Za-z]{1,10}", "[!-~]{0,40}"), 0..10)
        .prop_map(|h| h.into_iter().map(|(n, v)| (n.into_bytes(), v.into_bytes())));
    let noisy = vec(header(), 0..=if noise { 2 } else { 0 });
    let early = vec(any::<u8>(), 0..64);
    let parts = (path, ws_key(), extra, noisy, early, any::<usize>());
    parts.prop_map(move |(path, key, extra, noisy, early, seed)| {
        let key_header = format!("Sec-WebSocket-Key: {key}");
        let fixed = UPGRADE
            .split('|')
            .chain([key_header.as_str()])
            .map(|h| h.split_once(": "));
        let fixed = fixed.map(|h| h.unwrap()).map(|(n, v)| (n.into(), v.into()));
        let mut headers: Vec<_> = fixed.chain(extra).chain(noisy).collect();
        if noise && seed % 3 == 0 {
            headers.remove(seed / 3 % headers.len());
        }
        let n = headers.len();
        headers.rotate_left(seed % n);
        let line = format!("GET {path} HTTP/1.1");
        let head = build_head(line.as_bytes(), &headers, "\r\n", true);
        ([head, early.clone()].concat(), path, key, early)
    })
}

/// Routes of the matching tests: external pattern, internal pattern.
const ROUTES: &[(&str, &str)] = &[
    ("/", "/root"),
    ("/ws/chat", "/ws"),
    ("/ws/{x}", "/in/{x}"),
    ("/rooms/{room}/{user}", "/r/{user}/{room}"),
    ("/rooms/lobby/{user}", "/lobby/{user}"),
    ("/a/{b}/c", "/{b}"),
    ("/api/v1/stream", "/api/v1/stream"),
];

/// What a capture may not hold, raw or percent-encoded (any case): `/`, `\\`, `;`, `?`, `#`,
/// or a control character.
fn hides_separator(seg: &str) -> bool {
    let bad = |c: char| c.is_ascii_control() || "/\\;?#".contains(c);
    let l = seg.to_ascii_lowercase();
    seg.chars().any(|c| bad(c) && c != '/')
        || (0u8..=127)
            .filter(|b| bad(*b as char))
            .any(|b| l.contains(&format!("%{b:02x}")))
}

/// `.` or `..`, each dot written `.` or `%2e` (any case): what a backend may resolve.
fn is_dot(mut seg: &str) -> bool {
    let mut dots = 0;
    while !seg.is_empty() {
        seg = match seg.strip_prefix('.') {
            Some(rest) => rest,
            None if seg.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2e")) => &seg[3..],
            None => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Reference matcher, written from the rules in `route.rs`'s docs: the captured values.
fn ref_match(pattern: &str, path: &str) -> Option<Vec<String>> {
    let pat: Vec<&str> = pattern[1..].split('/').collect();
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if pat.len() != parts.len() {
        return None;
    }
    let mut caps = Vec::new();
    for (p, s) in pat.iter().zip(&parts) {
        if p.starts_with('{') {
            if s.is_empty() || is_dot(s) || hides_separator(s) {
                return None;
            }
            caps.push(s.to_string());
        } else if p != s {
            return None;
        }
    }
    Some(caps)
}

/// `find` agrees with the reference (most literal segments, then first); a path with a dot
/// segment matches nothing; the backend path built from a match has no dot segment.
fn check_find(path: &str) -> Result<(), TestCaseError> {
    let pats: Vec<PathPattern> = ROUTES
        .iter()
        .map(|(e, _)| PathPattern::parse(e).unwrap())
        .collect();
    let got = route::find(pats.iter(), path);
    let mut want: Option<(usize, usize, Vec<String>)> = None;
    for (i, (ext, _)) in ROUTES.iter().enumerate() {
        let literals = ext[1..].split('/').filter(|s| !s.starts_with('{')).count();
        if let Some(caps) = ref_match(ext, path) {
            if want.as_ref().is_none_or(|(_, best, _)| literals > *best) {
                want = Some((i, literals, caps));
            }
        }
    }
    let got_vals = got
        .as_ref()
        .map(|(i, c)| (*i, c.iter().map(|(_, v)| v.to_string()).collect()));
    prop_assert_eq!(got_vals, want.map(|(i, _, c)| (i, c)));
    if path.split('/').any(is_dot) {
        prop_assert!(got.is_none(), "a dot segment matched: {:?}", path);
    }
    if let Some((i, caps)) = got {
        let names: Vec<&str> = pats[i].params().collect();
        prop_assert!(caps.iter().map(|(n, _)| *n).eq(names));
        let backend = PathPattern::parse(ROUTES[i].1).unwrap().render(&caps);
        prop_assert!(!backend.split('/').any(is_dot), "to backend: {:?}", backend);
    }
    Ok(())
}

/// The server's steps on a target: origin form, path, route. The origin form of an absolute
/// target is its path (and query); any other target is left as it is.
fn check_target(target: &str) -> Result<(), TestCaseError> {
    let origin = route::origin_form(target);
    if target.starts_with('/') {
        prop_assert_eq!(&*origin, target);
    }
    let tail = origin.strip_prefix('/').unwrap_or(&origin);
    prop_assert!(target.ends_with(tail), "{:?} from {:?}", origin, target);
    let (path, query) = route::split_target(&origin);
    let rebuilt = query.map_or(path.to_string(), |q| format!("{path}?{q}"));
    prop_assert!(
        rebuilt == origin && !path.contains('?'),
        "split {:?}",
        origin
    );
    check_find(path)
}

/// Strings for the route functions: arbitrary, or paths made of hostile segments.
fn path_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        3 => target().prop_map(|t| String::from_utf8_lossy(&t).into_owned()),
        3 => vec(pick(SEGMENTS), 0..5).prop_map(|s| format!("/{}", s.join("/"))),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn any_bytes_never_panic_or_hang(
        input in prop_oneof![vec(any::<u8>(), 0..2048), near_valid_head()],
        sizes in vec(1usize..512, 0..4),
        reset in any::<bool>(),
    ) {
        let (whole, consumed) = read(&input, &[], reset);
        check_outcome(&input, &whole, consumed)?;
        // Chunking changes how the bytes arrive, not what the head is.
        let (chunked, consumed2) = read(&input, &sizes, reset);
        check_outcome(&input, &chunked, consumed2)?;
        match (&whole, &chunked) {
            (Ok((a, ea)), Ok((b, eb))) => {
                prop_assert_eq!(consumed - ea.len(), consumed2 - eb.len());
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "same request");
            }
            (a, b) => prop_assert_eq!(a.is_ok(), b.is_ok(), "{:?} vs {:?}", a, b),
        }
    }

    #[test]
    fn valid_upgrades_are_accepted(
        (input, path, key, early) in upgrade(false),
        sizes in vec(1usize..64, 0..4),
    ) {
        let (out, consumed) = read(&input, &sizes, false);
        check_outcome(&input, &out, consumed)?;
        let (req, got_early) = out.unwrap();
        prop_assert_eq!(&req.target, &path);
        prop_assert_eq!(check_upgrade(&req).unwrap().key, key);
        prop_assert_eq!([got_early.as_slice(), &input[consumed..]].concat(), early);
    }

    #[test]
    fn noisy_upgrades_never_panic((input, ..) in upgrade(true), sizes in vec(1usize..64, 0..4)) {
        let (out, consumed) = read(&input, &sizes, false);
        check_outcome(&input, &out, consumed)?;
    }

    #[test]
    fn route_matching_never_panics(path in path_text()) {
        check_find(&path)?;
        check_target(&path)?;
    }

    #[test]
    fn any_pattern_parses_or_refuses(text in path_text(), path in path_text()) {
        let Ok(pat) = PathPattern::parse(&text) else { return Ok(()); };
        prop_assert_eq!(pat.as_str(), text.as_str());
        prop_assert!(!text[1..].split('/').any(is_dot), "dot segment in pattern {:?}", text);
        // Patterns and request paths meet in RFC 3986 normal form (`%2f` is `%2F`): a path
        // that has none is refused before routing.
        let Ok(path) = route::normalize(&path, false) else { return Ok(()); };
        let normal: Vec<String> = (text.split('/'))
            .map(|s| match s.starts_with('{') {
                true => s.to_string(),
                false => route::normalize(s, false).map_or(s.to_string(), |n| n.into_owned()),
            })
            .collect();
        let got = pat.matches(&path).map(|c| c.iter().map(|(_, v)| v.to_string()).collect());
        prop_assert_eq!(got, ref_match(&normal.join("/"), &path));
        // Rendering with valid values gives a path that matches with the same values.
        let values: Vec<String> = pat.params().enumerate().map(|(i, _)| format!("v{i}")).collect();
        let caps: Vec<(&str, &str)> = pat.params().zip(values.iter().map(String::as_str)).collect();
        let rendered = pat.render(&caps);
        prop_assert_eq!(pat.matches(&rendered), Some(caps));
    }

    #[test]
    fn query_helpers_never_panic(
        q in query(),
        name in prop_oneof![3 => Just("access_token".to_string()), 1 => any::<String>()],
    ) {
        let first = route::query_params(&q, &name).next();
        prop_assert_eq!(route::query_param(&q, &name), first);
        let stripped = route::strip_query_param(&q, &name);
        if let Some(s) = &stripped {
            prop_assert!(!s.is_empty());
            prop_assert_eq!(route::query_params(s, &name).count(), 0, "{:?} left in {:?}", name, s);
            let orig: Vec<&str> = q.split('&').collect();
            let mut it = orig.iter();
            prop_assert!(s.split('&').all(|p| it.any(|o| o == &p)), "not a subsequence");
        }
    }
}

/// Found by `noisy_upgrades_never_panic`: a second `Sec-WebSocket-Key` (or `Host`, or
/// `Sec-WebSocket-Version`) whose value is not UTF-8 was not counted, so the upgrade passed.
#[test]
fn regression_duplicate_header_with_non_utf8_value() {
    for dup in ["Sec-WebSocket-Key", "Host", "Sec-WebSocket-Version"] {
        let mut head =
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\
            Host: gw.example\r\n"
                .to_vec();
        head.extend([dup.as_bytes(), b": \x80\r\n\r\n"].concat());
        let (out, _) = read(&head, &[], false);
        let (req, _) = out.expect("the head is valid HTTP");
        let err = check_upgrade(&req).expect_err(dup);
        assert!(matches!(err, Error::BadUpgrade(_)), "{dup}: {err:?}");
    }
}

/// Found by `any_pattern_parses_or_refuses`: a pattern's literal `%2f` is kept in normal form
/// (`%2F`), and so is the request path before routing; the property compared the raw path.
#[test]
fn regression_a_pattern_and_a_path_meet_in_normal_form() {
    let pat = PathPattern::parse("/%2f").unwrap();
    let path = route::normalize("/%2f", false).unwrap();
    assert_eq!(pat.matches(&path), Some(vec![]));
    assert_eq!(
        pat.matches("/%2f"),
        None,
        "matches takes the normal form only"
    );
}
