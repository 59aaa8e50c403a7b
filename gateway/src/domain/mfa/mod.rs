//! TOTP multi-factor authentication: enrolment, confirmation, verification with replay
//! protection, recovery codes, and disabling. A library for the HTTP layer; it does no rate
//! limiting and no re-authentication, both of which the caller must do (a six-digit code falls
//! to about 10^6 / 3 guesses without a limit).
//!
//! Life of a credential:
//! 1. [`Mfa::enrol`] makes a seed and stores it sealed ([`seal`]) as *pending*. Any active
//!    credential keeps working.
//! 2. [`Mfa::confirm`] with a valid code moves pending to *active* in one transaction,
//!    replacing the old credential and its recovery codes, and returns fresh recovery codes
//!    (shown once, stored hashed).
//! 3. [`Mfa::verify`] takes a TOTP code or a recovery code. A TOTP step is accepted at most once
//!    per account (the store's conditional update on `last_step`), a recovery code at most once.
//! 4. [`Mfa::disable`] deletes the credential and the codes; the seed stops working at once.
//!
//! Time comes from the injected [`Clock`]; nothing here reads the system time.

pub mod recovery;
pub mod seal;
pub mod store;
pub mod totp;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::keyring::KeyRing;
use crate::domain::storage::Db;
pub use recovery::RecoveryCodes;
pub use totp::{Enrolment, Secret};

/// What went wrong. Never carries a seed, a code, or anything derived from them.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// The code is malformed, wrong, outside the time window, already used, or was overtaken by
    /// a concurrent change. One error for all, so a client learns nothing about which.
    #[error("invalid code")]
    InvalidCode,
    #[error("multi-factor authentication is not enabled for this account")]
    NotEnrolled,
    #[error("no enrolment is waiting for confirmation")]
    NoPendingEnrolment,
    /// The issuer or account name cannot be put in an otpauth URI (contains `:` or is too long
    /// for a QR code).
    #[error("issuer or account name not usable in an authenticator label")]
    InvalidLabel,
    /// A sealed seed could not be made or opened (missing key, tampering, wrong user).
    #[error("TOTP seed could not be sealed or opened")]
    Crypto,
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Which second factor a successful [`Mfa::verify`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Totp,
    RecoveryCode,
}

/// What [`Mfa::reseal_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Seeds now sealed under the active key.
    pub resealed: u64,
    /// Seeds under a key no longer in the ring; they cannot be used until re-enrolled.
    pub unreadable: u64,
    /// Unconfirmed enrolments past their window, deleted.
    pub pruned: u64,
}

/// Seconds within which a started enrolment must be confirmed.
pub const ENROLMENT_TTL: i64 = 15 * 60;

/// The MFA service: a pool, the key ring (for sealing seeds), a clock, and the issuer name shown
/// in authenticator apps.
#[derive(Debug, Clone)]
pub struct Mfa {
    db: Db,
    keys: Arc<KeyRing>,
    clock: Arc<dyn Clock>,
    issuer: String,
}

impl Mfa {
    pub fn new(
        db: Db,
        keys: Arc<KeyRing>,
        clock: Arc<dyn Clock>,
        issuer: impl Into<String>,
    ) -> Mfa {
        Mfa {
            db,
            keys,
            clock,
            issuer: issuer.into(),
        }
    }

    fn now(&self) -> (u64, i64) {
        let now = self.clock.unix_seconds();
        (now, i64::try_from(now).unwrap_or(i64::MAX))
    }

    /// Re-seal every seed made under an older `totp` key with the active one (after
    /// `keys rotate`), so the old key can be retired; enrolments past their confirmation window
    /// are deleted first. Each seed is replaced only if unchanged since it was read. A seed that
    /// cannot be opened (its key is gone) is counted and left as it is.
    ///
    /// A login checking a code in the same instant as its seed is re-sealed is refused once
    /// (the step is accepted only against the seed it was checked with); it never succeeds twice.
    pub async fn reseal_all(&self) -> Result<Resealed, MfaError> {
        const BATCH: i64 = 500;
        let active = self
            .keys
            .active(crate::domain::keyring::Purpose::Totp)
            .ok_or(MfaError::Crypto)?
            .id
            .clone();
        let mut c = self.db.acquire().await?;
        let mut done = Resealed {
            pruned: store::prune_stale_enrolments(&mut c, self.now().1 - ENROLMENT_TTL).await?,
            ..Resealed::default()
        };
        let mut after = (String::new(), String::new());
        loop {
            let batch =
                store::sealed_not_under(&mut c, &active, (&after.0, &after.1), BATCH).await?;
            for seed in &batch {
                let resealed = seal::open(&self.keys, &seed.user_id, &seed.sealed)
                    .and_then(|secret| seal::seal(&self.keys, &seed.user_id, &secret));
                match resealed {
                    // Not replaced when changed meanwhile: whatever replaced it was sealed
                    // under the active key.
                    Ok(text) => {
                        done.resealed += u64::from(store::reseal(&mut c, seed, &text).await?)
                    }
                    Err(_) => done.unreadable += 1,
                }
            }
            match batch.last() {
                Some(last) if i64::try_from(batch.len()).unwrap_or(i64::MAX) == BATCH => {
                    after = (last.user_id.clone(), last.state.clone());
                }
                _ => return Ok(done),
            }
        }
    }

