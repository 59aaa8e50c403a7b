//! Platform operators: Delivery Zone's own staff, who administer customers on the platform
//! listener. They are a principal of their own (`Zonegate::Operator` in Cedar), never a user:
//! no signup, no mailed link, no org membership, and a user session is never an operator's.
//!
//! An operator is created by `zonegate operators add` with a password and a TOTP seed, both
//! shown once; every login needs both (there is no login without the second factor, and no
//! recovery code: another operator adds a new account and disables the lost one). Sessions are
//! short: `idle` seconds without a request (15 minutes by default) or `absolute` seconds after
//! the login (12 hours), whichever comes first. Only the session token's SHA-256 is stored.
//! Consecutive failed logins slow the account down as for users ([`lockout`]), but never block
//! it for good: an operator has no mailed reset to unblock it with.

pub mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::domain::accounts::password::{self, PasswordHasher, PasswordProblem};
use crate::domain::accounts::tokens::Token;
use crate::domain::accounts::{lockout, normalise_email};
use crate::domain::audit::{AuditEvent, AuditLog, SecurityEvent};
use crate::domain::keyring::{KeyRing, Purpose};
use crate::domain::mac::CsrfKeys;
use crate::domain::mfa::{seal, totp};
use crate::domain::principal::OperatorPrincipal;
use crate::domain::storage::Db;

/// Shortest password `operators add --password-stdin` accepts (generated ones are longer).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Session lifetimes and the issuer authenticator apps show, from `[platform]`.
#[derive(Debug, Clone)]
pub struct OperatorsConfig {
    /// Seconds without a request after which a session has ended.
    pub idle: i64,
    /// Seconds after the login after which a session has ended, however busy.
    pub absolute: i64,
    pub issuer: String,
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig {
            idle: 15 * 60,
            absolute: 12 * 60 * 60,
            issuer: "Delivery Zone platform".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("invalid email address")]
    InvalidEmail,
    #[error("an operator with this email exists")]
    Exists,
    #[error("no such operator")]
    NotFound,
    #[error("password refused: {0:?}")]
    WeakPassword(PasswordProblem),
    /// Wrong email, password or code, or a disabled operator: one error for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed logins: retry after {0}s")]
    LoginDelayed(u64),
    #[error("password checks are busy")]
    Busy,
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl From<password::HashError> for OperatorError {
    fn from(e: password::HashError) -> OperatorError {
        match e {
            password::HashError::Busy => OperatorError::Busy,
            _ => OperatorError::Internal("password hashing"),
        }
    }
}

/// A new operator's credentials, shown once by the CLI. Zeroed on drop; Debug is redacted.
pub struct NewOperator {
    pub id: String,
    pub email: String,
    /// The generated password, or `None` when one was given.
    pub password: Option<Zeroizing<String>>,
    pub enrolment: totp::Enrolment,
}

impl std::fmt::Debug for NewOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewOperator")
            .field("id", &self.id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A successful login: the session token (for the cookie only) and its CSRF token.
pub struct OperatorLogin {
    pub operator: Arc<OperatorPrincipal>,
    pub session: Token,
    pub csrf: String,
    /// When the session ends at the latest (Unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for OperatorLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorLogin")
            .field("operator", &self.operator)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The operator service.
#[derive(Debug)]
pub struct Operators {
    db: Db,
    keys: Arc<KeyRing>,
    hasher: PasswordHasher,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    cfg: OperatorsConfig,
    /// CSRF tokens of platform sessions.
    csrf: CsrfKeys,
}

/// The associated data a seed is sealed with: an operator's id, in a namespace of its own, so
/// a user's sealed seed copied onto an operator row (or back) never opens.
fn seal_subject(operator_id: &str) -> String {
    format!("operator:{operator_id}")
}

fn generated_password() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 24]);
    OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

impl Operators {
    pub fn new(
        db: Db,
        ring: &KeyRing,
        bcrypt_cost: u32,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        cfg: OperatorsConfig,
    ) -> Result<Operators, OperatorError> {
        // One bcrypt thread: operators log in a few times a day.
        let hasher = PasswordHasher::new(ring, bcrypt_cost, 1)
            .map_err(|_| OperatorError::Internal("no pepper key"))?;
        Ok(Operators {
            db,
            keys: Arc::new(ring.clone()),
            hasher,
            clock,
            audit,
            cfg,
            csrf: CsrfKeys::derive(ring, b"zonegate platform csrf v1"),
        })
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.unix_seconds()).unwrap_or(i64::MAX)
    }

