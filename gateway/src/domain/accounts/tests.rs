//! Storage and state-machine tests of accounts, against SQLite always and PostgreSQL when
//! `ZONEGATE_TEST_POSTGRES_URL` is set (CI sets it). Time is a [`ManualClock`]: nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;
use crate::domain::audit::{AuditLog, AuditTrail};
use crate::domain::mail::Outbox;
use crate::domain::storage::testdb::{backends, database, Backend, PgDatabase};

const T0: u64 = 1_800_000_000;
const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    accounts: Arc<Accounts>,
    clock: Arc<ManualClock>,
    outbox: Outbox,
    audit: AuditLog,
    trail: AuditTrail,
    _tmp: tempfile::TempDir,
    _db: Option<PgDatabase>,
}

async fn fixture(backend: Backend) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    KeyRing::init(&keys).unwrap();
    let ring = KeyRing::load(&keys).unwrap();
    let (pool, db) = database(backend, tmp.path(), 4).await;
    let outbox = tmp.path().join("outbox");
    let mailer = Mailer::outbox("Delivery Zone <no-reply@localhost>", outbox.clone()).unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    // The real audit log and writer: tests read the stored events back.
    let (audit, _writer) = AuditLog::spawn(pool.clone(), clock.clone(), 1024);
    let accounts = Accounts::new(
        pool.clone(),
        &ring,
        4,
        Arc::new(mailer),
        clock.clone(),
        audit.clone(),
        AccountsConfig::default(),
    )
    .unwrap();
    Fixture {
        accounts: Arc::new(accounts),
        clock,
        outbox: Outbox::new(outbox),
        audit,
        trail: AuditTrail::new(pool),
        _tmp: tmp,
        _db: db,
    }
}

impl Fixture {
    /// Every mail body in the outbox, oldest first.
    fn mails(&self) -> Vec<String> {
        self.outbox.mails().into_iter().map(|m| m.body).collect()
    }

    fn last_token(&self) -> String {
        let mails = self.outbox.mails();
        let mail = mails
            .iter()
            .rev()
            .find(|m| m.link_token().is_some())
            .expect("a mail with a link");
        mail.link_token().unwrap_or_default().to_owned()
    }

    /// The names of the events stored so far for `user_id` (as principal), oldest first.
    async fn events_of(&self, user_id: &str) -> Vec<String> {
        self.audit.flush().await.unwrap();
        let mut out = Vec::new();
        self.trail
            .export(0, i64::MAX, None, Some(user_id), &mut out)
            .await
            .unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// A verified user, logged in: the principal its session authenticates as.
    async fn signed_in(&self, email: &str) -> Arc<UserPrincipal> {
        self.verified_user(email).await;
        let issued = self
            .accounts
            .login(email, PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        self.accounts
            .authenticate_session(issued.session.expose())
            .await
            .unwrap()
    }

    async fn verified_user(&self, email: &str) {
        self.accounts.signup(email, PASSWORD).await.unwrap();
        self.accounts
            .verify_email(&self.last_token())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn signup_verify_login_session_logout() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.accounts
            .signup("Ada@Example.com ", PASSWORD)
            .await
            .unwrap();
        assert!(matches!(
            f.accounts
                .login("ada@example.com", PASSWORD, None, None)
                .await,
            Err(AccountError::EmailNotVerified)
        ));
        let token = f.last_token();
        f.accounts.verify_email(&token).await.unwrap();
        assert!(
            matches!(
                f.accounts.verify_email(&token).await,
                Err(AccountError::InvalidToken)
            ),
            "single use"
        );

        let issued = f
            .accounts
            .login("ada@example.com", PASSWORD, None, Some("test"))
            .await
            .unwrap()
            .issued()
            .unwrap();
        let printed = format!("{issued:?}");
        for secret in [
            issued.session.expose(),
            issued.refresh.expose(),
            issued.csrf.as_str(),
        ] {
            assert!(!printed.contains(secret), "Debug never shows a credential");
        }
        let user = f
            .accounts
            .authenticate_session(issued.session.expose())
            .await
            .unwrap();
        assert_eq!(user.email, "ada@example.com");
        assert!(user.email_verified);
        assert_eq!(user.factors(), ["pwd"]);
        assert_eq!(f.accounts.list_sessions(&user).await.unwrap().len(), 1);
        assert!(f.accounts.csrf_matches(&user.family_id, &issued.csrf));
        assert!(!f.accounts.csrf_matches(&user.family_id, "forged"));

        f.accounts.logout(&user).await.unwrap();
        assert!(
            f.accounts
                .authenticate_session(issued.session.expose())
                .await
                .is_err(),
            "{backend:?}"
        );
        assert!(f
            .accounts
            .refresh(issued.refresh.expose(), &issued.csrf, None, None)
            .await
            .is_err());
    }
}

#[tokio::test]
async fn unknown_email_and_wrong_password_are_the_same_error() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let wrong = f
            .accounts
            .login("ada@example.com", "not the password", None, None)
            .await;
        let unknown = f
            .accounts
            .login("bob@example.com", PASSWORD, None, None)
            .await;
        let invalid = f.accounts.login("not an email", PASSWORD, None, None).await;
        for r in [wrong, unknown, invalid] {
            assert!(
                matches!(r, Err(AccountError::InvalidCredentials)),
                "{backend:?}"
            );
        }
    }
}

