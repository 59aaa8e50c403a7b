//! Operators on SQLite always and PostgreSQL when `ZONEGATE_TEST_POSTGRES_URL` is set: both
//! factors at every login, one use per code, short sessions on an injected clock, disabling,
//! and re-sealing after a key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::domain::audit::{AuditTrail, OrgQuery};
use crate::domain::mfa::tests::app_code;
use crate::domain::mfa::Secret;
use crate::domain::storage::testdb::{backends, database, Backend, PgDatabase};

const T0: u64 = 1_800_000_000;

struct Fixture {
    operators: Operators,
    clock: Arc<ManualClock>,
    audit: AuditLog,
    trail: AuditTrail,
    keys: std::path::PathBuf,
    db: Db,
    _tmp: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn fixture(backend: Backend) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    KeyRing::init(&keys).unwrap();
    let (db, pg) = database(backend, tmp.path(), 4).await;
    let clock = Arc::new(ManualClock::at(T0));
    let (audit, _writer) = AuditLog::spawn(db.clone(), clock.clone(), 1024);
    let operators = with_ring(&db, &keys, &clock, &audit);
    Fixture {
        operators,
        clock,
        audit,
        trail: AuditTrail::new(db.clone()),
        keys,
        db,
        _tmp: tmp,
        _pg: pg,
    }
}

fn with_ring(
    db: &Db,
    keys: &std::path::Path,
    clock: &Arc<ManualClock>,
    audit: &AuditLog,
) -> Operators {
    Operators::new(
        db.clone(),
        &KeyRing::load(keys).unwrap(),
        4,
        clock.clone(),
        audit.clone(),
        OperatorsConfig::default(),
    )
    .unwrap()
}

/// The code the operator's app shows now, from the secret `add` printed.
fn code_of(new: &NewOperator, clock: &ManualClock) -> String {
    code_at(new, clock.unix_seconds())
}

fn code_at(new: &NewOperator, t: u64) -> String {
    let secret = Secret::from_bytes(new.enrolment.secret().expose().to_vec());
    app_code(&secret, t)
}

