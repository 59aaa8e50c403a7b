//! Security events and the audit trail.
//!
//! Every security-relevant event is recorded through [`AuditLog::record`], which does both:
//! 1. logs it at once as one structured `tracing` event on target `zonegate::security` (JSON
//!    lines in production), for live monitoring, and
//! 2. appends it to the `audit_events` table by a background writer, for the per-org audit
//!    endpoint, 12 months of retention ([`AuditTrail::purge`]) and incident-response export
//!    ([`AuditTrail::export`]).
//!
//! Nothing else logs on `zonegate::security`, so the live log and the table always name an
//! event alike. Operational lines (the audit writer's own health, mail failures, storage
//! errors) use other targets and are not security events.
//!
//! [`AuditLog::record`] never blocks and never fails: a request must not wait on, or fail
//! because of, the audit database. When the writer falls behind and its bounded queue is full,
//! the event is still logged, the database copy is dropped, and the drop is counted and
//! reported. Access noise (denials, rate-limit refusals) never takes the last tenth of the
//! queue, so a flood of it cannot crowd out account, key and policy events; and a denial
//! repeating one of the last minute is counted into one summary event ([`repeats`]).
//!
//! Event names ([`SecurityEvent`]) follow the OWASP Logging Vocabulary; events it has no word
//! for use its `<area>_<object>_<action>` pattern. The enum is the only source of names, so
//! they cannot drift between call sites, dashboards, README's table and the database.
//!
//! Time: `at` is Unix milliseconds from the injected clock; within one millisecond, the table's
//! sequence number keeps the order events were recorded in.
//!
//! Secrets: an [`AuditEvent`] takes ids (user, org, key id, request id) and short non-secret
//! facts only. Never put a password, token, key secret, MFA code or session cookie in it, not
//! even in `details`.
//!
//! Log injection: free text from requests (user agent, and anything a caller puts in an id
//! field) has its control characters escaped (`\r` becomes the two characters `\` `r`) when
//! the event is built, so no formatter, text or JSON, and no reader of the table ever sees a
//! raw CR, LF or escape sequence.

mod repeats;
pub mod store;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zonegate_common::time::rfc3339_millis;

use crate::clock::Clock;
use crate::domain::storage::Db;

pub use store::{AuditTrail, Cursor, OrgQuery, Page, MAX_PAGE};

/// Longest user agent kept, in characters. Enough to identify a browser; bounds row size.
pub const USER_AGENT_MAX_CHARS: usize = 256;
/// Longest `details` object kept, in bytes of JSON; larger ones are replaced by a marker.
pub const DETAILS_MAX_BYTES: usize = 2048;
/// Largest number of events written in one transaction.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("audit database: a stored event is not readable: {0}")]
    Corrupt(String),
    #[error("audit export: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit export: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown security event name {0:?}")]
    UnknownEvent(String),
    #[error("malformed audit cursor")]
    BadCursor,
    #[error("the audit writer has stopped")]
    Closed,
}

macro_rules! security_events {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A security event, named after the OWASP Logging Vocabulary.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SecurityEvent {
            $($(#[$doc])* $variant,)*
        }

        impl SecurityEvent {
            /// Every event, for validation and documentation.
            pub const ALL: &'static [SecurityEvent] = &[$(SecurityEvent::$variant,)*];

            /// The stable name, as logged and stored.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(SecurityEvent::$variant => $name,)*
                }
            }
        }

        impl FromStr for SecurityEvent {
            type Err = AuditError;

            fn from_str(s: &str) -> Result<SecurityEvent, AuditError> {
                match s {
                    $($name => Ok(SecurityEvent::$variant),)*
                    _ => Err(AuditError::UnknownEvent(s.to_owned())),
                }
            }
        }
    };
}

