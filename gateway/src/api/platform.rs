//! The platform surface (`/platform/...`), answered only on the platform listener
//! (`listen.platform`, loopback by default): Delivery Zone's operators sign in with their own
//! accounts (password and TOTP) and find, suspend and reinstate orgs, disable users and end
//! their sessions, revoke an org's keys, reload policies and the certificate, purge and read
//! the audit trail. Who may do what is decided by the pipeline's one Cedar call on each route
//! (`policies/platform.cedar`), never here; every change is a security event naming the
//! operator.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::audit::{page_response, parse_query_with, url_pairs};
use super::{CurrentOperator, Handlers, JsonBody};
use crate::clock::Clock;
use crate::domain::accounts::Accounts;
use crate::domain::apikeys::ApiKeys;
use crate::domain::audit::{AuditEvent, AuditLog, AuditTrail, SecurityEvent};
use crate::domain::operators::Operators;
use crate::domain::orgs::Orgs;
use crate::domain::principal::OperatorPrincipal;
use crate::web::{cookies, Rejection};

/// The platform's own contract, served at `/platform/openapi.json` on the platform listener.
pub const OPENAPI: &str = include_str!("../../platform-openapi.json");

/// What a reload did to each part: the new policy hash or certificate fingerprint, or why it
/// was refused (the old one stays in force).
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub policies: Result<String, String>,
    pub certificate: Result<String, String>,
}

/// Reloading lives with the server (it owns the policy engine's reload and the certificate
/// resolver); the platform surface only asks for it.
pub trait Reload: Send + Sync + std::fmt::Debug {
    /// Reload policies and the certificate, each validated first, for `operator` (their id,
    /// recorded as the actor).
    fn reload(&self, operator: &str) -> Reloaded;
}

/// Everything the platform handlers reach.
#[derive(Debug, Clone)]
pub struct PlatformState {
    pub operators: Arc<Operators>,
    pub accounts: Arc<Accounts>,
    pub orgs: Arc<Orgs>,
    pub keys: Arc<ApiKeys>,
    pub trail: AuditTrail,
    pub audit: AuditLog,
    pub reload: Arc<dyn Reload>,
    pub clock: Arc<dyn Clock>,
    /// `[audit] retention_days`, for the purge.
    pub retention_days: u32,
}

type Shared = State<PlatformState>;

/// Default and largest page of a search.
const DEFAULT_FOUND: u32 = 20;
const MAX_FOUND: u32 = 100;

pub fn handlers(state: PlatformState) -> Handlers {
    Handlers::new()
        .get("/platform/openapi.json", openapi)
        .post("/platform/v1/auth/login", login)
        .post("/platform/v1/auth/logout", logout)
        .get("/platform/v1/auth/session", session)
        .get("/platform/v1/orgs", find_orgs)
        .get("/platform/v1/orgs/{org}", show_org)
        .put("/platform/v1/orgs/{org}/suspension", suspension)
        .post("/platform/v1/orgs/{org}/api-keys/revoke-all", revoke_keys)
        .get("/platform/v1/users", find_users)
        .get("/platform/v1/users/{user}", show_user)
        .put("/platform/v1/users/{user}/disabled", disabled)
        .delete("/platform/v1/users/{user}/sessions", end_sessions)
        .post("/platform/v1/reload", reload)
        .post("/platform/v1/audit/purge", purge)
        .get("/platform/v1/audit-events", audit_events)
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        OPENAPI,
    )
}

/// An audit event of an operator's action.
fn by(operator: &OperatorPrincipal, event: SecurityEvent) -> AuditEvent {
    AuditEvent::new(event)
        .principal(&operator.operator_id)
        .detail("operator", operator.email.as_str())
}

fn operator_json(operator: &OperatorPrincipal) -> serde_json::Value {
    json!({ "id": operator.operator_id, "email": operator.email })
}

// ---- Signing in ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
    code: String,
}

