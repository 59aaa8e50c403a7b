//! The respond stage: headers every response carries, and writing answers the gateway makes
//! itself (rejections and its own endpoints) onto a pingora session.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::error::{Rejection, PROBLEM_JSON};

/// Response headers the gateway removes from upstream answers: internal plumbing that must not
/// leak to clients.
const INTERNAL_RESPONSE_HEADERS: &[&str] = &["server", "x-powered-by", "zonegate-identity"];

/// Security headers, built once from config.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    hsts: HeaderValue,
}

impl SecurityHeaders {
    pub fn new(hsts_max_age_seconds: u64) -> SecurityHeaders {
        let hsts = format!("max-age={hsts_max_age_seconds}; includeSubDomains");
        SecurityHeaders {
            hsts: HeaderValue::from_str(&hsts).unwrap_or_else(|_| {
                HeaderValue::from_static("max-age=63072000; includeSubDomains")
            }),
        }
    }

    /// Add the security headers to a response, replacing any the upstream set, and drop
    /// internal headers. Every response is an API response here, so none may be cached.
    pub fn apply(&self, resp: &mut ResponseHeader, request_id: &str) -> pingora::Result<()> {
        for name in INTERNAL_RESPONSE_HEADERS {
            resp.remove_header(*name);
        }
        resp.insert_header("strict-transport-security", self.hsts.clone())?;
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header("content-security-policy", "frame-ancestors 'none'")?;
        resp.insert_header("referrer-policy", "no-referrer")?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("x-request-id", request_id)?;
        Ok(())
    }
}

/// Write a complete response the gateway produced itself.
pub async fn write(
    session: &mut Session,
    security: &SecurityHeaders,
    request_id: &str,
    response: http::Response<Bytes>,
) -> pingora::Result<()> {
    let (parts, body) = response.into_parts();
    let mut resp = ResponseHeader::build(parts.status, Some(parts.headers.len() + 8))?;
    for (name, value) in &parts.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    security.apply(&mut resp, request_id)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only || body.is_empty())
        .await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The response for a rejection: problem+json, plus Allow for 405 and the rate-limit headers
/// for 429.
pub fn rejection_response(rejection: &Rejection) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(rejection.status())
        .header(http::header::CONTENT_TYPE, PROBLEM_JSON);
    for (name, value) in rejection.headers() {
        builder = builder.header(name, value);
    }
    if rejection.closes_connection() {
        builder = builder.header(http::header::CONNECTION, "close");
    }
    builder
        .body(Bytes::from(rejection.body()))
        .unwrap_or_else(|_| internal_error_response())
}

fn internal_error_response() -> http::Response<Bytes> {
    let mut resp = http::Response::new(Bytes::from(Rejection::Internal.body()));
    *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_JSON),
    );
    resp
}

/// Answer a rejection, closing the connection when framing can no longer be trusted.
pub async fn reject(
    session: &mut Session,
    security: &SecurityHeaders,
    request_id: &str,
    rejection: &Rejection,
) -> pingora::Result<()> {
    if rejection.closes_connection() {
        session.set_keepalive(None);
    }
    write(session, security, request_id, rejection_response(rejection)).await
}