    pub fn config(&self) -> &OperatorsConfig {
        &self.cfg
    }

    /// Create an operator with `password`, or a generated one (24 random bytes) when `None`,
    /// and a new TOTP seed. Returns what the new operator needs, to be shown once.
    pub async fn add(
        &self,
        email: &str,
        password: Option<&str>,
    ) -> Result<NewOperator, OperatorError> {
        let email = normalise_email(email).map_err(|_| OperatorError::InvalidEmail)?;
        if let Some(given) = password {
            password::check(given, &email, MIN_PASSWORD_CHARS)
                .map_err(OperatorError::WeakPassword)?;
        }
        let generated = password.is_none().then(generated_password);
        let chosen = password
            .or(generated.as_deref().map(String::as_str))
            .unwrap_or("");
        let id = format!("op-{}", uuid::Uuid::new_v4());
        let hash = self.hasher.hash(chosen).await?;
        let enrolment =
            totp::enrol(&self.cfg.issuer, &email).map_err(|_| OperatorError::InvalidEmail)?;
        let sealed = seal::seal(&self.keys, &seal_subject(&id), enrolment.secret())
            .map_err(|_| OperatorError::Internal("sealing the TOTP seed"))?;
        let mut c = self.db.acquire().await?;
        if !store::insert(&mut c, &id, &email, &hash, &sealed, self.now()).await? {
            return Err(OperatorError::Exists);
        }
        self.audit.record(
            AuditEvent::new(SecurityEvent::OperatorAdded)
                .principal(&id)
                .detail("operator", email.as_str()),
        );
        Ok(NewOperator {
            id,
            email,
            password: generated,
            enrolment,
        })
    }

    pub async fn list(&self) -> Result<Vec<store::OperatorListing>, OperatorError> {
        Ok(store::list(&mut *self.db.acquire().await?).await?)
    }

    /// Disable an operator (every session of theirs ends at once) or enable them again. Both
    /// clear the failed-login count (`operators enable` unblocks a slowed-down account).
    pub async fn set_disabled(&self, email: &str, disabled: bool) -> Result<(), OperatorError> {
        let email = normalise_email(email).map_err(|_| OperatorError::InvalidEmail)?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let id = store::set_disabled(&mut tx, &email, disabled.then_some(now))
            .await?
            .ok_or(OperatorError::NotFound)?;
        if disabled {
            store::end_sessions_of(&mut tx, &id, now).await?;
        }
        tx.commit().await?;
        let event = if disabled {
            SecurityEvent::OperatorDisabled
        } else {
            SecurityEvent::OperatorEnabled
        };
        self.audit.record(
            AuditEvent::new(event)
                .principal(&id)
                .detail("operator", email.as_str()),
        );
        Ok(())
    }

