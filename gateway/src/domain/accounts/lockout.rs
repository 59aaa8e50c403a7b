//! Per-account failed-login lockout: a growing delay, then a block that only the owner's
//! emailed password reset lifts.
//!
//! Why this shape: a per-address rate limit (stage 4 of the pipeline) does nothing against a
//! botnet guessing one account's password from many addresses, so the account itself counts
//! consecutive failures. But an account-level lock is also a lever for strangers: whoever
//! knows an email address could keep its owner locked out. So:
//!
//! * below [`DELAY_AFTER`] consecutive failures, nothing changes;
//! * from then on, each attempt must come at least [`delay_secs`] after the last failure
//!   (doubling per failure, capped at [`MAX_DELAY_SECS`]). Earlier attempts are refused with
//!   429 and `Retry-After` before the password is checked, and are not counted: the server
//!   never sleeps, and a guesser cannot speed up by hammering;
//! * at [`BLOCK_AT`] consecutive failures password login is blocked outright
//!   (`authn_login_lock`), whatever the password, until a password reset through the emailed
//!   link clears the counter. A stranger can at most force the owner through a reset, never
//!   lock them out of recovery, since the reset needs only the mailbox;
//! * a successful login clears the counter.
//!
//! And so that a stranger's failures cannot hold the owner back at all, device cookies (OWASP,
//! "slow down online guessing with device cookies"): a successful password login gives the
//! browser a device token (`__Host-zonegate-device`, a year). A login presenting a device token
//! of that account is judged by the device's own counter, with the same delays, and its
//! failures count there, not on the account; the account's counter (fed by everyone else, the
//! untrusted clients) never delays it, not even when blocked. A device whose own counter says
//! wait or block is an untrusted client again. A trusted device's success clears its counter
//! but leaves the account's, so it does not reset a stranger's delay either.
//!
//! The counter lives in `users.failed_logins` and changes only by single atomic `UPDATE`s
//! (`failed_logins = failed_logins + 1`), so concurrent failures are all counted. Times come
//! from the injected clock.

use super::store;

/// Consecutive failures allowed before attempts are spaced out.
pub const DELAY_AFTER: u32 = 5;
/// Consecutive failures that block password login until a reset.
pub const BLOCK_AT: u32 = 100;
/// Longest wait between two attempts while delayed.
pub const MAX_DELAY_SECS: u64 = 15 * 60;

/// Whether an account may attempt a password login now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused without checking the password; retry after this many seconds.
    Wait(u64),
    /// Blocked until the owner resets the password.
    Blocked,
}

/// The minimum spacing after `failures` consecutive failures: 0 below [`DELAY_AFTER`], then
/// 1, 2, 4 … seconds, capped at [`MAX_DELAY_SECS`]. Monotonic in `failures`.
pub fn delay_secs(failures: u32) -> u64 {
    if failures < DELAY_AFTER {
        return 0;
    }
    let doublings = (failures - DELAY_AFTER).min(20);
    (1u64 << doublings).min(MAX_DELAY_SECS)
}

/// The verdict for an account with `failures` consecutive failures, the last at
/// `last_failed_at`, at time `now` (unix seconds).
pub fn verdict(failures: u32, last_failed_at: Option<i64>, now: i64) -> Verdict {
    if failures >= BLOCK_AT {
        return Verdict::Blocked;
    }
    let delay = delay_secs(failures);
    if delay == 0 {
        return Verdict::Allowed;
    }
    // A missing time (or a clock that went backwards) counts as "just failed": fail closed.
    let since = last_failed_at.map_or(0, |at| now.saturating_sub(at).max(0));
    let since = u64::try_from(since).unwrap_or(0);
    if since >= delay {
        Verdict::Allowed
    } else {
        Verdict::Wait(delay - since)
    }
}

/// How long a device token is trusted after its last successful login.
pub const DEVICE_TTL_SECS: i64 = 365 * 24 * 3600;

/// Who is attempting a login, as far as throttling goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Client<'t> {
    /// A device token of this account whose own counter allows an attempt.
    Trusted(&'t super::Token),
    /// Anyone else: judged and counted by the account's counter.
    Untrusted,
}

