//! The admin listener: health and readiness for operators and orchestrators, and the policy
//! set (`GET /policies`, `POST /policies/reload`). It binds its own address (loopback by
//! default) and is never reachable through the public listener; whoever can reach it can
//! reload policies, so keep it on loopback or a management network.

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

impl AdminApp {
    fn policies(&self) -> serde_json::Value {
        let policy = &self.state.policy;
        let active = policy.active();
        json!({
            "policy_hash": active.hash(),
            "policies": active.len(),
            "dir": active.dir().display().to_string(),
            "shadow_hash": policy.shadow_hash(),
            "shadow_mismatches": policy.shadow_mismatches(),
        })
    }
}

/// Reloads the policy set on SIGHUP, for as long as the server runs.
#[derive(Debug)]
pub struct ReloadOnHangup {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::error!(
                event = "sighup_unavailable",
                "cannot listen for SIGHUP; reload through the admin listener"
            );
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    // A refused set is logged by reload_and_log; the old set stays in force.
                    let _ = crate::policy::reload_and_log(&self.state.policy, &self.state.routes, "sighup");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, body) = match (req.method.as_str(), req.uri.path()) {
            ("GET", "/healthz") => (200, json!({ "status": "ok" })),
            ("GET", "/policies") => (200, self.policies()),
            ("POST", "/policies/reload") => {
                match crate::policy::reload_and_log(&self.state.policy, &self.state.routes, "admin")
                {
                    Ok(r) => (
                        200,
                        json!({
                            "status": "reloaded",
                            "policy_hash": r.hash,
                            "previous_hash": r.previous_hash,
                            "shadow_hash": r.shadow_hash,
                        }),
                    ),
                    Err(e) => (
                        422,
                        json!({
                            "type": "urn:zonegate:problem:invalid-policy-set",
                            "title": "Invalid policy set",
                            "status": 422,
                            "detail": "The policy set was refused; the previous set stays in force.",
                            "errors": e.to_string(),
                            "policy_hash": self.state.policy.active_hash(),
                        }),
                    ),
                }
            }
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