    /// Log in with email, password and a current TOTP code. Any wrong part, an unknown email
    /// or a disabled operator is the same [`OperatorError::InvalidCredentials`], after the same
    /// bcrypt work; each counts as a failure against the account.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        code: &str,
    ) -> Result<OperatorLogin, OperatorError> {
        let now = self.now();
        let row = match normalise_email(email) {
            Ok(email) => store::by_email(&mut *self.db.acquire().await?, &email).await?,
            Err(_) => None,
        };
        let Some(row) = row else {
            // The same bcrypt work and the same failure write (on an id no row has) as a
            // known email: neither time nor answer tells which emails are operators'.
            self.hasher.verify_dummy(password).await?;
            store::record_failure(&mut *self.db.acquire().await?, "", now).await?;
            self.audit.record(
                AuditEvent::new(SecurityEvent::OperatorLoginFail).detail("reason", "credentials"),
            );
            return Err(OperatorError::InvalidCredentials);
        };
        let failures = u32::try_from(row.failed_logins).unwrap_or(u32::MAX);
        if let Some(wait) = wait_after_failures(failures, row.last_failed_at, now) {
            self.audit.record(
                AuditEvent::new(SecurityEvent::OperatorLoginFail)
                    .principal(&row.id)
                    .detail("reason", "delayed"),
            );
            return Err(OperatorError::LoginDelayed(wait));
        }
        let password_ok = self.hasher.verify(password, &row.password_hash).await?;
        let mut c = self.db.acquire().await?;
        // The code is checked (and spent) only after a right password of an enabled operator,
        // so a wrong password cannot burn the operator's current code.
        let code_ok = password_ok
            && row.disabled_at.is_none()
            && self.accept_code(&mut c, &row, code, now).await?;
        if !code_ok || row.disabled_at.is_some() {
            store::record_failure(&mut c, &row.id, now).await?;
            let reason = if row.disabled_at.is_some() {
                "disabled"
            } else {
                "credentials"
            };
            self.audit.record(
                AuditEvent::new(SecurityEvent::OperatorLoginFail)
                    .principal(&row.id)
                    .detail("reason", reason),
            );
            return Err(OperatorError::InvalidCredentials);
        }
        store::record_login(&mut c, &row.id, now).await?;
        let session = Token::generate();
        let session_id = uuid::Uuid::new_v4().to_string();
        store::insert_session(&mut c, &session.hash(), &session_id, &row.id, now).await?;
        drop(c);
        self.rehash_if_due(&row.id, password, &row.password_hash)
            .await;
        self.audit.record(
            AuditEvent::new(SecurityEvent::OperatorLogin)
                .principal(&row.id)
                .detail("operator", row.email.as_str()),
        );
        let csrf = self.csrf_token(&session_id);
        Ok(OperatorLogin {
            operator: Arc::new(OperatorPrincipal {
                operator_id: row.id,
                email: row.email,
                session_id,
            }),
            session,
            csrf,
            expires_at: now.saturating_add(self.cfg.absolute),
        })
    }

    async fn accept_code(
        &self,
        c: &mut store::Conn,
        row: &store::OperatorRow,
        code: &str,
        now: i64,
    ) -> Result<bool, OperatorError> {
        let Some(code) = totp::parse_code(code) else {
            return Ok(false);
        };
        let Ok(secret) = seal::open(&self.keys, &seal_subject(&row.id), &row.totp_sealed) else {
            tracing::error!(
                target: "zonegate::operators",
                event = "operator_seed_unreadable",
                operator_id = %row.id,
                "the operator's TOTP seed does not open with the key ring; re-add the operator"
            );
            return Ok(false);
        };
        let Some(step) =
            totp::matching_step(&secret, &code, u64::try_from(now).unwrap_or_default())
        else {
            return Ok(false);
        };
        Ok(store::accept_step(c, &row.id, &row.totp_sealed, step).await?)
    }

    /// As for users: a hash under an old pepper or bcrypt cost is replaced after a right
    /// password, so `keys retire` can finish. A failure is logged and retried next login.
    async fn rehash_if_due(&self, id: &str, password: &str, stored: &str) {
        if !self.hasher.needs_rehash(stored) {
            return;
        }
        let replaced = async {
            let new = self.hasher.hash(password).await?;
            let mut c = self.db.acquire().await?;
            Ok::<_, OperatorError>(store::replace_password_hash(&mut c, id, stored, &new).await?)
        }
        .await;
        if let Err(e) = replaced {
            tracing::warn!(target: "zonegate::operators", event = "operator_rehash_fail", error = %e);
        }
    }

    /// A session cookie to the operator it belongs to, while the session is within its idle
    /// and absolute time and the operator is not disabled. Each use extends the idle time.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Arc<OperatorPrincipal>, OperatorError> {
        let token = Token::from_presented(presented).ok_or(OperatorError::InvalidCredentials)?;
        let now = self.now();
        let mut c = self.db.acquire().await?;
        let row = store::open_session(&mut c, &token.hash())
            .await?
            .ok_or(OperatorError::InvalidCredentials)?;
        let idle_since = now.saturating_sub(self.cfg.idle);
        let within = row.created_at > now.saturating_sub(self.cfg.absolute)
            && row.last_seen_at >= idle_since
            // A clock set back before the login: fail closed.
            && row.created_at <= now;
        if !within || !store::touch_session(&mut c, &row.id, now, idle_since).await? {
            if store::end_session(&mut c, &row.id, now).await? {
                self.audit.record(
                    AuditEvent::new(SecurityEvent::OperatorSessionExpired)
                        .principal(&row.operator_id),
                );
            }
            return Err(OperatorError::InvalidCredentials);
        }
        Ok(Arc::new(OperatorPrincipal {
            operator_id: row.operator_id,
            email: row.email,
            session_id: row.id,
        }))
    }

    /// Delete sessions that can no longer be used (ended, or past their absolute time).
    pub async fn purge_sessions(&self) -> Result<u64, OperatorError> {
        let before = self.now().saturating_sub(self.cfg.absolute);
        Ok(store::purge_sessions(&mut *self.db.acquire().await?, before).await?)
    }

    /// End the session a browser still presented at a new login (it is replaced, not kept
    /// alive beside the new one). Anything that is not a session token is ignored.
    pub async fn end_presented(&self, presented: &str) -> Result<(), OperatorError> {
        if let Some(token) = Token::from_presented(presented) {
            let mut c = self.db.acquire().await?;
            store::end_session_by_hash(&mut c, &token.hash(), self.now()).await?;
        }
        Ok(())
    }

    /// End the operator's current session.
    pub async fn logout(&self, operator: &OperatorPrincipal) -> Result<(), OperatorError> {
        let mut c = self.db.acquire().await?;
        store::end_session(&mut c, &operator.session_id, self.now()).await?;
        self.audit.record(
            AuditEvent::new(SecurityEvent::OperatorLogout)
                .principal(&operator.operator_id)
                .detail("operator", operator.email.as_str()),
        );
        Ok(())
    }

    /// The CSRF token of a session: a MAC of its id, so it needs no storage and is useless
    /// for any other session.
    pub fn csrf_token(&self, session_id: &str) -> String {
        self.csrf.token(session_id)
    }

    /// Constant-time check of a presented CSRF token against a session.
    pub fn csrf_matches(&self, session_id: &str, presented: &str) -> bool {
        self.csrf.matches(session_id, presented)
    }

    /// Re-seal operators' seeds made under an older `totp` key with the active one (after
    /// `keys rotate`). Returns how many moved and how many do not open (logged and left).
    pub async fn reseal_all(&self) -> Result<(u64, u64), OperatorError> {
        const BATCH: i64 = 200;
        let active = self
            .keys
            .active(Purpose::Totp)
            .ok_or(OperatorError::Internal("no totp key"))?
            .id
            .clone();
        let mut c = self.db.acquire().await?;
        let (mut moved, mut unreadable) = (0u64, 0u64);
        let mut after = String::new();
        loop {
            let batch = store::sealed_not_under(&mut c, &active, &after, BATCH).await?;
            for (id, sealed) in &batch {
                let subject = seal_subject(id);
                match seal::open(&self.keys, &subject, sealed)
                    .and_then(|secret| seal::seal(&self.keys, &subject, &secret))
                {
                    Ok(new) => moved += u64::from(store::reseal(&mut c, id, sealed, &new).await?),
                    Err(_) => {
                        unreadable += 1;
                        tracing::error!(
                            target: "zonegate::operators",
                            event = "operator_seed_unreadable",
                            operator_id = %id
                        );
                    }
                }
            }
            match batch.last() {
                Some((id, _)) if i64::try_from(batch.len()).unwrap_or(i64::MAX) == BATCH => {
                    after = id.clone();
                }
                _ => return Ok((moved, unreadable)),
            }
        }
    }
}

/// Seconds an operator must wait before the next login attempt after `failures` consecutive
/// failures, the last at `last_failed_at`; `None` when it may try now. The users' schedule
/// (1, 2, 4 ... seconds, at most 15 minutes), without the block: past it, one attempt per 15
/// minutes.
fn wait_after_failures(failures: u32, last_failed_at: Option<i64>, now: i64) -> Option<u64> {
    match lockout::verdict(failures, last_failed_at, now) {
        lockout::Verdict::Allowed => None,
        lockout::Verdict::Wait(secs) => Some(secs),
        lockout::Verdict::Blocked => {
            let since = last_failed_at.map_or(0, |at| now.saturating_sub(at).max(0));
            let since = u64::try_from(since).unwrap_or(0);
            lockout::MAX_DELAY_SECS
                .checked_sub(since)
                .filter(|w| *w > 0)
        }
    }
}