security_events! {
    // ---- Accounts ------------------------------------------------------------------------
    /// An account was registered (signup; the email is not verified yet).
    UserCreated => "user_created",
    /// An account's email address was verified with the mailed link.
    UserEmailVerified => "user_email_verified",
    /// Password login succeeded (`details.factor`: password, or password+totp).
    LoginSuccess => "authn_login_success",
    /// Password login failed (`details.reason`: credentials, delayed, blocked).
    LoginFail => "authn_login_fail",
    /// Too many consecutive failures: password login is blocked until a reset.
    LoginLock => "authn_login_lock",
    /// The password was right and a second factor is due (a pending login, not a session).
    MfaChallenged => "authn_mfa_challenged",
    /// The password was changed by its owner (the current password was given).
    PasswordChanged => "authn_password_change",
    /// A password change (or a re-authentication for an MFA change) gave a wrong password.
    PasswordChangeFail => "authn_password_change_fail",
    /// A password reset link was mailed.
    PasswordResetRequested => "authn_password_reset_requested",
    /// A password was reset with a mailed link; every session of the account ended.
    PasswordReset => "authn_password_reset",
    // ---- Sessions and refresh tokens -----------------------------------------------------
    /// A session was issued (after login, or by a refresh).
    SessionCreated => "session_created",
    /// A session was ended (logout, by its user, password change, reuse detection).
    SessionRevoked => "session_revoked",
    /// A refresh token family was started (login).
    RefreshIssued => "authn_token_created",
    /// A refresh token was exchanged for a new one and a new session.
    RefreshRotated => "session_renewed",
    /// A refresh token family was revoked (logout, expiry).
    RefreshRevoked => "authn_token_revoked",
    /// An already-exchanged refresh token was presented again: the family is revoked.
    RefreshReuse => "authn_token_reuse",
    // ---- Second factor -------------------------------------------------------------------
    MfaEnrolled => "authn_mfa_enrolled",
    MfaConfirmed => "authn_mfa_confirmed",
    MfaDisabled => "authn_mfa_disabled",
    /// A wrong or replayed second-factor code was entered.
    MfaFail => "authn_mfa_fail",
    MfaRecoveryCodeUsed => "authn_mfa_recovery_used",
    // ---- API keys ------------------------------------------------------------------------
    ApiKeyCreated => "authn_apikey_created",
    ApiKeyRolled => "authn_apikey_rolled",
    ApiKeyRevoked => "authn_apikey_revoked",
    /// An API key was presented and refused (unknown, revoked, expired, wrong secret).
    ApiKeyRejected => "authn_apikey_fail",
    /// Something shaped like an API key arrived in a URL: refused, and the key has leaked.
    ApiKeyInUrl => "authn_apikey_in_url",
    // ---- Orgs and members ----------------------------------------------------------------
    OrgCreated => "org_created",
    /// An owner required a second factor of every member's session.
    OrgMfaRequired => "org_mfa_required",
    /// An owner stopped requiring a second factor.
    OrgMfaOptional => "org_mfa_optional",
    /// A platform operator suspended the org.
    OrgSuspended => "org_suspended",
    /// A platform operator reinstated the org.
    OrgReinstated => "org_reinstated",
    MemberInvited => "org_member_invited",
    /// An admin withdrew a pending invitation (`details.invitation`: its id).
    MemberInvitationRevoked => "org_member_invitation_revoked",
    MemberJoined => "org_member_joined",
    /// A member's role changed (`details.role`, `details.previous_role`, `details.member`).
    MemberRoleChanged => "privilege_permissions_changed",
    MemberRemoved => "org_member_removed",
    MemberLeft => "org_member_left",
    // ---- Authorisation and limits --------------------------------------------------------
    /// The policy engine denied a request.
    AuthzFail => "authz_fail",
    /// A rate limit refused a request (at most one event per limited key per minute).
    RateLimitExceeded => "excess_rate_limit_exceeded",
    // ---- The gateway itself --------------------------------------------------------------
    /// New authorisation policies were loaded.
    PolicyReloaded => "sys_policy_reloaded",
    /// A policy reload was refused (parse or validation error); the old policies stay.
    PolicyReloadFail => "sys_policy_reload_fail",
    /// A change on the admin listener came without its bearer token, or with a wrong one
    /// (`details.method`, `details.path`); nothing was changed.
    AdminTokenRefused => "authn_admin_token_fail",
    /// The gateway started serving.
    Startup => "sys_startup",
    /// The gateway stopped.
    Shutdown => "sys_shutdown",
    /// An operator retired an old key (`details.key`) with `zonegate keys retire`, once nothing
    /// stored depended on it.
    KeyRetired => "sys_key_retired",
    /// Seeds sealed under older `totp` keys were re-sealed under the active one
    /// (`details.resealed`, `details.unreadable`).
    TotpSeedsResealed => "sys_totp_seeds_resealed",
    // ---- The platform surface (operators) --------------------------------------------------
    /// `zonegate operators add` created an operator (`details.operator`: the email).
    OperatorAdded => "platform_operator_added",
    /// `zonegate operators disable`: the operator's sessions ended and logins are refused.
    OperatorDisabled => "platform_operator_disabled",
    OperatorEnabled => "platform_operator_enabled",
    OperatorLogin => "authn_platform_login_success",
    /// A failed operator login (`details.reason`: credentials, delayed or disabled).
    OperatorLoginFail => "authn_platform_login_fail",
    OperatorLogout => "authn_platform_logout",
    /// An operator session passed its idle or absolute time and was ended when next used.
    OperatorSessionExpired => "session_platform_expired",
    /// An operator disabled a user: every session and login of theirs ended.
    UserDisabled => "platform_user_disabled",
    UserEnabled => "platform_user_enabled",
    /// An operator ended every session and login of a user.
    UserSessionsEnded => "platform_user_sessions_ended",
    /// An operator revoked every API key of an org (`details.revoked`: how many).
    OrgKeysRevoked => "platform_org_keys_revoked",
    /// An operator reloaded policies and the certificate (`details.policies`,
    /// `details.certificate`: each `reloaded` or `refused`).
    PlatformReload => "platform_reload",
    /// An operator ran the audit retention purge (`details.deleted`).
    AuditPurged => "platform_audit_purged",
    /// An operator read audit events across orgs (`details` holds the filters).
    AuditExported => "platform_audit_exported",
}

