//! Stage 5, authenticate: turn the credentials on a request into a [`Principal`], and hold
//! cookie-authenticated writes to the CSRF rules ([`crate::web::csrf`]).
//!
//! A route names the credential kinds it accepts, and only those are read: a session cookie on
//! a route that takes sessions, and so on. A credential that is read and does not verify is
//! refused with the one fixed 401, never downgraded to anonymous. A request with none is
//! anonymous, and passes only on routes that accept anonymous callers. API keys are never
//! accepted in a URL: such a request is refused, and the key must be treated as leaked.

use http::{HeaderMap, Method};

use super::route::{CredentialKind, Route};
use super::{Pipeline, RequestCtx};
use crate::domain::accounts::AccountError;
use crate::domain::audit::SecurityEvent;
use crate::domain::operators::OperatorError;
use crate::domain::principal::Principal;
use crate::web::{cookies, csrf, rejection, Challenge, Rejection};

/// Authenticate a request for a route.
pub async fn authenticate(
    p: &Pipeline,
    ctx: &RequestCtx,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    route: &Route,
) -> Result<Principal, Rejection> {
    if query.is_some_and(query_has_api_key) {
        p.audit.record(
            ctx.event(SecurityEvent::ApiKeyInUrl)
                .detail("route", &*route.name),
        );
        return Err(Rejection::BadRequest(
            "API keys are never accepted in a URL. Send it as Authorization: Bearer, and revoke this one: it has leaked.",
        ));
    }
    let result = credentials(p, method, headers, route).await;
    match &result {
        Err(Rejection::Unauthenticated(_)) => p.metrics.authentication_failed(
            if headers.contains_key(http::header::AUTHORIZATION)
                && route.accepts(CredentialKind::ApiKey)
            {
                "api_key"
            } else if cookies::read(headers, cookies::SESSION).is_some() {
                "session"
            } else if cookies::read(headers, cookies::PLATFORM).is_some() {
                "operator"
            } else {
                "missing"
            },
        ),
        Err(Rejection::CsrfRejected) => p.metrics.authentication_failed("csrf"),
        _ => {}
    }
    if matches!(result, Err(Rejection::Unauthenticated(_)))
        && headers.contains_key(http::header::AUTHORIZATION)
        && route.accepts(CredentialKind::ApiKey)
    {
        p.audit.record(
            ctx.event(SecurityEvent::ApiKeyRejected)
                .detail("route", &*route.name),
        );
    }
    result
}

async fn credentials(
    p: &Pipeline,
    method: &Method,
    headers: &HeaderMap,
    route: &Route,
) -> Result<Principal, Rejection> {
    let unauthenticated = Rejection::Unauthenticated(challenge(route));
    csrf::check_origin(&p.public_origin, method, headers, false)?;
    if route.accepts(CredentialKind::ApiKey) {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            // Only `Bearer <key>`; any other scheme or a bad key is the same fixed 401.
            let key = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| unauthenticated.clone())?;
            return match p.services.keys.verify(key.trim()).await {
                Ok(Some(principal)) => Ok(Principal::ApiKey(principal)),
                Ok(None) => Err(unauthenticated),
                // Not checked is not refused: the integrator is told to retry, not that the
                // key is bad (and no failure is counted against it).
                Err(e) => Err(rejection::storage(&e)),
            };
        }
    }
    if route.accepts(CredentialKind::Session) {
        if let Some(token) = cookies::read(headers, cookies::SESSION) {
            let user = p
                .services
                .accounts
                .authenticate_session(token)
                .await
                .map_err(|e| match e {
                    AccountError::Storage(e) => rejection::storage(&e),
                    _ => unauthenticated.clone(),
                })?;
            if !csrf::is_safe(method) {
                csrf::check_origin(&p.public_origin, method, headers, true)?;
                if !p
                    .services
                    .accounts
                    .csrf_matches(&user.family_id, csrf::presented(headers))
                {
                    return Err(Rejection::CsrfRejected);
                }
            }
            return Ok(Principal::User(user));
        }
    }
    if route.accepts(CredentialKind::Operator) {
        if let Some(token) = cookies::read(headers, cookies::PLATFORM) {
            let operators = &p.services.operators;
            let operator = operators.authenticate(token).await.map_err(|e| match e {
                OperatorError::Storage(e) => rejection::storage(&e),
                _ => unauthenticated.clone(),
            })?;
            if !csrf::is_safe(method) {
                csrf::check_origin(&p.public_origin, method, headers, true)?;
                if !operators.csrf_matches(&operator.session_id, csrf::presented(headers)) {
                    return Err(Rejection::CsrfRejected);
                }
            }
            return Ok(Principal::Operator(operator));
        }
    }
    if route.accepts(CredentialKind::Anonymous) {
        Ok(Principal::Anonymous)
    } else {
        Err(unauthenticated)
    }
}

/// What a 401 on `route` asks for: the credentials it accepts.
fn challenge(route: &Route) -> Challenge {
    match (
        route.accepts(CredentialKind::ApiKey),
        route.accepts(CredentialKind::Session) || route.accepts(CredentialKind::Operator),
    ) {
        (true, false) => Challenge::Bearer,
        (false, true) => Challenge::Cookie,
        _ => Challenge::Either,
    }
}

/// Whether a query string carries something shaped like an API key. Keys are never accepted
/// in a URL (URLs end up in logs and Referer headers).
pub fn query_has_api_key(query: &str) -> bool {
    query.contains(crate::domain::apikeys::format::PREFIX)
}