async fn login(
    State(s): Shared,
    presented: HeaderMap,
    JsonBody(body): JsonBody<Login>,
) -> Result<Response, Rejection> {
    let login = s
        .operators
        .login(&body.email, &body.password, &body.code)
        .await?;
    // The browser's previous session, if it still had one, ends with the new login.
    if let Some(old) = cookies::read(&presented, cookies::PLATFORM) {
        s.operators.end_presented(old).await?;
    }
    let max_age = s.operators.config().absolute;
    let mut headers = HeaderMap::new();
    for cookie in [
        cookies::platform(login.session.expose(), max_age),
        cookies::platform_csrf(&login.csrf, max_age),
    ] {
        let value = HeaderValue::from_str(&cookie).map_err(|_| Rejection::Internal)?;
        headers.append(header::SET_COOKIE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let body = json!({
        "operator": operator_json(&login.operator),
        "csrf_token": login.csrf,
        "expires_at": login.expires_at,
        "idle_timeout_seconds": s.operators.config().idle,
    });
    Ok((headers, Json(body)).into_response())
}

async fn logout(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
) -> Result<Response, Rejection> {
    s.operators.logout(&operator).await?;
    let mut headers = HeaderMap::new();
    for cookie in cookies::platform_cleared() {
        let value = HeaderValue::from_str(&cookie).map_err(|_| Rejection::Internal)?;
        headers.append(header::SET_COOKIE, value);
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

async fn session(CurrentOperator(operator): CurrentOperator) -> Json<serde_json::Value> {
    Json(json!({
        "operator": operator_json(&operator),
        "session_id": operator.session_id,
    }))
}

// ---- Finding ---------------------------------------------------------------------------------

/// `?q=...&limit=...`: what to look for (an id, or part of a name or email) and how many.
fn search_query(raw: Option<&str>) -> Result<(String, u32), Rejection> {
    let mut q = None;
    let mut limit = DEFAULT_FOUND;
    for (key, value) in url_pairs(raw.unwrap_or(""))? {
        match key.as_str() {
            "q" if q.is_none() => q = Some(value),
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_FOUND).contains(l))
                    .ok_or(Rejection::BadRequest(
                        "`limit` must be a whole number from 1 to 100.",
                    ))?;
            }
            _ => {
                return Err(Rejection::BadRequest(
                    "Use `q` (once) for what to find, and optionally `limit`.",
                ))
            }
        }
    }
    let q = q.map(|q| q.trim().to_owned()).unwrap_or_default();
    if q.is_empty() || q.chars().count() > 254 || q.chars().any(char::is_control) {
        return Err(Rejection::BadRequest(
            "`q` must be 1 to 254 characters: an id, or part of a name or email.",
        ));
    }
    Ok((q, limit))
}

async fn find_orgs(State(s): Shared, RawQuery(raw): RawQuery) -> Result<Response, Rejection> {
    let (q, limit) = search_query(raw.as_deref())?;
    let orgs = s.orgs.find(&q, limit).await?;
    Ok(Json(json!({ "orgs": orgs })).into_response())
}

async fn show_org(State(s): Shared, Path(org): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(s.orgs.platform_view(&org).await?).into_response())
}

async fn find_users(State(s): Shared, RawQuery(raw): RawQuery) -> Result<Response, Rejection> {
    let (q, limit) = search_query(raw.as_deref())?;
    let users = s.accounts.find_users(&q, limit).await?;
    Ok(Json(json!({ "users": users })).into_response())
}

async fn show_user(State(s): Shared, Path(user): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(s.accounts.platform_user(&user).await?).into_response())
}

// ---- Acting on orgs --------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suspension {
    suspended: bool,
}

async fn suspension(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<Suspension>,
) -> Result<Response, Rejection> {
    s.orgs
        .set_suspended(&org, &operator.operator_id, body.suspended)
        .await?;
    Ok(Json(s.orgs.platform_view(&org).await?).into_response())
}

async fn revoke_keys(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
    Path(org): Path<String>,
) -> Result<Response, Rejection> {
    // An unknown org is a 404, not "0 revoked".
    s.orgs.platform_view(&org).await?;
    let revoked = s.keys.revoke_all(&org, &operator.operator_id).await?;
    s.audit.record(
        by(&operator, SecurityEvent::OrgKeysRevoked)
            .org(&org)
            .detail("revoked", revoked),
    );
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

// ---- Acting on users -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disabled {
    disabled: bool,
}

