//! Storage and service tests of MFA, against SQLite always and PostgreSQL when
//! `ZONEGATE_TEST_POSTGRES_URL` is set (each run in a throwaway database of its own). Time is a
//! [`ManualClock`]; concurrency tests run real parallel tasks on a multi-threaded runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use totp_rs::{Algorithm, TOTP};

use super::*;
use crate::clock::ManualClock;
use crate::domain::storage::testdb::{backends, database, Backend, PgDatabase};

/// A step boundary (a multiple of 30), so `advance(30)` always lands in the next step.
const T0: u64 = 1_800_000_000;

struct Fixture {
    mfa: Arc<Mfa>,
    pool: crate::domain::storage::Db,
    keys: Arc<KeyRing>,
    clock: Arc<ManualClock>,
    _tmp: tempfile::TempDir,
    _db: Option<PgDatabase>,
}

async fn fixture(backend: Backend) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    KeyRing::init(&dir).unwrap();
    let keys = Arc::new(KeyRing::load(&dir).unwrap());
    let (pool, db) = database(backend, tmp.path(), 8).await;
    let clock = Arc::new(ManualClock::at(T0));
    let mfa = Arc::new(Mfa::new(
        pool.clone(),
        keys.clone(),
        clock.clone(),
        "Delivery Zone",
    ));
    let mut c = pool.acquire().await.unwrap();
    for (id, email) in [("u1", "ada@example.com"), ("u2", "bob@example.com")] {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, password_changed_at)
             VALUES ($1, $2, 'x', 0, 0)",
        )
        .bind(id)
        .bind(email)
        .execute(&mut *c)
        .await
        .unwrap();
    }
    drop(c);
    Fixture {
        mfa,
        pool,
        keys,
        clock,
        _tmp: tmp,
        _db: db,
    }
}

/// The code an authenticator app shows for `secret` at `time`, computed independently of the
/// code under test.
pub(crate) fn app_code(secret: &Secret, time: u64) -> String {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        6,
        1,
        30,
        secret.expose().to_vec(),
        None,
        String::new(),
    )
    .generate(time)
}

impl Fixture {
    fn now(&self) -> u64 {
        self.clock.unix_seconds()
    }

    fn code(&self, secret: &Secret) -> String {
        app_code(secret, self.now())
    }

    /// Enrol and confirm `user`, leaving the clock one step later so a fresh code is usable.
    async fn enrolled(&self, user: &str, email: &str) -> (Enrolment, RecoveryCodes) {
        let e = self.mfa.enrol(user, email).await.unwrap();
        let codes = self
            .mfa
            .confirm(user, &self.code(e.secret()))
            .await
            .unwrap();
        self.clock.advance(30);
        (e, codes)
    }
}

