//! The admin listener: health, readiness and Prometheus metrics for operators and
//! orchestrators, and the policy set (`GET /policies`, with the shadow set's disagreements
//! grouped as `policy diff` groups them; `POST /policies/reload`), and `POST
//! /certificates/reload` (what SIGHUP does for both, one at a time). It binds its own address
//! (loopback by default) and is never reachable through the public listener. With
//! `listen.admin_token_file` set (required off loopback), every change needs
//! `Authorization: Bearer <token>`; reads stay open so that probes and scrapers need no secret.
//!
//! Errors are the gateway's one [`Rejection`] type, rendered like every other refusal.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::connections::ConnectionCounter;
use super::tls::CertResolver;
use super::Gateway;
use crate::config::secrets::Secret;
use crate::domain::audit::{AuditEvent, SecurityEvent};
use crate::domain::keyring::KeyRing;
use crate::domain::ratelimit::shared::Health;
use crate::domain::stats::CacheStats;
use crate::pipeline::metrics::{self, Samples};
use crate::web::security::SecurityHeaders;
use crate::web::{Challenge, Rejection};

#[derive(Debug, Clone)]
pub struct AdminApp {
    pub gateway: Arc<Gateway>,
    pub security: SecurityHeaders,
    pub identity_key: Option<String>,
    /// The public listener's connection counts, for `/metrics`.
    pub connections: Option<Arc<ConnectionCounter>>,
    /// The public listener's certificate, whose fingerprint readiness shows.
    pub certs: Option<Arc<CertResolver>>,
    /// The bearer token changes need, when one is configured.
    pub token: Option<Secret>,
    /// The key directory and the ids of the keys this process loaded from it at start.
    pub key_ring: Option<KeyRingInUse>,
}

/// What readiness re-checks of the key ring.
#[derive(Debug, Clone)]
pub struct KeyRingInUse {
    pub dir: std::path::PathBuf,
    /// The active key of each purpose, as loaded.
    pub active: Vec<String>,
}

impl KeyRingInUse {
    /// Re-read the directory: an instance whose key directory became unreadable (or whose keys
    /// were damaged) could not start again, so it is not ready. A newer active key on disk is
    /// not a fault, only a restart pending after `keys rotate`; it is listed so operators can
    /// tell when every instance uses the new keys before `keys retire`.
    async fn check(&self) -> (bool, serde_json::Value) {
        let dir = self.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || KeyRing::load(&dir)).await;
        match loaded {
            Ok(Ok(ring)) => {
                let pending: Vec<String> = ring
                    .active_ids()
                    .into_iter()
                    .filter(|id| !self.active.contains(id))
                    .collect();
                (
                    true,
                    json!({ "status": "ok", "active": self.active, "restart_to_use": pending }),
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "zonegate::server", event = "readiness_key_ring_failed", error = %e);
                (
                    false,
                    json!({ "status": "unreadable", "error": e.to_string(), "active": self.active }),
                )
            }
            Err(_) => (
                false,
                json!({ "status": "unreadable", "active": self.active }),
            ),
        }
    }
}

