//! The security headers every response carries, whoever made it (the upstream, the gateway's
//! API, a rejection, the admin listener), and the internal headers no response may carry.

use http::{HeaderMap, HeaderName, HeaderValue};

/// No inline script or style, no eval, nothing from another origin, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Response headers removed from every answer: internal plumbing that must not reach clients
/// (the upstream's server banner, the identity assertion if an upstream echoed it).
pub const INTERNAL_RESPONSE_HEADERS: &[&str] = &["server", "x-powered-by", "zonegate-identity"];

/// The security headers, built once from config.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The same, as `name: value\r\n` lines: what a head written by hand (a forwarded
    /// answer's) copies at once instead of inserting each into a map.
    lines: Vec<u8>,
}

impl SecurityHeaders {
    pub fn new(hsts_max_age_seconds: u64) -> SecurityHeaders {
        let hsts = HeaderValue::from_str(&format!(
            "max-age={hsts_max_age_seconds}; includeSubDomains"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("max-age=63072000; includeSubDomains"));
        let fixed = |name: &'static str, value: &'static str| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        };
        let headers = vec![
            (http::header::STRICT_TRANSPORT_SECURITY, hsts),
            fixed("x-content-type-options", "nosniff"),
            // The dashboard's policy, on every answer: its pages load script, style and
            // data from this origin only, with nothing inline; an API answer rendered as a
            // page by mistake can do nothing either.
            fixed("content-security-policy", CONTENT_SECURITY_POLICY),
            fixed("referrer-policy", "no-referrer"),
            // Every answer is an API answer: none may be stored by a cache.
            fixed("cache-control", "no-store"),
        ];
        let mut lines = Vec::new();
        for (name, value) in &headers {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        SecurityHeaders { headers, lines }
    }

    /// The headers as whole `name: value\r\n` lines. None of them frames a body.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The headers to set, replacing any value already present.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.headers.iter().map(|(n, v)| (n, v))
    }

    /// Whether a header from elsewhere (an upstream's answer) is dropped: an internal one, or
    /// one these headers (or the request id) replace.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        INTERNAL_RESPONSE_HEADERS.contains(&name.as_str())
            || name.as_str() == "x-request-id"
            || self.headers.iter().any(|(n, _)| n == name)
    }

    /// Apply to a header map: drop internal headers, set the security headers and the request
    /// id (when there is one).
    pub fn apply(&self, headers: &mut HeaderMap, request_id: Option<&str>) {
        for name in INTERNAL_RESPONSE_HEADERS {
            headers.remove(*name);
        }
        self.add(headers, request_id);
    }

    /// Set the security headers and the request id, replacing any value present. A forwarded
    /// answer does not come here: its head copies [`Self::lines`] instead.
    fn add(&self, headers: &mut HeaderMap, request_id: Option<&str>) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert(HeaderName::from_static("x-request-id"), id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replaces_upstream_values_and_strips_internal_headers() {
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("nginx"));
        h.insert("zonegate-identity", HeaderValue::from_static("leaked"));
        h.insert(
            "cache-control",
            HeaderValue::from_static("public, max-age=60"),
        );
        SecurityHeaders::new(100).apply(&mut h, Some("rid"));
        assert!(h.get("server").is_none() && h.get("zonegate-identity").is_none());
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(
            h["strict-transport-security"],
            "max-age=100; includeSubDomains"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-request-id"], "rid");
    }

    #[test]
    fn lines_are_the_headers_and_none_frames_a_body() {
        let s = SecurityHeaders::new(100);
        let mut expected = String::new();
        for (name, value) in s.headers() {
            assert!(
                ![
                    http::header::CONTENT_LENGTH,
                    http::header::TRANSFER_ENCODING,
                    http::header::CONNECTION,
                    http::header::DATE,
                ]
                .contains(name),
                "{name} is the head writer's to set"
            );
            expected.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
        }
        assert_eq!(std::str::from_utf8(s.lines()).unwrap(), expected);
        assert!(expected.contains("x-content-type-options: nosniff\r\n"));
    }
}
