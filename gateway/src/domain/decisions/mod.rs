//! The decision log: for every authorisation decision, the inputs Cedar decided on and what it
//! answered, so a policy change can be tried on traffic already seen (`zonegate policy diff`,
//! [`replay`]) before it is live.
//!
//! A [`DecisionRecord`] holds the principal as Cedar saw it (kind, id and the attributes
//! policies read: email verified, MFA, platform admin; an API key's org and scopes), the
//! action, the resource, the org with its flags and the roles involved, the request context
//! (the few body facts a handler asks about, such as the role an invitation grants), the
//! route, the answer, the determining policies, the policy set's hash and the time. Never a
//! secret, token, cookie, email address, body or query string: the record is built from the
//! authorisation question itself, which holds none of them.
//!
//! Written off the request path: [`DecisionLog::record`] queues the record (bounded; a full
//! queue drops and counts) and a background writer stores batches in the `decision_log`
//! table, which has its own retention (`[decision_log] retention_days`, default 30). With
//! `[decision_log] enabled = false` nothing is built or queued.

pub mod replay;
pub mod store;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::domain::apikeys::ApiKeyPrincipal;
use crate::domain::orgs::{OrgFacts, Role};
use crate::domain::policy::{self, Decision, OrgContext, Query};
use crate::domain::principal::{Principal, UserPrincipal};
use crate::domain::storage::queue::{self, Queue, Sink};
use crate::domain::storage::Db;

pub use store::{DecisionTable, Selection};

#[derive(Debug, thiserror::Error)]
pub enum DecisionLogError {
    #[error("decision log database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("decision log: a record is not readable: {0}")]
    Corrupt(String),
    #[error("decision log: {0}")]
    Io(#[from] std::io::Error),
    #[error("decision log: {0}")]
    Json(#[from] serde_json::Error),
}

/// The principal as Cedar saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoggedPrincipal {
    Anonymous,
    User {
        id: String,
        email_verified: bool,
        mfa: bool,
        platform_admin: bool,
    },
    ApiKey {
        id: String,
        org: String,
        scopes: Vec<String>,
    },
}

impl LoggedPrincipal {
    pub fn of(principal: &Principal) -> LoggedPrincipal {
        match principal {
            Principal::Anonymous => LoggedPrincipal::Anonymous,
            Principal::User(u) => LoggedPrincipal::User {
                id: u.user_id.clone(),
                email_verified: u.email_verified,
                mfa: u.mfa,
                platform_admin: u.platform_admin,
            },
            Principal::ApiKey(k) => LoggedPrincipal::ApiKey {
                id: k.key_id.clone(),
                org: k.org_id.clone(),
                scopes: k.scopes.clone(),
            },
        }
    }

    /// The principal again, with what Cedar reads. The rest of a user (email, session) is not
    /// logged and not needed: no policy sees it.
    pub fn principal(&self) -> Principal {
        match self {
            LoggedPrincipal::Anonymous => Principal::Anonymous,
            LoggedPrincipal::User {
                id,
                email_verified,
                mfa,
                platform_admin,
            } => Principal::User(Arc::new(UserPrincipal {
                user_id: id.clone(),
                email: String::new(),
                email_verified: *email_verified,
                mfa: *mfa,
                session_id: String::new(),
                family_id: String::new(),
                platform_admin: *platform_admin,
            })),
            LoggedPrincipal::ApiKey { id, org, scopes } => {
                Principal::ApiKey(Arc::new(ApiKeyPrincipal {
                    key_id: id.clone(),
                    org_id: org.clone(),
                    scopes: scopes.clone(),
                }))
            }
        }
    }

    /// `anonymous`, `user` or `api_key`, as in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LoggedPrincipal::Anonymous => "anonymous",
            LoggedPrincipal::User { .. } => "user",
            LoggedPrincipal::ApiKey { .. } => "api_key",
        }
    }
}

/// The resource: its Cedar type and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedResource {
    #[serde(rename = "type")]
    pub type_name: String,
    pub id: String,
}

/// The org the resource lies in, as Cedar saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedOrg {
    pub id: String,
    pub suspended: bool,
    pub require_mfa: bool,
    /// The principal's role there.
    pub role: Option<Role>,
    /// For a member resource: the role that member held.
    pub member_role: Option<Role>,
}

impl LoggedOrg {
    fn of(org: &OrgContext) -> LoggedOrg {
        LoggedOrg {
            id: org.facts.id.clone(),
            suspended: org.facts.suspended,
            require_mfa: org.facts.require_mfa,
            role: org.role,
            member_role: org.member_role,
        }
    }

