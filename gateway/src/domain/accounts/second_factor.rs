//! The second factor in the account flows: the pending login between the password and the
//! code, and enrolment, confirmation and removal of TOTP for a signed-in user.
//!
//! A pending login is not a session: its cookie (`__Host-zonegate-mfa`) is read only by
//! `POST /auth/login/totp`, so no protected route accepts it. It lives a few minutes, allows
//! [`PENDING_ATTEMPTS`] attempts, and an account allows [`ACCOUNT_ATTEMPTS`] wrong codes
//! across its pending logins per [`ACCOUNT_WINDOW`] seconds, so guessing six digits is not a
//! matter of opening more pending logins.

use super::{store, AccountError, Accounts, Issued, Token};
use crate::domain::audit::{AuditEvent, SecurityEvent};
use crate::domain::mfa::{Enrolment, Factor, MfaError, RecoveryCodes};
use crate::domain::principal::UserPrincipal;

/// Seconds a pending login stays usable.
pub const PENDING_TTL: i64 = 5 * 60;
/// Wrong codes one pending login allows.
pub const PENDING_ATTEMPTS: i64 = 5;
/// Wrong codes an account allows per window, across its pending logins.
pub const ACCOUNT_ATTEMPTS: i64 = 20;
pub const ACCOUNT_WINDOW: i64 = 15 * 60;

/// What a correct password leads to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// A session: the account has no second factor.
    Complete(Issued),
    /// The second factor is due; the token goes only into the pending-login cookie.
    SecondFactor { token: Token, expires_at: i64 },
}

impl LoginOutcome {
    /// The session, when no second factor was due.
    pub fn issued(self) -> Option<Issued> {
        match self {
            LoginOutcome::Complete(issued) => Some(issued),
            LoginOutcome::SecondFactor { .. } => None,
        }
    }
}

impl From<MfaError> for AccountError {
    fn from(e: MfaError) -> AccountError {
        match e {
            MfaError::InvalidCode => AccountError::InvalidCode,
            MfaError::NotEnrolled => AccountError::MfaNotEnabled,
            MfaError::NoPendingEnrolment => AccountError::NoPendingEnrolment,
            MfaError::InvalidLabel => AccountError::InvalidEmail,
            MfaError::Crypto => AccountError::Internal("totp seed"),
            MfaError::Store(e) => AccountError::Storage(e),
        }
    }
}

impl Accounts {
    /// After the password step: a session, or a pending login when the account has TOTP.
    pub(super) async fn after_password(
        &self,
        user_id: &str,
        email: &str,
        previous_session: Option<&Token>,
        user_agent: Option<&str>,
    ) -> Result<LoginOutcome, AccountError> {
        if self.mfa.enabled(user_id).await? {
            let token = Token::generate();
            let now = self.now();
            let expires_at = now + PENDING_TTL;
            store::insert_pending_login(
                &mut *self.conn().await?,
                &token.hash(),
                user_id,
                now,
                expires_at,
            )
            .await?;
            self.audit(AuditEvent::new(SecurityEvent::MfaChallenged).principal(user_id));
            return Ok(LoginOutcome::SecondFactor { token, expires_at });
        }
        if let Some(previous) = previous_session {
            self.revoke_session_token(previous).await?;
        }
        let issued = self.start_family(user_id, email, false, user_agent).await?;
        self.audit(
            AuditEvent::new(SecurityEvent::LoginSuccess)
                .principal(user_id)
                .detail("factor", "password"),
        );
        Ok(LoginOutcome::Complete(issued))
    }

    /// Complete a pending login with a TOTP code or a recovery code: a fresh session (any
    /// session the client had is revoked) whose factors record the second factor.
    pub async fn login_second_factor(
        &self,
        pending: &str,
        code: &str,
        previous_session: Option<&Token>,
        user_agent: Option<&str>,
    ) -> Result<Issued, AccountError> {
        let token = Token::from_presented(pending).ok_or(AccountError::InvalidCredentials)?;
        let now = self.now();
        // Count the attempt first, atomically and only while attempts remain: parallel
        // submissions cannot exceed the limit, and a correct code also spends an attempt.
        let mut conn = self.conn().await?;
        let user_id = store::count_pending_attempt(&mut conn, &token.hash(), now, PENDING_ATTEMPTS)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        let recent =
            store::recent_pending_attempts(&mut conn, &user_id, now - ACCOUNT_WINDOW).await?;
        drop(conn);
        if recent > ACCOUNT_ATTEMPTS {
            self.audit(
                AuditEvent::new(SecurityEvent::MfaFail)
                    .principal(&user_id)
                    .detail("reason", "account_attempts"),
            );
            return Err(AccountError::InvalidCode);
        }
        let factor = match self.mfa.verify(&user_id, code).await {
            Ok(factor) => factor,
            // A secret removed since the password step fails like a wrong code.
            Err(MfaError::InvalidCode | MfaError::NotEnrolled) => {
                self.audit(
                    AuditEvent::new(SecurityEvent::MfaFail)
                        .principal(&user_id)
                        .detail("reason", "login"),
                );
                return Err(AccountError::InvalidCode);
            }
            Err(e) => return Err(e.into()),
        };
        // Single use: only the request that marks it completed goes on. Its attempt was not a
        // failure, so it stops counting against the account.
        let completed =
            store::complete_pending_login(&mut *self.conn().await?, &token.hash(), now).await?;
        if !completed {
            return Err(AccountError::InvalidCredentials);
        }
        if factor == Factor::RecoveryCode {
            self.audit(AuditEvent::new(SecurityEvent::MfaRecoveryCodeUsed).principal(&user_id));
        }
        let user = store::user_by_id(&mut *self.conn().await?, &user_id)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        if let Some(previous) = previous_session {
            self.revoke_session_token(previous).await?;
        }
        let issued = self
            .start_family(&user.id, &user.email, true, user_agent)
            .await?;
        self.audit(
            AuditEvent::new(SecurityEvent::LoginSuccess)
                .principal(&user.id)
                .detail("factor", "password+totp"),
        );
        Ok(issued)
    }

