//! Dashboard accounts: signup, email verification, password login, sessions and rotating
//! refresh tokens, password change and reset.
//!
//! Every token is 256 bits from the OS CSPRNG and stored only as its SHA-256 ([`tokens`]).
//! Time comes from the injected [`Clock`], so expiry is tested without sleeping.
//!
//! Refresh tokens (RFC 9700 §4.14.2): one family per login; every refresh exchanges the
//! presented token for a new one and a new session. Presenting an already-exchanged token is
//! reuse: the whole family and every session made from it are revoked. One deliberate
//! exception, for two browser tabs refreshing at the same moment: within `refresh_grace`
//! seconds of an exchange, the same token may be exchanged once more, giving one sibling. A
//! third presentation, or one after the window, is reuse. Families expire absolutely (never
//! sliding) and after `refresh_idle` seconds without a refresh.

pub mod detached;
pub mod lockout;
pub mod password;
pub mod second_factor;
pub mod sessions;
pub mod store;
pub mod tokens;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::audit::{AuditEvent, AuditLog, SecurityEvent};
use crate::domain::keyring::KeyRing;
use crate::domain::mac::CsrfKeys;
use crate::domain::mail::Mailer;
use crate::domain::principal::UserPrincipal;
use crate::domain::storage::Db;
use password::{PasswordHasher, PasswordProblem};
use sessions::SessionCache;
use store::Conn;
use tokens::Token;

/// The email-token purpose that marks when an account was last sent a signup notice (the
/// token itself is never mailed or spent).
const NOTICE_PURPOSE: &str = "signup-notice";

/// Lifetimes and rules, from the `[accounts]` config section.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub public_origin: String,
    pub min_password_chars: usize,
    pub session_ttl: i64,
    pub refresh_idle: i64,
    pub refresh_absolute: i64,
    pub refresh_grace: i64,
    pub verify_ttl: i64,
    pub reset_ttl: i64,
    pub resend_interval: i64,
    pub cache_revalidate: i64,
    /// The issuer authenticator apps show beside the account's email.
    pub mfa_issuer: String,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            public_origin: "https://localhost:8443".into(),
            min_password_chars: 8,
            session_ttl: 15 * 60,
            refresh_idle: 60 * 60,
            refresh_absolute: 24 * 60 * 60,
            refresh_grace: 10,
            verify_ttl: 60 * 60,
            reset_ttl: 10 * 60,
            resend_interval: 60,
            cache_revalidate: 30,
            mfa_issuer: "Delivery Zone".into(),
        }
    }
}

/// What went wrong, in terms a client may learn.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid email address")]
    InvalidEmail,
    #[error("password refused: {0:?}")]
    WeakPassword(PasswordProblem),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("wrong current password")]
    WrongPassword,
    #[error("email not verified")]
    EmailNotVerified,
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("not found")]
    NotFound,
    #[error("csrf token missing or wrong")]
    Csrf,
    #[error("invalid second-factor code")]
    InvalidCode,
    #[error("TOTP is not enabled")]
    MfaNotEnabled,
    #[error("no TOTP enrolment to confirm")]
    NoPendingEnrolment,
    #[error("too many failed logins: retry after {0}s")]
    LoginDelayed(u64),
    #[error("password login blocked until a password reset")]
    LoginBlocked,
    #[error("password checks are busy")]
    Busy,
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl From<password::HashError> for AccountError {
    fn from(e: password::HashError) -> AccountError {
        match e {
            password::HashError::Busy => AccountError::Busy,
            password::HashError::NoPepper | password::HashError::Failed => {
                AccountError::Internal("password hashing")
            }
        }
    }
}

/// Credentials issued by a login or refresh. The values go only into Set-Cookie headers.
pub struct Issued {
    pub user_id: String,
    pub email: String,
    pub session: Token,
    pub session_expires_at: i64,
    pub refresh: Token,
    pub refresh_expires_at: i64,
    pub csrf: String,
}

