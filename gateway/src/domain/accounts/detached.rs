//! The account routes anyone may call with any address (signup, verification resend, password
//! reset) answer before doing anything that depends on the address.
//!
//! Why: what they do differs between an address with an account and one without (a token
//! written, a mail sent, or nothing), and a client that can time the answer can tell the two
//! apart. Measured before this: known addresses answered `/auth/password-reset` ~1.75 ms slower
//! (25 of 25 pairs), and with a real SMTP relay the gap is the relay's latency. So the request
//! does only what is the same for every address (parse the email, check the password against
//! the policy, which never looks at accounts), takes a slot, and answers; the rest runs after,
//! in the request's audit context.
//!
//! The slots are bounded ([`SLOTS`]): when all are taken, the answer is 503 with `Retry-After`
//! for every address alike, never an unbounded queue. A job's failure is logged; the client was
//! already told only "if the address can be used, an email is on its way".

use std::future::Future;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{normalise_email, password, AccountError, Accounts};
use crate::domain::audit::RequestContext;

/// Jobs in flight at once. Answering is faster than the work, so a client sending as fast as
/// it can builds a backlog (the per-address limits on these routes keep real clients far
/// below it); a job holds an email and at most a password, so a full set is a few hundred KiB.
pub const SLOTS: usize = 1024;

impl Accounts {
    /// [`Accounts::signup`], answered before the account lookup, the hash and the mail. A
    /// malformed email or a password the policy refuses is still answered at once (4xx), since
    /// neither depends on the address being taken.
    pub fn signup_detached(
        self: &Arc<Self>,
        email: &str,
        password: &str,
    ) -> Result<(), AccountError> {
        let email = normalise_email(email)?;
        password::check(password, &email, self.cfg.min_password_chars)
            .map_err(AccountError::WeakPassword)?;
        let password = Zeroizing::new(password.to_owned());
        self.detach("signup", move |accounts| async move {
            accounts.signup(&email, &password).await
        })
    }

    /// [`Accounts::resend_verification`], answered before the lookup.
    /// A malformed address is refused at once: that is the same for every address.
    pub fn resend_verification_detached(self: &Arc<Self>, email: &str) -> Result<(), AccountError> {
        let email = normalise_email(email)?;
        self.detach("resend_verification", move |accounts| async move {
            accounts.resend_verification(&email).await
        })
    }

    /// [`Accounts::request_password_reset`], answered before the lookup; a malformed address
    /// is refused at once.
    pub fn request_password_reset_detached(
        self: &Arc<Self>,
        email: &str,
    ) -> Result<(), AccountError> {
        let email = normalise_email(email)?;
        self.detach("password_reset", move |accounts| async move {
            accounts.request_password_reset(&email).await
        })
    }

    /// Wait until every detached job has finished (tests, and shutdown).
    pub async fn settle(&self) {
        let all = u32::try_from(SLOTS).unwrap_or(u32::MAX);
        if let Ok(permits) = self.detached.acquire_many(all).await {
            drop(permits);
        }
    }

    fn detach<F>(
        self: &Arc<Self>,
        what: &'static str,
        job: impl FnOnce(Arc<Accounts>) -> F + Send + 'static,
    ) -> Result<(), AccountError>
    where
        F: Future<Output = Result<(), AccountError>> + Send + 'static,
    {
        let slot = Arc::clone(&self.detached)
            .try_acquire_owned()
            .map_err(|_| AccountError::Busy)?;
        let context = RequestContext::current().unwrap_or_default();
        let accounts = Arc::clone(self);
        tokio::spawn(context.scope(async move {
            if let Err(e) = job(accounts).await {
                tracing::error!(target: "zonegate::accounts", event = "detached_job_failed", job = what, error = %e);
            }
            drop(slot);
        }));
        Ok(())
    }
}
