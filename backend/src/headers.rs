//! Security headers added to every response, errors and health checks included.
//!
//! The API serves JSON only, so the headers forbid everything a browser might
//! otherwise do with a response: sniff it into HTML, frame it, leak the URL in
//! a referrer, or cache it (responses contain org data). This layer must never
//! be bypassed by a route: it wraps the whole router in `app()`.

use axum::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::Response;

pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
