//! Concurrency of membership changes, on SQLite always and PostgreSQL when
//! `ZONEGATE_TEST_POSTGRES_URL` is set (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::domain::accounts::AccountsConfig;
use crate::domain::audit::AuditLog;
use crate::domain::storage::testdb::{backends, database, Backend, PgDatabase};

/// Orgs on a fresh database (mail to `out/` in `tmp`), with users u1 and u2.
struct Fixture {
    db: crate::domain::storage::Db,
    orgs: Arc<Orgs>,
    tmp: tempfile::TempDir,
    _pg: Option<PgDatabase>,
    _writer: tokio::task::JoinHandle<()>,
}

async fn fixture(backend: Backend) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (db, pg) = database(backend, tmp.path(), 8).await;
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let (audit, writer) = AuditLog::spawn(db.clone(), clock.clone(), 1024);
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
    Fixture {
        db,
        orgs,
        tmp,
        _pg: pg,
        _writer: writer,
    }
}

/// Two owners demote each other (or remove each other) at the same moment, many times over:
/// each race ends with exactly one change done and the other refused as `LastOwner` (409),
/// never a database error (500), and the org always keeps an owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_racing_to_demote_or_remove_each_other_leave_one_owner() {
    for backend in backends() {
        let f = fixture(backend).await;
        let (db, orgs) = (f.db.clone(), f.orgs.clone());
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

/// One invitation link opened at once from ten places (instances, tabs) by the invitee: one
/// membership, the other nine refused as a spent invitation; never a database error. On
/// SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invitation_accepted_in_parallel_makes_one_membership() {
    for backend in backends() {
        let f = fixture(backend).await;
        let (db, orgs) = (f.db.clone(), f.orgs.clone());
        let org = orgs.create("u1", "Acme").await.unwrap().id;
        orgs.invite(&org, "u1", "u2@example.com", Role::Developer)
            .await
            .unwrap();
        let token = crate::domain::mail::Outbox::new(f.tmp.path().join("out"))
            .mails()
            .iter()
            .rev()
            .find_map(|m| m.link_token().map(str::to_owned))
            .expect("the invitation mail");

        let tries: Vec<_> = (0..10)
            .map(|_| {
                let (orgs, token) = (orgs.clone(), token.clone());
                tokio::spawn(async move { orgs.accept("u2", "u2@example.com", &token).await })
            })
            .collect();
        let mut joined = 0;
        for t in tries {
            match t.await.unwrap() {
                Ok(_) => joined += 1,
                Err(OrgError::InvalidInvitation) => {}
                Err(e) => panic!("{backend:?}: {e:?}"),
            }
        }
        assert_eq!(joined, 1, "{backend:?}");
        let members: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND user_id = 'u2'",
        )
        .bind(&org)
        .fetch_one(&mut *db.acquire().await.unwrap())
        .await
        .unwrap();
        assert_eq!(members, 1, "{backend:?}");
    }
}