#[tokio::test]
async fn signing_up_twice_sends_a_notice_and_creates_nothing() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        f.accounts
            .signup("ada@example.com", "another fine passphrase")
            .await
            .unwrap();
        let mails = f.mails();
        assert!(
            mails.last().unwrap().contains("already has one"),
            "{backend:?}"
        );
        // Further attempts within the resend interval send nothing more; after it, one more.
        for _ in 0..3 {
            f.accounts
                .signup("ada@example.com", "another fine passphrase")
                .await
                .unwrap();
        }
        assert_eq!(f.mails().len(), mails.len(), "{backend:?}");
        f.clock.advance(60);
        f.accounts
            .signup("ada@example.com", "another fine passphrase")
            .await
            .unwrap();
        assert_eq!(f.mails().len(), mails.len() + 1, "{backend:?}");
        // The original password still works; the second one does not.
        assert!(f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .is_ok());
        assert!(f
            .accounts
            .login("ada@example.com", "another fine passphrase", None, None)
            .await
            .is_err());
    }
}

#[tokio::test]
async fn login_revokes_the_session_the_client_already_had() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let first = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        let second = f
            .accounts
            .login("ada@example.com", PASSWORD, Some(&first.session), None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        assert!(f
            .accounts
            .authenticate_session(first.session.expose())
            .await
            .is_err());
        assert!(f
            .accounts
            .authenticate_session(second.session.expose())
            .await
            .is_ok());
    }
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let a = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        f.clock.advance(60);
        let b = f
            .accounts
            .refresh(a.refresh.expose(), &a.csrf, None, None)
            .await
            .unwrap();
        assert_ne!(a.refresh, b.refresh);
        assert!(f
            .accounts
            .authenticate_session(b.session.expose())
            .await
            .is_ok());
        // Outside the grace window, presenting the rotated token again is reuse.
        f.clock.advance(60);
        assert!(f
            .accounts
            .refresh(a.refresh.expose(), &a.csrf, None, None)
            .await
            .is_err());
        assert!(
            f.accounts
                .authenticate_session(b.session.expose())
                .await
                .is_err(),
            "{backend:?}"
        );
        assert!(f
            .accounts
            .refresh(b.refresh.expose(), &b.csrf, None, None)
            .await
            .is_err());
    }
}