impl super::Accounts {
    /// Decide how to throttle a login attempt on `user_id`, refusing it (without checking the
    /// password, and without counting it) when its counter says wait or block.
    pub(super) async fn admit_login<'t>(
        &self,
        user_id: &str,
        device: Option<&'t super::Token>,
    ) -> Result<Client<'t>, super::AccountError> {
        if let Some(token) = device {
            let row =
                store::device_lockout(&mut *self.conn().await?, &token.hash(), user_id).await?;
            if let Some(row) = row {
                let failures = u32::try_from(row.failed_logins).unwrap_or(u32::MAX);
                if verdict(failures, row.last_failed_at, self.now()) == Verdict::Allowed {
                    return Ok(Client::Trusted(token));
                }
            }
        }
        self.check_lockout(user_id).await?;
        Ok(Client::Untrusted)
    }

    /// Count a wrong password where it belongs: on the trusted device, or on the account.
    pub(super) async fn count_login_failure(
        &self,
        user_id: &str,
        client: Client<'_>,
    ) -> Result<(), super::AccountError> {
        match client {
            Client::Trusted(token) => {
                store::record_device_failure(&mut *self.conn().await?, &token.hash(), self.now())
                    .await?;
                Ok(())
            }
            Client::Untrusted => self.count_failure(user_id).await,
        }
    }

    /// A right password: an untrusted client clears the account's counter (as before device
    /// cookies); a trusted device clears its own. Either way the browser gets a device token
    /// (its own, refreshed, or a new one) for its next login.
    pub(super) async fn login_succeeded(
        &self,
        user_id: &str,
        client: Client<'_>,
        presented: Option<&super::Token>,
    ) -> Result<super::Token, super::AccountError> {
        let mut conn = self.conn().await?;
        if matches!(client, Client::Untrusted) {
            store::clear_failed_logins(&mut conn, user_id).await?;
        }
        let token = match client {
            Client::Trusted(token) => token.clone(),
            // A device of this account that had fallen to its own delay is forgiven by a
            // right password, like the account; any other cookie value is replaced.
            Client::Untrusted => match presented {
                Some(token)
                    if store::device_lockout(&mut conn, &token.hash(), user_id)
                        .await?
                        .is_some() =>
                {
                    token.clone()
                }
                _ => super::Token::generate(),
            },
        };
        let now = self.now();
        store::device_login(
            &mut conn,
            &token.hash(),
            user_id,
            now,
            now - DEVICE_TTL_SECS,
        )
        .await?;
        Ok(token)
    }

    /// Refuse a login attempt the lockout does not allow yet; called before the password is
    /// checked, so a refused attempt costs no bcrypt work and is not counted.
    pub(super) async fn check_lockout(&self, user_id: &str) -> Result<(), super::AccountError> {
        let state = store::lockout_state(&mut *self.conn().await?, user_id).await?;
        let failures = u32::try_from(state.failed_logins).unwrap_or(u32::MAX);
        match verdict(failures, state.last_failed_at, self.now()) {
            Verdict::Allowed => Ok(()),
            Verdict::Wait(secs) => Err(super::AccountError::LoginDelayed(secs)),
            Verdict::Blocked => Err(super::AccountError::LoginBlocked),
        }
    }

    /// Check the password of a signed-in user who re-authenticates (changing the password or
    /// the second factor). It is a password guess like a login: refused while the account's
    /// lockout says wait, counted when wrong, so a stolen session is no side door for guessing.
    /// Returns whether it was right; the caller records its own failure event.
    pub(super) async fn reauthenticate_password(
        &self,
        user_id: &str,
        password: &str,
        password_hash: &str,
    ) -> Result<bool, super::AccountError> {
        self.check_lockout(user_id).await?;
        if !self.hasher.verify(password, password_hash).await? {
            self.count_failure(user_id).await?;
            return Ok(false);
        }
        store::clear_failed_logins(&mut *self.conn().await?, user_id).await?;
        Ok(true)
    }

    /// Count a wrong password; at exactly [`BLOCK_AT`] the block is announced once.
    pub(super) async fn count_failure(&self, user_id: &str) -> Result<(), super::AccountError> {
        let failures =
            store::record_failed_login(&mut *self.conn().await?, user_id, self.now()).await?;
        if failures == i64::from(BLOCK_AT) {
            self.audit(
                crate::domain::audit::AuditEvent::new(
                    crate::domain::audit::SecurityEvent::LoginLock,
                )
                .principal(user_id)
                .detail("reason", "consecutive_failures")
                .detail("failures", failures),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delay_grows_and_is_capped() {
        assert_eq!(delay_secs(0), 0);
        assert_eq!(delay_secs(DELAY_AFTER - 1), 0);
        assert_eq!(delay_secs(DELAY_AFTER), 1);
        assert_eq!(delay_secs(DELAY_AFTER + 3), 8);
        assert_eq!(delay_secs(BLOCK_AT - 1), MAX_DELAY_SECS);
        assert_eq!(delay_secs(u32::MAX), MAX_DELAY_SECS);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(0, None, 100), Verdict::Allowed);
        assert_eq!(verdict(DELAY_AFTER + 2, Some(100), 101), Verdict::Wait(3));
        assert_eq!(verdict(DELAY_AFTER + 2, Some(100), 104), Verdict::Allowed);
        assert_eq!(verdict(DELAY_AFTER + 2, None, 104), Verdict::Wait(4));
        assert_eq!(verdict(BLOCK_AT, Some(0), i64::MAX), Verdict::Blocked);
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A login attempt after waiting this many seconds, with the right password or not.
        Attempt { wait: u32, right: bool },
        /// The owner completes a password reset.
        Reset,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0u32..1000, prop::bool::weighted(0.03)).prop_map(|(wait, right)| Step::Attempt { wait, right }),
            1 => Just(Step::Reset),
        ]
    }

    /// The machine as `Accounts::login` drives it: check, then count or clear.
    #[derive(Default)]
    struct Model {
        failures: u32,
        last: Option<i64>,
        now: i64,
        /// Failures counted since the last success or reset (the reference).
        consecutive: u32,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Blocked iff 100 consecutive counted failures since the last success or reset; a
        /// reset always unblocks; a refused (early or blocked) attempt changes nothing.
        #[test]
        fn blocked_iff_block_at_consecutive_failures(steps in prop::collection::vec(step(), 0..400)) {
            let mut m = Model { now: 1_000_000, ..Model::default() };
            for s in steps {
                match s {
                    Step::Reset => {
                        m.failures = 0;
                        m.last = None;
                        m.consecutive = 0;
                        prop_assert_eq!(verdict(m.failures, m.last, m.now), Verdict::Allowed);
                    }
                    Step::Attempt { wait, right } => {
                        m.now += i64::from(wait);
                        let v = verdict(m.failures, m.last, m.now);
                        prop_assert_eq!(v == Verdict::Blocked, m.consecutive >= BLOCK_AT);
                        match v {
                            Verdict::Blocked => {}
                            Verdict::Wait(secs) => {
                                prop_assert!((1..=MAX_DELAY_SECS).contains(&secs));
                                // Waiting exactly that long is enough.
                                prop_assert_ne!(
                                    verdict(m.failures, m.last, m.now + i64::try_from(secs).unwrap()),
                                    Verdict::Wait(secs)
                                );
                            }
                            Verdict::Allowed if right => {
                                m.failures = 0;
                                m.last = None;
                                m.consecutive = 0;
                            }
                            Verdict::Allowed => {
                                m.failures += 1;
                                m.last = Some(m.now);
                                m.consecutive += 1;
                            }
                        }
                    }
                }
                prop_assert_eq!(m.failures, m.consecutive);
            }
        }

        /// The delay never shrinks as failures grow.
        #[test]
        fn delay_is_monotonic(a in 0u32..1000, b in 0u32..1000) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(delay_secs(lo) <= delay_secs(hi));
        }
    }
}
