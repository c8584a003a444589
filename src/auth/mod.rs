//! Stage 4: find the JWT in the upgrade request and validate it. Pure, no I/O.
//!
//! The token comes from `Authorization: Bearer <t>` (scheme case-insensitive) or, for browsers
//! that cannot set headers, from the query parameter `jwt.query_param`. A token is never logged.
//! The verifier is built from the config's `jwt` block ([`JwtVerifier::from_config`]) by
//! whoever loads a config (its problems are config problems) and by each server generation.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{Jwt, KeySource};
use crate::error::AuthError;

#[cfg(not(feature = "jwt-asymmetric"))]
mod hmac_only;
#[cfg(feature = "jwt-asymmetric")]
mod pem;

/// Longest token accepted, in bytes (real tokens are well under 8 KiB; this bounds the work).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What checks a token: the key and the rules of the config's `jwt` block, built by
/// [`JwtVerifier::from_config`] (the rest of the block, such as where the token is looked for,
/// is read from the config where it is used).
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    required_claims: Vec<String>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier of the config's `jwt` block: its algorithms and its key. `Err` holds
    /// every problem, one line each, named by its field (`jwt.algorithms: ...`), as a config
    /// problem is: whoever loads a config builds the verifier and reports them with the rest.
    pub fn from_config(s: &Jwt) -> Result<JwtVerifier, Vec<String>> {
        #[cfg(not(feature = "jwt-asymmetric"))]
        hmac_only::install();
        let mut errors = Vec::new();
        let algs = algorithms(&s.algorithms, &mut errors);
        let key = match (&s.key, algs.first().map(|a| a.family())) {
            (_, None) => None,
            (KeySource::Secret(secret), Some(fam)) => {
                if fam != AlgorithmFamily::Hmac {
                    errors.push(format!(
                        "jwt.algorithms: {:?} needs public_key_file, not secret",
                        s.algorithms
                    ));
                }
                if secret.is_empty() {
                    errors.push("jwt.secret: must not be empty".to_string());
                }
                Some(DecodingKey::from_secret(secret.as_bytes()))
            }
            (KeySource::PublicKeyPem { path, pem }, Some(fam)) => load_public_key(path, pem, fam)
                .map_err(|e| errors.push(e))
                .ok(),
        };
        let (Some(key), true) = (key, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(JwtVerifier {
            key,
            validation: validation(s, algs),
            required_claims: s.required_claims.clone(),
        })
    }

    /// Validates a token; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An `alg` this library does not know (`none`) makes the header fail to parse; a
            // known `alg` means something else in the header is wrong.
            ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName => match header_alg(token) {
                Some(alg) if Algorithm::from_str(&alg).is_err() => {
                    AuthError::AlgorithmNotAllowed(alg)
                }
                _ => AuthError::Malformed("header is not a valid JWT header".to_string()),
            },
            _ => map_error(e.kind()),
        })?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| map_error(e.kind()))?;
        if let Some(c) = self
            .required_claims
            .iter()
            .find(|c| !data.claims.contains_key(c.as_str()))
        {
            return Err(AuthError::MissingClaim(c.clone()));
        }
        Ok(data.claims)
    }
}

/// The algorithms named by `jwt.algorithms`, all of one family; a problem for each that is not.
fn algorithms(names: &[String], errors: &mut Vec<String>) -> Vec<Algorithm> {
    let mut algs = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case("none") {
            errors.push("jwt.algorithms: \"none\" is never allowed".to_string());
        } else {
            match Algorithm::from_str(name) {
                Ok(a) => algs.push(a),
                Err(_) => errors.push(format!(
                    "jwt.algorithms: unknown algorithm {name:?} (use HS256/384/512, \
                     RS256/384/512, PS256/384/512, ES256/384 or EdDSA)"
                )),
            }
        }
    }
    if names.is_empty() {
        errors.push("jwt.algorithms: must name at least one algorithm".to_string());
    }
    if !cfg!(feature = "jwt-asymmetric") {
        for a in algs.iter().filter(|a| a.family() != AlgorithmFamily::Hmac) {
            errors.push(format!(
                "jwt.algorithms: {a:?} needs a build with the jwt-asymmetric feature (the \
                 default); this build verifies HS256, HS384 and HS512 only"
            ));
        }
    }
    if algs.windows(2).any(|w| w[0].family() != w[1].family()) {
        errors.push(
            "jwt.algorithms: all algorithms must be of one family (HMAC, RSA, EC or EdDSA), \
             matching the one key"
                .to_string(),
        );
    }
    algs
}

/// The checks a token must pass: one of `algs`, `exp` within the leeway, and the issuer and
/// audience when the block names them.
fn validation(s: &Jwt, algs: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(algs[0]);
    validation.algorithms = algs;
    validation.leeway = s.leeway_seconds;
    validation.validate_nbf = true;
    let mut spec = vec!["exp"];
    if let Some(iss) = &s.issuer {
        validation.set_issuer(&[iss]);
        spec.push("iss");
    }
    match &s.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            spec.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&spec);
    validation
}