#[tokio::test]
async fn concurrent_refresh_gets_one_sibling_within_the_grace_window() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let a = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        let (x, y) = tokio::join!(
            f.accounts.refresh(a.refresh.expose(), &a.csrf, None, None),
            f.accounts.refresh(a.refresh.expose(), &a.csrf, None, None)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_ne!(x.refresh, y.refresh);
        // A third exchange of the same token is reuse, even inside the window.
        assert!(f
            .accounts
            .refresh(a.refresh.expose(), &a.csrf, None, None)
            .await
            .is_err());
        assert!(
            f.accounts
                .authenticate_session(x.session.expose())
                .await
                .is_err(),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn refresh_needs_the_csrf_token_of_its_login() {
    let f = fixture(Backend::Sqlite).await;
    f.verified_user("ada@example.com").await;
    let a = f
        .accounts
        .login("ada@example.com", PASSWORD, None, None)
        .await
        .unwrap()
        .issued()
        .unwrap();
    let other = f
        .accounts
        .login("ada@example.com", PASSWORD, None, None)
        .await
        .unwrap()
        .issued()
        .unwrap();
    assert!(matches!(
        f.accounts.refresh(a.refresh.expose(), "", None, None).await,
        Err(AccountError::Csrf)
    ));
    assert!(matches!(
        f.accounts
            .refresh(a.refresh.expose(), &other.csrf, None, None)
            .await,
        Err(AccountError::Csrf)
    ));
    // Nothing was rotated by the refused attempts.
    assert!(f
        .accounts
        .refresh(a.refresh.expose(), &a.csrf, None, None)
        .await
        .is_ok());
}

#[tokio::test]
async fn sessions_and_families_expire_by_the_clock() {
    for backend in backends() {
        let f = fixture(backend).await;
        let cfg = AccountsConfig::default();
        f.verified_user("ada@example.com").await;
        let a = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        f.clock.advance(u64::try_from(cfg.session_ttl).unwrap() - 1);
        assert!(f
            .accounts
            .authenticate_session(a.session.expose())
            .await
            .is_ok());
        f.clock.advance(1);
        assert!(
            f.accounts
                .authenticate_session(a.session.expose())
                .await
                .is_err(),
            "session ttl"
        );

        // Idle expiry: no refresh for longer than refresh_idle.
        let b = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        f.clock
            .advance(u64::try_from(cfg.refresh_idle).unwrap() + 1);
        assert!(
            f.accounts
                .refresh(b.refresh.expose(), &b.csrf, None, None)
                .await
                .is_err(),
            "idle"
        );

        // Absolute expiry holds even when refreshed often.
        let mut c = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        let steps = cfg.refresh_absolute / (cfg.refresh_idle / 2);
        for _ in 0..steps - 1 {
            f.clock
                .advance(u64::try_from(cfg.refresh_idle / 2).unwrap());
            c = f
                .accounts
                .refresh(c.refresh.expose(), &c.csrf, None, None)
                .await
                .unwrap();
        }
        f.clock
            .advance(u64::try_from(cfg.refresh_idle / 2).unwrap());
        assert!(
            f.accounts
                .refresh(c.refresh.expose(), &c.csrf, None, None)
                .await
                .is_err(),
            "absolute"
        );
    }
}

#[tokio::test]
async fn email_links_expire() {
    let f = fixture(Backend::Sqlite).await;
    let cfg = AccountsConfig::default();
    f.accounts
        .signup("ada@example.com", PASSWORD)
        .await
        .unwrap();
    let token = f.last_token();
    f.clock.advance(u64::try_from(cfg.verify_ttl).unwrap());
    assert!(matches!(
        f.accounts.verify_email(&token).await,
        Err(AccountError::InvalidToken)
    ));
    f.accounts
        .resend_verification("ada@example.com")
        .await
        .unwrap();
    f.accounts.verify_email(&f.last_token()).await.unwrap();

    f.accounts
        .request_password_reset("ada@example.com")
        .await
        .unwrap();
    let reset = f.last_token();
    f.clock.advance(u64::try_from(cfg.reset_ttl).unwrap());
    assert!(matches!(
        f.accounts
            .confirm_password_reset(&reset, "a brand new passphrase")
            .await,
        Err(AccountError::InvalidToken)
    ));
}

/// One mailed link opened at once from ten places (instances behind a balancer, tabs): it
/// works once. The email verification link and the password reset link alike, on SQLite and
/// PostgreSQL; the losers get the same answer as a spent or unknown link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_link_spent_in_parallel_works_once() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.accounts
            .signup("par@example.com", PASSWORD)
            .await
            .unwrap();
        let verify = f.last_token();
        let tries: Vec<_> = (0..10)
            .map(|_| {
                let (accounts, token) = (f.accounts.clone(), verify.clone());
                tokio::spawn(async move { accounts.verify_email(&token).await })
            })
            .collect();
        let mut verified = 0;
        for t in tries {
            match t.await.unwrap() {
                Ok(()) => verified += 1,
                Err(AccountError::InvalidToken) => {}
                Err(e) => panic!("{backend:?}: {e:?}"),
            }
        }
        assert_eq!(verified, 1, "{backend:?}");

        f.accounts
            .request_password_reset("par@example.com")
            .await
            .unwrap();
        let reset = f.last_token();
        let tries: Vec<_> = (0..10)
            .map(|i| {
                let (accounts, token) = (f.accounts.clone(), reset.clone());
                tokio::spawn(async move {
                    accounts
                        .confirm_password_reset(&token, &format!("a brand new passphrase {i}"))
                        .await
                })
            })
            .collect();
        let mut reset_done = 0;
        for t in tries {
            match t.await.unwrap() {
                Ok(_) => reset_done += 1,
                // Spent by another, or turned away by the full bcrypt queue before touching the
                // link (a 503 with Retry-After): both leave the link to the one that won.
                Err(AccountError::InvalidToken | AccountError::Busy) => {}
                Err(e) => panic!("{backend:?}: {e:?}"),
            }
        }
        assert_eq!(reset_done, 1, "{backend:?}");
    }
}