impl std::fmt::Debug for Issued {
    // Tokens already print as redacted; the CSRF value is a credential too, so it is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("user_id", &self.user_id)
            .field("session_expires_at", &self.session_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

/// The account service.
#[derive(Debug)]
pub struct Accounts {
    db: Db,
    hasher: PasswordHasher,
    mailer: Arc<Mailer>,
    clock: Arc<dyn Clock>,
    cfg: AccountsConfig,
    mfa: crate::domain::mfa::Mfa,
    cache: SessionCache,
    /// CSRF tokens of logins (their newest pepper's id is recorded with each login).
    csrf: CsrfKeys,
    audit: AuditLog,
    /// Slots for work done after the answer (detached.rs).
    detached: Arc<tokio::sync::Semaphore>,
}

/// Normalise and check an email address: trimmed, lower-cased, one `@`, a dotted domain, no
/// spaces or control characters, at most 254 bytes.
pub fn normalise_email(raw: &str) -> Result<String, AccountError> {
    let email = raw.trim().to_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err(AccountError::InvalidEmail);
    };
    let valid = email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',' | ';')
        });
    if valid {
        Ok(email)
    } else {
        Err(AccountError::InvalidEmail)
    }
}

/// A password-login event; request context (client, request id, user agent) is filled in by
/// [`crate::domain::audit::AuditLog::record`].
/// A password login's result and the device token the browser keeps for its next one.
#[derive(Debug)]
pub struct DeviceLogin {
    pub outcome: second_factor::LoginOutcome,
    pub device: Token,
    pub device_expires_at: i64,
}

fn login_event(event: SecurityEvent, user_id: Option<&str>) -> AuditEvent {
    let e = AuditEvent::new(event).detail("factor", "password");
    match user_id {
        Some(id) => e.principal(id),
        None => e,
    }
}

