//! The one error type of the HTTP API and its RFC 9457 `application/problem+json`
//! rendering.
//!
//! Every failure a client can see goes through [`ApiError`], including axum's
//! own extractor rejections (converted by the `From` impls below and by the
//! wrappers in `extract.rs`) and the router's 404/405 fallbacks. That keeps the
//! error format uniform and ensures no plain-text rejection body escapes.
//!
//! Status code policy:
//! - 400: the request could not be parsed: malformed JSON, or any problem with
//!   the query string (missing, non-numeric or out-of-range values).
//! - 422: a well-formed JSON body that breaks the schema (unknown, missing or
//!   mistyped fields) or a domain rule (name length, polygon validity).
//! - 404: unknown routes, and zone ids that do not name a zone of the path's org,
//!   including ids that are not UUIDs (such an id cannot name any zone).
//!
//! This module must never put internal details (database errors, file paths,
//! why an identity assertion failed) in a response; those go to the log only.

use std::borrow::Cow;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::geometry::GeometryError;
use crate::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Shown for every identity failure. Deliberately says nothing about which
/// check failed, so the response never helps someone forge an assertion.
pub const UNAUTHENTICATED_DETAIL: &str = "missing or invalid gateway identity assertion";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{UNAUTHENTICATED_DETAIL}")]
    Unauthenticated,
    #[error("this identity is not authorised for this organisation")]
    Forbidden,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed for this resource")]
    MethodNotAllowed,
    #[error("request body must be sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    #[error("{0}")]
    Unprocessable(Cow<'static, str>),
    /// The source is logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a rejection we have no specific case for: client errors keep a
    /// generic detail, server errors become an opaque 500.
    fn from_status(status: StatusCode, detail: &'static str) -> Self {
        if status.is_server_error() {
            Self::internal(format!("unexpected extractor rejection ({status})"))
        } else if status == StatusCode::UNPROCESSABLE_ENTITY {
            Self::Unprocessable(detail.into())
        } else {
            Self::BadRequest(detail.into())
        }
    }
}

/// The problem details body. `type` is always `about:blank`: the status code
/// and `detail` carry the meaning, so `title` is the status's reason phrase as
/// RFC 9457 §4.2.1 asks.
#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(source) = &self {
            tracing::error!(error = %source, "internal error");
        }
        let status = self.status();
        let detail = self.to_string();
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: &detail,
        };
        // Serialising four plain fields cannot fail; fall back to an empty
        // object rather than panic if it somehow does.
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §15.5.2: a 401 must name the expected scheme.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("zonegate-identity"),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // serde's message names the offending field and expected shape;
            // it describes the client's input, not the server.
            JsonRejection::JsonDataError(error) => Self::Unprocessable(error.body_text().into()),
            JsonRejection::JsonSyntaxError(_) => {
                Self::BadRequest("request body is not valid JSON".into())
            }
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::from_status(other.status(), "could not read request body"),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        match rejection {
            QueryRejection::FailedToDeserializeQueryString(error) => {
                Self::BadRequest(error.body_text().into())
            }
            other => Self::from_status(other.status(), "invalid query string"),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // Only a percent-encoding that is not UTF-8 reaches here in practice;
        // anything else is a routing bug, which `from_status` reports as 500.
        Self::from_status(rejection.status(), "invalid path")
    }
}

impl From<GeometryError> for ApiError {
    fn from(error: GeometryError) -> Self {
        Self::Unprocessable(error.to_string().into())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::internal(error)
    }
}

/// Router fallback for paths that match no route.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Router fallback for known paths with an unsupported method. axum still adds
/// the `Allow` header.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
