//! Fuzz targets run as proptest suites in the normal `cargo test`: config parsing and validation
//! (`config::parse`).
//!
//! Every input either loads or gives a non-empty list of problems, each one non-empty line;
//! nothing panics; a config built from known-good pieces loads as written. The default case
//! counts keep `cargo test` fast; a long run raises them:
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz_config`.
//! File paths in generated configs are fixtures, paths under a directory that does not exist,
//! or random text (which names a device or another endless file only by a negligible chance),
//! so every case ends.

use std::path::Path;

use kairos_gateway::config::{self, Loaded};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

/// Proptest's defaults (so `PROPTEST_CASES` applies); `cases` when that is not set.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

/// Relative paths (`tests/fixtures/...`) resolve from the crate's directory.
fn base() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One line: not empty, no control character (a line break, or an escape for the terminal).
fn one_line(s: &str) -> bool {
    !s.trim().is_empty() && !s.chars().any(char::is_control)
}

/// `parse` ends without panicking; an error lists problems, each one line; so is each warning.
fn check_parse(text: &str) -> Result<Option<Loaded>, TestCaseError> {
    let (lines, loaded) = match config::parse(text, base()) {
        Ok(loaded) => (loaded.warnings.clone(), Some(loaded)),
        Err(e) => {
            prop_assert!(!e.problems.is_empty(), "refused without a problem");
            (e.problems, None)
        }
    };
    for l in &lines {
        prop_assert!(one_line(l), "not one line: {:?}", l);
    }
    Ok(loaded)
}

/// Samples from a `|`-separated pool.
fn pick(pool: &'static str) -> impl Strategy<Value = &'static str> + Clone {
    select(pool.split('|').collect::<Vec<_>>())
}

/// Field names of the format (and neighbours), so random objects hit real fields.
const FIELDS: &str = "version|jwt|secret|algorithms|issuer|audience|public_key_file|query_param|\
    leeway_seconds|required_claims|routers|protocol|backends|host|port|weight|external_path|\
    internal_path|methods|auth_required|server|workers|limits|handshake_timeout_ms|\
    backend_connect_timeout_ms|max_message_bytes|max_frame_bytes|max_request_head_bytes|\
    idle_timeout_ms|ping_interval_ms|tls|ca_file|Version|";

/// Strings that mean something somewhere in the format, good and bad.
const WORDS: &str = "websocket|http|GET|get|POST|HS256|HS512|RS256|ES256|EdDSA|none|NONE|\
    ws://127.0.0.1|wss://example.com|ws://[::1]|ws://h:80|ws://a/b|http://x|ws://|/|/ws/chat|\
    /rooms/{room}|/a/..|/a/%2e|/{x}/{x}|/{x}|ws|access_token|a&b|a=b|tests/fixtures/rsa_public.pem|\
    tests/fixtures/ec_public.pem|tests/fixtures/ed_public.pem|tests/fixtures/rsa_private.pem|\
    tests/fixtures|no-such-dir/key.pem|no-such-dir/a\nb|no-such-dir/\r|é|\t";

/// Strings: words of the format, random text (control characters too), very long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(WORDS).prop_map(String::from),
        2 => any::<String>().prop_map(|s| format!("no-such-dir/{s}")),
        2 => any::<String>(),
        1 => (0usize..20_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => pick(FIELDS).prop_map(String::from), 1 => any::<String>()]
}

/// Numbers at and past every bound of the format.
const NUMBERS: &str =
    "0|-1|0.5|1|1.0|1e300|-1e300|65535|65536|1e19|4294967296|1073741824|1073741825|\
    86400000|86400001|1000001|18446744073709551615|18446744073709551616|-9223372036854775808";

/// Scalars of every kind.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        pick(NUMBERS).prop_map(|n| serde_json::from_str::<Value>(n).unwrap()),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

/// Arrays or objects nested `depth` times (past serde_json's recursion limit at 128).
fn deep() -> impl Strategy<Value = Value> {
    (1usize..200, any::<bool>()).prop_map(|(depth, obj)| {
        (0..depth).fold(json!(1), |v, _| {
            if obj {
                json!({ "routers": v })
            } else {
                json!([v])
            }
        })
    })
}

/// Any JSON value nested at most 4 deep, with keys of the format.
fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Any JSON value, sometimes nested past the parser's limit.
fn junk() -> impl Strategy<Value = Value> {
    prop_oneof![12 => tree(), 1 => deep()]
}

/// External path suffixes and, for each, internal paths that use only its parameters.
const SHAPES: &[(&str, &[&str])] = &[
    ("", &["/", "/ws", "/a/b"]),
    ("/{room}", &["/ws", "/r/{room}", "/{room}/x"]),
    ("/chat", &["/ws/chat"]),
    ("/{room}/{user}", &["/{user}/{room}", "/u/{user}", "/"]),
    ("/x/{room}/y", &["/{room}"]),
    ("/", &["/ws/"]),
];

fn backend() -> impl Strategy<Value = Value> {
    let host =
        pick("ws://127.0.0.1|ws://localhost|ws://[::1]|wss://example.com|ws://a-b_c.d|ws://h/");
    let weight = prop::option::of(1u64..=1_000_000);
    (host, 1u64..=65535, weight).prop_map(|(host, port, weight)| {
        let mut b = json!({ "host": host, "port": port });
        if let Some(w) = weight {
            b["weight"] = json!(w);
        }
        b
    })
}

/// A router; `external_path` holds a suffix only: `/r{index}` goes before it, so that no
/// router is a duplicate.
fn router() -> impl Strategy<Value = Value> {
    let methods = (
        vec(pick("POST|HEAD|x"), 0..3),
        pick("GET|get|Get"),
        any::<usize>(),
    );
    // Routers of the other Kairos protocols are skipped (with a warning).
    let protocol = prop_oneof![9 => Just("websocket"), 1 => pick("http|ftp|dns")];
    let parts = (
        0..SHAPES.len(),
        any::<usize>(),
        vec(backend(), 1..4),
        methods,
    );
    (parts, any::<bool>(), protocol).prop_map(|((shape, n, backends, m), auth, protocol)| {
        let (mut methods, get, at) = m;
        methods.insert(at % (methods.len() + 1), get);
        let (ext, internals) = SHAPES[shape];
        json!({
            "protocol": protocol, "external_path": ext, "methods": methods, "backends": backends,
            "internal_path": internals[n % internals.len()], "auth_required": auth,
        })
    })
}

/// A valid `jwt` block: a secret with HMAC algorithms, or a fixture key with its family.
fn jwt() -> impl Strategy<Value = Value> {
    let hmac = (
        text().prop_filter("non-empty", |s| !s.is_empty()),
        vec(pick("HS256|HS384|HS512"), 1..4),
    )
        .prop_map(|(secret, algs)| json!({ "secret": secret, "algorithms": algs }));
    let keyed = select(vec![
        ("rsa_public.pem", vec!["RS256", "PS512", "RS384"]),
        ("ec_public.pem", vec!["ES256"]),
        ("ed_public.pem", vec!["EdDSA"]),
    ])
    .prop_map(|(file, algs)| {
        let file = format!("tests/fixtures/{file}");
        json!({ "public_key_file": file, "algorithms": algs })
    });
    let query_param = prop_oneof![
        Just(json!(null)),
        "[A-Za-z0-9_.~-]{1,16}".prop_map(Value::from)
    ];
    let optional = (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(0u64..=86_400),
        prop::option::of(vec(text(), 0..3)),
        prop::option::of(query_param),
    );
    (prop_oneof![hmac, keyed], optional).prop_map(|(mut j, (iss, aud, leeway, claims, qp))| {
        let (iss, aud) = (iss.map(Value::from), aud.map(Value::from));
        let (leeway, claims) = (leeway.map(Value::from), claims.map(Value::from));
        let fields = [
            "issuer",
            "audience",
            "leeway_seconds",
            "required_claims",
            "query_param",
        ];
        for (k, v) in fields.into_iter().zip([iss, aud, leeway, claims, qp]) {
            if let Some(v) = v {
                j[k] = v;
            }
        }
        j
    })
}

/// What a valid config must load as.
#[derive(Debug, Clone)]
struct Expect {
    port: u16,
    workers: Option<usize>,
    head_bytes: usize,
    routes: Vec<String>,
    warnings: usize,
}

/// A valid config from known-good pieces (at least one websocket route), and what it must
/// load as.
fn valid_config() -> impl Strategy<Value = (Value, Expect)> {
    let server = prop::option::of((text(), 0u64..=65535, prop::option::of(1u64..=1024)));
    let limits = prop::option::of((1u64..=86_400_000, 16u64..=1 << 30, 256u64..=1 << 20));
    let parts = (server, limits, prop::option::of(jwt()), vec(router(), 1..5));
    parts.prop_map(|(server, limits, jwt, mut routers)| {
        let mut root = Map::new();
        root.insert("version".into(), json!(1));
        let mut expect = Expect {
            port: 5900,
            workers: None,
            head_bytes: 8192,
            routes: vec![],
            warnings: 0,
        };
        if let Some((host, port, workers)) = server {
            root.insert("server".into(), json!({ "host": host, "port": port }));
            if let Some(w) = workers {
                root["server"]["workers"] = json!(w);
            }
            (expect.port, expect.workers) = (port as u16, workers.map(|w| w as usize));
        }
        if let Some((ms, bytes, head)) = limits {
            let l = json!({ "handshake_timeout_ms": ms, "max_frame_bytes": bytes });
            root.insert("limits".into(), l);
            root["limits"]["max_request_head_bytes"] = json!(head);
            expect.head_bytes = head as usize;
        }
        let have_jwt = jwt.is_some();
        if let Some(j) = jwt {
            root.insert("jwt".into(), j);
        }
        if routers.iter().all(|r| r["protocol"] != "websocket") {
            routers[0]["protocol"] = json!("websocket");
        }
        for (i, r) in routers.iter_mut().enumerate() {
            let ext = format!("/r{i}{}", r["external_path"].as_str().unwrap());
            r["auth_required"] = json!(r["auth_required"] == true && have_jwt);
            r["external_path"] = json!(ext);
            match r["protocol"] == "websocket" {
                true => expect.routes.push(ext),
                false => expect.warnings += 1,
            }
        }
        root.insert("routers".into(), Value::Array(routers));
        (Value::Object(root), expect)
    })
}

/// Every field of the format (`/`-separated paths; numbers index arrays), and unknown ones.
const PATHS: &str = "version|server|server/host|server/port|server/workers|limits|\
    limits/handshake_timeout_ms|limits/backend_connect_timeout_ms|limits/max_message_bytes|\
    limits/max_frame_bytes|limits/max_request_head_bytes|limits/idle_timeout_ms|\
    limits/ping_interval_ms|jwt|jwt/secret|jwt/algorithms|jwt/algorithms/0|jwt/issuer|\
    jwt/audience|jwt/public_key_file|jwt/query_param|jwt/leeway_seconds|jwt/required_claims|\
    routers|routers/0|routers/0/protocol|routers/0/backends|routers/0/backends/0|\
    routers/0/backends/0/host|routers/0/backends/0/port|routers/0/backends/0/weight|\
    routers/1/backends/1/port|routers/0/external_path|routers/0/internal_path|routers/0/methods|\
    routers/0/methods/0|routers/0/auth_required|routers/1/external_path|tls|tls/ca_file|x|jwt/x";

/// The member `seg` of `node` (made an object, or an array's member, if need be).
fn child<'a>(node: &'a mut Value, seg: &str) -> &'a mut Value {
    if !node.is_object() && !node.is_array() {
        *node = json!({});
    }
    match node {
        Value::Array(a) => {
            if a.is_empty() {
                a.push(json!({}));
            }
            let n = a.len();
            &mut a[seg.parse::<usize>().unwrap_or(0) % n]
        }
        Value::Object(m) => m.entry(seg).or_insert(json!({})),
        _ => unreachable!(),
    }
}

/// Sets the value at `path` (creating what is missing), or removes it when `value` is `None`.
fn set_at(v: &mut Value, path: &str, value: Option<Value>) {
    let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
    let node = parent.split('/').filter(|s| !s.is_empty()).fold(v, child);
    match (value, node) {
        (Some(value), node) => *child(node, last) = value,
        (None, Value::Object(m)) => drop(m.remove(last)),
        (None, Value::Array(a)) if !a.is_empty() => drop(a.remove(0)),
        (None, _) => {}
    }
}

/// A valid config with one to four fields set to anything (wrong types, nulls, huge numbers,
/// hostile strings, deep nesting) or removed.
fn edited_config() -> impl Strategy<Value = Value> {
    let value = prop_oneof![3 => junk(), 2 => text().prop_map(Value::from)];
    let edit = (pick(PATHS), prop::option::weighted(0.85, value));
    (valid_config(), vec(edit, 1..5)).prop_map(|((mut v, _), edits)| {
        for (path, value) in edits {
            set_at(&mut v, path, value);
        }
        v
    })
}

/// The JSON pointers of every object of a valid config whose fields are checked (all but the
/// routers of other protocols, which are skipped unchecked).
fn checked_objects(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if m.get("protocol").is_some_and(|p| p != "websocket") => {}
        Value::Object(m) => {
            out.push(at.clone());
            for (k, child) in m {
                checked_objects(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                checked_objects(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The text of a valid config with characters inserted, removed or replaced.
fn mangled_text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        select("{}[]\",:\\0-e.".chars().collect::<Vec<_>>()),
        any::<char>()
    ];
    let edits = vec((any::<usize>(), 0u8..3, c), 1..6);
    (valid_config(), edits).prop_map(|((v, _), edits)| {
        let mut chars: Vec<char> = v.to_string().chars().collect();
        for (at, kind, c) in edits {
            let at = at % (chars.len() + 1);
            match (kind, at < chars.len()) {
                (0, true) => drop(chars.remove(at)),
                (1, true) => chars[at] = c,
                _ => chars.insert(at, c),
            }
        }
        chars.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_text_gives_config_or_problems(
        text in prop_oneof![any::<String>(), "[\\[\\]{}\":,0-9a-z ]{0,64}"],
    ) {
        check_parse(&text)?;
    }

    #[test]
    fn random_json_gives_config_or_problems(v in junk(), root in vec((key(), junk()), 0..8)) {
        check_parse(&v.to_string())?;
        let root: Map<String, Value> = root.into_iter().collect();
        check_parse(&Value::Object(root).to_string())?;
    }

    #[test]
    #[cfg(full)]
    fn valid_configs_load((v, expect) in valid_config()) {
        let text = v.to_string();
        let Some(loaded) = check_parse(&text)? else {
            let e = config::parse(&text, base()).unwrap_err();
            return Err(TestCaseError::fail(format!("refused: {e}")));
        };
        let c = &loaded.config;
        prop_assert_eq!(c.port, expect.port);
        if let Some(w) = expect.workers {
            prop_assert_eq!(c.workers, w);
        }
        prop_assert_eq!(c.limits.max_request_head_bytes, expect.head_bytes);
        let routes: Vec<&str> = c.routes.iter().map(|r| r.external.as_str()).collect();
        prop_assert_eq!(routes, expect.routes);
        prop_assert_eq!(loaded.warnings.len(), expect.warnings, "{:?}", loaded.warnings);
        prop_assert!(c.routes.iter().all(|r| !r.backends.is_empty()));
    }

    #[test]
    fn an_unknown_field_in_any_object_is_refused_naming_it(
        (mut v, _) in valid_config(),
        key in "x_[a-z]{1,8}",
        at in any::<usize>(),
    ) {
        let mut objects = Vec::new();
        checked_objects(&v, String::new(), &mut objects);
        let object = &objects[at % objects.len()];
        v.pointer_mut(object).and_then(Value::as_object_mut).unwrap().insert(key.clone(), json!(1));
        let problems = match config::parse(&v.to_string(), base()) {
            Ok(_) => return Err(TestCaseError::fail(format!("{key} at {object:?} loaded"))),
            Err(e) => e.problems,
        };
        let named = problems.iter().any(|p| p.contains(&format!("{key}: unknown field; ")));
        prop_assert!(named, "{} at {:?}: {:?}", key, object, problems);
    }

    #[test]
    fn edited_configs_give_config_or_problems(v in edited_config()) {
        check_parse(&v.to_string())?;
    }

    #[test]
    fn mangled_text_gives_config_or_problems(text in mangled_text()) {
        check_parse(&text)?;
    }
}

/// Found by `edited_configs_give_config_or_problems`: the path of a `jwt.public_key_file` that
/// cannot be read was printed as is, so a line break in it split the problem in two.
#[test]
fn regression_public_key_file_path_with_line_break() {
    let text = r#"{"jwt":{"public_key_file":"no-such-dir/a\nb"},"routers":[],"version":1}"#;
    let problems = config::parse(text, base()).unwrap_err().problems;
    assert!(problems.iter().all(|p| one_line(p)), "{problems:?}");
}

/// Found the same way: `tls.ca_file` problems quoted the path as is.
#[test]
fn regression_ca_file_path_with_line_break() {
    let text = r#"{"tls":{"ca_file":"no-such-dir/a\nb"},"routers":[],"version":1}"#;
    let problems = config::parse(text, base()).unwrap_err().problems;
    assert!(problems.iter().all(|p| one_line(p)), "{problems:?}");
}