impl SecurityEvent {
    /// Access noise: many per attack and each alike. When the queue is nearly full these are
    /// dropped (counted) first, so account, key and policy events still find room.
    fn is_noise(self) -> bool {
        matches!(
            self,
            SecurityEvent::AuthzFail
                | SecurityEvent::RateLimitExceeded
                | SecurityEvent::AdminTokenRefused
        )
    }

    /// Events that deserve a warning in the live log: attacks or failures worth a look.
    fn is_warning(self) -> bool {
        matches!(
            self,
            SecurityEvent::LoginLock
                | SecurityEvent::RefreshReuse
                | SecurityEvent::PolicyReloadFail
                | SecurityEvent::AdminTokenRefused
                | SecurityEvent::RateLimitExceeded
                | SecurityEvent::ApiKeyInUrl
                | SecurityEvent::OrgSuspended
                | SecurityEvent::OperatorLoginFail
                | SecurityEvent::UserDisabled
                | SecurityEvent::OrgKeysRevoked
        )
    }
}

impl fmt::Display for SecurityEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SecurityEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One audit record. Built with [`AuditEvent::new`] and the setters; [`AuditLog::record`]
/// stamps the time.
///
/// Holds ids and non-secret facts only (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// uuid v4: the event's stable identity (idempotent inserts, references).
    pub id: String,
    /// Unix milliseconds, UTC.
    pub at: i64,
    pub event: SecurityEvent,
    /// The acting user or API key id, when known.
    pub principal_id: Option<String>,
    pub org_id: Option<String>,
    pub client: Option<IpAddr>,
    pub request_id: Option<String>,
    pub user_agent: Option<String>,
    /// Small JSON object of non-secret facts: reason, key id, policy ids …
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    pub fn new(event: SecurityEvent) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::new_v4().to_string(),
            at: 0,
            event,
            principal_id: None,
            org_id: None,
            client: None,
            request_id: None,
            user_agent: None,
            details: serde_json::Map::new(),
        }
    }

    /// The time in Unix milliseconds, for [`store::insert`] and tests; [`AuditLog::record`]
    /// overrides it with the clock's.
    pub fn at(mut self, unix_millis: i64) -> Self {
        self.at = unix_millis;
        self
    }

    pub fn principal(mut self, id: &str) -> Self {
        self.principal_id = Some(escape_controls(id));
        self
    }

    pub fn org(mut self, id: &str) -> Self {
        self.org_id = Some(escape_controls(id));
        self
    }

    pub fn client(mut self, addr: IpAddr) -> Self {
        self.client = Some(addr);
        self
    }

    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(escape_controls(id));
        self
    }

    /// The raw `User-Agent` value: truncated to [`USER_AGENT_MAX_CHARS`], control characters
    /// escaped.
    pub fn user_agent(mut self, ua: &str) -> Self {
        let cut: String = ua.chars().take(USER_AGENT_MAX_CHARS).collect();
        self.user_agent = Some(escape_controls(&cut));
        self
    }

    /// Add a non-secret fact. String values have control characters escaped.
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        let value = match value.into() {
            serde_json::Value::String(s) => serde_json::Value::String(escape_controls(&s)),
            other => other,
        };
        self.details.insert(escape_controls(key), value);
        self
    }

    /// `details` as stored and logged: compact JSON, or a marker if it grew too large (a
    /// bounded row matters more than an oversized detail).
    pub fn details_json(&self) -> String {
        let json = serde_json::Value::Object(self.details.clone()).to_string();
        if json.len() <= DETAILS_MAX_BYTES {
            json
        } else {
            r#"{"truncated":true}"#.to_owned()
        }
    }

    /// One JSON line (no trailing newline), as exported.
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

