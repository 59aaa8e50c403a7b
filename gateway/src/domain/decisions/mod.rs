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
//! Identical decisions are stored once per window: a request asking exactly what an earlier
//! one asked in the same window (same principal and attributes, action, resource, org facts,
//! context, route, answer and policy set) adds to that record's `count` (and, for the first
//! few, its `request_ids`) instead of adding a row. Every request is counted in exactly one
//! record, whose `at`..`last_at` spans it. Traffic repeats itself, so this is what makes the
//! log cheap enough for every request: the request path hashes the question and bumps a
//! counter in memory, and a background writer stores each window (`[decision_log]
//! flush_seconds`, 10) in the `decision_log` table, which has its own retention
//! (`retention_days`, 30). Distinct questions per window are bounded (`max_pending`, and 64
//! MiB of records); past that, decisions are dropped and counted. With `enabled = false`
//! nothing is done at all.

pub mod replay;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::domain::apikeys::ApiKeyPrincipal;
use crate::domain::orgs::{OrgFacts, Role};
use crate::domain::policy::tables::Subject;
use crate::domain::policy::{self, Decision, OrgContext, Query};
use crate::domain::principal::{Principal, UserPrincipal};

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
        /// Logged by gateways before operators had accounts of their own; read and ignored.
        #[serde(default, skip_serializing)]
        platform_admin: bool,
    },
    ApiKey {
        id: String,
        org: String,
        scopes: Vec<String>,
    },
    Operator {
        id: String,
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
                platform_admin: false,
            },
            Principal::ApiKey(k) => LoggedPrincipal::ApiKey {
                id: k.key_id.clone(),
                org: k.org_id.clone(),
                scopes: k.scopes.clone(),
            },
            Principal::Operator(o) => LoggedPrincipal::Operator {
                id: o.operator_id.clone(),
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
                ..
            } => Principal::User(Arc::new(UserPrincipal {
                user_id: id.clone(),
                email: String::new(),
                email_verified: *email_verified,
                mfa: *mfa,
                session_id: String::new(),
                family_id: String::new(),
            })),
            LoggedPrincipal::ApiKey { id, org, scopes } => {
                Principal::ApiKey(Arc::new(ApiKeyPrincipal {
                    key_id: id.clone(),
                    org_id: org.clone(),
                    scopes: scopes.clone(),
                }))
            }
            LoggedPrincipal::Operator { id } => {
                Principal::Operator(Arc::new(crate::domain::principal::OperatorPrincipal {
                    operator_id: id.clone(),
                    email: String::new(),
                    session_id: String::new(),
                }))
            }
        }
    }

    /// Whether this is how `principal` was logged.
    fn is(&self, principal: &Principal) -> bool {
        match (self, principal) {
            (LoggedPrincipal::Anonymous, Principal::Anonymous) => true,
            (
                LoggedPrincipal::User {
                    id,
                    email_verified,
                    mfa,
                    ..
                },
                Principal::User(u),
            ) => *id == u.user_id && *email_verified == u.email_verified && *mfa == u.mfa,
            (LoggedPrincipal::Operator { id }, Principal::Operator(o)) => *id == o.operator_id,
            (LoggedPrincipal::ApiKey { id, org, scopes }, Principal::ApiKey(k)) => {
                *id == k.key_id && *org == k.org_id && *scopes == k.scopes
            }
            _ => false,
        }
    }

    /// `anonymous`, `user`, `api_key` or `operator`, as in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LoggedPrincipal::Anonymous => "anonymous",
            LoggedPrincipal::User { .. } => "user",
            LoggedPrincipal::ApiKey { .. } => "api_key",
            LoggedPrincipal::Operator { .. } => "operator",
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
    /// When the first of these decisions was made: Unix milliseconds, UTC.
    pub at: i64,
    /// When the last of them was made.
    pub last_at: i64,
    /// How many requests asked this, with this answer, in the window.
    pub count: u64,
    /// The ids of the first few of those requests ([`SAMPLE_REQUEST_IDS`]).
    pub request_ids: Vec<String>,
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

