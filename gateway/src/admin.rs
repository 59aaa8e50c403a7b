//! The admin listener: health and readiness for operators and orchestrators. It binds its own
//! address (loopback by default) and is never reachable through the public listener.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::proxy::GatewayState;

#[derive(Debug, Clone)]
pub struct AdminApp {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, body) = match (req.method.as_str(), req.uri.path()) {
            ("GET", "/healthz") => (200, json!({ "status": "ok" })),
            ("GET", "/readyz") => (
                200,
                json!({
                    "status": "ready",
                    "policy_hash": self.state.policy.active_hash(),
                    "identity_key": self.state.signer.key_id(),
                }),
            ),
            _ => (
                404,
                json!({
                    "type": "urn:zonegate:problem:not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "No such admin endpoint.",
                }),
            ),
        };
        let content_type = if status == 200 {
            "application/json"
        } else {
            crate::error::PROBLEM_JSON
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store")
            .header("x-content-type-options", "nosniff")
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