impl Serialize for AuditEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("at", &self.at)?;
        m.serialize_entry("time", &rfc3339_millis(self.at))?;
        m.serialize_entry("event", &self.event)?;
        m.serialize_entry("principal_id", &self.principal_id)?;
        m.serialize_entry("org_id", &self.org_id)?;
        m.serialize_entry("client", &self.client)?;
        m.serialize_entry("request_id", &self.request_id)?;
        m.serialize_entry("user_agent", &self.user_agent)?;
        m.serialize_entry("details", &self.details)?;
        m.end()
    }
}

/// Escape control characters (C0, DEL, C1) the way Rust's `escape_debug` does: `\r`, `\n`,
/// `\u{1b}`. Other text is kept as is, so the value stays readable.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// What the pipeline knows about the request being served, for events recorded deep inside a
/// service (accounts, keys) that never sees the request itself. The proxy runs the gateway's
/// own endpoints inside [`RequestContext::scope`]; [`AuditLog::record`] fills the fields an
/// event left empty from it.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client: Option<IpAddr>,
    pub request_id: Option<String>,
    pub user_agent: Option<String>,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

impl RequestContext {
    /// The context of the request being handled, if any: for work that outlives it (a mail
    /// sent after the answer) and should still name it.
    pub fn current() -> Option<RequestContext> {
        REQUEST.try_with(Clone::clone).ok()
    }

    /// Run `f` with this context visible to [`AuditLog::record`].
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        REQUEST.scope(self, f).await
    }

    fn fill(event: &mut AuditEvent) {
        let _ = REQUEST.try_with(|ctx| {
            if event.client.is_none() {
                event.client = ctx.client;
            }
            if event.request_id.is_none() {
                if let Some(id) = &ctx.request_id {
                    event.request_id = Some(escape_controls(id));
                }
            }
            if event.user_agent.is_none() {
                if let Some(ua) = &ctx.user_agent {
                    let cut: String = ua.chars().take(USER_AGENT_MAX_CHARS).collect();
                    event.user_agent = Some(escape_controls(&cut));
                }
            }
        });
    }
}

enum Msg {
    Event(Box<AuditEvent>),
    /// Answered once everything queued before it has been written (or given up on).
    Flush(oneshot::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    clock: Arc<dyn Clock>,
    dropped: AtomicU64,
    repeats: std::sync::Mutex<repeats::Repeats>,
}

/// The handle through which the gateway records security events. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Start the background writer. `queue` bounds the events waiting to be written (memory
    /// under a flood); past it, events are logged but not stored. The writer ends once every
    /// `AuditLog` clone is dropped and the queue is drained; await the handle at shutdown.
    pub fn spawn(db: Db, clock: Arc<dyn Clock>, queue: usize) -> (AuditLog, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let handle = tokio::spawn(writer(db, rx));
        (AuditLog::with_sender(tx, clock), handle)
    }