#[tokio::test]
async fn password_reset_is_single_use_and_ends_every_session() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let a = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        f.accounts
            .request_password_reset("ada@example.com")
            .await
            .unwrap();
        f.accounts
            .request_password_reset("nobody@example.com")
            .await
            .unwrap();
        let token = f.last_token();
        assert!(matches!(
            f.accounts
                .confirm_password_reset(&token, "password123")
                .await,
            Err(AccountError::WeakPassword(_))
        ));
        f.accounts
            .confirm_password_reset(&token, "a brand new passphrase")
            .await
            .unwrap();
        assert!(f
            .accounts
            .confirm_password_reset(&token, "yet another passphrase")
            .await
            .is_err());
        assert!(
            f.accounts
                .authenticate_session(a.session.expose())
                .await
                .is_err(),
            "{backend:?}"
        );
        assert!(f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .is_err());
        assert!(f
            .accounts
            .login("ada@example.com", "a brand new passphrase", None, None)
            .await
            .is_ok());
        assert!(f.mails().last().unwrap().contains("was reset"));
    }
}

/// Lockout against real storage and the injected clock: failures space attempts out, a
/// success clears them, 100 consecutive failures block even the right password, and the
/// owner's emailed reset lifts the block. Nothing sleeps: the clock is advanced.
#[tokio::test]
async fn consecutive_failures_delay_then_block_until_a_reset() {
    use lockout::{delay_secs, BLOCK_AT, DELAY_AFTER};
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let login = |pw: &'static str| f.accounts.login("ada@example.com", pw, None, None);
        let wrong = "not the password at all";
        for _ in 0..DELAY_AFTER {
            assert!(matches!(
                login(wrong).await,
                Err(AccountError::InvalidCredentials)
            ));
        }
        // Delayed now: even the right password is refused early, with the wait, uncounted.
        match login(PASSWORD).await {
            Err(AccountError::LoginDelayed(secs)) => assert_eq!(secs, delay_secs(DELAY_AFTER)),
            other => panic!("expected a delay, got {:?}", other.map(|_| ())),
        }
        f.clock.advance(delay_secs(DELAY_AFTER));
        // A success clears the counter: the next failures start from zero again.
        login(PASSWORD).await.unwrap();
        assert!(matches!(
            login(wrong).await,
            Err(AccountError::InvalidCredentials)
        ));
        assert!(matches!(
            login(wrong).await,
            Err(AccountError::InvalidCredentials)
        ));

        // Unknown emails are never delayed or blocked (and answer exactly like a wrong
        // password).
        for _ in 0..(DELAY_AFTER + 2) {
            assert!(matches!(
                f.accounts
                    .login("nobody@example.com", wrong, None, None)
                    .await,
                Err(AccountError::InvalidCredentials)
            ));
        }

        // Drive to the block, waiting out each delay as a patient attacker would.
        let mut failures = 2;
        while failures < BLOCK_AT {
            f.clock.advance(delay_secs(failures));
            assert!(matches!(
                login(wrong).await,
                Err(AccountError::InvalidCredentials)
            ));
            failures += 1;
        }
        f.clock.advance(86_400);
        assert!(matches!(
            login(PASSWORD).await,
            Err(AccountError::LoginBlocked)
        ));
        assert!(matches!(
            login(wrong).await,
            Err(AccountError::LoginBlocked)
        ));

        // The owner recovers through the emailed link; the block is gone.
        f.accounts
            .request_password_reset("ada@example.com")
            .await
            .unwrap();
        f.accounts
            .confirm_password_reset(&f.last_token(), "a brand new passphrase")
            .await
            .unwrap();
        f.accounts
            .login("ada@example.com", "a brand new passphrase", None, None)
            .await
            .unwrap();
    }
}