impl AdminApp {
    /// Ready when the database answers within a second, the key directory still loads and the
    /// key ring gave an identity key: what every request that reaches an upstream or the
    /// gateway's own API needs, and what a restart needs. Not ready is 503,
    /// so an orchestrator takes the instance out of rotation rather than let it fail requests.
    async fn readiness(&self) -> (bool, serde_json::Value) {
        let database =
            tokio::time::timeout(std::time::Duration::from_secs(1), self.gateway.db.ping()).await;
        let database = match database {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(target: "zonegate::server", event = "readiness_database_failed", error = %e);
                "unreachable"
            }
            Err(_) => "timeout",
        };
        let (key_ring_ok, key_ring) = match &self.key_ring {
            Some(ring) => ring.check().await,
            None => (true, serde_json::Value::Null),
        };
        // On PostgreSQL: whether this instance hears what other instances change.
        let g = &self.gateway;
        let now = i64::try_from(g.clock.unix_seconds()).unwrap_or(i64::MAX);
        let (invalidation_ok, invalidation) = match &g.invalidation {
            None => (true, json!({ "status": "in process" })),
            Some(l) if l.state.is_up() => (
                true,
                json!({
                    "status": "listening",
                    "received": l.state.received(),
                    "queue_usage": crate::domain::invalidation::queue_usage(&g.db).await.ok(),
                }),
            ),
            Some(l) => {
                let down = l.state.down_for(now);
                let bound = crate::domain::invalidation::READY_BOUND.as_secs();
                (
                    u64::try_from(down).unwrap_or(0) < bound,
                    json!({ "status": "down", "down_seconds": down, "caches": "distrusted" }),
                )
            }
        };
        // With `[redis]`: whether the limits are shared, or each instance is on its share.
        let (redis_ok, redis) = match g.limits.shared_store().map(|s| s.health()) {
            None => (true, json!({ "status": "not configured" })),
            Some(Health::Up) => (true, json!({ "status": "up", "limits": "shared" })),
            Some(Health::Down { for_secs }) => (
                false,
                json!({
                    "status": "down",
                    "down_seconds": for_secs,
                    "limits": "local share",
                    "account_routes": "refused (503)",
                }),
            ),
        };
        let ready = database == "ok"
            && key_ring_ok
            && invalidation_ok
            && redis_ok
            && self.identity_key.is_some();
        // Faults that leave the instance serving correctly (the old policies or certificate
        // stay in force; mail is sent after answering), reported for the operator.
        let faults: Vec<serde_json::Value> = [
            (
                "policies",
                g.policy_reload_fault.lock().ok().and_then(|f| f.clone()),
            ),
            (
                "tls_certificate",
                self.certs.as_ref().and_then(|c| c.reload_fault()),
            ),
            ("mail", g.mailer.failing()),
        ]
        .into_iter()
        .filter_map(|(component, error)| {
            error.map(|error| json!({ "component": component, "error": error }))
        })
        .collect();
        (
            ready,
            json!({
                "status": if ready { "ready" } else { "not ready" },
                "database": database,
                "policy_hash": self.gateway.policy.active_hash(),
                "identity_key": self.identity_key,
                "key_ring": key_ring,
                "invalidation": invalidation,
                "redis": redis,
                "tls_certificate_sha256": self.certs.as_ref().map(|c| c.fingerprint()),
                "faults": faults,
            }),
        )
    }

    /// The Prometheus text: the pipeline's counts and samples of the domain's own counters.
    pub fn metrics(&self) -> String {
        let g = &self.gateway;
        let services = &g.pipeline.services;
        let (entities, decisions) = g.policy.cache_stats();
        let cache = |name, stats: &CacheStats| (name, stats.hits(), stats.misses());
        let samples = Samples {
            connections_open: self.connections.as_ref().map(|c| c.open_total()),
            caches: vec![
                cache("api_keys", services.keys.cache_stats()),
                cache("sessions", services.accounts.session_cache_stats()),
                cache("org_facts", services.orgs.cache_stats()),
                cache("cedar_entities", entities),
                cache("decisions", decisions),
            ],
            audit_queued: g.audit.queued(),
            audit_dropped: g.audit.dropped(),
            decision_log_dropped: g.decisions.dropped(),
            shadow_disagreements: g.policy.shadow_mismatches(),
            password_jobs_queued: services.accounts.password_jobs_queued(),
            shared_limits: g
                .limits
                .shared_store()
                .map(|s| (s.is_up(), s.unreachable_total())),
        };
        g.pipeline.metrics.render(&samples)
    }

    fn policies(&self) -> serde_json::Value {
        let policy = &self.gateway.policy;
        let active = policy.active();
        json!({
            "policy_hash": active.hash(),
            "policies": active.len(),
            "dir": active.dir().display().to_string(),
            "shadow_hash": policy.shadow_hash(),
            "shadow_mismatches": policy.shadow_mismatches(),
            // Grouped like `zonegate policy diff` groups a replay (enforced = before, shadow
            // = after), since the sets were last loaded.
            "shadow_changes": policy.shadow_changes(),
            "decision_log": {
                "enabled": self.gateway.decisions.enabled(),
                "dropped": self.gateway.decisions.dropped(),
            },
        })
    }

    /// Whether a change may go ahead: always without a configured token, else only with
    /// `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1; the token
    /// compared in constant time, as SHA-256 digests).
    fn authorised(&self, authorization: Option<&HeaderValue>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(token) = &self.token else {
            return true;
        };
        let presented = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, credentials)| credentials.trim_start())
            .unwrap_or_default();
        // Digests of equal length, so the comparison's time tells nothing of the token's
        // length either.
        use sha2::{Digest, Sha256};
        Sha256::digest(presented.as_bytes())
            .ct_eq(&Sha256::digest(token.expose().as_bytes()))
            .into()
    }

    /// The answer to a request from `client` (the peer's address, recorded on the security
    /// events of changes and of refused attempts).
    fn answer(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&HeaderValue>,
        client: Option<IpAddr>,
    ) -> Result<serde_json::Value, Rejection> {
        // Reads stay open for probes and scrapers; anything else is a change.
        if !matches!(method, "GET" | "HEAD") && !self.authorised(authorization) {
            // In the audit trail, not only the log: who tried to change the gateway, from
            // where, is what the security team looks for. Never the presented token.
            // The method and path as the listener knows them, else `other`: both are the
            // client's to choose, and a row kept for a year holds no arbitrary text.
            let known = |value: &str, known: &[&'static str]| {
                known
                    .iter()
                    .find(|k| **k == value)
                    .copied()
                    .unwrap_or("other")
            };
            let mut event = AuditEvent::new(SecurityEvent::AdminTokenRefused)
                .detail("method", known(method, &["POST", "PUT", "PATCH", "DELETE"]))
                .detail("path", known(path, ADMIN_PATHS));
            event.client = client;
            self.gateway.audit.record(event);
            return Err(Rejection::Unauthenticated(Challenge::Bearer));
        }
        match (method, path) {
            ("GET", "/healthz") => Ok(json!({ "status": "ok" })),
            ("GET", "/policies") => Ok(self.policies()),
            ("POST", "/policies/reload") => {
                match self.gateway.reload_policies_by("admin", None, client) {
                    Ok(r) => Ok(json!({
                        "status": "reloaded",
                        "policy_hash": r.hash,
                        "previous_hash": r.previous_hash,
                        "shadow_hash": r.shadow_hash,
                    })),
                    // The reasons are in the gateway's log and the audit trail.
                    Err(_) => Err(Rejection::InvalidPolicySet),
                }
            }
            // Reached only with metrics off (`[metrics] enabled = false`).
            ("GET", "/metrics") => Err(Rejection::NotFound),
            (_, "/healthz" | "/policies" | "/readyz" | "/metrics") => {
                Err(Rejection::MethodNotAllowed {
                    allow: "GET".into(),
                })
            }
            ("POST", "/certificates/reload") => {
                let certs = self.certs.as_ref().ok_or(Rejection::NotFound)?;
                match certs.reload_logged("admin") {
                    Ok(()) => Ok(json!({
                        "status": "reloaded",
                        "tls_certificate_sha256": certs.fingerprint(),
                    })),
                    // The reason is in the gateway's log.
                    Err(_) => Err(Rejection::InvalidCertificate),
                }
            }
            (_, "/policies/reload" | "/certificates/reload") => Err(Rejection::MethodNotAllowed {
                allow: "POST".into(),
            }),
            _ => Err(Rejection::NotFound),
        }
    }
}

/// The admin listener's paths: what a refused change's security event may name.
const ADMIN_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/policies",
    "/policies/reload",
    "/certificates/reload",
];

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path() == "/metrics"
            && req.method == http::Method::GET
            && self.gateway.pipeline.metrics.enabled()
        {
            let mut r = Response::new(Bytes::from(self.metrics()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            return self.finish(r);
        }
        if req.uri.path() == "/readyz" && req.method == http::Method::GET {
            let (ready, body) = self.readiness().await;
            let mut r = Response::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()));
            if !ready {
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return self.finish(r);
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let answer = self.answer(
            req.method.as_str(),
            req.uri.path(),
            req.headers.get(http::header::AUTHORIZATION),
            client,
        );
        let response = match answer {
            Ok(body) => {
                let mut r =
                    Response::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(rejection) => rejection.response(),
        };
        self.finish(response)
    }
}

impl AdminApp {
    fn finish(&self, mut response: Response<Bytes>) -> Response<Vec<u8>> {
        self.security.apply(response.headers_mut(), None);
        let len = response.body().len();
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        response.map(|b| b.to_vec())
    }
}
