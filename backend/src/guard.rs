//! The HTTP guard: the middleware that verifies the gateway's identity assertion in front of
//! every route but `/healthz`, and the extractors that hand its result to handlers
//! ([`VerifiedIdentity`], and [`AuthorizedOrg`], which is the org check).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::extract::PathParams;
use crate::identity::{AuthorizedOrg, IdentityVerifier, VerifiedIdentity};
use crate::problem::ApiError;

/// Middleware in front of every route except `/healthz`: verifies the
/// assertion and makes the [`VerifiedIdentity`] available to handlers, or
/// answers 401 before any routing, parsing or database work happens.
pub async fn require_identity(
    State(verifier): State<Arc<IdentityVerifier>>,
    mut request: Request,
    next: Next,
) -> Response {
    // No nesting or path rewriting happens before this layer, so the URI is
    // the request target exactly as received.
    let uri = request.uri();
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path(), |target| target.as_str());
    match verifier.verify(request.headers(), request.method(), target) {
        Ok(identity) => {
            let span = tracing::info_span!(
                "request",
                rid = %identity.request_id,
                sub = %identity.subject,
            );
            request.extensions_mut().insert(identity);
            next.run(request).instrument(span).await
        }
        Err(reason) => {
            tracing::info!(
                %reason,
                method = %request.method(),
                path = %request.uri().path(),
                "identity assertion rejected"
            );
            ApiError::Unauthenticated.into_response()
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