/// The routes anyone may call with any address answer before the per-account work, in
/// bounded slots; the work still happens, once per resend interval, after the answer.
#[tokio::test]
async fn detached_account_requests_answer_first_and_do_the_work_after() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let before = f.mails().len();
        for _ in 0..64 {
            f.accounts
                .request_password_reset_detached("ada@example.com")
                .unwrap();
            f.accounts
                .request_password_reset_detached("nobody@example.com")
                .unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), f.accounts.settle())
                .await
                .unwrap();
        }
        assert_eq!(f.mails().len(), before + 1, "one reset mail per interval");
        // What does not depend on the address is still answered at once.
        assert!(matches!(
            f.accounts.signup_detached("new@example.com", "short"),
            Err(AccountError::WeakPassword(_))
        ));
        assert!(matches!(
            f.accounts.signup_detached("not an email", PASSWORD),
            Err(AccountError::InvalidEmail)
        ));
        // The slots are bounded: with all of them taken (nothing has run yet on this
        // single-threaded runtime), the next request is refused for any address alike.
        for _ in 0..detached::SLOTS {
            f.accounts
                .resend_verification_detached("nobody@example.com")
                .unwrap();
        }
        assert!(matches!(
            f.accounts.resend_verification_detached("ada@example.com"),
            Err(AccountError::Busy)
        ));
        f.accounts.settle().await;
        f.accounts
            .signup_detached("new@example.com", PASSWORD)
            .unwrap();
        f.accounts.settle().await;
        assert!(f.mails().last().unwrap().contains("verify-email#token="));
    }
}

/// Device cookies: a stranger's failures, however patient, never delay or block a browser
/// that logged in to the account before; untrusted clients still share the account's delay; a
/// device's own failures delay only that device, then it is untrusted like anyone else.
#[tokio::test]
async fn a_trusted_device_is_not_held_back_by_failures_from_elsewhere() {
    use lockout::{delay_secs, BLOCK_AT, DELAY_AFTER};
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let from = |pw: &'static str, device: Option<Token>| {
            let accounts = &f.accounts;
            async move {
                accounts
                    .login_from_device("ada@example.com", pw, None, None, device.as_ref())
                    .await
            }
        };
        let wrong = "not the password at all";
        // The owner's browser logs in once and keeps its device token.
        let owner = from(PASSWORD, None).await.unwrap().device;
        assert_eq!(
            from(PASSWORD, Some(owner.clone())).await.unwrap().device,
            owner,
            "a trusted device keeps its token"
        );

        // A stranger drives the account to the block, waiting out every delay.
        for failures in 0..BLOCK_AT {
            f.clock.advance(delay_secs(failures));
            assert!(matches!(
                from(wrong, None).await,
                Err(AccountError::InvalidCredentials)
            ));
        }
        assert!(matches!(
            from(PASSWORD, None).await,
            Err(AccountError::LoginBlocked)
        ));
        // ... and the owner's browser walks in, every time, however the stranger continues.
        for _ in 0..3 {
            assert!(from(PASSWORD, Some(owner.clone())).await.is_ok());
            assert!(matches!(
                from(wrong, None).await,
                Err(AccountError::LoginBlocked)
            ));
        }
        // Its success did not reset the stranger's block, and another browser, or a device
        // token of another account, or a made-up one, is just another untrusted client.
        assert!(matches!(
            from(PASSWORD, Some(Token::generate())).await,
            Err(AccountError::LoginBlocked)
        ));
        f.verified_user("bob@example.com").await;
        let bobs = f
            .accounts
            .login_from_device("bob@example.com", PASSWORD, None, None, None)
            .await
            .unwrap()
            .device;
        assert!(matches!(
            from(PASSWORD, Some(bobs)).await,
            Err(AccountError::LoginBlocked)
        ));

        // The device's own wrong guesses delay the device (and do not feed the account)...
        for _ in 0..DELAY_AFTER {
            assert!(matches!(
                from(wrong, Some(owner.clone())).await,
                Err(AccountError::InvalidCredentials)
            ));
        }
        // ... after which it is an untrusted client, facing the account's block.
        assert!(matches!(
            from(PASSWORD, Some(owner.clone())).await,
            Err(AccountError::LoginBlocked)
        ));
        f.clock.advance(delay_secs(DELAY_AFTER));
        assert!(from(PASSWORD, Some(owner.clone())).await.is_ok());
    }
}

