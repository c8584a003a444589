//! Unit tests of token extraction and validation.
// Helpers of the tests a build without every feature leaves out.
#![cfg_attr(not(full), allow(dead_code))]
use super::*;
use crate::config::{Jwt, KeySource};
use serde_json::json;

#[test]
fn extract_table() {
    let q = Some("access_token");
    assert_eq!(extract_token(&["Bearer abc"], None, q), Ok("abc".into()));
    assert_eq!(extract_token(&["bEaReR  abc "], None, q), Ok("abc".into()));
    assert_eq!(
        extract_token(&[], Some("x=1&access_token=t"), q),
        Ok("t".into())
    );
    assert_eq!(
        extract_token(&[], Some("access_token=t"), None),
        Err(AuthError::Missing)
    );
    assert_eq!(extract_token(&[], None, q), Err(AuthError::Missing));
    assert_eq!(extract_token(&["Bearer"], None, q), Err(AuthError::Missing));
    assert!(matches!(
        extract_token(&["Basic x"], None, q),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        extract_token(&["Bearer a", "Bearer b"], None, q),
        Err(AuthError::Malformed(_))
    ));
}

fn pem(name: &str, text: &[u8]) -> KeySource {
    KeySource::PublicKeyPem {
        path: format!("tests/fixtures/{name}"),
        pem: text.to_vec(),
    }
}

/// A `jwt` block with `key` and `algs`, the rest as the config's defaults.
fn settings(key: KeySource, algs: &[&str]) -> Jwt {
    Jwt {
        key,
        algorithms: algs.iter().map(|a| a.to_string()).collect(),
        issuer: None,
        audience: None,
        required_claims: Vec::new(),
        leeway_seconds: 30,
        query_param: None,
        enforce_expiry: true,
        forward_claims: Vec::new(),
        strip_authorization: false,
    }
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn verifier_config_table() {
    let rsa = || {
        pem(
            "rsa_public.pem",
            include_bytes!("../../tests/fixtures/rsa_public.pem"),
        )
    };
    let ec = || {
        pem(
            "ec_public.pem",
            include_bytes!("../../tests/fixtures/ec_public.pem"),
        )
    };
    let ed = || {
        pem(
            "ed_public.pem",
            include_bytes!("../../tests/fixtures/ed_public.pem"),
        )
    };
    let secret = || KeySource::Secret("s3cret".to_string());
    // (key, algorithms, None when valid or a word every error list must contain)
    let cases: Vec<(KeySource, &[&str], Option<&str>)> = vec![
        (secret(), &["HS256"], None),
        (secret(), &["HS256", "HS384", "HS512"], None),
        (rsa(), &["RS256", "PS256"], None),
        (ec(), &["ES256"], None),
        (ed(), &["EdDSA"], None),
        (rsa(), &["HS256"], Some("algorithm confusion")),
        (secret(), &["none"], Some("never allowed")),
        (secret(), &["HS256", "None"], Some("never allowed")),
        (rsa(), &["NONE"], Some("never allowed")),
        (secret(), &["HS256", "RS256"], Some("one family")),
        (rsa(), &["RS256", "ES256"], Some("one family")),
        (secret(), &["RS256"], Some("needs public_key_file")),
        (secret(), &[], Some("at least one")),
        (secret(), &["XS256"], Some("unknown algorithm")),
        (
            KeySource::Secret(String::new()),
            &["HS256"],
            Some("must not be empty"),
        ),
        (ec(), &["RS256"], Some("not an RSA public key")),
        (rsa(), &["ES256"], Some("not an EC public key")),
        (rsa(), &["EdDSA"], Some("not an Ed25519 public key")),
        (pem("junk.pem", b"not a pem"), &["RS256"], Some("junk.pem")),
    ];
    for (key, algs, want) in cases {
        match (JwtVerifier::from_config(&settings(key.clone(), algs)), want) {
            (Ok(_), None) => {}
            (Ok(_), Some(w)) => panic!("{key:?} {algs:?}: accepted, expected {w:?}"),
            (Err(e), None) => panic!("{key:?} {algs:?}: refused: {e:?}"),
            (Err(e), Some(w)) => assert!(
                e.iter().any(|e| e.contains(w)),
                "{algs:?}: errors {e:?} do not say {w:?}"
            ),
        }
    }
}

#[test]
fn claim_header_values() {
    let cases = [
        (json!("alice"), Some("alice")),
        (json!("tab\tok é"), Some("tab\tok é")),
        (json!(""), Some("")),
        (json!(42), Some("42")),
        (json!(-1.5), Some("-1.5")),
        (json!(true), Some("true")),
        (json!(["a", 1]), Some(r#"["a",1]"#)),
        (json!({"k": {"n": [1, 2]}}), Some(r#"{"k":{"n":[1,2]}}"#)),
        // JSON escapes C0 characters inside arrays and objects: safe.
        (json!(["a\nb"]), Some(r#"["a\nb"]"#)),
        (json!("a\r\nX-Admin: 1"), None),
        (json!("a\nb"), None),
        (json!("nul\u{0}"), None),
        (json!("bell\u{7}"), None),
        (json!("del\u{7f}"), None),
        // serde_json does not escape DEL.
        (json!(["del\u{7f}"]), None),
    ];
    for (value, want) in cases {
        assert_eq!(claim_header_value(&value).as_deref(), want, "{value}");
    }
}

#[test]
fn claim_headers_follow_forward_claims() {
    let forward: Vec<(String, String)> = [("sub", "X-User-Id"), ("n", "X-N"), ("bad", "X-Bad")]
        .iter()
        .chain(&[("gone", "X-Gone"), ("nil", "X-Nil")])
        .map(|(c, h)| (c.to_string(), h.to_string()))
        .collect();
    let claims = json!({"sub": "alice", "n": 7, "bad": "x\ny", "nil": null});
    let mut skipped = Vec::new();
    let set = claim_headers(&forward, claims.as_object().unwrap(), |c, h| {
        skipped.push(format!("{c}->{h}"))
    });
    assert_eq!(set, [("X-User-Id", "alice".into()), ("X-N", "7".into())]);
    assert_eq!(skipped, ["bad->X-Bad"]);
}

#[test]
fn base64url_and_header_alg() {
    assert_eq!(
        base64url_decode("eyJhbGciOiJub25lIn0").unwrap(),
        br#"{"alg":"none"}"#
    );
    assert_eq!(header_alg("eyJhbGciOiJub25lIn0.e30."), Some("none".into()));
    assert_eq!(header_alg("!!!.e30."), None);
}
