//! The `jwt` block.

use std::fmt;

use serde_json::Value;

use super::fields::{At, Fields, Object};
use super::tls;

/// Where the key comes from, as written in the config. Its `Debug` never shows the secret.
#[derive(Clone)]
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

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(..)"),
            KeySource::PublicKeyPem { path, .. } => write!(f, "PublicKeyPem({path})"),
        }
    }
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

/// The `jwt` block as it is read: the settings, and the two ways to give the key.
struct JwtBlock {
    jwt: Jwt,
    secret: Option<String>,
    key_file: Option<String>,
    /// Whether the settings are usable: a key, and the check of [`super::Env`] passed.
    valid: bool,
}

impl Default for JwtBlock {
    /// The defaults documented on [`Jwt`]'s fields (the key is set once read).
    fn default() -> JwtBlock {
        let jwt = Jwt {
            key: KeySource::Secret(String::new()),
            algorithms: vec!["HS256".to_string()],
            issuer: None,
            audience: None,
            required_claims: Vec::new(),
            leeway_seconds: 30,
            query_param: Some("access_token".to_string()),
            enforce_expiry: true,
            forward_claims: Vec::new(),
            strip_authorization: false,
        };
        JwtBlock {
            jwt,
            secret: None,
            key_file: None,
            valid: false,
        }
    }
}

impl Object for JwtBlock {
    fn fields(&mut self, f: &mut Fields) {
        let j = &mut self.jwt;
        f.text("secret", |s, _| self.secret = Some(s.to_string()));
        f.text("public_key_file", |file, _| {
            self.key_file = Some(file.to_string())
        });
        f.texts("algorithms", |list, _| j.algorithms = owned(list));
        f.text("issuer", |s, _| j.issuer = Some(s.to_string()));
        f.text("audience", |s, _| j.audience = Some(s.to_string()));
        f.texts("required_claims", |list, _| j.required_claims = owned(list));
        f.int("leeway_seconds", 0, 86_400, |n| j.leeway_seconds = n);
        f.any("query_param", |v, at| j.query_param = query_param(v, at));
        f.flag("enforce_expiry", |on| j.enforce_expiry = on);
        f.flag("strip_authorization", |on| j.strip_authorization = on);
        f.any("forward_claims", |v, at| {
            j.forward_claims = forward_claims(v, at)
        });
        // The key, from `secret` or `public_key_file` (one of them); then the check of the
        // settings by whoever builds the verifier.
        let Some(key) = self.key(f.at()) else {
            return;
        };
        self.jwt.key = key;
        let at = f.at();
        match (at.env.check_jwt)(&self.jwt) {
            Ok(()) => self.valid = true,
            Err(problems) => problems.into_iter().for_each(|p| at.problem(p)),
        }
    }
}

impl JwtBlock {
    /// The key: `secret`, or the public key in `public_key_file` (one of the two); `None`
    /// with the problem reported.
    fn key(&self, at: &mut At) -> Option<KeySource> {
        let file = match (&self.secret, &self.key_file) {
            (Some(s), None) => return Some(KeySource::Secret(s.clone())),
            (None, Some(f)) => at.env.resolve(f),
            (Some(_), Some(_)) => {
                at.error("secret", "give either secret or public_key_file, not both");
                return None;
            }
            (None, None) => {
                at.error("secret", "the jwt block needs secret or public_key_file");
                return None;
            }
        };
        let shown = file.display();
        match tls::read_capped(&file) {
            // jsonwebtoken would take an RSA private key as the key, and then fail every
            // token's signature: refuse it here, where `--check` shows it.
            Ok(pem) if private_key(&pem) => at.error(
                "public_key_file",
                format_args!(
                    "{shown}: is a private key; give the public key \
                     (openssl pkey -in KEY -pubout)"
                ),
            ),
            Ok(pem) => {
                let path = shown.to_string();
                return Some(KeySource::PublicKeyPem { path, pem });
            }
            Err(e) => at.error("public_key_file", format_args!("{shown}: {e}")),
        }
        None
    }
}

/// Reads the `jwt` block: `None` when it has no usable key (reported).
pub(super) fn read(v: &Value, at: &mut At) -> Option<Jwt> {
    at.object::<JwtBlock>(v).filter(|b| b.valid).map(|b| b.jwt)
}

fn owned(list: Vec<&str>) -> Vec<String> {
    list.into_iter().map(str::to_string).collect()
}

/// `query_param`: a parameter name, or `null` for none (header only).
fn query_param(v: &Value, at: &mut At) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if !s.is_empty() && !s.contains(['&', '=', ' ']) => Some(s.clone()),
        other => {
            at.fail(format_args!(
                "must be a parameter name or null, found {other}"
            ));
            None
        }
    }
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
fn forward_claims(v: &Value, at: &mut At) -> Vec<(String, String)> {
    let Value::Object(map) = v else {
        at.fail(format_args!(
            "must be an object of claim -> header name, found {v}"
        ));
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (claim, header) in map {
        let Some(name) = header.as_str() else {
            at.fail(format_args!(
                "{claim:?}: the header name must be a string, found {header}"
            ));
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
            Some(p) => at.fail(format_args!("{claim:?}: {name:?} {p}")),
            None => out.push((claim.clone(), name.to_string())),
        }
    }
    out
}