#[tokio::test]
async fn enrol_confirm_verify_and_no_replay() {
    for backend in backends() {
        let f = fixture(backend).await;
        let e = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        assert!(
            !f.mfa.enabled("u1").await.unwrap(),
            "pending is not enabled"
        );
        assert!(matches!(
            f.mfa.verify("u1", &f.code(e.secret())).await,
            Err(MfaError::NotEnrolled)
        ));
        // A wrong or malformed code does not confirm.
        let right = f.code(e.secret());
        let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
        for bad in [wrong.as_str(), "abc", &format!(" {right}")] {
            assert!(matches!(
                f.mfa.confirm("u1", bad).await,
                Err(MfaError::InvalidCode)
            ));
        }
        let codes = f.mfa.confirm("u1", &right).await.unwrap();
        assert_eq!(codes.codes().len(), 10);
        assert!(f.mfa.enabled("u1").await.unwrap());
        assert!(!f.mfa.enabled("u2").await.unwrap());
        assert_eq!(f.mfa.recovery_codes_left("u1").await.unwrap(), 10);

        // The confirming code cannot be replayed for a login.
        assert!(matches!(
            f.mfa.verify("u1", &right).await,
            Err(MfaError::InvalidCode)
        ));
        // The next step's code works once.
        f.clock.advance(30);
        let next = f.code(e.secret());
        assert_eq!(f.mfa.verify("u1", &next).await.unwrap(), Factor::Totp);
        assert!(matches!(
            f.mfa.verify("u1", &next).await,
            Err(MfaError::InvalidCode)
        ));
        // A code of an earlier step still inside the ±1 window is refused: it is older than
        // the last accepted one.
        f.clock.advance(30);
        let earlier = app_code(e.secret(), f.now() - 30);
        assert_ne!(earlier, f.code(e.secret()));
        assert!(matches!(
            f.mfa.verify("u1", &earlier).await,
            Err(MfaError::InvalidCode)
        ));
        // A code one step ahead (a fast phone clock) is accepted, and then the current step's
        // code is refused because it is older.
        let ahead = app_code(e.secret(), f.now() + 30);
        let current = f.code(e.secret());
        assert_eq!(f.mfa.verify("u1", &ahead).await.unwrap(), Factor::Totp);
        assert!(matches!(
            f.mfa.verify("u1", &current).await,
            Err(MfaError::InvalidCode)
        ));
        // Two steps away is outside the window.
        f.clock.advance(60);
        let far = app_code(e.secret(), f.now() + 60);
        assert!(matches!(
            f.mfa.verify("u1", &far).await,
            Err(MfaError::InvalidCode)
        ));
        // Another user's correct code is not this user's.
        assert!(matches!(
            f.mfa.verify("u2", &f.code(e.secret())).await,
            Err(MfaError::NotEnrolled)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_parallel_submissions_of_one_code_yield_one_success() {
    for backend in backends() {
        let f = fixture(backend).await;
        let (e, _) = f.enrolled("u1", "ada@example.com").await;
        let code = f.code(e.secret());
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (mfa, code) = (f.mfa.clone(), code.clone());
                tokio::spawn(async move { mfa.verify("u1", &code).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Factor::Totp) => ok += 1,
                Err(MfaError::InvalidCode) => {}
                other => panic!("{backend:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(ok, 1, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_accepts_a_step_once_under_ten_concurrent_connections() {
    for backend in backends() {
        let f = fixture(backend).await;
        let secret = Secret::generate();
        let sealed = seal::seal(&f.keys, "u1", &secret).unwrap();
        let mut c = f.pool.acquire().await.unwrap();
        store::begin_enrolment(&mut c, "u1", &sealed, 0)
            .await
            .unwrap();
        assert!(store::confirm(&mut c, "u1", &sealed, 100, &[], 0)
            .await
            .unwrap());
        drop(c);
        for step in [101_i64, 105] {
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let (pool, sealed) = (f.pool.clone(), sealed.clone());
                    tokio::spawn(async move {
                        let mut c = pool.acquire().await.unwrap();
                        store::accept_step(&mut c, "u1", &sealed, step)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut ok = 0;
            for t in tasks {
                ok += usize::from(t.await.unwrap());
            }
            assert_eq!(ok, 1, "{backend:?} step {step}");
        }
        let mut c = f.pool.acquire().await.unwrap();
        assert_eq!(
            store::active(&mut c, "u1")
                .await
                .unwrap()
                .unwrap()
                .last_step,
            Some(105)
        );
        for stale in [100, 104, 105] {
            assert!(!store::accept_step(&mut c, "u1", &sealed, stale)
                .await
                .unwrap());
        }
        // The step counter is per account.
        assert!(!store::accept_step(&mut c, "u2", &sealed, 106)
            .await
            .unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_codes_are_single_use_even_in_parallel() {
    for backend in backends() {
        let f = fixture(backend).await;
        let (_e, codes) = f.enrolled("u1", "ada@example.com").await;
        let first = codes.codes()[0].clone();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (mfa, code) = (f.mfa.clone(), first.clone());
                tokio::spawn(async move { mfa.verify("u1", &code).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Factor::RecoveryCode) => ok += 1,
                Err(MfaError::InvalidCode) => {}
                other => panic!("{backend:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(ok, 1, "{backend:?}");
        assert_eq!(f.mfa.recovery_codes_left("u1").await.unwrap(), 9);
        // Typed by hand: lower case, no dashes.
        let second = codes.codes()[1].replace('-', "").to_lowercase();
        assert_eq!(
            f.mfa.verify("u1", &second).await.unwrap(),
            Factor::RecoveryCode
        );
        assert!(matches!(
            f.mfa.verify("u1", &codes.codes()[1]).await,
            Err(MfaError::InvalidCode)
        ));
        // One user's code is not another's.
        let (_e2, _codes2) = f.enrolled("u2", "bob@example.com").await;
        assert!(matches!(
            f.mfa.verify("u2", &codes.codes()[2]).await,
            Err(MfaError::InvalidCode)
        ));
        assert_eq!(
            f.mfa.verify("u1", &codes.codes()[2]).await.unwrap(),
            Factor::RecoveryCode
        );
    }
}

#[tokio::test]
async fn re_enrolling_keeps_the_old_seed_until_the_new_one_is_confirmed() {
    for backend in backends() {
        let f = fixture(backend).await;
        let (old, old_codes) = f.enrolled("u1", "ada@example.com").await;
        let new = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        assert!(f.mfa.enabled("u1").await.unwrap());
        // The old seed and codes still work; the unconfirmed new seed does not log in.
        assert!(matches!(
            f.mfa.verify("u1", &f.code(new.secret())).await,
            Err(MfaError::InvalidCode)
        ));
        assert_eq!(
            f.mfa.verify("u1", &f.code(old.secret())).await.unwrap(),
            Factor::Totp
        );
        assert_eq!(
            f.mfa.verify("u1", &old_codes.codes()[0]).await.unwrap(),
            Factor::RecoveryCode
        );
        f.clock.advance(30);
        let new_codes = f.mfa.confirm("u1", &f.code(new.secret())).await.unwrap();
        assert!(matches!(
            f.mfa.confirm("u1", &f.code(new.secret())).await,
            Err(MfaError::NoPendingEnrolment)
        ));
        // From now on only the new seed and the new codes work.
        f.clock.advance(30);
        assert!(matches!(
            f.mfa.verify("u1", &f.code(old.secret())).await,
            Err(MfaError::InvalidCode)
        ));
        assert!(matches!(
            f.mfa.verify("u1", &old_codes.codes()[1]).await,
            Err(MfaError::InvalidCode)
        ));
        assert_eq!(
            f.mfa.verify("u1", &f.code(new.secret())).await.unwrap(),
            Factor::Totp
        );
        assert_eq!(f.mfa.recovery_codes_left("u1").await.unwrap(), 10);
        assert_eq!(
            f.mfa.verify("u1", &new_codes.codes()[0]).await.unwrap(),
            Factor::RecoveryCode
        );
    }
}

#[tokio::test]
async fn a_second_enrolment_replaces_an_unconfirmed_first() {
    for backend in backends() {
        let f = fixture(backend).await;
        let first = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        let second = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        assert!(matches!(
            f.mfa.confirm("u1", &f.code(first.secret())).await,
            Err(MfaError::InvalidCode)
        ));
        f.mfa.confirm("u1", &f.code(second.secret())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_confirmations_yield_one_set_of_recovery_codes() {
    for backend in backends() {
        let f = fixture(backend).await;
        let e = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        let code = f.code(e.secret());
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (mfa, code) = (f.mfa.clone(), code.clone());
                tokio::spawn(async move { mfa.confirm("u1", &code).await })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(codes) => winners.push(codes),
                Err(MfaError::InvalidCode | MfaError::NoPendingEnrolment) => {}
                other => panic!("{backend:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{backend:?}");
        assert_eq!(f.mfa.recovery_codes_left("u1").await.unwrap(), 10);
        assert_eq!(
            f.mfa.verify("u1", &winners[0].codes()[0]).await.unwrap(),
            Factor::RecoveryCode
        );
    }
}

#[tokio::test]
async fn disabling_stops_the_seed_and_the_codes_at_once() {
    for backend in backends() {
        let f = fixture(backend).await;
        let (e, codes) = f.enrolled("u1", "ada@example.com").await;
        let pending = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        assert!(f.mfa.disable("u1").await.unwrap());
        assert!(!f.mfa.enabled("u1").await.unwrap());
        for input in [f.code(e.secret()), codes.codes()[0].clone()] {
            assert!(matches!(
                f.mfa.verify("u1", &input).await,
                Err(MfaError::NotEnrolled)
            ));
        }
        // The pending enrolment went too.
        assert!(matches!(
            f.mfa.confirm("u1", &f.code(pending.secret())).await,
            Err(MfaError::NoPendingEnrolment)
        ));
        assert_eq!(f.mfa.recovery_codes_left("u1").await.unwrap(), 0);
        assert!(
            !f.mfa.disable("u1").await.unwrap(),
            "nothing left to disable"
        );
    }
}

#[tokio::test]
async fn a_sealed_seed_moved_to_another_user_does_not_work() {
    for backend in backends() {
        let f = fixture(backend).await;
        let e = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        let mut c = f.pool.acquire().await.unwrap();
        let (sealed, _) = store::pending(&mut c, "u1").await.unwrap().unwrap();
        store::begin_enrolment(&mut c, "u2", &sealed, i64::try_from(T0).unwrap())
            .await
            .unwrap();
        drop(c);
        assert!(matches!(
            f.mfa.confirm("u2", &f.code(e.secret())).await,
            Err(MfaError::Crypto)
        ));
    }
}

#[tokio::test]
async fn deleting_a_user_deletes_their_credential_and_codes() {
    for backend in backends() {
        let f = fixture(backend).await;
        f.enrolled("u1", "ada@example.com").await;
        let mut c = f.pool.acquire().await.unwrap();
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind("u1")
            .execute(&mut *c)
            .await
            .unwrap();
        for table in ["totp_credentials", "recovery_codes"] {
            let n: i64 = sqlx::Row::get(
                &sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                    .fetch_one(&mut *c)
                    .await
                    .unwrap(),
                "n",
            );
            assert_eq!(n, 0, "{backend:?} {table}");
        }
    }
}

#[tokio::test]
async fn errors_and_debug_output_carry_no_secrets() {
    let f = fixture(Backend::Sqlite).await;
    let (e, codes) = f.enrolled("u1", "ada@example.com").await;
    let code = f.code(e.secret());
    let err = f.mfa.verify("u1", "000000x").await.unwrap_err();
    let printed = format!(
        "{err} {err:?} {e:?} {codes:?} {:?} {:?}",
        f.mfa,
        f.mfa.enrol("u1", "ada@example.com").await.unwrap()
    );
    assert!(!printed.contains(&e.manual_key()));
    assert!(!printed.contains(&code));
    for c in codes.codes() {
        assert!(!printed.contains(c.as_str()));
    }
}

#[tokio::test]
async fn an_enrolment_left_unconfirmed_expires() {
    for backend in backends() {
        let f = fixture(backend).await;
        let e = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        f.clock
            .advance(u64::try_from(super::ENROLMENT_TTL).unwrap() + 1);
        assert!(matches!(
            f.mfa.confirm("u1", &f.code(e.secret())).await,
            Err(MfaError::NoPendingEnrolment)
        ));
        assert!(!f.mfa.enabled("u1").await.unwrap());
        // A fresh enrolment confirms as usual.
        let e = f.mfa.enrol("u1", "ada@example.com").await.unwrap();
        assert!(f.mfa.confirm("u1", &f.code(e.secret())).await.is_ok());
    }
}

/// A wall clock set back does not reopen an accepted step: codes for it, or for any earlier
/// step, stay refused until time has passed it again.
#[tokio::test]
async fn a_clock_set_back_never_accepts_a_used_step_again() {
    for backend in backends() {
        let f = fixture(backend).await;
        let (e, _) = f.enrolled("u1", "ada@example.com").await;
        let used = f.code(e.secret());
        f.mfa.verify("u1", &used).await.unwrap();
        f.clock.rewind(90);
        let earlier = f.code(e.secret());
        assert!(matches!(
            f.mfa.verify("u1", &earlier).await,
            Err(MfaError::InvalidCode)
        ));
        assert!(matches!(
            f.mfa.verify("u1", &used).await,
            Err(MfaError::InvalidCode)
        ));
        f.clock.advance(90 + 30);
        f.mfa.verify("u1", &f.code(e.secret())).await.unwrap();
    }
}
