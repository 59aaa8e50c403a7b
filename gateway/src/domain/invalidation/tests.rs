//! Two instances on one PostgreSQL database (skipped, saying so, without
//! `ZONEGATE_TEST_POSTGRES_URL`): what one changes, the other stops believing from its caches
//! on the notification, though its caches would hold for an hour; and a dropped listening
//! connection empties the caches and comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::domain::accounts::{Accounts, AccountsConfig};
use crate::domain::apikeys::ApiKeys;
use crate::domain::audit::{AuditLog, AuditTrail};
use crate::domain::decisions::DecisionLog;
use crate::domain::keyring::KeyRing;
use crate::domain::mail::{Mailer, Outbox};
use crate::domain::operators::{Operators, OperatorsConfig};
use crate::domain::orgs::{Orgs, Role};
use crate::domain::storage::testdb::{database_url, Backend};
use crate::domain::storage::Db;

const T0: u64 = 1_800_000_000;
const PASSWORD: &str = "correct horse battery staple";
/// Caches that would hold for an hour: only a notification can make them let go sooner.
const HOUR: i64 = 3600;

fn instance(keys: &Path, db: &Db, clock: &Arc<ManualClock>, outbox: &Path) -> Services {
    let ring = KeyRing::load(keys).unwrap();
    let (audit, _writer) = AuditLog::detached(db.clone(), clock.clone(), 64);
    let mailer =
        Arc::new(Mailer::outbox("Delivery Zone <no-reply@localhost>", outbox.to_owned()).unwrap());
    let cfg = AccountsConfig {
        cache_revalidate: HOUR,
        ..AccountsConfig::default()
    };
    Services {
        accounts: Arc::new(
            Accounts::new(
                db.clone(),
                &ring,
                4,
                mailer.clone(),
                clock.clone(),
                audit.clone(),
                cfg.clone(),
            )
            .unwrap(),
        ),
        orgs: Arc::new(Orgs::new(
            db.clone(),
            clock.clone(),
            mailer,
            audit.clone(),
            cfg,
        )),
        keys: Arc::new(
            ApiKeys::new(db.clone(), &ring, clock.clone(), audit.clone(), HOUR, 60).unwrap(),
        ),
        operators: Arc::new(
            Operators::new(
                db.clone(),
                &ring,
                4,
                clock.clone(),
                audit.clone(),
                OperatorsConfig::default(),
            )
            .unwrap(),
        ),
        audit,
        trail: AuditTrail::new(db.clone()),
        decisions: DecisionLog::off(),
    }
}

/// Wait (bounded) until `cond` holds; the bound is far below the caches' hour.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_instance_changes_the_other_stops_believing_at_once() {
    if std::env::var("ZONEGATE_TEST_POSTGRES_URL").is_err() {
        eprintln!("ZONEGATE_TEST_POSTGRES_URL is not set: skipping the invalidation test (PostgreSQL only)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let outbox = tmp.path().join("outbox");
    KeyRing::init(&keys).unwrap();
    let (url, _guard) = database_url(Backend::Postgres, tmp.path()).await;
    let db = Db::connect(&url, 8).await.unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    let a = instance(&keys, &db, &clock, &outbox);
    let b = instance(&keys, &db, &clock, &outbox);

    // B listens.
    let listener = Listener::new(ListenUrl::new(&url), "b", 0);
    let state = listener.state.clone();
    let reloads = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = reloads.clone();
    let services = b.clone();
    let beats_db = db.clone();
    let task = tokio::spawn(async move {
        listener
            .run(
                services,
                beats_db,
                move || {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                },
                || 0,
            )
            .await;
    });
    eventually("the listener is up", async || state.is_up()).await;

    // On A: a verified user, logged in, owning an org with an API key.
    a.accounts
        .signup("ada@example.com", PASSWORD)
        .await
        .unwrap();
    let token = Outbox::new(outbox.clone())
        .mails()
        .iter()
        .rev()
        .find_map(|m| m.link_token().map(str::to_owned))
        .unwrap();
    a.accounts.verify_email(&token).await.unwrap();
    let login = a
        .accounts
        .login("ada@example.com", PASSWORD, None, None)
        .await
        .unwrap()
        .issued()
        .unwrap();
    let org = a.orgs.create(&login.user_id, "Acme").await.unwrap();
    let key = a
        .keys
        .create(
            &org.id,
            &login.user_id,
            "k",
            &["zones:read".to_owned()],
            None,
        )
        .await
        .unwrap();

    // B caches all of it.
    assert!(b.keys.verify(&key.key).await.unwrap().is_some());
    let user = b
        .accounts
        .authenticate_session(login.session.expose())
        .await
        .unwrap();
    assert_eq!(
        b.orgs.role_of(&login.user_id, &org.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert!(!b.orgs.facts(&org.id).await.unwrap().unwrap().suspended);

    // A revokes the key: B refuses it on the notification, not in an hour.
    a.keys
        .revoke(&org.id, &key.view.id, &login.user_id)
        .await
        .unwrap();
    eventually("B refuses the revoked key", async || {
        b.keys.verify(&key.key).await.unwrap().is_none()
    })
    .await;

    // A suspends the org: B sees it suspended.
    a.orgs.set_suspended(&org.id, "op-1", true).await.unwrap();
    eventually("B sees the suspension", async || {
        b.orgs.facts(&org.id).await.unwrap().unwrap().suspended
    })
    .await;

    // A logs out: B refuses the session.
    a.accounts.logout(&user).await.unwrap();
    eventually("B refuses the ended session", async || {
        b.accounts
            .authenticate_session(login.session.expose())
            .await
            .is_err()
    })
    .await;

    // A policy reload announced by A reaches B's reload; B's own announcement does not.
    announce_policies(&db, "a").await.unwrap();
    eventually("B reloads on A's announcement", async || {
        reloads.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    announce_policies(&db, "b").await.unwrap();

    // The listening connection is cut: B notices, distrusts its caches, and listens again.
    let before = state.received();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    eventually("B notices the cut", async || !state.is_up()).await;
    eventually("B listens again", async || state.is_up()).await;
    // Heartbeats arrive on the new connection, and the caches were emptied: B reads the
    // key's state from the database again (still revoked).
    eventually("heartbeats arrive again", async || {
        state.received() > before + 1
    })
    .await;
    assert!(b.keys.verify(&key.key).await.unwrap().is_none());
    assert_eq!(
        reloads.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "its own announcement is ignored"
    );
    task.abort();
}

#[test]
fn payloads_parse_and_nothing_else_does() {
    assert_eq!(
        Invalidation::parse("key:abc"),
        Some(Invalidation::ApiKey("abc".into()))
    );
    assert_eq!(
        Invalidation::parse("member:o1/u1"),
        Some(Invalidation::Member {
            org: "o1".into(),
            user: "u1".into()
        })
    );
    assert_eq!(
        Invalidation::parse(&Invalidation::policies_payload("host/1/x")),
        Some(Invalidation::Policies {
            from: "host/1/x".into()
        })
    );
    assert_eq!(
        Invalidation::parse("heartbeat:-"),
        Some(Invalidation::Heartbeat)
    );
    for bad in ["", "key", "key:", "member:o1", "nope:1", "session"] {
        assert_eq!(Invalidation::parse(bad), None, "{bad}");
    }
}