#[tokio::test]
async fn re_authentication_is_a_counted_password_guess() {
    use lockout::{delay_secs, DELAY_AFTER};
    for backend in backends() {
        let f = fixture(backend).await;
        let me = f.signed_in("ada@example.com").await;
        // Guesses through the three re-authenticating flows count like failed logins...
        for i in 0..DELAY_AFTER {
            let refused = match i % 3 {
                0 => {
                    f.accounts
                        .change_password(&me, "guess", "a brand new passphrase")
                        .await
                }
                1 => f.accounts.mfa_enrol(&me, "guess", None).await.map(|_| ()),
                _ => f.accounts.mfa_disable(&me, "guess", "000000").await,
            };
            assert!(matches!(refused, Err(AccountError::WrongPassword)), "{i}");
        }
        // ...so the account's delay now holds them, even with the right password, and login.
        assert!(matches!(
            f.accounts
                .change_password(&me, PASSWORD, "a brand new passphrase")
                .await,
            Err(AccountError::LoginDelayed(_))
        ));
        assert!(matches!(
            f.accounts
                .login("ada@example.com", PASSWORD, None, None)
                .await,
            Err(AccountError::LoginDelayed(_))
        ));
        f.clock.advance(delay_secs(DELAY_AFTER));
        f.accounts
            .change_password(&me, PASSWORD, "a brand new passphrase")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_other_logins() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let here = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        let elsewhere = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        let me = f
            .accounts
            .authenticate_session(here.session.expose())
            .await
            .unwrap();
        assert!(matches!(
            f.accounts
                .change_password(&me, "wrong", "a brand new passphrase")
                .await,
            Err(AccountError::WrongPassword)
        ));
        f.accounts
            .change_password(&me, PASSWORD, "a brand new passphrase")
            .await
            .unwrap();
        assert!(f
            .accounts
            .authenticate_session(here.session.expose())
            .await
            .is_ok());
        assert!(
            f.accounts
                .authenticate_session(elsewhere.session.expose())
                .await
                .is_err(),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn the_account_lifecycle_is_recorded_in_the_audit_trail() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let issued = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        let me = f
            .accounts
            .authenticate_session(issued.session.expose())
            .await
            .unwrap();
        let _ = f
            .accounts
            .change_password(&me, "wrong", "a brand new passphrase")
            .await;
        f.accounts
            .change_password(&me, PASSWORD, "a brand new passphrase")
            .await
            .unwrap();
        f.accounts
            .request_password_reset("ada@example.com")
            .await
            .unwrap();
        f.accounts
            .confirm_password_reset(&f.last_token(), "yet another passphrase")
            .await
            .unwrap();
        let events = f.events_of(&me.user_id).await;
        let expected = [
            "user_created",
            "user_email_verified",
            // The login's refresh family and session are made before it is reported done.
            "authn_token_created",
            "session_created",
            "authn_login_success",
            "authn_password_change_fail",
            "authn_password_change",
            "authn_password_reset_requested",
            "authn_password_reset",
        ];
        assert_eq!(events, expected, "{backend:?}");
    }
}

// ---- The refresh family against a reference model ----------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Present the refresh token issued at this index (modulo the number issued).
    Refresh(usize),
    /// Two refreshes of the same token at once.
    Concurrent(usize),
    Advance(u64),
    Logout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..8).prop_map(Op::Refresh),
        1 => (0usize..8).prop_map(Op::Concurrent),
        2 => prop_oneof![Just(1u64), Just(5), Just(11), Just(600), Just(3601)].prop_map(Op::Advance),
        1 => Just(Op::Logout),
    ]
}

/// What the model says about one token.
#[derive(Debug, Clone)]
struct ModelToken {
    rotated_at: Option<i64>,
    grace_used: bool,
}

#[derive(Debug)]
struct Model {
    tokens: Vec<ModelToken>,
    revoked: bool,
    last_used: i64,
    absolute: i64,
}

