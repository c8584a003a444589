//! The JSON check against serde_json: tables of edge cases, the nesting limit, and proptest
//! runs on generated, mutated and random texts, fed whole and in pieces.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::{JsonCheck, MAX_DEPTH};

/// The check's verdict on `text`, fed whole.
fn check(text: &[u8]) -> bool {
    let mut c = JsonCheck::default();
    c.feed(text) && c.is_complete()
}

/// The check's verdict on `text` fed in the pieces `cuts` make (any order, any position).
fn check_in_pieces(text: &[u8], cuts: &[usize]) -> bool {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
    cuts.sort_unstable();
    let mut c = JsonCheck::default();
    let mut from = 0;
    for to in cuts.into_iter().chain([text.len()]) {
        if !c.feed(&text[from..to]) {
            return false;
        }
        from = to;
    }
    c.is_complete()
}

/// What the gateway checked with before: serde_json, ignoring the value.
fn serde(text: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
}

#[test]
fn accepts_json_and_refuses_the_rest_as_serde_json_does() {
    let valid = [
        "0",
        "-0",
        "12",
        "-1.5e+3",
        "1E5",
        "0.25",
        "2e-0",
        " true ",
        "false",
        "null",
        r#""""#,
        r#""a\"\\\/\b\f\n\r\t\u00e9\uD83D\ude00 é""#,
        "[]",
        "{}",
        "[1, [2, [3]], {}]",
        "{\"a\": {\"b\": [null, true]}, \"c\": \"d\"}",
        " \t\r\n[ ] ",
        "\"\x7f\"",
        "[-0.0e0]",
    ];
    let invalid = [
        "",
        " ",
        "01",
        "-",
        "+1",
        ".5",
        "1.",
        "1.e5",
        "1e",
        "1e+",
        "0x1",
        "00",
        "-01",
        "tru",
        "truex",
        "nul",
        "True",
        "NaN",
        "[",
        "]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{\"a\"}",
        "{\"a\":}",
        "{a:1}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\" 1}",
        "[}",
        "{]",
        "1 2",
        "1,2",
        "\"abc",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"a\nb\"",
        "\"\t\"",
        "[1]]",
        "{}}",
        "'a'",
        "[1,,2]",
    ];
    for text in valid {
        assert!(serde(text.as_bytes()), "serde_json refuses {text:?}");
        assert!(check(text.as_bytes()), "refused {text:?}");
    }
    for text in invalid {
        assert!(!serde(text.as_bytes()), "serde_json accepts {text:?}");
        assert!(!check(text.as_bytes()), "accepted {text:?}");
    }
}

#[test]
fn nesting_is_limited_as_serde_json_limits_it_for_a_value() {
    for depth in [1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000] {
        let depth = depth as usize;
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}0{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        for text in [arrays, objects] {
            let value = serde_json::from_slice::<serde_json::Value>(text.as_bytes()).is_ok();
            assert_eq!(check(text.as_bytes()), value, "depth {depth}");
            assert_eq!(value, depth <= MAX_DEPTH as usize, "depth {depth}");
        }
    }
}

/// A JSON value as text, with varied whitespace, numbers and escapes (nesting at most 6).
fn json_text() -> impl Strategy<Value = String> {
    let ws = select(vec!["", "", " ", "\n", "\t", " \r\n "]);
    let number = "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?";
    let string = vec(
        prop_oneof![
            4 => "[a-zA-Z0-9 ]",
            1 => select(vec!["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"])
                .prop_map(String::from),
            1 => "\\\\u[0-9a-fA-F]{4}",
            1 => any::<char>().prop_filter("unescaped", |c| *c >= ' ' && !"\"\\".contains(*c))
                .prop_map(String::from),
        ],
        0..8,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()));
    let leaf = prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
        number.prop_map(String::from),
        string.clone(),
    ];
    let text = leaf.prop_recursive(6, 64, 6, move |inner| {
        let item = (ws.clone(), inner, ws.clone()).prop_map(|(a, v, b)| format!("{a}{v}{b}"));
        prop_oneof![
            vec(item.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
            vec((string.clone(), item), 0..6).prop_map(|members| {
                let members: Vec<String> =
                    members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    });
    (
        select(vec!["", " ", "\n "]),
        text,
        select(vec!["", " ", "\t\n"]),
    )
        .prop_map(|(a, v, b)| format!("{a}{v}{b}"))
}

/// Bytes JSON is made of, and a few it is not.
const ALPHABET: &[u8] = b"[]{}:,\"\\ 0123456789-+.eEtrufalsn\t\nxu/\x01\x7f";

/// A change to a text: delete, insert or replace the byte at a position.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = select(ALPHABET);
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
}

fn mutate(mut text: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = text.len();
        match *m {
            Mutation::Delete(i) if n > 0 => {
                text.remove(i % n);
            }
            Mutation::Insert(i, b) => text.insert(i % (n + 1), b),
            Mutation::Replace(i, b) if n > 0 => text[i % n] = b,
            _ => {}
        }
    }
    text
}

/// Proptest's defaults (so `PROPTEST_CASES` applies); 512 cases when that is not set.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 512;
    }
    c.failure_persistence = None;
    c
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_json_is_accepted(text in json_text(), cuts in vec(any::<usize>(), 0..4)) {
        prop_assert!(serde(text.as_bytes()), "serde_json refuses {text:?}");
        prop_assert!(check(text.as_bytes()), "refused {text:?}");
        prop_assert!(check_in_pieces(text.as_bytes(), &cuts), "refused in pieces {text:?}");
    }

    #[test]
    fn mutated_json_gets_serde_jsons_verdict(
        text in json_text(),
        mutations in vec(mutation(), 1..4),
        cuts in vec(any::<usize>(), 0..4),
    ) {
        let text = mutate(text.into_bytes(), &mutations);
        let want = serde(&text);
        prop_assert_eq!(check(&text), want, "{:?}", String::from_utf8_lossy(&text));
        prop_assert_eq!(check_in_pieces(&text, &cuts), want);
    }

    #[test]
    fn random_bytes_get_serde_jsons_verdict(
        text in prop_oneof![vec(select(ALPHABET), 0..40), vec(any::<u8>(), 0..40)],
        cuts in vec(any::<usize>(), 0..4),
    ) {
        let want = serde(&text);
        prop_assert_eq!(check(&text), want, "{:?}", String::from_utf8_lossy(&text));
        prop_assert_eq!(check_in_pieces(&text, &cuts), want);
    }
}