impl DecisionRecord {
    /// The record of one decision, under `id`, made at `at` (Unix milliseconds).
    pub fn of(entry: &Entry<'_>, id: String, at: i64) -> DecisionRecord {
        let query = entry.query;
        let decision = entry.decision;
        DecisionRecord {
            id,
            at,
            last_at: at,
            count: 1,
            request_ids: vec![entry.request_id.to_owned()],
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

    /// Whether `entry` asked exactly this question and got this answer (the request id and
    /// time aside). Compares without allocating: it runs on the request path.
    fn same(&self, entry: &Entry<'_>, action: &EntityUid, resource: &EntityUid) -> bool {
        let q = entry.query;
        let d = entry.decision;
        self.route == entry.route
            && action == q.action
            && resource == &q.resource
            && self.decision.allowed() == d.allowed
            && self.policies == d.policies
            && *self.policy_hash == *d.policy_hash
            && self.context.as_ref() == entry.context
            && self.principal.is(q.principal)
            && match (&self.org, q.org) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.id == b.facts.id
                        && a.suspended == b.facts.suspended
                        && a.require_mfa == b.facts.require_mfa
                        && a.role == b.role
                        && a.member_role == b.member_role
                }
                _ => false,
            }
    }

    /// The question this record answered, as the gateway asked it.
    pub fn question(&self) -> Result<Subject, DecisionLogError> {
        let corrupt = |what: &str| DecisionLogError::Corrupt(format!("{}: {what}", self.id));
        let action = policy::tables::action_uid(&self.action).map_err(|_| corrupt("action"))?;
        let type_name = EntityTypeName::from_str(&self.resource.type_name)
            .map_err(|_| corrupt("resource type"))?;
        let context = match &self.context {
            Some(fields) => Some(policy::json_context(fields).ok_or_else(|| corrupt("context"))?),
            None => None,
        };
        Ok(Subject {
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

/// Request ids kept per record.
pub const SAMPLE_REQUEST_IDS: usize = 5;

/// A record being counted, with the uids it is compared by.
struct Pending {
    record: DecisionRecord,
    action: EntityUid,
    resource: EntityUid,
}

/// The decisions of the current window, by a hash of the question (a chain per hash: two
/// questions may share one).
#[derive(Default)]
struct Window {
    /// Chains of records by [`question_key`]'s seeded hash.
    pending: HashMap<u64, Vec<Pending>, BuildHasherDefault<Prehashed>>,
    len: usize,
    /// About how much memory the pending records hold.
    bytes: usize,
}

/// The hasher of keys that are already seeded hashes: hashing them again would cost a
/// SipHash per decision and spread them no better.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not used by `u64` keys; folds the bytes in, so that it is still a hash.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

/// Most memory one window's records may hold. Ids in a record come from request paths, so
/// `max_pending` alone would let distinct long paths hold `max_pending` times the largest
/// request head; past this, decisions are dropped and counted like past `max_pending`.
const MAX_WINDOW_BYTES: usize = 64 << 20;

/// About how much memory a new record for `entry` holds.
fn entry_bytes(entry: &Entry<'_>) -> usize {
    let q = entry.query;
    512 + 2 * q.resource.id().unescaped().len()
        + q.principal.id().len()
        + entry.route.len()
        + entry.request_id.len()
        + entry
            .decision
            .policies
            .iter()
            .map(String::len)
            .sum::<usize>()
        + entry.context.map_or(0, |c| c.len() * 64)
}

struct Inner {
    window: Mutex<Window>,
    table: DecisionTable,
    clock: Arc<dyn Clock>,
    hasher: foldhash::quality::RandomState,
    max_pending: usize,
    dropped: AtomicU64,
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

/// Writes the log's windows: run [`DecisionWriter::run`] on a background runtime.
#[derive(Debug)]
pub struct DecisionWriter {
    log: DecisionLog,
    every: Duration,
}

impl DecisionWriter {
    /// Store the current window every `every`, for as long as the process runs.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.every.max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = self.log.flush().await {
                tracing::error!(
                    target: "zonegate::decisions",
                    event = "decision_log_write_fail",
                    error = %e,
                    "a window of decisions was not stored"
                );
            }
        }
    }
}

impl DecisionLog {
    /// Log nothing.
    pub fn off() -> DecisionLog {
        DecisionLog { inner: None }
    }

    /// A log into `table`, holding at most `max_pending` distinct questions per window, and
    /// the writer that stores a window every `every`.
    pub fn new(
        table: DecisionTable,
        clock: Arc<dyn Clock>,
        max_pending: usize,
        every: Duration,
    ) -> (DecisionLog, DecisionWriter) {
        let log = DecisionLog {
            inner: Some(Arc::new(Inner {
                window: Mutex::new(Window::default()),
                table,
                clock,
                hasher: foldhash::quality::RandomState::default(),
                max_pending: max_pending.max(1),
                dropped: AtomicU64::new(0),
                prefix: format!("{:016x}", rand::rngs::OsRng.next_u64()),
                counter: AtomicU64::new(0),
            })),
        };
        let writer = DecisionWriter {
            log: log.clone(),
            every,
        };
        (log, writer)
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Count one decision. Never blocks on I/O, never fails.
    pub fn record(&self, entry: Entry<'_>) {
        let Some(inner) = &self.inner else {
            return;
        };
        let hash = inner.hasher.hash_one(question_key(&entry));
        let at = i64::try_from(inner.clock.unix_millis()).unwrap_or(i64::MAX);
        let mut window = inner
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Window {
            pending,
            len,
            bytes,
        } = &mut *window;
        let chain = pending.entry(hash).or_default();
        if let Some(p) = chain
            .iter_mut()
            .find(|p| p.record.same(&entry, &p.action, &p.resource))
        {
            p.record.count += 1;
            p.record.last_at = p.record.last_at.max(at);
            if p.record.request_ids.len() < SAMPLE_REQUEST_IDS {
                p.record.request_ids.push(entry.request_id.to_owned());
            }
            return;
        }
        let size = entry_bytes(&entry);
        if *len >= inner.max_pending || *bytes + size > MAX_WINDOW_BYTES {
            drop(window);
            let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped == 1 || dropped % 1024 == 0 {
                tracing::warn!(
                    target: "zonegate::decisions",
                    event = "decision_log_dropped",
                    dropped,
                    "too many distinct decisions in one window: decisions not logged"
                );
            }
            return;
        }
        let n = inner.counter.fetch_add(1, Ordering::Relaxed);
        chain.push(Pending {
            record: DecisionRecord::of(&entry, format!("{}-{n:x}", inner.prefix), at),
            action: entry.query.action.clone(),
            resource: entry.query.resource.clone(),
        });
        *len += 1;
        *bytes += size;
    }

    /// Decisions not logged since start (too many distinct ones in a window).
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Store the current window now (the writer does this every interval; shutdown and tests
    /// call it). Records that fail to store are reported by the caller and not retried: the
    /// next window must not wait on them.
    pub async fn flush(&self) -> Result<(), DecisionLogError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let window = std::mem::take(
            &mut *inner
                .window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut records: Vec<DecisionRecord> = window
            .pending
            .into_values()
            .flatten()
            .map(|p| p.record)
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        records.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        inner.table.insert(&records).await
    }
}

/// What identifies a question and its answer, hashed on the request path (see
/// [`DecisionRecord::same`], which settles a shared hash). The action and the resource's type
/// are left out: a route names one of each, and hashing their names (six `SmolStr`s) was over
/// half of the key's hashing. Questions that differ only in them share a chain,
/// and `same` tells them apart.
fn question_key<'a>(entry: &'a Entry<'a>) -> impl std::hash::Hash + 'a {
    let q = entry.query;
    let d = entry.decision;
    (
        entry.route,
        q.principal.id(),
        q.resource.id().unescaped(),
        q.org.map(|o| (&o.facts.id, o.role, o.member_role)),
        d.allowed,
        &d.policies,
        &*d.policy_hash,
        entry.context.map(serde_json::Map::len),
    )
}

#[cfg(test)]
mod tests;
