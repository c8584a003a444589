//! Stages 3 and 4 (route, auth) plus the route's origin policy: which route a request is
//! for, whether its method, upgrade headers, `Origin` and token are acceptable, and what the
//! backend is to be asked for.

use super::connection::Refused;
use crate::auth::{extract_token, AuthError};
use crate::config::{Config, Route};
use crate::error::Error;
use crate::handshake::{self, Head, Request, Upgrade};
use crate::route;

/// What an admitted request is: its route (and position in `config.routes`), the backend's
/// target, the upgrade fields, and the verified token's claims.
pub(super) struct Admitted<'c> {
    pub(super) at: usize,
    pub(super) route: &'c Route,
    pub(super) target: String,
    /// The client's query (for a `query:` sticky key).
    pub(super) query: Option<String>,
    pub(super) upgrade: Upgrade,
    pub(super) claims: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Route, method, upgrade, origin and token checks, in that order. Returns the route, the
/// backend's path and query (the token parameter removed only with `jwt.strip_authorization`),
/// the upgrade fields and the claims.
pub(super) fn admit<'c>(config: &'c Config, req: &Request) -> Result<Admitted<'c>, Refused> {
    let mut at = None;
    checks(config, req, &mut at).map_err(|e| Refused(e, at))
}

/// [`admit`]'s checks; `at` is set once the route is known.
fn checks<'c>(
    config: &'c Config,
    req: &Request,
    at: &mut Option<usize>,
) -> Result<Admitted<'c>, Error> {
    let target = route::origin_form(&req.target);
    let (path, query) = route::split_target(&target);
    if !path.starts_with('/') {
        return Err(Error::BadRequest(
            "the request target must be a path starting with /".to_string(),
        ));
    }
    let (index, captures) = route::find(config.routes.iter().map(|r| &r.external), path)
        .ok_or_else(|| Error::NotFound(path.to_string()))?;
    *at = Some(index);
    let route = &config.routes[index];
    if req.method != "GET" {
        return Err(Error::MethodNotAllowed(req.method.clone()));
    }
    let upgrade = handshake::check_upgrade(req)?;
    check_origin(route, req)?;
    let client_query = query.map(str::to_string);
    let mut query = client_query.clone();
    let mut claims = None;
    if route.auth_required {
        let Some(jwt) = config.jwt.as_ref() else {
            return Err(Error::Unauthorized(AuthError::Missing));
        };
        let raw_auth = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"));
        if raw_auth
            .clone()
            .any(|(_, v)| std::str::from_utf8(v).is_err())
        {
            return Err(Error::Unauthorized(AuthError::Malformed(
                "Authorization header is not valid text".to_string(),
            )));
        }
        let auth: Vec<&str> = req.header_all("Authorization").collect();
        let token = extract_token(&auth, query.as_deref(), jwt.query_param.as_deref())
            .map_err(Error::Unauthorized)?;
        claims = Some(jwt.verify(&token).map_err(Error::Unauthorized)?);
        if let (true, Some(q), Some(name)) = (jwt.strip_authorization, &query, &jwt.query_param) {
            query = route::strip_query_param(q, name);
        }
    }
    let mut target = route.internal.render(&captures);
    if let Some(q) = query {
        target.push('?');
        target.push_str(&q);
    }
    Ok(Admitted {
        at: index,
        route,
        target,
        query: client_query,
        upgrade,
        claims,
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
