//! Cross-site request forgery rules (ASVS 3.5), shared by the authenticate stage and the
//! endpoints that read a cookie themselves (refresh).
//!
//! An unsafe method authenticated by a session cookie needs the `X-CSRF-Token` header matching
//! its login (checked by the caller against the account service) and an `Origin` equal to the
//! public origin. Any unsafe request that carries an Origin at all must carry ours, which also
//! covers login CSRF. GET, HEAD and OPTIONS never change state and need no proof.

use http::{HeaderMap, Method};

use super::Rejection;

/// The header a page echoes the CSRF cookie in.
pub const HEADER: &str = "x-csrf-token";

/// GET, HEAD and OPTIONS never change state, so they need no CSRF proof.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// An unsafe request's Origin must be `public_origin`: always when `required`, otherwise
/// whenever the header is present (browsers send it; server-side clients need not).
pub fn check_origin(
    public_origin: &str,
    method: &Method,
    headers: &HeaderMap,
    required: bool,
) -> Result<(), Rejection> {
    if is_safe(method) {
        return Ok(());
    }
    match headers.get(http::header::ORIGIN) {
        Some(origin) if origin.as_bytes() == public_origin.as_bytes() => Ok(()),
        Some(_) => Err(Rejection::CsrfRejected),
        None if required => Err(Rejection::CsrfRejected),
        None => Ok(()),
    }
}

/// The CSRF token a request presents (empty when absent, which never matches).
pub fn presented(headers: &HeaderMap) -> &str {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(http::header::ORIGIN, http::HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn unsafe_requests_need_our_origin_when_they_name_one() {
        let ours = "https://zones.example";
        let post = Method::POST;
        assert!(check_origin(
            ours,
            &post,
            &with_origin(Some("https://zones.example")),
            true
        )
        .is_ok());
        assert!(check_origin(
            ours,
            &post,
            &with_origin(Some("https://evil.example")),
            false
        )
        .is_err());
        assert!(check_origin(ours, &post, &with_origin(None), false).is_ok());
        assert!(check_origin(ours, &post, &with_origin(None), true).is_err());
        assert!(check_origin(
            ours,
            &Method::GET,
            &with_origin(Some("https://evil.example")),
            true
        )
        .is_ok());
    }
}
