//! The one error type of the HTTP API and its RFC 9457 `application/problem+json` rendering
//! (the [`Problem`] shape shared with the gateway).
//!
//! Every failure a client can see goes through [`ApiError`], including axum's own extractor
//! rejections (converted by the `From` impls below and by the wrappers in `extract.rs`) and the
//! router's 404/405 fallbacks. That keeps the error format uniform and ensures no plain-text
//! rejection body escapes.
//!
//! Every problem has a stable `urn:zone-backend:problem:*` type and fixed text: a parser's
//! message, a value from the request, a database error or why an identity assertion failed
//! never reaches a body (those go to the log).
//!
//! Status code policy:
//! - 400: the request could not be parsed: malformed JSON, or any problem with the query string
//!   (missing, non-numeric or out-of-range values).
//! - 422: a well-formed JSON body that breaks the schema (unknown, missing or mistyped fields)
//!   or a domain rule (name length, polygon validity).
//! - 404: unknown routes, and zone ids that do not name a zone of the path's org, including
//!   ids that are not UUIDs (such an id cannot name any zone).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use zonegate_common::{Problem, PROBLEM_JSON};

use crate::geometry::GeometryError;
use crate::store::StoreError;

/// Shown for every identity failure. Deliberately says nothing about which check failed, so the
/// response never helps someone forge an assertion.
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
    BadRequest(&'static str),
    #[error("{0}")]
    Unprocessable(&'static str),
    /// Too many assertions in flight to remember them all: retry in a second.
    #[error("the service is busy")]
    Busy,
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
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem body: every string a constant.
    pub fn problem(&self) -> Problem {
        let (kind, title, detail) = match self {
            Self::Unauthenticated => (
                "urn:zone-backend:problem:unauthenticated",
                "Unauthorized",
                UNAUTHENTICATED_DETAIL,
            ),
            Self::Forbidden => (
                "urn:zone-backend:problem:forbidden",
                "Forbidden",
                "this identity is not authorised for this organisation",
            ),
            Self::NotFound => (
                "urn:zone-backend:problem:not-found",
                "Not Found",
                "no such resource",
            ),
            Self::MethodNotAllowed => (
                "urn:zone-backend:problem:method-not-allowed",
                "Method Not Allowed",
                "method not allowed for this resource; see the Allow header",
            ),
            Self::UnsupportedMediaType => (
                "urn:zone-backend:problem:unsupported-media-type",
                "Unsupported Media Type",
                "request body must be sent with Content-Type: application/json",
            ),
            Self::PayloadTooLarge => (
                "urn:zone-backend:problem:payload-too-large",
                "Payload Too Large",
                "request body is too large",
            ),
            Self::BadRequest(detail) => (
                "urn:zone-backend:problem:bad-request",
                "Bad Request",
                *detail,
            ),
            Self::Unprocessable(detail) => (
                "urn:zone-backend:problem:invalid-input",
                "Unprocessable Entity",
                *detail,
            ),
            Self::Busy => (
                "urn:zone-backend:problem:busy",
                "Service Unavailable",
                "the service is busy; retry after the time in Retry-After",
            ),
            Self::Internal(_) => (
                "urn:zone-backend:problem:internal",
                "Internal Server Error",
                "the request could not be completed",
            ),
        };
        Problem {
            kind,
            title,
            status: self.status().as_u16(),
            detail,
        }
    }

    /// Maps a rejection we have no specific case for: client errors keep a generic detail,
    /// server errors become an opaque 500.
    fn from_status(status: StatusCode, detail: &'static str) -> Self {
        if status.is_server_error() {
            Self::internal(format!("unexpected extractor rejection ({status})"))
        } else if status == StatusCode::UNPROCESSABLE_ENTITY {
            Self::Unprocessable(detail)
        } else {
            Self::BadRequest(detail)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(source) = &self {
            tracing::error!(error = %source, "internal error");
        }
        let status = self.status();
        let mut response = (status, self.problem().to_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §15.5.2: a 401 must name the expected scheme.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("zonegate-identity"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // serde's message would echo the client's input back: a fixed text instead.
            JsonRejection::JsonDataError(_) => {
                Self::Unprocessable("the body does not have the expected fields")
            }
            JsonRejection::JsonSyntaxError(_) => Self::BadRequest("request body is not valid JSON"),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::from_status(other.status(), "could not read request body"),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        match rejection {
            QueryRejection::FailedToDeserializeQueryString(_) => {
                Self::BadRequest("the query string does not have the expected parameters")
            }
            other => Self::from_status(other.status(), "invalid query string"),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // Only a percent-encoding that is not UTF-8 reaches here in practice; anything else is
        // a routing bug, which `from_status` reports as 500.
        Self::from_status(rejection.status(), "invalid path")
    }
}

impl From<GeometryError> for ApiError {
    fn from(error: GeometryError) -> Self {
        Self::Unprocessable(error.detail())
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

/// Router fallback for known paths with an unsupported method. axum still adds the `Allow`
/// header.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
