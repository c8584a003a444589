//! Stages 3 and 4 (route, auth) plus the route's origin policy: which route a request is
//! for, whether its method, upgrade headers and `Origin` are acceptable, and what the backend
//! is to be asked for ([`admit`]); then, once the connection limits have let it in, whether its
//! token is ([`authorize`]).

use super::connection::Refused;
use crate::auth::{extract_token, JwtVerifier};
use crate::config::{Config, Route};
use crate::error::{AuthError, Error};
use crate::handshake::{self, Head, Request, Upgrade};
use crate::relay::{Both, Context, Transformer};
use crate::route;

/// A verified token's claims.
pub(super) type Claims = serde_json::Map<String, serde_json::Value>;

/// What an admitted request is: its route (and position in `config.routes`), the backend's
/// target and the upgrade fields. Its token is not checked yet.
pub(super) struct Admitted<'c> {
    pub(super) at: usize,
    pub(super) route: &'c Route,
    pub(super) target: String,
    /// The client's query, normalised (for a `query:` sticky key, and the token parameter).
    pub(super) query: Option<String>,
    pub(super) upgrade: Upgrade,
}

/// Route, method, upgrade and origin checks, in that order. Returns the route, the backend's
/// path and query (normalised; on an `auth_required` route the token parameter removed, unless
/// the route's `pass_token_param`) and the upgrade fields. The token is [`authorize`]'s: the
/// connection limits come between them, so that a client over its own limit costs no
/// signature check.
pub(super) fn admit<'c>(config: &'c Config, req: &Request) -> Result<Admitted<'c>, Refused> {
    let mut at = None;
    checks(config, req, &mut at).map_err(|e| Refused(e, at))
}

/// The token of a request [`admit`] let in: its claims on an `auth_required` route (401 when
/// it has none or a bad one), `None` on the others.
pub(super) fn authorize(
    config: &Config,
    verifier: Option<&JwtVerifier>,
    admitted: &Admitted<'_>,
    req: &Request,
) -> Result<Option<Claims>, Refused> {
    if !admitted.route.auth_required {
        return Ok(None);
    }
    let param = config.jwt.as_ref().and_then(|j| j.query_param.as_deref());
    let verified = match verifier {
        None => Err(Error::Unauthorized(AuthError::Missing)),
        Some(jwt) => verify(jwt, param, req, admitted.query.as_deref()),
    };
    verified
        .map(Some)
        .map_err(|e| Refused(e, Some(admitted.at)))
}

/// The token of a request on an `auth_required` route, from its `Authorization` header or its
/// (normalised) query, verified: its claims.
fn verify(
    jwt: &JwtVerifier,
    param: Option<&str>,
    req: &Request,
    query: Option<&str>,
) -> Result<Claims, Error> {
    if req
        .header_raw("Authorization")
        .any(|v| std::str::from_utf8(v).is_err())
    {
        return Err(Error::Unauthorized(AuthError::Malformed(
            "Authorization header is not valid text".to_string(),
        )));
    }
    let auth: Vec<&str> = req.header_all("Authorization").collect();
    let token = extract_token(&auth, query, param).map_err(Error::Unauthorized)?;
    jwt.verify(&token).map_err(Error::Unauthorized)
}

/// [`admit`]'s checks; `at` is set once the route is known.
fn checks<'c>(
    config: &'c Config,
    req: &Request,
    at: &mut Option<usize>,
) -> Result<Admitted<'c>, Error> {
    let target = route::origin_form(&req.target);
    let (raw_path, raw_query) = route::split_target(&target);
    if !raw_path.starts_with('/') {
        return Err(Error::BadRequest(
            "the request target must be a path starting with /".to_string(),
        ));
    }
    // Routes see, and backends get, the normal form: `/ws/%61dmin` is `/ws/admin`.
    let path = route::normalize(raw_path, false).map_err(Error::BadRequest)?;
    let query = match raw_query {
        Some(q) => Some(route::normalize(q, true).map_err(Error::BadRequest)?),
        None => None,
    };
    let (index, captures) = route::find(config.routes.iter().map(|r| &r.external), &path)
        .ok_or_else(|| Error::NotFound(path.to_string()))?;
    *at = Some(index);
    let route = &config.routes[index];
    if req.method != "GET" {
        return Err(Error::MethodNotAllowed(req.method.clone()));
    }
    let upgrade = handshake::check_upgrade(req)?;
    check_origin(route, req)?;
    let mut target = route.internal.render(&captures);
    // The token parameter is the gateway's, not the backend's (unless the route asks for it).
    let param = config.jwt.as_ref().and_then(|j| j.query_param.as_deref());
    let backend_query = match (query.as_deref(), param) {
        (Some(q), Some(name)) if route.auth_required && !route.pass_token_param => {
            route::strip_query_param(q, name)
        }
        (q, _) => q.map(str::to_string),
    };
    if let Some(q) = backend_query {
        target.push('?');
        target.push_str(&q);
    }
    Ok(Admitted {
        at: index,
        route,
        target,
        query: query.map(|q| q.into_owned()),
        upgrade,
    })
}

/// The route's origin policy (cross-site WebSocket hijacking protection): an `Origin` must be
/// one of `allowed_origins` (compared exactly, case-insensitively; `null` is never listed, so
/// it passes only where any origin does), and is needed at all only with `require_origin`.
/// Two `Origin` headers are a bad request on every route (RFC 6454 7.3: one at most).
fn check_origin(route: &Route, req: &Request) -> Result<(), Error> {
    let mut sent = req.header_raw("Origin");
    let origin = sent.next();
    if sent.next().is_some() {
        return Err(Error::BadRequest("more than one Origin header".to_string()));
    }
    let Some(raw) = origin else {
        if route.require_origin {
            return Err(Error::Forbidden(
                "this route requires an Origin header (require_origin)".to_string(),
            ));
        }
        return Ok(());
    };
    let Some(allowed) = &route.origins else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(raw);
    let origin = origin.trim();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "origin {origin:?} is not allowed for this route (allowed_origins; cross-site \
         WebSocket hijacking protection)"
    )))
}

/// The route's `message_transform` rules for this connection, each side's with the values
/// known now filled in; 401 when the token lacks a claim a rule takes (never a silent null).
pub(super) fn transforms(
    admitted: &Admitted<'_>,
    claims: Option<&Claims>,
    id: u64,
    client: std::net::IpAddr,
) -> Result<Both<Option<Box<Transformer>>>, Refused> {
    let Some(t) = admitted.route.transform.as_ref() else {
        return Ok(Both::default());
    };
    let cx = Context {
        claims,
        id,
        client,
        route: admitted.route.external.as_str(),
    };
    let side = |rules: &[crate::config::Rule]| match rules.is_empty() {
        true => Ok(None),
        false => Transformer::new(rules, t.max_message_bytes, &cx).map(|t| Some(Box::new(t))),
    };
    let made = side(&t.client_to_backend).and_then(|c| Ok((c, side(&t.backend_to_client)?)));
    match made {
        Ok((client, backend)) => Ok(Both { client, backend }),
        Err(claim) => Err(Refused(
            Error::Unauthorized(AuthError::MissingClaim(claim)),
            Some(admitted.at),
        )),
    }
}
