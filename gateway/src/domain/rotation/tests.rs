//! Rotation from start to finish on SQLite and PostgreSQL: after `keys rotate`, everything an
//! old key made moves to the new keys (or ends), the counts say so, and only then may the old
//! keys be retired. Time is a [`ManualClock`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::domain::accounts::{Accounts, AccountsConfig};
use crate::domain::apikeys::ApiKeys;
use crate::domain::audit::AuditLog;
use crate::domain::mail::{Mailer, Outbox};
use crate::domain::mfa::tests::app_code;
use crate::domain::mfa::Mfa;
use crate::domain::storage::testdb::{backends, database};

const T0: u64 = 1_800_000_000;
const PASSWORD: &str = "correct horse battery staple";
/// `AccountsConfig::default().refresh_idle`.
const IDLE: i64 = 60 * 60;

struct Services {
    accounts: Accounts,
    keys: ApiKeys,
    mfa: Mfa,
}

/// The services as an instance started on the ring now in `dir` builds them.
fn services(dir: &Path, db: &Db, clock: &Arc<ManualClock>, outbox: &Path) -> Services {
    let ring = KeyRing::load(dir).unwrap();
    let (audit, _writer) = AuditLog::detached(db.clone(), clock.clone(), 64);
    let mailer = Mailer::outbox("Delivery Zone <no-reply@localhost>", outbox.to_owned()).unwrap();
    Services {
        accounts: Accounts::new(
            db.clone(),
            &ring,
            4,
            Arc::new(mailer),
            clock.clone(),
            audit.clone(),
            AccountsConfig::default(),
        )
        .unwrap(),
        keys: ApiKeys::new(db.clone(), &ring, clock.clone(), audit, 30, 3600).unwrap(),
        mfa: Mfa::new(db.clone(), Arc::new(ring), clock.clone(), "Delivery Zone"),
    }
}

fn find<'a>(uses: &'a [KeyUse], id: &str) -> &'a KeyUse {
    uses.iter().find(|u| u.id == id).unwrap()
}