    pub fn context(&self) -> OrgContext {
        OrgContext {
            facts: OrgFacts {
                id: self.id.clone(),
                suspended: self.suspended,
                require_mfa: self.require_mfa,
            },
            role: self.role,
            member_role: self.member_role,
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn allowed(self) -> bool {
        self == Effect::Allow
    }
}

/// One logged decision. As stored (the `record` column) and exported (one JSON line each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// Unique per decision (a request may be decided more than once: the route, then a
    /// handler's question about the body).
    pub id: String,
    /// Unix milliseconds, UTC.
    pub at: i64,
    pub request_id: String,
    /// The route's name in the route table.
    pub route: String,
    pub principal: LoggedPrincipal,
    /// The action's id, e.g. `zones:create`.
    pub action: String,
    pub resource: LoggedResource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<LoggedOrg>,
    /// The Cedar request context, when the question had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    pub decision: Effect,
    /// Ids of the determining policies.
    pub policies: Vec<String>,
    /// The hash of the policy set that decided.
    pub policy_hash: String,
}

/// A logged question, rebuilt for Cedar.
#[derive(Debug)]
pub struct Question {
    pub principal: Principal,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub org: Option<OrgContext>,
    pub context: Option<Context>,
}

impl Question {
    pub fn query(&self) -> Query<'_> {
        Query {
            principal: &self.principal,
            action: &self.action,
            resource: self.resource.clone(),
            org: self.org.as_ref(),
            context: self.context.clone(),
        }
    }
}

impl DecisionRecord {
    /// The record of one decision, under `id`, made at `at` (Unix milliseconds).
    pub fn of(entry: &Entry<'_>, id: String, at: i64) -> DecisionRecord {
        let query = entry.query;
        let decision = entry.decision;
        DecisionRecord {
            id,
            at,
            request_id: entry.request_id.to_owned(),
            route: entry.route.to_owned(),
            principal: LoggedPrincipal::of(query.principal),
            action: query.action.id().unescaped().to_owned(),
            resource: LoggedResource {
                type_name: query.resource.type_name().to_string(),
                id: query.resource.id().unescaped().to_owned(),
            },
            org: query.org.map(LoggedOrg::of),
            context: entry.context.cloned(),
            decision: if decision.allowed {
                Effect::Allow
            } else {
                Effect::Deny
            },
            policies: decision.policies.clone(),
            policy_hash: decision.policy_hash.to_string(),
        }
    }

    /// The question this record answered, as the gateway asked it.
    pub fn question(&self) -> Result<Question, DecisionLogError> {
        let corrupt = |what: &str| DecisionLogError::Corrupt(format!("{}: {what}", self.id));
        let action = policy::tables::action_uid(&self.action).map_err(|_| corrupt("action"))?;
        let type_name = EntityTypeName::from_str(&self.resource.type_name)
            .map_err(|_| corrupt("resource type"))?;
        let context = match &self.context {
            Some(fields) => Some(policy::json_context(fields).ok_or_else(|| corrupt("context"))?),
            None => None,
        };
        Ok(Question {
            principal: self.principal.principal(),
            action,
            resource: EntityUid::from_type_name_and_id(type_name, EntityId::new(&self.resource.id)),
            org: self.org.as_ref().map(LoggedOrg::context),
            context,
        })
    }
}

/// One decision to log, as the caller has it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub query: &'a Query<'a>,
    /// The context `query` carries, as the JSON it was built from.
    pub context: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub decision: &'a Decision,
}

struct Inner {
    queue: Queue<DecisionRecord>,
    clock: Arc<dyn Clock>,
    /// Random per process, so ids of several instances never collide.
    prefix: String,
    counter: AtomicU64,
}

/// Where decisions are logged. Cheap to clone; [`DecisionLog::off`] logs nothing.
#[derive(Clone)]
pub struct DecisionLog {
    inner: Option<Arc<Inner>>,
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLog")
            .field("enabled", &self.enabled())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// The writer half of [`DecisionLog::detached`]: run it on a background runtime.
pub type DecisionWriter = queue::Writer<DecisionTable>;

#[async_trait]
impl Sink for DecisionTable {
    type Row = DecisionRecord;
    async fn write(&self, rows: &[DecisionRecord]) -> Result<(), String> {
        self.insert(rows).await.map_err(|e| e.to_string())
    }
}

impl DecisionLog {
    /// Log nothing.
    pub fn off() -> DecisionLog {
        DecisionLog { inner: None }
    }

    /// A log whose records wait in a queue of `capacity` until the returned writer runs.
    pub fn detached(
        db: Db,
        clock: Arc<dyn Clock>,
        capacity: usize,
    ) -> (DecisionLog, DecisionWriter) {
        let (queue, writer) = Queue::new(DecisionTable::new(db), capacity, "decision log");
        let log = DecisionLog {
            inner: Some(Arc::new(Inner {
                queue,
                clock,
                prefix: format!("{:016x}", rand::rngs::OsRng.next_u64()),
                counter: AtomicU64::new(0),
            })),
        };
        (log, writer)
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queue the record of one decision. Never blocks, never fails.
    pub fn record(&self, entry: Entry<'_>) {
        let Some(inner) = &self.inner else {
            return;
        };
        let n = inner.counter.fetch_add(1, Ordering::Relaxed);
        let at = i64::try_from(inner.clock.unix_millis()).unwrap_or(i64::MAX);
        inner.queue.push(DecisionRecord::of(
            &entry,
            format!("{}-{n:x}", inner.prefix),
            at,
        ));
    }

    /// Records dropped (queue full) since start.
    pub fn dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.queue.dropped())
    }

    /// Wait until every record queued so far is written. For tests and shutdown.
    pub async fn flush(&self) -> Result<(), queue::Closed> {
        match &self.inner {
            Some(inner) => inner.queue.flush().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
