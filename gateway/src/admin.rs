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
                    let _ = reload(&self.state, "sighup");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Reload the policy set, logging and auditing the outcome (the old set stays on refusal).
fn reload(
    state: &GatewayState,
    trigger: &str,
) -> Result<crate::policy::Reloaded, crate::policy::PolicyError> {
    use crate::audit::{AuditEvent, SecurityEvent};
    let outcome = crate::policy::reload_and_log(&state.policy, &state.routes, trigger);
    let event = match &outcome {
        Ok(r) => AuditEvent::new(SecurityEvent::PolicyReloaded)
            .detail("policy_hash", r.hash.as_str())
            .detail("previous_hash", r.previous_hash.as_str()),
        // The error text names files and policy ids, never secrets; it is what the operator
        // needs to see in the trail.
        Err(e) => AuditEvent::new(SecurityEvent::PolicyReloadFail)
            .detail("policy_hash", state.policy.active_hash())
            .detail("error", e.to_string()),
    };
    state.audit.record(event.detail("trigger", trigger));
    outcome
}

/// Background work of a running gateway, on one pingora background service (its own
/// runtime): the audit writer, the retention purge, and the rate limiters' idle-key sweep.
pub struct Maintenance {
    state: Arc<GatewayState>,
    writer: std::sync::Mutex<Option<crate::audit::AuditWriter>>,
    pool: sqlx::AnyPool,
    retention_days: u32,
    purge_every: std::time::Duration,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

impl Maintenance {
    pub fn new(
        state: Arc<GatewayState>,
        writer: crate::audit::AuditWriter,
        pool: sqlx::AnyPool,
        retention_days: u32,
        purge_every: std::time::Duration,
    ) -> Maintenance {
        Maintenance {
            state,
            writer: std::sync::Mutex::new(Some(writer)),
            pool,
            retention_days,
            purge_every,
        }
    }
}

/// How often idle rate-limit keys are dropped.
const LIMITER_SWEEP: std::time::Duration = std::time::Duration::from_secs(60);

#[async_trait]
impl pingora::services::background::BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let writer = writer.map(|w| tokio::spawn(w.run()));
        let retention = crate::audit::spawn_retention(
            self.pool.clone(),
            self.state.clock.clone(),
            self.retention_days,
            self.purge_every,
        );
        let mut sweep = tokio::time::interval(LIMITER_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.state.limits.maintain(),
                _ = shutdown.changed() => break,
            }
        }
        retention.abort();
        // Write what is queued before the process ends (bounded: a stuck database must not
        // hold up shutdown).
        let flushed =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.state.audit.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!(target: "zonegate::security", event = "sys_audit_flush_fail", "audit events queued at shutdown may not be stored");
        }
        if let Some(writer) = writer {
            writer.abort();
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
            ("POST", "/policies/reload") => match reload(&self.state, "admin") {
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
            },
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
