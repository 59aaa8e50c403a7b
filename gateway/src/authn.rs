//! The authenticate stage: turn the credentials on a request into a [`Principal`], and hold
//! cookie-authenticated writes to the CSRF rules.
//!
//! A route names the credential kinds it accepts, and only those are read: a session cookie on
//! a route that takes sessions, and so on. A credential that is read and does not verify is
//! refused with the one fixed 401, never downgraded to anonymous. A request with none is
//! anonymous, and passes only on routes that accept anonymous callers.
//!
//! CSRF (ASVS 3.5): an unsafe method authenticated by a session cookie needs the
//! `X-CSRF-Token` header matching its login and an `Origin` equal to the public origin. Any
//! unsafe request that does carry an Origin must carry ours (this also covers login CSRF).

use http::{HeaderMap, Method};

use crate::accounts::Accounts;
use crate::apikeys::ApiKeys;
use crate::cookies;
use crate::error::Rejection;
use crate::principal::Principal;
use crate::routes::{CredentialKind, Route};

/// Authenticate a request for a route.
pub async fn authenticate(
    accounts: &Accounts,
    keys: &ApiKeys,
    method: &Method,
    headers: &HeaderMap,
    route: &Route,
) -> Result<Principal, Rejection> {
    check_origin(accounts, method, headers, false)?;
    if route.accepts(CredentialKind::ApiKey) {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            // Only `Bearer <key>`; any other scheme or a bad key is the same fixed 401.
            let key = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(Rejection::Unauthenticated)?;
            return match keys.verify(key.trim()).await {
                Some(principal) => Ok(Principal::ApiKey(std::sync::Arc::new(principal))),
                None => {
                    tracing::info!(target: "zonegate::security", event = "apikey_rejected");
                    Err(Rejection::Unauthenticated)
                }
            };
        }
    }
    if route.accepts(CredentialKind::Session) {
        if let Some(token) = cookies::read(headers, cookies::SESSION) {
            let user = accounts
                .authenticate_session(token)
                .await
                .map_err(|_| Rejection::Unauthenticated)?;
            if !is_safe(method) {
                check_origin(accounts, method, headers, true)?;
                let presented = headers
                    .get(cookies::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !accounts.csrf_matches(&user.family_id, presented) {
                    return Err(Rejection::CsrfRejected);
                }
            }
            return Ok(Principal::User(user));
        }
    }
    if route.accepts(CredentialKind::Anonymous) {
        Ok(Principal::Anonymous)
    } else {
        Err(Rejection::Unauthenticated)
    }
}

/// Whether a query string carries something shaped like an API key. Keys are never accepted
/// in a URL (URLs end up in logs and Referer headers); such a request is refused and the key
/// must be treated as leaked.
pub fn query_has_api_key(query: &str) -> bool {
    query.contains(crate::apikeys::format::PREFIX)
}

/// GET, HEAD and OPTIONS never change state, so they need no CSRF proof.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// An unsafe request's Origin must be the public origin: always when `required`, otherwise
/// whenever the header is present (browsers send it; server-side clients need not).
pub fn check_origin(
    accounts: &Accounts,
    method: &Method,
    headers: &HeaderMap,
    required: bool,
) -> Result<(), Rejection> {
    if is_safe(method) {
        return Ok(());
    }
    match headers.get(http::header::ORIGIN) {
        Some(origin) if origin.as_bytes() == accounts.config().public_origin.as_bytes() => Ok(()),
        Some(_) => Err(Rejection::CsrfRejected),
        None if required => Err(Rejection::CsrfRejected),
        None => Ok(()),
    }
}
