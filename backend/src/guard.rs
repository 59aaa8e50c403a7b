//! The HTTP guard: the middleware that verifies the gateway's identity assertion in front of
//! every route but `/healthz`, and the extractors that hand its result to handlers
//! ([`VerifiedIdentity`], and [`AuthorizedOrg`], which is the org check).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::extract::PathParams;
use crate::identity::{AssertionError, AuthorizedOrg, IdentityVerifier, VerifiedIdentity};
use crate::problem::ApiError;
use crate::MAX_BODY_BYTES;

/// Middleware in front of every route except `/healthz`: reads the body (the
/// assertion binds its digest), verifies the assertion and makes the
/// [`VerifiedIdentity`] available to handlers, or answers 401 before any
/// routing, parsing or database work happens.
pub async fn require_identity(
    State(verifier): State<Arc<IdentityVerifier>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::PayloadTooLarge.into_response();
    };
    // No nesting or path rewriting happens before this layer, so the URI is
    // the request target exactly as received.
    let uri = &parts.uri;
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path(), |target| target.as_str());
    match verifier.verify(&parts.headers, &parts.method, target, &body) {
        Ok(identity) => {
            let span = tracing::info_span!(
                "request",
                rid = %identity.request_id,
                sub = %identity.subject,
            );
            let mut request = Request::from_parts(parts, Body::from(body));
            request.extensions_mut().insert(identity);
            next.run(request).instrument(span).await
        }
        Err(reason) => {
            tracing::info!(
                %reason,
                method = %parts.method,
                path = %parts.uri.path(),
                "identity assertion rejected"
            );
            match reason {
                AssertionError::ReplayCacheFull => ApiError::Busy.into_response(),
                _ => ApiError::Unauthenticated.into_response(),
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // Absent only if a route was mounted outside `require_identity`;
        // fail closed rather than serve it unauthenticated.
        parts
            .extensions
            .get::<VerifiedIdentity>()
            .cloned()
            .ok_or(ApiError::Unauthenticated)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthorizedOrg {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let identity = VerifiedIdentity::from_request_parts(parts, state).await?;
        let PathParams(params) =
            PathParams::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        let org = params
            .into_iter()
            .find_map(|(name, value)| (name == "org").then_some(value))
            .ok_or_else(|| ApiError::internal("AuthorizedOrg used on a route without {org}"))?;
        AuthorizedOrg::for_path(identity, org.clone()).ok_or_else(|| {
            tracing::info!(path_org = %org, "identity not authorised for org");
            ApiError::Forbidden
        })
    }
}
