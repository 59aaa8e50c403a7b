//! The endpoints the gateway answers itself (routes whose upstream is `gateway`), as an
//! ordinary axum application.
//!
//! Requests reach this router only after the full pipeline (sanitise, route, authenticate,
//! authorise): the proxy hands over the authorised request in process, with the [`Caller`]
//! attached, so handlers read like a web service and never re-check access.

use axum::extract::Extension;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use crate::error::Rejection;
use crate::principal::Principal;

/// What the pipeline established about the request, handed to handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
    pub client: Option<std::net::IpAddr>,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        crate::respond::rejection_response(&self).map(axum::body::Body::from)
    }
}

/// The gateway's own application.
pub fn router(
    accounts: std::sync::Arc<crate::accounts::Accounts>,
    orgs: std::sync::Arc<crate::orgs::Orgs>,
    keys: std::sync::Arc<crate::apikeys::ApiKeys>,
    pool: sqlx::AnyPool,
) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .merge(crate::auth_api::router(accounts))
        .merge(crate::orgs_api::router(orgs.clone()))
        .merge(crate::platform_api::router(orgs))
        .merge(crate::apikeys_api::router(keys))
        .merge(crate::audit_api::router(pool))
        .fallback(|| async { Rejection::NotFound })
}

async fn health(Extension(_caller): Extension<Caller>) -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Run one authorised request through the router and collect the answer, bounded in size.
pub async fn dispatch(
    router: &Router,
    request: http::Request<Bytes>,
    caller: Caller,
    max_response_bytes: usize,
) -> Result<http::Response<Bytes>, Rejection> {
    use tower::ServiceExt;
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(caller);
    let request = http::Request::from_parts(parts, axum::body::Body::from(body));
    let response = router
        .clone()
        .oneshot(request)
        .await
        .map_err(|never: std::convert::Infallible| -> Rejection { match never {} })?;
    let (parts, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, max_response_bytes);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| Rejection::Internal)?
        .to_bytes();
    Ok(http::Response::from_parts(parts, bytes))
}