#[tokio::test]
async fn old_keys_retire_only_once_nothing_depends_on_them() {
    for backend in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let outbox = tmp.path().join("outbox");
        KeyRing::init(&dir).unwrap();
        let (db, _guard) = database(backend, tmp.path(), 4).await;
        let clock = Arc::new(ManualClock::at(T0));
        let now = || i64::try_from(clock.unix_seconds()).unwrap();
        let old = services(&dir, &db, &clock, &outbox);

        // Before the rotation: a verified user logged in, an API key, a confirmed TOTP seed.
        old.accounts
            .signup("ada@example.com", PASSWORD)
            .await
            .unwrap();
        let token = Outbox::new(outbox.clone())
            .mails()
            .iter()
            .rev()
            .find_map(|m| m.link_token().map(str::to_owned))
            .unwrap();
        old.accounts.verify_email(&token).await.unwrap();
        let login = old
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap()
            .issued()
            .unwrap();
        sqlx::query("INSERT INTO orgs (id, name, created_by, created_at) VALUES ('o', 'O', $1, 0)")
            .bind(&login.user_id)
            .execute(db.pool())
            .await
            .unwrap();
        let api_key = old
            .keys
            .create("o", &login.user_id, "ci", &["zones:read".to_owned()], None)
            .await
            .unwrap();
        let enrolment = old
            .mfa
            .enrol(&login.user_id, "ada@example.com")
            .await
            .unwrap();
        old.mfa
            .confirm(
                &login.user_id,
                &app_code(enrolment.secret(), clock.unix_seconds()),
            )
            .await
            .unwrap();

        KeyRing::rotate(&dir).unwrap();
        let ring = KeyRing::load(&dir).unwrap();
        let new = services(&dir, &db, &clock, &outbox);
        let uses = dependents(&db, &ring, now(), IDLE).await.unwrap();
        let pepper = find(&uses, "pepper-1");
        assert_eq!(
            (
                pepper.passwords,
                pepper.api_keys,
                pepper.logins,
                pepper.active
            ),
            (1, 1, 1, false),
            "{uses:?}"
        );
        assert_eq!(find(&uses, "totp-1").totp_seeds, 1);
        assert_eq!(find(&uses, "pepper-2").dependents(), 0);
        assert!(find(&uses, "pepper-2").active);
        assert!(matches!(
            check_retire(&db, &ring, "pepper-1", now(), IDLE).await,
            Err(RetireError::InUse { .. })
        ));
        assert!(matches!(
            check_retire(&db, &ring, "pepper-2", now(), IDLE).await,
            Err(RetireError::Active(..))
        ));
        assert!(matches!(
            check_retire(&db, &ring, "pepper-9", now(), IDLE).await,
            Err(RetireError::Unknown(_))
        ));
        // Nothing is stored under an identity key: the old one may go at once, unless an
        // instance started before the rotation still signs with it.
        check_retire(&db, &ring, "identity-1", now(), IDLE)
            .await
            .unwrap();
        let old_ids = ["identity-1", "pepper-1", "totp-1", "signing-1"].map(str::to_owned);
        note_in_use(&db, "host/1/old", &old_ids, now())
            .await
            .unwrap();
        let refused = check_retire(&db, &ring, "identity-1", now(), IDLE)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("1 running instance") && refused.contains("restart"),
            "{refused}"
        );
        // Not seen for three minutes (it died), or stopped: no longer counted.
        clock.advance(u64::try_from(INSTANCE_SEEN_WITHIN).unwrap());
        check_retire(&db, &ring, "identity-1", now(), IDLE)
            .await
            .unwrap();
        note_in_use(&db, "host/1/old", &old_ids, now())
            .await
            .unwrap();
        forget_instance(&db, "host/1/old").await.unwrap();
        check_retire(&db, &ring, "identity-1", now(), IDLE)
            .await
            .unwrap();

        // Old material still works under the rotated ring.
        assert!(new.keys.verify(&api_key.key).await.unwrap().is_some());

        // A login re-hashes the password; a refresh re-makes the old login's CSRF token.
        let again = new
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .unwrap();
        assert!(
            again.issued().is_none(),
            "TOTP is on: the second step is due"
        );
        let stored: (String,) = sqlx::query_as("SELECT password_hash FROM users")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert!(stored.0.starts_with("zg1$pepper-2$"), "{}", stored.0);
        clock.advance(60);
        new.accounts
            .refresh(login.refresh.expose(), &login.csrf, None, None)
            .await
            .unwrap();
        // Seeds are re-sealed by the background job; the code still verifies afterwards.
        let done = new.mfa.reseal_all().await.unwrap();
        assert_eq!((done.resealed, done.unreadable), (1, 0));
        assert_eq!(
            new.mfa.reseal_all().await.unwrap().resealed,
            0,
            "idempotent"
        );
        clock.advance(30);
        new.mfa
            .verify(
                &login.user_id,
                &app_code(enrolment.secret(), clock.unix_seconds()),
            )
            .await
            .unwrap();
        // The API key moves when rolled, and its previous secret after the grace period.
        new.keys
            .roll("o", &api_key.view.id, &login.user_id)
            .await
            .unwrap();
        let uses = dependents(&db, &ring, now(), IDLE).await.unwrap();
        assert_eq!(find(&uses, "pepper-1").to_string(), "1 API key");
        clock.advance(3601);

        let uses = dependents(&db, &ring, now(), IDLE).await.unwrap();
        assert_eq!(find(&uses, "pepper-1").dependents(), 0, "{uses:?}");
        assert_eq!(find(&uses, "totp-1").dependents(), 0, "{uses:?}");
        for id in ["pepper-1", "totp-1"] {
            check_retire(&db, &ring, id, now(), IDLE).await.unwrap();
            KeyRing::retire(&dir, id).unwrap();
        }
        // An instance started on the retired ring still has every credential working.
        let ring = KeyRing::load(&dir).unwrap();
        assert!(ring.keys().all(|k| k.id != "pepper-1" && k.id != "totp-1"));
        let after = services(&dir, &db, &clock, &outbox);
        assert!(after
            .accounts
            .login("ada@example.com", PASSWORD, None, None)
            .await
            .is_ok());
        clock.advance(30);
        after
            .mfa
            .verify(
                &login.user_id,
                &app_code(enrolment.secret(), clock.unix_seconds()),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_login_older_than_the_record_counts_against_every_old_pepper_until_it_ends() {
    for backend in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        KeyRing::rotate(&dir).unwrap();
        let ring = KeyRing::load(&dir).unwrap();
        let (db, _guard) = database(backend, tmp.path(), 2).await;
        let now = i64::try_from(T0).unwrap();
        for (id, csrf_key, last_used) in [
            ("legacy", None, now),
            ("ended-idle", None, now - IDLE - 1),
            ("current", Some("pepper-2"), now),
        ] {
            sqlx::query("INSERT INTO users (id, email, password_hash, created_at, password_changed_at) VALUES ($1, $2, 'x', 0, 0)")
                .bind(id)
                .bind(format!("{id}@example.com"))
                .execute(db.pool())
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO refresh_families (id, user_id, mfa, created_at, absolute_expires_at, last_used_at, csrf_key)
                 VALUES ($1, $1, $2, 0, $3, $4, $5)",
            )
            .bind(id)
            .bind(false)
            .bind(now + 1000)
            .bind(last_used)
            .bind(csrf_key)
            .execute(db.pool())
            .await
            .unwrap();
        }
        let uses = dependents(&db, &ring, now, IDLE).await.unwrap();
        assert_eq!(find(&uses, "pepper-1").logins, 1, "{uses:?}");
        assert_eq!(find(&uses, "pepper-1").to_string(), "1 login");
    }
}