    /// Start (or restart) enrolment: a new seed, stored sealed as pending. Returns what the user
    /// needs to add it to an app; it is not usable for login until [`Mfa::confirm`].
    pub async fn enrol(&self, user_id: &str, email: &str) -> Result<Enrolment, MfaError> {
        let enrolment = totp::enrol(&self.issuer, email)?;
        let sealed = seal::seal(&self.keys, user_id, enrolment.secret())?;
        let mut c = self.db.acquire().await?;
        store::begin_enrolment(&mut c, user_id, &sealed, self.now().1).await?;
        Ok(enrolment)
    }

    /// Confirm the pending enrolment with a code from the app. On success the new seed replaces
    /// any active one and the returned recovery codes replace any old ones.
    pub async fn confirm(&self, user_id: &str, code: &str) -> Result<RecoveryCodes, MfaError> {
        let (now, now_i64) = self.now();
        let mut c = self.db.acquire().await?;
        let (sealed, created_at) = store::pending(&mut c, user_id)
            .await?
            .ok_or(MfaError::NoPendingEnrolment)?;
        // An enrolment abandoned long ago must not become the active secret later.
        if now_i64 - created_at > ENROLMENT_TTL {
            return Err(MfaError::NoPendingEnrolment);
        }
        let code = totp::parse_code(code).ok_or(MfaError::InvalidCode)?;
        let secret = seal::open(&self.keys, user_id, &sealed)?;
        let step = totp::matching_step(&secret, &code, now).ok_or(MfaError::InvalidCode)?;
        let (codes, hashes) = recovery::generate();
        // The confirming code's step becomes last_step, so it cannot be replayed for a login.
        if store::confirm(&mut c, user_id, &sealed, step, &hashes, now_i64).await? {
            Ok(codes)
        } else {
            Err(MfaError::InvalidCode)
        }
    }

    /// Check a second factor: six ASCII digits are a TOTP code, anything that normalises to a
    /// recovery code is one (and is spent). Each code succeeds at most once, across every
    /// session and gateway instance sharing the database.
    pub async fn verify(&self, user_id: &str, input: &str) -> Result<Factor, MfaError> {
        let (now, now_i64) = self.now();
        let mut c = self.db.acquire().await?;
        let active = store::active(&mut c, user_id)
            .await?
            .ok_or(MfaError::NotEnrolled)?;
        if let Some(code) = totp::parse_code(input) {
            let secret = seal::open(&self.keys, user_id, &active.sealed)?;
            let step = totp::matching_step(&secret, &code, now).ok_or(MfaError::InvalidCode)?;
            // Checked and recorded in one statement: a replay, or a seed replaced meanwhile,
            // affects no row.
            if store::accept_step(&mut c, user_id, &active.sealed, step).await? {
                return Ok(Factor::Totp);
            }
        } else if let Some(hash) = recovery::hash(input) {
            if store::spend_recovery_code(&mut c, user_id, &hash, now_i64).await? {
                return Ok(Factor::RecoveryCode);
            }
        }
        Err(MfaError::InvalidCode)
    }

    /// Turn MFA off: the seed, any pending enrolment and every recovery code are deleted.
    /// Returns whether MFA had been enabled.
    pub async fn disable(&self, user_id: &str) -> Result<bool, MfaError> {
        let mut c = self.db.acquire().await?;
        Ok(store::disable(&mut c, user_id).await?)
    }

    /// Whether the user has a confirmed TOTP credential.
    pub async fn enabled(&self, user_id: &str) -> Result<bool, MfaError> {
        let mut c = self.db.acquire().await?;
        Ok(store::has_totp(&mut c, user_id).await?)
    }

    /// Unused recovery codes, so the UI can warn when few are left.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, MfaError> {
        let mut c = self.db.acquire().await?;
        Ok(store::recovery_codes_left(&mut c, user_id).await?)
    }
}