impl Fixture {
    async fn events(&self) -> Vec<String> {
        self.audit.flush().await.unwrap();
        let page = self
            .trail
            .search(
                None,
                None,
                &OrgQuery {
                    limit: 200,
                    ..OrgQuery::default()
                },
            )
            .await
            .unwrap();
        page.events
            .iter()
            .rev()
            .map(|e| e.event.as_str().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn an_operator_logs_in_with_password_and_code_and_each_code_works_once() {
    for backend in backends() {
        let f = fixture(backend).await;
        let new = f.operators.add("Ops@Example.com", None).await.unwrap();
        assert_eq!(new.email, "ops@example.com");
        let password = new.password.clone().unwrap();
        assert!(
            password.len() >= 32,
            "a generated password carries 192 bits"
        );
        // The same email twice is refused.
        assert!(matches!(
            f.operators.add("ops@example.com", None).await,
            Err(OperatorError::Exists)
        ));

        // Every wrong part is the same answer.
        let code = code_of(&new, &f.clock);
        for (email, pw, code) in [
            ("ops@example.com", "wrong password", code.as_str()),
            ("ops@example.com", password.as_str(), "000000"),
            ("ops@example.com", password.as_str(), ""),
            ("nobody@example.com", password.as_str(), code.as_str()),
        ] {
            assert!(matches!(
                f.operators.login(email, pw, code).await,
                Err(OperatorError::InvalidCredentials)
            ));
        }

        let login = f
            .operators
            .login("ops@example.com", &password, &code)
            .await
            .unwrap();
        assert_eq!(login.operator.email, "ops@example.com");
        let me = f
            .operators
            .authenticate(login.session.expose())
            .await
            .unwrap();
        assert_eq!(me.operator_id, new.id);
        assert!(f.operators.csrf_matches(&me.session_id, &login.csrf));
        assert!(!f.operators.csrf_matches(&me.session_id, ""));
        assert!(!f.operators.csrf_matches("another session", &login.csrf));

        // The same code a second time is refused, even with the right password.
        assert!(matches!(
            f.operators.login("ops@example.com", &password, &code).await,
            Err(OperatorError::InvalidCredentials)
        ));
        // The next step's code works.
        f.clock.advance(30);
        let next = code_of(&new, &f.clock);
        f.operators
            .login("ops@example.com", &password, &next)
            .await
            .unwrap();

        f.operators.logout(&me).await.unwrap();
        assert!(f
            .operators
            .authenticate(login.session.expose())
            .await
            .is_err());

        let events = f.events().await;
        for name in [
            "platform_operator_added",
            "authn_platform_login_fail",
            "authn_platform_login_success",
            "authn_platform_logout",
        ] {
            assert!(events.iter().any(|e| e == name), "{name} in {events:?}");
        }
    }
}

async fn count_sessions(c: &mut store::Conn) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM operator_sessions")
        .fetch_one(c)
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn sessions_end_after_15_idle_minutes_or_12_hours() {
    for backend in backends() {
        let f = fixture(backend).await;
        let new = f.operators.add("ops@example.com", None).await.unwrap();
        let password = new.password.clone().unwrap();
        let login = |code: String| {
            let ops = &f.operators;
            let password = password.clone();
            async move {
                ops.login("ops@example.com", &password, &code)
                    .await
                    .unwrap()
            }
        };

        // Idle: a request every 14 minutes keeps it; 15 minutes of quiet ends it.
        let s = login(code_of(&new, &f.clock)).await;
        for _ in 0..3 {
            f.clock.advance(14 * 60);
            f.operators.authenticate(s.session.expose()).await.unwrap();
        }
        f.clock.advance(15 * 60 + 1);
        assert!(f.operators.authenticate(s.session.expose()).await.is_err());
        // Ended for good: the clock set back does not revive it.
        f.clock.rewind(15 * 60);
        assert!(f.operators.authenticate(s.session.expose()).await.is_err());
        f.clock.advance(15 * 60);

        // Absolute: busy all along, still over at 12 hours.
        f.clock.advance(60);
        let s = login(code_of(&new, &f.clock)).await;
        for _ in 0..(12 * 60 / 10 - 1) {
            f.clock.advance(10 * 60);
            f.operators.authenticate(s.session.expose()).await.unwrap();
        }
        f.clock.advance(10 * 60);
        assert!(f.operators.authenticate(s.session.expose()).await.is_err());
        assert!(f
            .events()
            .await
            .iter()
            .any(|e| e == "session_platform_expired"));
        // Ended sessions are deleted an absolute time later, not before.
        let mut c = f.db.acquire().await.unwrap();
        assert_eq!(count_sessions(&mut c).await, 2);
        assert_eq!(
            f.operators.purge_sessions().await.unwrap(),
            1,
            "the first, ended 12 h ago"
        );
        f.clock.advance(12 * 60 * 60);
        assert_eq!(f.operators.purge_sessions().await.unwrap(), 1);
        assert_eq!(count_sessions(&mut c).await, 0);
    }
}

#[tokio::test]
async fn a_disabled_operator_is_logged_out_and_cannot_log_in() {
    for backend in backends() {
        let f = fixture(backend).await;
        let new = f.operators.add("ops@example.com", None).await.unwrap();
        let password = new.password.clone().unwrap();
        let s = f
            .operators
            .login("ops@example.com", &password, &code_of(&new, &f.clock))
            .await
            .unwrap();
        f.operators
            .set_disabled("ops@example.com", true)
            .await
            .unwrap();
        assert!(f.operators.authenticate(s.session.expose()).await.is_err());
        f.clock.advance(30);
        assert!(matches!(
            f.operators
                .login("ops@example.com", &password, &code_of(&new, &f.clock))
                .await,
            Err(OperatorError::InvalidCredentials)
        ));
        f.operators
            .set_disabled("ops@example.com", false)
            .await
            .unwrap();
        f.clock.advance(30);
        f.operators
            .login("ops@example.com", &password, &code_of(&new, &f.clock))
            .await
            .unwrap();
        assert!(matches!(
            f.operators.set_disabled("nobody@example.com", true).await,
            Err(OperatorError::NotFound)
        ));
        let listed = f.operators.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].last_login_at.is_some());
    }
}

#[tokio::test]
async fn failed_logins_slow_an_operator_down_but_never_lock_them_out() {
    for backend in backends() {
        let f = fixture(backend).await;
        let new = f.operators.add("ops@example.com", None).await.unwrap();
        let password = new.password.clone().unwrap();
        for _ in 0..lockout::DELAY_AFTER {
            let _ = f
                .operators
                .login("ops@example.com", "wrong", "123456")
                .await;
        }
        // Delayed: refused before anything is checked, even the right credentials.
        let code = code_of(&new, &f.clock);
        assert!(matches!(
            f.operators.login("ops@example.com", &password, &code).await,
            Err(OperatorError::LoginDelayed(1))
        ));
        f.clock.advance(1);
        f.operators
            .login("ops@example.com", &password, &code)
            .await
            .unwrap();
        // Slowed down again; another operator's `operators enable` clears the count at once.
        for _ in 0..lockout::DELAY_AFTER + 3 {
            let _ = f
                .operators
                .login("ops@example.com", "wrong", "123456")
                .await;
        }
        // The next step's code (within the allowed skew): the last one was spent.
        let next = code_at(&new, f.clock.unix_seconds() + 30);
        assert!(matches!(
            f.operators.login("ops@example.com", &password, &next).await,
            Err(OperatorError::LoginDelayed(_))
        ));
        f.operators
            .set_disabled("ops@example.com", false)
            .await
            .unwrap();
        f.operators
            .login("ops@example.com", &password, &next)
            .await
            .unwrap();
        // Far past the users' block: one try per 15 minutes, never blocked for good.
        assert_eq!(
            wait_after_failures(lockout::BLOCK_AT + 10, Some(100), 100 + 60),
            Some(lockout::MAX_DELAY_SECS - 60)
        );
        assert_eq!(
            wait_after_failures(lockout::BLOCK_AT + 10, Some(100), 100 + 15 * 60),
            None
        );
    }
}

#[tokio::test]
async fn a_given_password_must_be_strong_and_works() {
    for backend in backends() {
        let f = fixture(backend).await;
        assert!(matches!(
            f.operators.add("ops@example.com", Some("short")).await,
            Err(OperatorError::WeakPassword(_))
        ));
        let new = f
            .operators
            .add("ops@example.com", Some("a long operator passphrase"))
            .await
            .unwrap();
        assert!(new.password.is_none(), "nothing generated, nothing to show");
        f.operators
            .login(
                "ops@example.com",
                "a long operator passphrase",
                &code_of(&new, &f.clock),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn after_a_rotation_seeds_are_resealed_and_passwords_rehashed() {
    for backend in backends() {
        let f = fixture(backend).await;
        let new = f.operators.add("ops@example.com", None).await.unwrap();
        let password = new.password.clone().unwrap();
        KeyRing::rotate(&f.keys).unwrap();
        let rotated = with_ring(&f.db, &f.keys, &f.clock, &f.audit);
        let mut c = f.db.acquire().await.unwrap();
        assert_eq!(
            store::count_sealed_under(&mut c, "totp-1").await.unwrap(),
            1
        );
        assert_eq!(rotated.reseal_all().await.unwrap(), (1, 0));
        assert_eq!(
            rotated.reseal_all().await.unwrap(),
            (0, 0),
            "nothing left to move"
        );
        assert_eq!(
            store::count_sealed_under(&mut c, "totp-1").await.unwrap(),
            0
        );
        assert_eq!(
            store::count_sealed_under(&mut c, "totp-2").await.unwrap(),
            1
        );
        assert_eq!(
            store::count_passwords_under(&mut c, "pepper-1")
                .await
                .unwrap(),
            1
        );
        rotated
            .login("ops@example.com", &password, &code_of(&new, &f.clock))
            .await
            .unwrap();
        assert_eq!(
            store::count_passwords_under(&mut c, "pepper-1")
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store::count_passwords_under(&mut c, "pepper-2")
                .await
                .unwrap(),
            1
        );
    }
}

#[tokio::test]
async fn one_code_replayed_in_parallel_logs_in_once() {
    for backend in backends() {
        let f = fixture(backend).await;
        let new = f.operators.add("ops@example.com", None).await.unwrap();
        let password = new.password.clone().unwrap();
        let code = code_at(&new, T0);
        let ops = Arc::new(f.operators);
        let tries: Vec<_> = (0..4)
            .map(|_| {
                let ops = ops.clone();
                let (password, code) = (password.clone(), code.clone());
                tokio::spawn(async move { ops.login("ops@example.com", &password, &code).await })
            })
            .collect();
        let mut ok = 0;
        for t in tries {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
    }
}