    /// Like [`AuditLog::spawn`], but without a runtime: the handle works at once (events queue)
    /// and the returned [`AuditWriter`] is run later on whichever runtime owns background work.
    pub fn detached(db: Db, clock: Arc<dyn Clock>, queue: usize) -> (AuditLog, AuditWriter) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (AuditLog::with_sender(tx, clock), AuditWriter { db, rx })
    }

    fn with_sender(tx: mpsc::Sender<Msg>, clock: Arc<dyn Clock>) -> AuditLog {
        AuditLog {
            inner: Arc::new(Inner {
                tx,
                clock,
                dropped: AtomicU64::new(0),
                repeats: std::sync::Mutex::new(repeats::Repeats::default()),
            }),
        }
    }

    /// Log the event and queue it for the table. Never blocks, never fails. A denial repeating
    /// one of the last minute is counted instead, and recorded as one summary (see
    /// [`repeats`]).
    pub fn record(&self, mut event: AuditEvent) {
        event.at = self.now();
        RequestContext::fill(&mut event);
        let verdict = self
            .inner
            .repeats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(&event);
        match verdict {
            repeats::Verdict::Counted => {}
            repeats::Verdict::Record(closed) => {
                if let Some(summary) = closed {
                    self.write(*summary);
                }
                self.write(event);
            }
        }
    }

    /// Record the summaries of the repeat windows that have ended (the maintenance job calls
    /// this every minute, and at shutdown).
    pub fn sweep_repeats(&self) {
        let now = self.now();
        let summaries = self
            .inner
            .repeats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sweep(now);
        for summary in summaries {
            self.write(summary);
        }
    }

    /// Record the summaries of every repeat window, ended or not (at shutdown).
    pub fn sweep_repeats_all(&self) {
        let summaries = self
            .inner
            .repeats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sweep(i64::MAX);
        for summary in summaries {
            self.write(summary);
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.inner.clock.unix_millis()).unwrap_or(i64::MAX)
    }

    /// Log and queue, stamped now. Access noise (denials, rate-limit refusals) is not queued
    /// into the last tenth of the queue, which is kept for the events that matter more.
    fn write(&self, mut event: AuditEvent) {
        event.at = self.now();
        emit(&event);
        let tx = &self.inner.tx;
        let reserved = tx.max_capacity() / 10;
        let queued = if event.event.is_noise() && tx.capacity() <= reserved {
            false
        } else {
            tx.try_send(Msg::Event(Box::new(event))).is_ok()
        };
        if !queued {
            let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Report the first drop and then every 1024th, so a flood of drops does not
            // become a flood of warnings.
            if dropped == 1 || dropped % 1024 == 0 {
                tracing::warn!(
                    target: "zonegate::audit",
                    event = "audit_dropped",
                    dropped,
                    "audit queue full or writer stopped: events logged but not stored"
                );
            }
        }
    }

    /// Events waiting for the writer.
    pub fn queued(&self) -> usize {
        self.inner
            .tx
            .max_capacity()
            .saturating_sub(self.inner.tx.capacity())
    }

    /// Events logged but not stored since start.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Wait until every event recorded before this call has been written (or its write has
    /// failed and been reported). For tests and shutdown; waits for queue space, unlike
    /// [`AuditLog::record`].
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)
    }
}

/// The writer half of [`AuditLog::detached`].
pub struct AuditWriter {
    db: Db,
    rx: mpsc::Receiver<Msg>,
}

impl fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditWriter").finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// Write queued events until every `AuditLog` clone is gone.
    pub async fn run(self) {
        writer(self.db, self.rx).await;
    }
}

/// The live log line. `details` goes out as a JSON string (already escaped by serde_json), and
/// every free-text field was escaped when the event was built.
fn emit(e: &AuditEvent) {
    let time = rfc3339_millis(e.at);
    let details = e.details_json();
    macro_rules! emit_at {
        ($level:expr) => {
            tracing::event!(
                target: "zonegate::security",
                $level,
                event = e.event.as_str(),
                audit_id = e.id.as_str(),
                at = e.at,
                time = time.as_str(),
                principal_id = e.principal_id.as_deref(),
                org_id = e.org_id.as_deref(),
                client = e.client.map(tracing::field::display),
                request_id = e.request_id.as_deref(),
                user_agent = e.user_agent.as_deref(),
                details = details.as_str(),
            )
        };
    }
    if e.event.is_warning() {
        emit_at!(tracing::Level::WARN);
    } else {
        emit_at!(tracing::Level::INFO);
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Take whatever else is already queued, up to one batch, so a burst costs one
        // transaction instead of one per event.
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => batch.push(*e),
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        write_batch(&db, &mut batch).await;
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Write one batch, retrying briefly (inserts are idempotent by id). Events still unwritten
/// after that are reported and dropped: the live log has them, and holding them would stall
/// the queue.
async fn write_batch(db: &Db, batch: &mut Vec<AuditEvent>) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=3 {
        match store::insert(db, batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) if attempt < 3 => {
                tracing::warn!(target: "zonegate::audit", event = "audit_write_retry", error = %e, attempt);
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => {
                tracing::error!(
                    target: "zonegate::audit",
                    event = "audit_write_fail",
                    error = %e,
                    lost = batch.len(),
                    "audit events logged but not stored"
                );
            }
        }
    }
    batch.clear();
}