/// The headers `forward_claims` (`jwt.forward_claims` of the config) sets on the backend
/// request from a verified token's `claims`, as (header, value), in `forward_claims` order. A
/// claim that is absent or `null` sets nothing; one whose value would hold a control character
/// is left out and handed to `skipped` as (claim, header): see [`claim_header_value`].
pub fn claim_headers<'f>(
    forward_claims: &'f [(String, String)],
    claims: &Map<String, Value>,
    mut skipped: impl FnMut(&str, &str),
) -> Vec<(&'f str, String)> {
    let mut out = Vec::with_capacity(forward_claims.len());
    for (claim, header) in forward_claims {
        let Some(value) = claims.get(claim).filter(|v| !v.is_null()) else {
            continue;
        };
        match claim_header_value(value) {
            Some(text) => out.push((header.as_str(), text)),
            None => skipped(claim, header),
        }
    }
    out
}

/// A claim's value as the text of a header: a string as it is, a number or boolean as its
/// JSON text, an array or object as compact JSON. `None` when that text holds a control
/// character (CR, LF, NUL, any other C0 but tab, or DEL): it would let a token's issuer, or
/// whoever it lets pick a claim's value, write header lines of its own into the backend's
/// request, so it never reaches the wire.
pub fn claim_header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    (!text.bytes().any(control)).then_some(text)
}

#[cfg(not(feature = "jwt-asymmetric"))]
fn load_public_key(path: &str, _: &[u8], _: AlgorithmFamily) -> Result<DecodingKey, String> {
    Err(format!(
        "jwt.public_key_file: {path}: this build verifies HMAC tokens only (HS256, HS384, HS512: \
         jwt.secret); RSA, EC and EdDSA keys need a build with the jwt-asymmetric feature \
         (the default)"
    ))
}

#[cfg(feature = "jwt-asymmetric")]
fn load_public_key(path: &str, pem: &[u8], family: AlgorithmFamily) -> Result<DecodingKey, String> {
    use AlgorithmFamily as F;
    let (kind, res) = match family {
        F::Hmac => {
            return Err(format!(
                "jwt.public_key_file: {path}: HMAC algorithms need jwt.secret, not a public key \
                 (accepting HS* with a public key enables algorithm confusion)"
            ))
        }
        F::Rsa => ("an RSA", pem::public_key(pem, pem::Kind::Rsa)),
        F::Ec => ("an EC", pem::public_key(pem, pem::Kind::Ec)),
        F::Ed => ("an Ed25519", pem::public_key(pem, pem::Kind::Ed)),
    };
    let der = res.map_err(|e| {
        format!("jwt.public_key_file: {path}: not {kind} public key in PEM format ({e})")
    })?;
    Ok(match family {
        F::Rsa => DecodingKey::from_rsa_der(&der),
        F::Ec => DecodingKey::from_ec_der(&der),
        _ => DecodingKey::from_ed_der(&der),
    })
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed("(key mismatch)".into()),
        ErrorKind::InvalidClaimFormat(c) => {
            AuthError::Malformed(format!("claim {c} has a bad type"))
        }
        ErrorKind::Base64(_) => AuthError::Malformed("bad base64".to_string()),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed("bad JSON".to_string()),
        _ => AuthError::Malformed("not a JWT".to_string()),
    }
}

/// The `alg` named in a token's header, decoded without trusting anything else (used only to
/// say which algorithm was refused, such as `none`).
fn header_alg(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let json = base64url_decode(head)?;
    let v: Value = serde_json::from_slice(&json).ok()?;
    let alg = v.get("alg")?.as_str()?;
    Some(
        alg.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect(),
    )
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    base64_decode(s.bytes(), true)
}

/// Decodes base64 up to its `=` padding: the URL-safe alphabet (`-`, `_`) when `url`, else the
/// standard one (`+`, `/`).
fn base64_decode(s: impl Iterator<Item = u8>, url: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.size_hint().0 * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' if url => 62,
            b'_' if url => 63,
            b'+' if !url => 62,
            b'/' if !url => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Finds the token in the request: the `Authorization` header values and the query string.
/// Two tokens (two headers, or header and query) are refused rather than guessed between.
pub fn extract_token(
    authorization: &[&str],
    query: Option<&str>,
    query_param: Option<&str>,
) -> Result<String, AuthError> {
    if authorization.len() > 1 {
        return Err(AuthError::Malformed(
            "more than one Authorization header".to_string(),
        ));
    }
    let from_header = match authorization.first() {
        Some(value) => {
            let value = value.trim();
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Malformed(
                    "Authorization scheme must be Bearer".to_string(),
                ));
            }
            let token = rest.trim();
            if token.is_empty() {
                return Err(AuthError::Missing);
            }
            Some(token.to_string())
        }
        None => None,
    };
    let from_query = match (query, query_param) {
        (Some(q), Some(name)) => {
            let mut found = crate::route::query_params(q, name).filter(|t| !t.is_empty());
            let first = found.next();
            if found.next().is_some() {
                return Err(AuthError::Malformed(
                    "more than one token parameter in the query".to_string(),
                ));
            }
            first
        }
        _ => None,
    };
    match (from_header, from_query) {
        (Some(_), Some(_)) => Err(AuthError::Malformed(
            "token both in the Authorization header and the query".to_string(),
        )),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(AuthError::Missing),
    }
}

#[cfg(test)]
mod tests;