async fn disabled(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<Disabled>,
) -> Result<Response, Rejection> {
    s.accounts
        .set_disabled(&user, body.disabled, &operator.operator_id)
        .await?;
    Ok(Json(s.accounts.platform_user(&user).await?).into_response())
}

async fn end_sessions(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
    Path(user): Path<String>,
) -> Result<Response, Rejection> {
    s.accounts
        .end_all_sessions(&user, &operator.operator_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- Running the gateway ---------------------------------------------------------------------

async fn reload(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
) -> Result<Response, Rejection> {
    let reload = s.reload.clone();
    let id = operator.operator_id.clone();
    // Parsing policies and certificates is blocking work.
    let done = tokio::task::spawn_blocking(move || reload.reload(&id))
        .await
        .map_err(|_| Rejection::Internal)?;
    let status = |r: &Result<String, String>| if r.is_ok() { "reloaded" } else { "refused" };
    s.audit.record(
        by(&operator, SecurityEvent::PlatformReload)
            .detail("policies", status(&done.policies))
            .detail("certificate", status(&done.certificate)),
    );
    // Each part was tried whatever the other did; a refusal of either is the answer, and the
    // reason is in the log and the trail.
    match (&done.policies, &done.certificate) {
        (Err(_), _) => Err(Rejection::InvalidPolicySet),
        (_, Err(_)) => Err(Rejection::InvalidCertificate),
        (Ok(hash), Ok(fingerprint)) => Ok(Json(json!({
            "policies": { "status": "reloaded", "policy_hash": hash },
            "certificate": { "status": "reloaded", "sha256": fingerprint },
        }))
        .into_response()),
    }
}

async fn purge(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
) -> Result<Response, Rejection> {
    let now = i64::try_from(s.clock.unix_millis()).unwrap_or(i64::MAX);
    let deleted = s.trail.purge(now, s.retention_days).await?;
    s.audit.record(
        by(&operator, SecurityEvent::AuditPurged)
            .detail("deleted", deleted)
            .detail("retention_days", s.retention_days),
    );
    Ok(Json(json!({ "deleted": deleted, "retention_days": s.retention_days })).into_response())
}

async fn audit_events(
    State(s): Shared,
    CurrentOperator(operator): CurrentOperator,
    RawQuery(raw): RawQuery,
) -> Result<Response, Rejection> {
    let (q, extras) = parse_query_with(raw.as_deref(), &["org", "principal"])?;
    let find = |name: &str| {
        extras
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let (org, principal) = (find("org"), find("principal"));
    let page = s.trail.search(org, principal, &q).await?;
    // Reading the trail across orgs is itself on the record, with what was asked.
    let mut event = by(&operator, SecurityEvent::AuditExported).detail("events", page.events.len());
    for (name, value) in &extras {
        event = event.detail(name, value.as_str());
    }
    if let Some(e) = q.event {
        event = event.detail("event", e.as_str());
    }
    s.audit.record(event);
    Ok(page_response(page))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn searches_need_one_short_q_and_a_bounded_limit() {
        assert_eq!(
            search_query(Some("q=acme")).unwrap(),
            ("acme".to_owned(), DEFAULT_FOUND)
        );
        assert_eq!(
            search_query(Some("q=ada%40example.com&limit=5")).unwrap(),
            ("ada@example.com".to_owned(), 5)
        );
        for bad in [
            "",
            "q=",
            "q=%20",
            "q=a&q=b",
            "q=a&limit=0",
            "q=a&limit=101",
            "q=a&colour=red",
            "q=%0a",
        ] {
            assert_eq!(search_query(Some(bad)).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn the_platform_contract_is_json_and_lists_only_platform_paths() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(!paths.is_empty());
        assert!(paths.keys().all(|p| p.starts_with("/platform/")));
    }
}
