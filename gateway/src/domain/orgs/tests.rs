//! Concurrency of membership changes, on SQLite always and PostgreSQL when
//! `ZONEGATE_TEST_POSTGRES_URL` is set (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::domain::accounts::AccountsConfig;
use crate::domain::audit::AuditLog;
use crate::domain::storage::testdb::{backends, database};

/// Two owners demote each other (or remove each other) at the same moment, many times over:
/// each race ends with exactly one change done and the other refused as `LastOwner` (409),
/// never a database error (500), and the org always keeps an owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_racing_to_demote_or_remove_each_other_leave_one_owner() {
    for backend in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, _guard) = database(backend, tmp.path(), 8).await;
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let (audit, _writer) = AuditLog::spawn(db.clone(), clock.clone(), 1024);
        let mailer =
            Mailer::outbox("Delivery Zone <no-reply@localhost>", tmp.path().join("out")).unwrap();
        let orgs = Arc::new(Orgs::new(
            db.clone(),
            clock,
            Arc::new(mailer),
            audit,
            AccountsConfig::default(),
        ));
        for id in ["u1", "u2"] {
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, created_at, password_changed_at)
                 VALUES ($1, $2, 'x', 1, 1)",
            )
            .bind(id)
            .bind(format!("{id}@example.com"))
            .execute(&mut *db.acquire().await.unwrap())
            .await
            .unwrap();
        }
        let org = orgs.create("u1", "Acme").await.unwrap().id;
        store::insert_member(&mut db.acquire().await.unwrap(), &org, "u2", Role::Owner, 1)
            .await
            .unwrap();

        for trial in 0..12 {
            let remove = trial % 2 == 1;
            let race = |actor: &'static str, target: &'static str| {
                let (orgs, org) = (orgs.clone(), org.clone());
                tokio::spawn(async move {
                    if remove {
                        orgs.remove(&org, actor, target).await
                    } else {
                        orgs.change_role(&org, actor, target, Role::Admin).await
                    }
                })
            };
            let (a, b) = (race("u1", "u2"), race("u2", "u1"));
            let results = [a.await.unwrap(), b.await.unwrap()];
            let done = results.iter().filter(|r| r.is_ok()).count();
            for r in &results {
                assert!(
                    matches!(r, Ok(()) | Err(OrgError::LastOwner)),
                    "{backend:?} trial {trial}: {r:?}"
                );
            }
            assert_eq!(done, 1, "{backend:?} trial {trial}: {results:?}");
            let owners: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'",
            )
            .bind(&org)
            .fetch_one(&mut *db.acquire().await.unwrap())
            .await
            .unwrap();
            assert_eq!(owners, 1, "{backend:?} trial {trial}");
            // Both owners again for the next race.
            let mut conn = db.acquire().await.unwrap();
            sqlx::query("DELETE FROM memberships WHERE org_id = $1")
                .bind(&org)
                .execute(&mut *conn)
                .await
                .unwrap();
            for id in ["u1", "u2"] {
                store::insert_member(&mut conn, &org, id, Role::Owner, 1)
                    .await
                    .unwrap();
            }
        }
    }
}
