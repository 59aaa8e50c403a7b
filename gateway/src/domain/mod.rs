//! The domain: what the gateway knows and decides, with no knowledge of HTTP, axum or pingora.
//!
//! Each module owns one kind of state and keeps its SQL in its own `store` (see [`storage`]).
//! Errors are typed per module; the web layer alone turns them into responses.

pub mod accounts;
pub mod apikeys;
pub mod audit;
pub mod decisions;
pub mod identity;
pub mod invalidation;
pub mod keyring;
pub mod mac;
pub mod mail;
pub mod mfa;
pub mod operators;
pub mod orgs;
pub mod policy;
pub mod principal;
pub mod ratelimit;
pub mod rotation;
pub mod stats;
pub mod storage;

use std::sync::Arc;

/// The domain services, built once at start and shared by the pipeline and the API.
#[derive(Debug, Clone)]
pub struct Services {
    pub accounts: Arc<accounts::Accounts>,
    pub orgs: Arc<orgs::Orgs>,
    pub keys: Arc<apikeys::ApiKeys>,
    /// Platform operators (the platform listener's principals).
    pub operators: Arc<operators::Operators>,
    /// Where security events are recorded.
    pub audit: audit::AuditLog,
    /// Where they are read back.
    pub trail: audit::AuditTrail,
    /// Where authorisation decisions are logged (or not: [`decisions::DecisionLog::off`]).
    pub decisions: decisions::DecisionLog,
}