impl Model {
    /// Apply one refresh of token `i` at `now`; true if it should succeed.
    fn refresh(&mut self, i: usize, now: i64, cfg: &AccountsConfig) -> bool {
        if self.revoked {
            return false;
        }
        if now >= self.absolute || now - self.last_used > cfg.refresh_idle {
            self.revoked = true;
            return false;
        }
        let t = &mut self.tokens[i];
        let ok = match t.rotated_at {
            None => {
                t.rotated_at = Some(now);
                true
            }
            Some(at) if now - at <= cfg.refresh_grace && !t.grace_used => {
                t.grace_used = true;
                true
            }
            Some(_) => {
                self.revoked = true;
                false
            }
        };
        if ok {
            self.last_used = now;
            self.tokens.push(ModelToken {
                rotated_at: None,
                grace_used: false,
            });
        }
        ok
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn refresh_family_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = fixture(Backend::Sqlite).await;
            let cfg = AccountsConfig::default();
            f.verified_user("ada@example.com").await;
            let first = f.accounts.login("ada@example.com", PASSWORD, None, None).await.unwrap().issued().unwrap();
            let csrf = first.csrf.clone();
            let user = f.accounts.authenticate_session(first.session.expose()).await.unwrap();
            let now = || i64::try_from(f.clock.unix_seconds()).unwrap();
            let mut issued = vec![first.refresh];
            let mut model = Model {
                tokens: vec![ModelToken { rotated_at: None, grace_used: false }],
                revoked: false,
                last_used: now(),
                absolute: now() + cfg.refresh_absolute,
            };
            for op in ops {
                match op {
                    Op::Refresh(i) | Op::Concurrent(i) => {
                        let i = i % issued.len();
                        let times = if matches!(op, Op::Concurrent(_)) { 2 } else { 1 };
                        for _ in 0..times {
                            let expected = model.refresh(i, now(), &cfg);
                            let got = f.accounts.refresh(issued[i].expose(), &csrf, None, None).await;
                            prop_assert_eq!(got.is_ok(), expected, "refresh of token {} in {:?}", i, model);
                            if let Ok(next) = got {
                                issued.push(next.refresh);
                            }
                        }
                    }
                    Op::Advance(s) => f.clock.advance(s),
                    Op::Logout => {
                        f.accounts.logout(&user).await.unwrap();
                        model.revoked = true;
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// A password login that must stop at the second factor: its pending token.
async fn pending(accounts: &Accounts) -> Token {
    match accounts
        .login("ada@example.com", PASSWORD, None, None)
        .await
        .unwrap()
    {
        second_factor::LoginOutcome::SecondFactor { token, .. } => token,
        second_factor::LoginOutcome::Complete(_) => panic!("a session without TOTP"),
    }
}

/// The code an authenticator app shows for `manual_key` at `t`.
fn code_at(manual_key: &str, t: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(manual_key.replace(' ', ""))
        .to_bytes()
        .unwrap();
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        None,
        String::new(),
    )
    .generate(t)
}

#[tokio::test]
async fn pending_logins_limit_attempts_expire_and_never_act_as_sessions() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let issued = f
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        let me = f
            .accounts
            .authenticate_session(issued.session.expose())
            .await
            .unwrap();
        let enrolment = f.accounts.mfa_enrol(&me, PASSWORD, None).await.unwrap();
        let key = enrolment.manual_key();
        f.accounts
            .mfa_confirm(&me, &code_at(&key, T0))
            .await
            .unwrap();

        // The pending token is not a session.
        let p = pending(&f.accounts).await;
        assert!(f.accounts.authenticate_session(p.expose()).await.is_err());

        // Five wrong codes spend the pending login: the right code no longer helps.
        f.clock.advance(30);
        for _ in 0..second_factor::PENDING_ATTEMPTS {
            let got = f
                .accounts
                .login_second_factor(p.expose(), "000000", None, None)
                .await;
            assert!(matches!(got, Err(AccountError::InvalidCode)), "{got:?}");
        }
        let right = code_at(&key, T0 + 30);
        assert!(f
            .accounts
            .login_second_factor(p.expose(), &right, None, None)
            .await
            .is_err());

        // A fresh pending login expires by the clock.
        let p = pending(&f.accounts).await;
        f.clock.advance(second_factor::PENDING_TTL as u64 + 1);
        let right = code_at(&key, T0 + 30 + second_factor::PENDING_TTL as u64 + 1);
        assert!(f
            .accounts
            .login_second_factor(p.expose(), &right, None, None)
            .await
            .is_err());

        // Within its lifetime the right code completes it, once, with both factors.
        let p = pending(&f.accounts).await;
        let done = f
            .accounts
            .login_second_factor(p.expose(), &right, None, None)
            .await
            .unwrap();
        let user = f
            .accounts
            .authenticate_session(done.session.expose())
            .await
            .unwrap();
        assert_eq!(user.factors(), ["pwd", "otp"]);
        assert!(f
            .accounts
            .login_second_factor(p.expose(), &right, None, None)
            .await
            .is_err());

        // Across pending logins the account allows ACCOUNT_ATTEMPTS wrong codes per window.
        let mut wrong = 0;
        while wrong < second_factor::ACCOUNT_ATTEMPTS + 5 {
            let p = pending(&f.accounts).await;
            for _ in 0..second_factor::PENDING_ATTEMPTS {
                let _ = f
                    .accounts
                    .login_second_factor(p.expose(), "000000", None, None)
                    .await;
                wrong += 1;
            }
        }
        f.clock.advance(30);
        let p = pending(&f.accounts).await;
        let right = code_at(&key, f.clock.unix_seconds());
        assert!(
            matches!(
                f.accounts
                    .login_second_factor(p.expose(), &right, None, None)
                    .await,
                Err(AccountError::InvalidCode)
            ),
            "over the account's limit even the right code is refused"
        );
        f.clock.advance(second_factor::ACCOUNT_WINDOW as u64 + 1);
        let p = pending(&f.accounts).await;
        let right = code_at(&key, f.clock.unix_seconds());
        assert!(f
            .accounts
            .login_second_factor(p.expose(), &right, None, None)
            .await
            .is_ok());

        // A password change ends the pending logins started before it.
        let p = pending(&f.accounts).await;
        f.accounts
            .change_password(&me, PASSWORD, "a completely new passphrase")
            .await
            .unwrap();
        f.clock.advance(30);
        let right = code_at(&key, f.clock.unix_seconds());
        assert!(
            f.accounts
                .login_second_factor(p.expose(), &right, None, None)
                .await
                .is_err(),
            "a password step from before the change must not complete"
        );
    }
}

/// The wall clock can jump (an NTP step, an operator's `date`): going back must not revive a
/// spent refresh token, a revoked session or an accepted TOTP step, and going forward ends
/// what expired on the way; no jump is an error.
#[tokio::test]
async fn clock_jumps_never_revive_what_was_spent_or_revoked() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.verified_user("ada@example.com").await;
        let login = || f.accounts.login("ada@example.com", PASSWORD, None, None);
        let a = login().await.unwrap().issued().unwrap();
        f.clock.advance(60);
        let b = f
            .accounts
            .refresh(a.refresh.expose(), &a.csrf, None, None)
            .await
            .unwrap();
        let other = login().await.unwrap().issued().unwrap();
        let user = f
            .accounts
            .authenticate_session(other.session.expose())
            .await
            .unwrap();
        f.accounts.logout(&user).await.unwrap();

        // An hour back: the rotated token is still spent. Its grace window (for a concurrent
        // refresh) is not reopened: presenting it is reuse, which ends its family.
        f.clock.rewind(3600);
        assert!(matches!(
            f.accounts
                .refresh(a.refresh.expose(), &a.csrf, None, None)
                .await,
            Err(AccountError::InvalidCredentials)
        ));
        assert!(
            f.accounts
                .authenticate_session(b.session.expose())
                .await
                .is_err(),
            "reuse ended the family"
        );
        // The logged-out session stays out.
        assert!(f
            .accounts
            .authenticate_session(other.session.expose())
            .await
            .is_err());
        // A login made before the jump and refreshed "in the past" is not reuse by itself.
        let c = login().await.unwrap().issued().unwrap();
        f.clock.advance(3600 + 120);
        assert!(
            f.accounts
                .authenticate_session(c.session.expose())
                .await
                .is_err(),
            "past its 15 minutes"
        );

        // A year forward: every login has ended.
        f.clock.advance(365 * 24 * 3600);
        assert!(f
            .accounts
            .refresh(c.refresh.expose(), &c.csrf, None, None)
            .await
            .is_err());
        login().await.unwrap();
    }
}
