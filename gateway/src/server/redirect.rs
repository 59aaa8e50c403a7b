//! The plain-HTTP listener: it answers every request with a permanent, method-preserving
//! redirect (308) to the same path and query on the configured HTTPS origin, and proxies
//! nothing. The target is built from config, never from the request's Host header.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

#[derive(Debug, Clone)]
pub struct RedirectToHttps {
    pub origin: String,
}

#[async_trait]
impl ServeHttp for RedirectToHttps {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let target = session.req_header().raw_path();
        // Only an origin-form target (starting with '/') is appended; anything else (absolute
        // form, garbage) is sent to the root rather than echoed into a Location header.
        let target = match std::str::from_utf8(target) {
            Ok(t) if t.starts_with('/') && !t.starts_with("//") => t,
            _ => "/",
        };
        let location = format!("{}{}", self.origin, target);
        Response::builder()
            .status(308)
            .header(http::header::LOCATION, location)
            .header(http::header::CONTENT_LENGTH, 0)
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(Vec::new())
            .unwrap_or_else(|_| {
                let mut r = Response::new(Vec::new());
                *r.status_mut() = http::StatusCode::BAD_REQUEST;
                r
            })
    }
}