impl AccountError {
    /// A short, non-secret reason for audit details.
    fn reason(&self) -> &'static str {
        match self {
            AccountError::LoginDelayed(_) => "delayed",
            AccountError::LoginBlocked => "blocked",
            _ => "other",
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Accounts {
    pub fn new(
        db: Db,
        ring: &KeyRing,
        bcrypt_cost: u32,
        mailer: Arc<Mailer>,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        cfg: AccountsConfig,
    ) -> Result<Accounts, AccountError> {
        // One core fewer than the machine has (at least one): a login storm queues for bcrypt
        // while the proxy threads keep a core to themselves.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1);
        let hasher = PasswordHasher::new(ring, bcrypt_cost, workers)
            .map_err(|_| AccountError::Internal("no pepper key"))?;
        let csrf = CsrfKeys::derive(ring, b"zonegate csrf v1");
        let mfa = crate::domain::mfa::Mfa::new(
            db.clone(),
            Arc::new(ring.clone()),
            clock.clone(),
            cfg.mfa_issuer.clone(),
        );
        Ok(Accounts {
            mfa,
            cache: SessionCache::new(cfg.cache_revalidate, 100_000),
            db,
            hasher,
            mailer,
            clock,
            cfg,
            csrf,
            audit,
            detached: Arc::new(tokio::sync::Semaphore::new(detached::SLOTS)),
        })
    }

    /// Record a security event (logged and stored).
    fn audit(&self, event: AuditEvent) {
        self.audit.record(event);
    }

    /// The injected clock, in Unix seconds.
    pub fn now(&self) -> i64 {
        i64::try_from(self.clock.unix_seconds()).unwrap_or(i64::MAX)
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, AccountError> {
        Ok(self.db.acquire().await?)
    }

    /// The second-factor service (its background re-seal runs from the server's maintenance).
    pub fn mfa(&self) -> &crate::domain::mfa::Mfa {
        &self.mfa
    }

    pub fn config(&self) -> &AccountsConfig {
        &self.cfg
    }

    // ---- CSRF ----------------------------------------------------------------------------

    /// The CSRF token of a login (refresh family): a MAC of the family id, so it needs no
    /// storage and is useless for any other login.
    pub fn csrf_token(&self, family_id: &str) -> String {
        self.csrf.token(family_id)
    }

    /// Constant-time check of a presented CSRF token against a family.
    pub fn csrf_matches(&self, family_id: &str, presented: &str) -> bool {
        self.csrf.matches(family_id, presented)
    }

    // ---- Signup and verification ----------------------------------------------------------

    /// Register an account. The outcome looks the same whether or not the email is taken: an
    /// existing owner gets a notice mail instead of a second account.
    pub async fn signup(&self, email: &str, password: &str) -> Result<(), AccountError> {
        let email = normalise_email(email)?;
        password::check(password, &email, self.cfg.min_password_chars)
            .map_err(AccountError::WeakPassword)?;
        // Hash before looking the email up, so both outcomes spend the same time.
        let hash = self.hasher.hash(password).await?;
        let now = self.now();
        let mut conn = self.conn().await?;
        let user_id = new_id();
        if store::insert_user(&mut conn, &user_id, &email, &hash, now).await? {
            let token = Token::generate();
            store::insert_email_token(
                &mut conn,
                &token.hash(),
                &user_id,
                "verify",
                now,
                now + self.cfg.verify_ttl,
            )
            .await?;
            drop(conn);
            self.send_verification(&email, &token).await;
            self.audit(AuditEvent::new(SecurityEvent::UserCreated).principal(&user_id));
        } else {
            // A notice at most once per resend interval, like a verification resend: signing
            // up again and again must not turn the gateway into a mail cannon at one address.
            // The marker is an email token that no link carries and no flow spends.
            let Some(owner) = store::user_by_email(&mut conn, &email).await? else {
                return Ok(());
            };
            drop(conn);
            if self
                .issue_email_token(&owner.id, NOTICE_PURPOSE, 0)
                .await?
                .is_none()
            {
                return Ok(());
            }
            self.send(
                &email,
                "Someone tried to sign up with your email",
                format!(
                    "Someone tried to create a Delivery Zone account with this email address, which already has one.\n\n\
                     If it was you, log in at {origin}/login, or reset your password at {origin}/reset-password.\n\
                     If it was not you, you can ignore this message: nothing has changed.\n",
                    origin = self.cfg.public_origin
                ),
            )
            .await;
        }
        Ok(())
    }

    async fn send_verification(&self, email: &str, token: &Token) {
        // The token travels in the fragment, which browsers never send to a server, so it stays
        // out of access logs and Referer headers; the page posts it to /auth/verify-email.
        self.send(
            email,
            "Verify your email for Delivery Zone",
            format!(
                "Confirm your email address to activate your Delivery Zone account:\n\n\
                 {}/verify-email#token={}\n\nThe link works once and expires in {} minutes.\n",
                self.cfg.public_origin,
                token.expose(),
                self.cfg.verify_ttl / 60
            ),
        )
        .await;
    }

    async fn send(&self, to: &str, subject: &str, body: String) {
        if let Err(e) = self.mailer.send(to, subject, body).await {
            tracing::error!(target: "zonegate::mail", event = "mail_failed", error = %e);
        }
    }

    /// A new single-use email token for `purpose` (`verify`, `reset`, or [`NOTICE_PURPOSE`]), unless one was issued less than
    /// `resend_interval` ago (then `None`: a silent throttle, so it reveals nothing).
    async fn issue_email_token(
        &self,
        user_id: &str,
        purpose: &str,
        ttl: i64,
    ) -> Result<Option<Token>, AccountError> {
        let now = self.now();
        let mut conn = self.conn().await?;
        let latest = store::latest_email_token(&mut conn, user_id, purpose).await?;
        if latest.is_some_and(|t| now - t < self.cfg.resend_interval) {
            return Ok(None);
        }
        let token = Token::generate();
        store::insert_email_token(&mut conn, &token.hash(), user_id, purpose, now, now + ttl)
            .await?;
        Ok(Some(token))
    }

    /// Spend a verification token and mark its account verified.
    pub async fn verify_email(&self, token: &str) -> Result<(), AccountError> {
        let token = Token::from_presented(token).ok_or(AccountError::InvalidToken)?;
        let now = self.now();
        let mut conn = self.conn().await?;
        let user_id = store::spend_email_token(&mut conn, &token.hash(), "verify", now)
            .await?
            .ok_or(AccountError::InvalidToken)?;
        store::mark_verified(&mut conn, &user_id, now).await?;
        self.audit(AuditEvent::new(SecurityEvent::UserEmailVerified).principal(&user_id));
        Ok(())
    }

    /// Send a new verification link to an unverified account. Silent (and so unobservable)
    /// when the email is unknown, already verified, or asked for too recently.
    pub async fn resend_verification(&self, email: &str) -> Result<(), AccountError> {
        let Ok(email) = normalise_email(email) else {
            return Ok(());
        };
        let Some(user) = store::user_by_email(&mut *self.conn().await?, &email).await? else {
            return Ok(());
        };
        if user.email_verified_at.is_some() {
            return Ok(());
        }
        let Some(token) = self
            .issue_email_token(&user.id, "verify", self.cfg.verify_ttl)
            .await?
        else {
            return Ok(());
        };
        self.send_verification(&email, &token).await;
        Ok(())
    }

    // ---- Login, refresh, logout -----------------------------------------------------------

    /// Password login. Unknown email and wrong password are the same error after the same
    /// bcrypt work. A session the client already had is revoked (no fixation).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        previous_session: Option<&Token>,
        user_agent: Option<&str>,
    ) -> Result<second_factor::LoginOutcome, AccountError> {
        self.login_from_device(email, password, previous_session, user_agent, None)
            .await
            .map(|login| login.outcome)
    }

    /// [`Self::login`] from a browser that may hold a device token of the account: it gets its
    /// own failed-login allowance (lockout.rs). On a right password the result carries the
    /// device token the browser should keep.
    pub async fn login_from_device(
        &self,
        email: &str,
        password: &str,
        previous_session: Option<&Token>,
        user_agent: Option<&str>,
        device: Option<&Token>,
    ) -> Result<DeviceLogin, AccountError> {
        let user = match normalise_email(email) {
            Ok(email) => store::user_by_email(&mut *self.conn().await?, &email).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            // The same lockout reads and write as a wrong password (on an id no row has), so
            // the unknown-email path costs the same round trips as well as the same bcrypt work.
            let _ = self.admit_login("", device).await;
            self.hasher.verify_dummy(password).await?;
            let _ = self.count_failure("").await;
            self.audit(login_event(SecurityEvent::LoginFail, None).detail("reason", "credentials"));
            return Err(AccountError::InvalidCredentials);
        };
        // Lockout (lockout.rs): refused before the password is checked, and not counted.
        let client = match self.admit_login(&user.id, device).await {
            Ok(client) => client,
            Err(e) => {
                self.audit(
                    login_event(SecurityEvent::LoginFail, Some(&user.id))
                        .detail("reason", e.reason()),
                );
                return Err(e);
            }
        };
        if !self.hasher.verify(password, &user.password_hash).await? {
            self.audit(
                login_event(SecurityEvent::LoginFail, Some(&user.id))
                    .detail("reason", "credentials"),
            );
            self.count_login_failure(&user.id, client).await?;
            return Err(AccountError::InvalidCredentials);
        }
        // A disabled account gets the answer a wrong password gets (after the same work),
        // and its failure is not counted: the password was right.
        if user.disabled_at.is_some() {
            self.audit(
                login_event(SecurityEvent::LoginFail, Some(&user.id)).detail("reason", "disabled"),
            );
            return Err(AccountError::InvalidCredentials);
        }
        let device = self.login_succeeded(&user.id, client, device).await?;
        self.rehash_if_due(&user.id, password, &user.password_hash)
            .await;
        if user.email_verified_at.is_none() {
            return Err(AccountError::EmailNotVerified);
        }
        let outcome = self
            .after_password(&user.id, &user.email, previous_session, user_agent)
            .await?;
        Ok(DeviceLogin {
            outcome,
            device,
            device_expires_at: self.now() + lockout::DEVICE_TTL_SECS,
        })
    }

    /// After a right password: a hash made under an old pepper (after `keys rotate`) or at an
    /// old bcrypt cost is replaced, so the old pepper stops being needed as its users log in.
    /// A failure (the bcrypt pool full, the database) is logged and tried again at the next
    /// login; the login itself goes on.
    async fn rehash_if_due(&self, user_id: &str, password: &str, stored: &str) {
        if !self.hasher.needs_rehash(stored) {
            return;
        }
        let replaced = async {
            let rehashed = self.hasher.hash(password).await?;
            let mut conn = self.conn().await?;
            Ok::<_, AccountError>(
                store::replace_password_hash(&mut conn, user_id, stored, &rehashed).await?,
            )
        }
        .await;
        match replaced {
            Ok(replaced) => tracing::info!(
                target: "zonegate::accounts",
                event = "password_rehashed",
                user_id,
                replaced
            ),
            Err(e) => tracing::warn!(
                target: "zonegate::accounts",
                event = "password_rehash_fail",
                user_id,
                error = %e
            ),
        }
    }

    async fn start_family(
        &self,
        user_id: &str,
        email: &str,
        mfa: bool,
        user_agent: Option<&str>,
    ) -> Result<Issued, AccountError> {
        let now = self.now();
        let family = new_id();
        let absolute = now + self.cfg.refresh_absolute;
        let refresh = Token::generate();
        let mut tx = self.db.begin().await?;
        store::insert_family(
            &mut tx,
            &family,
            user_id,
            mfa,
            now,
            absolute,
            self.csrf.newest_id(),
        )
        .await?;
        store::insert_refresh(&mut tx, &refresh.hash(), &family, None, now).await?;
        let (session, session_expires_at) = self
            .insert_session(&mut tx, user_id, &family, absolute, user_agent)
            .await?;
        tx.commit().await?;
        // A new login: its refresh family (first refresh token) and its first session.
        let factors = if mfa { "password+totp" } else { "password" };
        self.audit(
            AuditEvent::new(SecurityEvent::RefreshIssued)
                .principal(user_id)
                .detail("factors", factors)
                .detail("family_id", family.as_str()),
        );
        self.audit(
            AuditEvent::new(SecurityEvent::SessionCreated)
                .principal(user_id)
                .detail("factors", factors)
                .detail("family_id", family.as_str()),
        );
        Ok(Issued {
            user_id: user_id.to_owned(),
            email: email.to_owned(),
            session,
            session_expires_at,
            refresh,
            refresh_expires_at: absolute,
            csrf: self.csrf_token(&family),
        })
    }

    async fn insert_session(
        &self,
        conn: &mut Conn,
        user_id: &str,
        family: &str,
        family_expires_at: i64,
        user_agent: Option<&str>,
    ) -> Result<(Token, i64), AccountError> {
        let now = self.now();
        let token = Token::generate();
        let expires_at = (now + self.cfg.session_ttl).min(family_expires_at);
        let agent = user_agent.map(|a| a.chars().take(200).collect::<String>());
        store::insert_session(
            conn,
            &token.hash(),
            &new_id(),
            user_id,
            family,
            now,
            expires_at,
            agent.as_deref(),
        )
        .await?;
        Ok((token, expires_at))
    }

    /// Exchange a refresh token for a new one and a new session (see the module docs for
    /// rotation, reuse detection and the grace window).
    pub async fn refresh(
        &self,
        presented: &str,
        csrf: &str,
        previous_session: Option<&Token>,
        user_agent: Option<&str>,
    ) -> Result<Issued, AccountError> {
        let token = Token::from_presented(presented).ok_or(AccountError::InvalidCredentials)?;
        let hash = token.hash();
        let now = self.now();
        let mut conn = self.conn().await?;
        let row = store::refresh_by_hash(&mut conn, &hash)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        if row.revoked_at.is_some() {
            return Err(AccountError::InvalidCredentials);
        }
        // The refresh cookie is sent by the browser on its own; the CSRF token proves the
        // request came from our page, and is checked before anything is rotated.
        if !self.csrf_matches(&row.family_id, csrf) {
            return Err(AccountError::Csrf);
        }
        if now >= row.absolute_expires_at || now - row.last_used_at > self.cfg.refresh_idle {
            store::revoke_family(&mut conn, &row.family_id, "expired", now).await?;
            self.cache.remove_family(&row.family_id);
            return Err(AccountError::InvalidCredentials);
        }
        let won = row.rotated_at.is_none() && store::claim_rotation(&mut conn, &hash, now).await?;
        if !won {
            let in_grace =
                store::claim_grace(&mut conn, &hash, now - self.cfg.refresh_grace, now).await?;
            if !in_grace {
                store::revoke_family(&mut conn, &row.family_id, "reuse", now).await?;
                self.cache.remove_family(&row.family_id);
                self.audit(
                    AuditEvent::new(SecurityEvent::RefreshReuse)
                        .principal(&row.user_id)
                        .detail("family_id", row.family_id.as_str()),
                );
                return Err(AccountError::InvalidCredentials);
            }
        }
        let user = store::user_by_id(&mut conn, &row.user_id)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        if let Some(previous) = previous_session {
            store::revoke_session_by_hash(&mut conn, &previous.hash(), now).await?;
            self.cache.remove_session(&previous.hash());
        }
        drop(conn);
        let next = Token::generate();
        let mut tx = self.db.begin().await?;
        store::insert_refresh(&mut tx, &next.hash(), &row.family_id, Some(&hash), now).await?;
        store::touch_family(&mut tx, &row.family_id, now, self.csrf.newest_id()).await?;
        let (session, session_expires_at) = self
            .insert_session(
                &mut tx,
                &row.user_id,
                &row.family_id,
                row.absolute_expires_at,
                user_agent,
            )
            .await?;
        tx.commit().await?;
        self.audit(
            AuditEvent::new(SecurityEvent::RefreshRotated)
                .principal(&row.user_id)
                .detail("family_id", row.family_id.as_str()),
        );
        Ok(Issued {
            user_id: user.id,
            email: user.email,
            session,
            session_expires_at,
            refresh: next,
            refresh_expires_at: row.absolute_expires_at,
            csrf: self.csrf_token(&row.family_id),
        })
    }

    /// End a login: its family, every session made from it.
    pub async fn logout(&self, user: &UserPrincipal) -> Result<(), AccountError> {
        let mut conn = self.conn().await?;
        store::revoke_family(&mut conn, &user.family_id, "logout", self.now()).await?;
        self.cache.remove_family(&user.family_id);
        self.audit(
            AuditEvent::new(SecurityEvent::RefreshRevoked)
                .principal(&user.user_id)
                .detail("reason", "logout")
                .detail("family_id", user.family_id.as_str()),
        );
        Ok(())
    }

    async fn revoke_session_token(&self, token: &Token) -> Result<(), AccountError> {
        let hash = token.hash();
        store::revoke_session_by_hash(&mut *self.conn().await?, &hash, self.now()).await?;
        self.cache.remove_session(&hash);
        Ok(())
    }

    /// Password checks and hashes waiting for a bcrypt thread.
    pub fn password_jobs_queued(&self) -> usize {
        self.hasher.queued()
    }

    // ---- What other instances changed (crate::domain::invalidation) ---------------------

    /// A session ended elsewhere (by its public id): never believed from the cache again.
    pub fn forget_session(&self, public_id: &str) {
        self.cache.remove_public_id(public_id);
    }

    /// A login ended elsewhere, with its sessions.
    pub fn forget_family(&self, family_id: &str) {
        self.cache.remove_family(family_id);
    }

    /// A user changed elsewhere (disabled, enabled, verified): their sessions are re-read.
    pub fn forget_user(&self, user_id: &str) {
        self.cache.remove_user(user_id, None);
    }

    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// Lookups in the session cache.
    pub fn session_cache_stats(&self) -> &crate::domain::stats::CacheStats {
        &self.cache.stats
    }

    /// The hot path: a session cookie to a user. Cached; the database is consulted on a miss
    /// or when the entry is due for revalidation.
    pub async fn authenticate_session(
        &self,
        presented: &str,
    ) -> Result<Arc<UserPrincipal>, AccountError> {
        let token = Token::from_presented(presented).ok_or(AccountError::InvalidCredentials)?;
        let hash = token.hash();
        let now = self.now();
        if let Some(user) = self.cache.get(&hash, now) {
            return Ok(user);
        }
        let generation = self.cache.generation();
        let row = store::live_session(&mut *self.conn().await?, &hash, now)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        let user = Arc::new(UserPrincipal {
            user_id: row.user_id,
            email: row.email,
            email_verified: row.email_verified_at.is_some(),
            mfa: row.mfa,
            session_id: row.public_id,
            family_id: row.family_id,
        });
        self.cache
            .put(hash, user.clone(), row.expires_at, now, generation);
        Ok(user)
    }

    // ---- Platform administration ------------------------------------------------------------

    /// What a platform operator sees of a user.
    pub async fn platform_user(&self, id: &str) -> Result<store::PlatformUserRow, AccountError> {
        store::platform_user(&mut *self.conn().await?, id, self.now())
            .await?
            .ok_or(AccountError::NotFound)
    }

    /// Users whose id is `query` or whose email contains it, at most `limit`.
    pub async fn find_users(
        &self,
        query: &str,
        limit: u32,
    ) -> Result<Vec<store::PlatformUserRow>, AccountError> {
        Ok(store::find_users(
            &mut *self.conn().await?,
            query,
            i64::from(limit),
            self.now(),
        )
        .await?)
    }

    /// Disable a user (every login and session ends, and logging in is refused) or enable
    /// them again, by `operator`.
    pub async fn set_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        operator: &str,
    ) -> Result<(), AccountError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        if !store::set_disabled(&mut tx, user_id, disabled.then_some(now)).await? {
            return Err(AccountError::NotFound);
        }
        if disabled {
            store::revoke_user_families(&mut tx, user_id, None, "disabled", now).await?;
            store::void_pending_logins(&mut tx, user_id, now).await?;
        }
        tx.commit().await?;
        self.cache.remove_user(user_id, None);
        let event = if disabled {
            SecurityEvent::UserDisabled
        } else {
            SecurityEvent::UserEnabled
        };
        self.audit(
            AuditEvent::new(event)
                .principal(operator)
                .detail("user", user_id),
        );
        Ok(())
    }