    /// Fresh re-authentication for changing the second factor: the password always, and a
    /// current code (or a recovery code) when TOTP is already on.
    async fn reauthenticate(
        &self,
        user: &UserPrincipal,
        password: &str,
        code: Option<&str>,
    ) -> Result<bool, AccountError> {
        let row = store::user_by_id(&mut *self.conn().await?, &user.user_id)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        if !self
            .reauthenticate_password(&user.user_id, password, &row.password_hash)
            .await?
        {
            self.audit(
                AuditEvent::new(SecurityEvent::PasswordChangeFail)
                    .principal(&user.user_id)
                    .detail("reason", "reauthentication"),
            );
            return Err(AccountError::WrongPassword);
        }
        let enabled = self.mfa.enabled(&user.user_id).await?;
        if enabled {
            let code = code.ok_or(AccountError::InvalidCode)?;
            if let Err(e) = self.mfa.verify(&user.user_id, code).await {
                self.audit(
                    AuditEvent::new(SecurityEvent::MfaFail)
                        .principal(&user.user_id)
                        .detail("reason", "reauthentication"),
                );
                return Err(e.into());
            }
        }
        Ok(enabled)
    }

    /// Start enrolling a (new) TOTP secret. The current one, if any, keeps working until the
    /// new one is confirmed.
    pub async fn mfa_enrol(
        &self,
        user: &UserPrincipal,
        password: &str,
        code: Option<&str>,
    ) -> Result<Enrolment, AccountError> {
        self.reauthenticate(user, password, code).await?;
        let enrolment = self.mfa.enrol(&user.user_id, &user.email).await?;
        self.audit(AuditEvent::new(SecurityEvent::MfaEnrolled).principal(&user.user_id));
        Ok(enrolment)
    }

    /// Confirm the pending secret with a code from the app: it becomes the active one (the
    /// old one stops working at once), fresh recovery codes are issued, and the user's other
    /// logins end.
    pub async fn mfa_confirm(
        &self,
        user: &UserPrincipal,
        code: &str,
    ) -> Result<RecoveryCodes, AccountError> {
        let codes = match self.mfa.confirm(&user.user_id, code).await {
            Ok(codes) => codes,
            Err(e) => {
                self.audit(
                    AuditEvent::new(SecurityEvent::MfaFail)
                        .principal(&user.user_id)
                        .detail("reason", "confirm"),
                );
                return Err(e.into());
            }
        };
        self.end_other_logins(user, "mfa_change").await?;
        self.audit(AuditEvent::new(SecurityEvent::MfaConfirmed).principal(&user.user_id));
        Ok(codes)
    }

    /// Turn TOTP off (password and a current or recovery code required); ends other logins.
    pub async fn mfa_disable(
        &self,
        user: &UserPrincipal,
        password: &str,
        code: &str,
    ) -> Result<(), AccountError> {
        if !self.reauthenticate(user, password, Some(code)).await? {
            return Err(AccountError::MfaNotEnabled);
        }
        self.mfa.disable(&user.user_id).await?;
        self.end_other_logins(user, "mfa_change").await?;
        self.audit(AuditEvent::new(SecurityEvent::MfaDisabled).principal(&user.user_id));
        Ok(())
    }

    /// Whether the user has TOTP on, and how many recovery codes are left.
    pub async fn mfa_status(&self, user: &UserPrincipal) -> Result<(bool, i64), AccountError> {
        let enabled = self.mfa.enabled(&user.user_id).await?;
        let left = if enabled {
            self.mfa.recovery_codes_left(&user.user_id).await?
        } else {
            0
        };
        Ok((enabled, left))
    }

    async fn end_other_logins(
        &self,
        user: &UserPrincipal,
        reason: &str,
    ) -> Result<(), AccountError> {
        let now = self.now();
        let mut c = self.conn().await?;
        store::revoke_user_families(&mut c, &user.user_id, Some(&user.family_id), reason, now)
            .await?;
        store::void_pending_logins(&mut c, &user.user_id, now).await?;
        self.cache.remove_user(&user.user_id, Some(&user.family_id));
        Ok(())
    }
}
