//! Extractors: what a handler takes from an authorised request.
//!
//! - [`Caller`]: what the pipeline established (principal, request id, client address);
//! - [`CurrentUser`]: the signed-in user, or a 401 (a route that takes only sessions never
//!   reaches a handler without one; this is the typed guarantee);
//! - [`CurrentOperator`]: the platform operator, likewise, on the platform listener;
//! - [`JsonBody`]: a JSON body, 415 unless `application/json`, 400 if unparseable, 422 if it
//!   does not have the expected fields, with fixed texts (never serde's message).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::domain::principal::{OperatorPrincipal, Principal, UserPrincipal};
pub use crate::web::authz::Authorizer;
use crate::web::{Challenge, Rejection};

/// What the pipeline established about the request, handed to handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
    /// The name of the route the pipeline matched.
    pub route: String,
    pub client: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        // Only the pipeline dispatches into the API, and it always attaches the caller; a
        // request without one fails closed.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(Rejection::Unauthenticated(Challenge::Either))
    }
}

/// The signed-in user making the request.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Arc<UserPrincipal>);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        match Caller::from_request_parts(parts, state).await?.principal {
            Principal::User(user) => Ok(CurrentUser(user)),
            Principal::Anonymous | Principal::ApiKey(_) | Principal::Operator(_) => {
                Err(Rejection::Unauthenticated(Challenge::Cookie))
            }
        }
    }
}

/// The platform operator making the request (platform listener only).
#[derive(Debug, Clone)]
pub struct CurrentOperator(pub Arc<OperatorPrincipal>);

impl<S: Send + Sync> FromRequestParts<S> for CurrentOperator {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        match Caller::from_request_parts(parts, state).await?.principal {
            Principal::Operator(operator) => Ok(CurrentOperator(operator)),
            Principal::Anonymous | Principal::ApiKey(_) | Principal::User(_) => {
                Err(Rejection::Unauthenticated(Challenge::Cookie))
            }
        }
    }
}

/// A JSON body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        let is_json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(Rejection::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| Rejection::PayloadTooLarge)?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.is_data() {
                Rejection::Unprocessable("The body does not have the expected fields.")
            } else {
                Rejection::BadRequest("The body is not valid JSON.")
            }
        })
    }
}
