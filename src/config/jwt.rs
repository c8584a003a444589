//! The `jwt` block.

use std::path::Path;

use serde_json::Value;

use super::fields::{Fields, Report};
use super::tls;

/// Where the key comes from, as written in the config.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `jwt.secret`: an HMAC secret.
    Secret(String),
    /// `jwt.public_key_file`: the PEM text of an RSA, EC or Ed25519 public key, and its path.
    PublicKeyPem {
        /// File the PEM came from (for error messages).
        path: String,
        /// PEM text.
        pem: Vec<u8>,
    },
}

/// The `jwt` block: the key and the rules a token must meet (the verifier `auth` builds from
/// them: its algorithm and key checks are config problems too), and what the gateway does with
/// a token.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// The key.
    pub key: KeySource,
    /// `algorithms` (HS256): names as in the JWT header.
    pub algorithms: Vec<String>,
    /// `issuer`: required and checked when set.
    pub issuer: Option<String>,
    /// `audience`: required and checked when set.
    pub audience: Option<String>,
    /// `required_claims`: names that must be present (besides `exp`).
    pub required_claims: Vec<String>,
    /// `leeway_seconds` (30): clock skew allowed for `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// `query_param` (`access_token`; null: `None`, header only): the query parameter that
    /// may carry the token.
    pub query_param: Option<String>,
    /// `enforce_expiry` (true): a connection is closed with 1008 when its token expires.
    pub enforce_expiry: bool,
    /// `forward_claims`: (claim, header) pairs set on the backend request.
    pub forward_claims: Vec<(String, String)>,
    /// `strip_authorization` (false): the backend gets neither the `Authorization` header nor
    /// the token parameter.
    pub strip_authorization: bool,
}

/// The `jwt` block: key, accepted tokens, and what the gateway does with them.
pub(super) fn read_jwt(
    root: &mut Fields,
    base: &Path,
    check: super::JwtCheck,
    report: &mut Report,
) -> Option<Jwt> {
    let v = root.raw("jwt")?;
    let mut j = Fields::new("", "jwt.", v, report)?;
    let secret = j.string(report, "secret");
    let key_file = j.string(report, "public_key_file");
    let key = match (secret, key_file) {
        (Some(_), Some(_)) => {
            j.error(
                report,
                "secret",
                "give either secret or public_key_file, not both",
            );
            None
        }
        (Some(s), None) => Some(KeySource::Secret(s.to_string())),
        (None, Some(f)) => {
            let path = tls::resolve(base, f);
            match tls::read_capped(&path) {
                // jsonwebtoken would take an RSA private key as the key, and then fail every
                // token's signature: refuse it here, where `--check` shows it.
                Ok(pem) if private_key(&pem) => {
                    j.error(
                        report,
                        "public_key_file",
                        format!(
                            "{}: is a private key; give the public key \
                             (openssl pkey -in KEY -pubout)",
                            path.display()
                        ),
                    );
                    None
                }
                Ok(pem) => Some(KeySource::PublicKeyPem {
                    path: path.display().to_string(),
                    pem,
                }),
                Err(e) => {
                    j.error(
                        report,
                        "public_key_file",
                        format!("{}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (None, None) => {
            j.error(
                report,
                "secret",
                "the jwt block needs secret or public_key_file",
            );
            None
        }
    };
    let algorithms = j
        .strings(report, "algorithms")
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_else(|| vec!["HS256".to_string()]);
    let issuer = j.string(report, "issuer").map(str::to_string);
    let audience = j.string(report, "audience").map(str::to_string);
    let required_claims = j
        .strings(report, "required_claims")
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let leeway_seconds = j.int(report, "leeway_seconds", 0, 86_400, 30);
    let query_param = match j.raw("query_param") {
        None => Some("access_token".to_string()),
        Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && !s.contains(['&', '=', ' ']) => Some(s.clone()),
        Some(other) => {
            j.error(
                report,
                "query_param",
                format!("must be a parameter name or null, found {other}"),
            );
            None
        }
    };
    let enforce_expiry = j.bool(report, "enforce_expiry", true);
    let strip_authorization = j.bool(report, "strip_authorization", false);
    let forward_claims = read_forward_claims(&mut j, report);
    j.finish(report);
    let jwt = Jwt {
        key: key?,
        algorithms,
        issuer,
        audience,
        required_claims,
        leeway_seconds,
        query_param,
        enforce_expiry,
        forward_claims,
        strip_authorization,
    };
    check(&jwt).map_err(|e| report.errors.extend(e)).ok()?;
    Some(jwt)
}

/// Whether `pem` holds a private key of any kind.
fn private_key(pem: &[u8]) -> bool {
    [
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
    ]
    .iter()
    .any(|label| tls::has_section(pem, label))
}

/// `forward_claims: {"claim": "Header-Name", ...}`.
fn read_forward_claims(j: &mut Fields, report: &mut Report) -> Vec<(String, String)> {
    let Some(v) = j.raw("forward_claims") else {
        return Vec::new();
    };
    let Value::Object(map) = v else {
        j.error(
            report,
            "forward_claims",
            format!("must be an object of claim -> header name, found {v}"),
        );
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (claim, header) in map {
        let Some(name) = header.as_str() else {
            j.error(
                report,
                "forward_claims",
                format!("{claim:?}: the header name must be a string, found {header}"),
            );
            continue;
        };
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let lower = name.to_ascii_lowercase();
        let problem = if !token {
            Some("is not a valid header name".to_string())
        } else if crate::headers::reserved_for_claims(&lower) {
            Some("is a header the gateway sets itself or never forwards".to_string())
        } else if out.iter().any(|(_, h)| h.eq_ignore_ascii_case(name)) {
            Some("is used for two claims".to_string())
        } else {
            None
        };
        match problem {
            Some(p) => j.error(report, "forward_claims", format!("{claim:?}: {name:?} {p}")),
            None => out.push((claim.clone(), name.to_string())),
        }
    }
    out
}