    /// End every login and session of a user, by `operator`.
    pub async fn end_all_sessions(
        &self,
        user_id: &str,
        operator: &str,
    ) -> Result<(), AccountError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        if store::user_by_id(&mut tx, user_id).await?.is_none() {
            return Err(AccountError::NotFound);
        }
        store::revoke_user_families(&mut tx, user_id, None, "ended_by_operator", now).await?;
        store::void_pending_logins(&mut tx, user_id, now).await?;
        tx.commit().await?;
        self.cache.remove_user(user_id, None);
        self.audit(
            AuditEvent::new(SecurityEvent::UserSessionsEnded)
                .principal(operator)
                .detail("user", user_id),
        );
        Ok(())
    }

    // ---- Self-service ---------------------------------------------------------------------

    pub async fn list_sessions(
        &self,
        user: &UserPrincipal,
    ) -> Result<Vec<store::SessionListing>, AccountError> {
        Ok(store::list_sessions(&mut *self.conn().await?, &user.user_id, self.now()).await?)
    }

    pub async fn end_session(
        &self,
        user: &UserPrincipal,
        public_id: &str,
    ) -> Result<(), AccountError> {
        let mut conn = self.conn().await?;
        let ended =
            store::revoke_session_by_public_id(&mut conn, &user.user_id, public_id, self.now())
                .await?;
        if !ended {
            return Err(AccountError::NotFound);
        }
        self.cache.remove_public_id(public_id);
        self.audit(
            AuditEvent::new(SecurityEvent::SessionRevoked)
                .principal(&user.user_id)
                .detail("reason", "ended_by_user"),
        );
        Ok(())
    }

    /// Change the password (the current one is required) and end every other login.
    pub async fn change_password(
        &self,
        user: &UserPrincipal,
        current: &str,
        new: &str,
    ) -> Result<(), AccountError> {
        let row = store::user_by_id(&mut *self.conn().await?, &user.user_id)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        if !self
            .reauthenticate_password(&user.user_id, current, &row.password_hash)
            .await?
        {
            self.audit(
                AuditEvent::new(SecurityEvent::PasswordChangeFail)
                    .principal(&user.user_id)
                    .detail("reason", "wrong_current_password"),
            );
            return Err(AccountError::WrongPassword);
        }
        password::check(new, &row.email, self.cfg.min_password_chars)
            .map_err(AccountError::WeakPassword)?;
        let hash = self.hasher.hash(new).await?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        store::set_password(&mut tx, &user.user_id, &hash, now).await?;
        store::void_email_tokens(&mut tx, &user.user_id, "reset", now).await?;
        store::revoke_user_families(
            &mut tx,
            &user.user_id,
            Some(&user.family_id),
            "password_change",
            now,
        )
        .await?;
        store::void_pending_logins(&mut tx, &user.user_id, now).await?;
        tx.commit().await?;
        self.cache.remove_user(&user.user_id, Some(&user.family_id));
        self.audit(AuditEvent::new(SecurityEvent::PasswordChanged).principal(&user.user_id));
        self.send(
            &row.email,
            "Your Delivery Zone password was changed",
            "The password of your Delivery Zone account was just changed, and your other sessions were ended.\n\
             If this was not you, reset your password now and contact support.\n"
                .to_owned(),
        )
        .await;
        Ok(())
    }

    /// Mail a single-use reset link to a known account. Silent for unknown emails.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), AccountError> {
        let Ok(email) = normalise_email(email) else {
            return Ok(());
        };
        let Some(user) = store::user_by_email(&mut *self.conn().await?, &email).await? else {
            return Ok(());
        };
        let Some(token) = self
            .issue_email_token(&user.id, "reset", self.cfg.reset_ttl)
            .await?
        else {
            return Ok(());
        };
        self.send(
            &email,
            "Reset your Delivery Zone password",
            format!(
                "To choose a new password, open:\n\n{}/reset-password#token={}\n\n\
                 The link works once and expires in {} minutes. If you did not ask for it, ignore this message.\n",
                self.cfg.public_origin,
                token.expose(),
                self.cfg.reset_ttl / 60
            ),
        )
        .await;
        self.audit(AuditEvent::new(SecurityEvent::PasswordResetRequested).principal(&user.id));
        Ok(())
    }

    /// Set a new password with a reset token; ends every session of the account.
    pub async fn confirm_password_reset(&self, token: &str, new: &str) -> Result<(), AccountError> {
        let token = Token::from_presented(token).ok_or(AccountError::InvalidToken)?;
        let now = self.now();
        // Check the token before spending it, so a weak new password does not burn the link.
        let mut conn = self.conn().await?;
        let hash = token.hash();
        let user_id = store::peek_email_token(&mut conn, &hash, "reset", now)
            .await?
            .ok_or(AccountError::InvalidToken)?;
        let user = store::user_by_id(&mut conn, &user_id)
            .await?
            .ok_or(AccountError::InvalidToken)?;
        drop(conn);
        password::check(new, &user.email, self.cfg.min_password_chars)
            .map_err(AccountError::WeakPassword)?;
        let new_hash = self.hasher.hash(new).await?;
        let mut tx = self.db.begin().await?;
        store::spend_email_token(&mut tx, &hash, "reset", now)
            .await?
            .ok_or(AccountError::InvalidToken)?;
        store::set_password(&mut tx, &user.id, &new_hash, now).await?;
        // A reset proves control of the mailbox, which also verifies it.
        store::mark_verified(&mut tx, &user.id, now).await?;
        store::void_email_tokens(&mut tx, &user.id, "reset", now).await?;
        store::revoke_user_families(&mut tx, &user.id, None, "password_reset", now).await?;
        store::void_pending_logins(&mut tx, &user.id, now).await?;
        // The owner proved control of the mailbox: lift any failed-login delay or block.
        store::clear_failed_logins(&mut tx, &user.id).await?;
        tx.commit().await?;
        self.cache.remove_user(&user.id, None);
        self.audit(AuditEvent::new(SecurityEvent::PasswordReset).principal(&user.id));
        self.send(
            &user.email,
            "Your Delivery Zone password was reset",
            "The password of your Delivery Zone account was reset and every session was ended.\n\
             If this was not you, contact support at once.\n"
                .to_owned(),
        )
        .await;
        Ok(())
    }
}
