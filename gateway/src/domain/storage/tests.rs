//! Storage tests: the migration sequence is well formed, and a database made by the previous
//! schema (every table holding rows) upgrades without losing one, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::collections::BTreeSet;

use sqlx::migrate::Migrator;

use super::testdb::{backends, database_url, Backend};
use super::*;

/// The last version before booleans, scope rows and millisecond audit times.
const BEFORE_TYPED_COLUMNS: i64 = 7;

#[test]
fn migrations_are_paired() {
    let versions = |m: &Migrator| -> BTreeSet<i64> { m.iter().map(|m| m.version).collect() };
    let (common, sqlite, postgres) = (versions(&COMMON), versions(&SQLITE), versions(&POSTGRES));
    assert_eq!(
        sqlite, postgres,
        "every dialect version needs a file in both folders"
    );
    assert!(
        common.is_disjoint(&sqlite),
        "a version lives in common/ or in the dialect folders, not both"
    );
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let all: Vec<i64> = dialect.migrator().iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=all.len() as i64).collect();
        assert_eq!(
            all, expected,
            "{dialect:?}: versions run 1, 2, 3, ... without gaps"
        );
    }
}

/// A migrator that stops at `version`: what an older gateway would have run.
fn up_to(dialect: Dialect, version: i64) -> Migrator {
    let all = dialect.migrator();
    Migrator {
        migrations: Cow::Owned(
            all.iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

async fn exec(pool: &AnyPool, sql: &str) {
    sqlx::query(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Rows in every table, as the previous schema stored them.
async fn fill_previous_schema(pool: &AnyPool) {
    for sql in [
        "INSERT INTO users (id, email, password_hash, email_verified_at, created_at, password_changed_at, failed_logins, last_failed_at)
         VALUES ('u1', 'ada@example.com', 'zg1$pepper-1$hash', 100, 90, 95, 3, 99)",
        "INSERT INTO users (id, email, password_hash, created_at, password_changed_at)
         VALUES ('u2', 'bob@example.com', 'zg1$pepper-1$hash2', 91, 91)",
        "INSERT INTO email_tokens (token_hash, user_id, purpose, created_at, expires_at, used_at)
         VALUES ('et1', 'u1', 'verify', 90, 190, 100)",
        "INSERT INTO refresh_families (id, user_id, factors, created_at, absolute_expires_at, last_used_at)
         VALUES ('f1', 'u1', 'pwd,otp', 100, 1000, 150)",
        "INSERT INTO refresh_families (id, user_id, factors, created_at, absolute_expires_at, last_used_at, revoked_at, revoked_reason)
         VALUES ('f2', 'u1', 'pwd', 100, 1000, 100, 120, 'logout')",
        "INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, created_at, rotated_at, grace_used)
         VALUES ('rt1', 'f1', NULL, 100, 150, 1)",
        "INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, created_at)
         VALUES ('rt2', 'f1', 'rt1', 150)",
        "INSERT INTO sessions (token_hash, public_id, user_id, family_id, created_at, expires_at, user_agent)
         VALUES ('s1', 'sp1', 'u1', 'f1', 150, 1050, 'Firefox')",
        "INSERT INTO orgs (id, name, created_by, created_at, suspended_at, require_mfa)
         VALUES ('o1', 'Acme', 'u1', 110, NULL, 1)",
        "INSERT INTO orgs (id, name, created_by, created_at, suspended_at)
         VALUES ('o2', 'Globex', 'u2', 111, 200)",
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ('o1', 'u1', 'owner', 110)",
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ('o1', 'u2', 'developer', 112)",
        "INSERT INTO invitations (token_hash, org_id, email, role, invited_by, created_at, expires_at)
         VALUES ('i1', 'o1', 'carol@example.com', 'viewer', 'u1', 113, 213)",
        "INSERT INTO api_keys (id, org_id, name, scopes, secret_mac, pepper_id, hint, created_by, created_at, expires_at, last_used_at)
         VALUES ('k1', 'o1', 'ci', 'coverage:read,zones:read', 'mac1', 'pepper-1', 'zgk_k1_...abcd', 'u1', 114, NULL, 140)",
        "INSERT INTO api_keys (id, org_id, name, scopes, secret_mac, pepper_id, hint, created_by, created_at, revoked_at, previous_mac, previous_pepper_id, previous_valid_until)
         VALUES ('k2', 'o1', 'deploy', 'zones:write', 'mac2', 'pepper-1', 'zgk_k2_...wxyz', 'u1', 115, 160, 'mac0', 'pepper-1', 170)",
        "INSERT INTO totp_credentials (user_id, state, sealed_secret, created_at, confirmed_at, last_step)
         VALUES ('u1', 'active', 'zt1$totp-1$sealed', 101, 102, 56666666)",
        "INSERT INTO recovery_codes (user_id, code_hash, created_at, used_at) VALUES ('u1', 'rc1', 102, NULL)",
        "INSERT INTO recovery_codes (user_id, code_hash, created_at, used_at) VALUES ('u1', 'rc2', 102, 130)",
        "INSERT INTO audit_events (id, at, event, principal_id, org_id, client, request_id, user_agent, details)
         VALUES ('a2', 1800000001, 'authz_fail', 'u2', 'o1', '192.0.2.1', 'r2', 'curl', '{\"route\":\"zones-list\"}')",
        "INSERT INTO audit_events (id, at, event, principal_id, org_id, client, request_id, user_agent, details)
         VALUES ('a1', 1800000000, 'authn_login_success', 'u1', NULL, NULL, NULL, NULL, '{}')",
        "INSERT INTO audit_events (id, at, event, principal_id, org_id, client, request_id, user_agent, details)
         VALUES ('a3', 1800000001, 'authz_fail', 'u2', 'o1', NULL, NULL, NULL, '{}')",
        "INSERT INTO pending_logins (token_hash, user_id, created_at, expires_at, attempts, completed_at)
         VALUES ('p1', 'u1', 140, 440, 2, NULL)",
    ] {
        exec(pool, sql).await;
    }
}

async fn count(pool: &AnyPool, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

#[derive(Debug, sqlx::FromRow)]
struct FlagRow {
    id: String,
    #[sqlx(try_from = "Flag")]
    flag: bool,
}

async fn flags(pool: &AnyPool, sql: &str) -> Vec<(String, bool)> {
    sqlx::query_as::<_, FlagRow>(sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.flag))
        .collect()
}

async fn upgrades_keeping_every_row(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _guard) = database_url(backend, tmp.path()).await;
    install_default_drivers();
    let (dialect, open_url) = Dialect::of_url(&url).unwrap();
    let old = AnyPool::connect(&open_url).await.unwrap();
    up_to(dialect, BEFORE_TYPED_COLUMNS)
        .run(&old)
        .await
        .unwrap();
    fill_previous_schema(&old).await;
    old.close().await;

    let db = Db::connect(&url, 2).await.unwrap();
    let pool = db.pool();
    let tables = [
        ("users", 2),
        ("email_tokens", 1),
        ("refresh_families", 2),
        ("refresh_tokens", 2),
        ("sessions", 1),
        ("orgs", 2),
        ("memberships", 2),
        ("invitations", 1),
        ("api_keys", 2),
        ("totp_credentials", 1),
        ("recovery_codes", 2),
        ("audit_events", 3),
        ("pending_logins", 1),
    ];
    for (table, rows) in tables {
        assert_eq!(count(pool, table).await, rows, "{backend:?}: {table}");
    }

    // Booleans became booleans, with their values.
    assert_eq!(
        flags(pool, "SELECT id, require_mfa AS flag FROM orgs ORDER BY id").await,
        [("o1".to_owned(), true), ("o2".to_owned(), false)],
        "{backend:?}"
    );
    assert_eq!(
        flags(
            pool,
            "SELECT token_hash AS id, grace_used AS flag FROM refresh_tokens ORDER BY token_hash"
        )
        .await,
        [("rt1".to_owned(), true), ("rt2".to_owned(), false)],
        "{backend:?}"
    );
    assert_eq!(
        flags(
            pool,
            "SELECT id, mfa AS flag FROM refresh_families ORDER BY id"
        )
        .await,
        [("f1".to_owned(), true), ("f2".to_owned(), false)],
        "{backend:?}"
    );

    // Scope lists became rows.
    let scopes: Vec<(String, String)> =
        sqlx::query_as("SELECT key_id, scope FROM api_key_scopes ORDER BY key_id, scope")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected: Vec<(String, String)> = [
        ("k1", "coverage:read"),
        ("k1", "zones:read"),
        ("k2", "zones:write"),
    ]
    .iter()
    .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
    .collect();
    assert_eq!(scopes, expected, "{backend:?}");

    // Audit times are milliseconds, and ties keep their earlier (at, id) order by sequence.
    let audit: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, at FROM audit_events ORDER BY at, seq")
            .fetch_all(pool)
            .await
            .unwrap();
    let audit: Vec<(&str, i64)> = audit.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    assert_eq!(
        audit,
        [
            ("a1", 1_800_000_000_000),
            ("a2", 1_800_000_001_000),
            ("a3", 1_800_000_001_000)
        ],
        "{backend:?}"
    );

    // Everything else is as it was.
    let (email, hash, verified, failed): (String, String, Option<i64>, i64) = sqlx::query_as(
        "SELECT email, password_hash, email_verified_at, failed_logins FROM users WHERE id = 'u1'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (email.as_str(), hash.as_str(), verified, failed),
        ("ada@example.com", "zg1$pepper-1$hash", Some(100), 3)
    );
    let (mac, previous, until): (String, Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT secret_mac, previous_mac, previous_valid_until FROM api_keys WHERE id = 'k2'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (mac.as_str(), previous.as_deref(), until),
        ("mac2", Some("mac0"), Some(170))
    );
    let (role,): (String,) =
        sqlx::query_as("SELECT role FROM memberships WHERE org_id = 'o1' AND user_id = 'u2'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(role, "developer");
    let (step,): (Option<i64>,) =
        sqlx::query_as("SELECT last_step FROM totp_credentials WHERE user_id = 'u1'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(step, Some(56_666_666));

    // Running the migrations again changes nothing.
    db.dialect().migrator().run(pool).await.unwrap();
    assert_eq!(count(pool, "api_key_scopes").await, 3);
}

#[tokio::test]
async fn a_database_of_the_previous_schema_upgrades_without_losing_a_row() {
    for backend in backends() {
        upgrades_keeping_every_row(backend).await;
    }
}

#[tokio::test]
async fn booleans_round_trip_on_both_dialects() {
    for backend in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let (url, _guard) = database_url(backend, tmp.path()).await;
        let db = Db::connect(&url, 1).await.unwrap();
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at, password_changed_at) VALUES ('u', 'u@x.example', 'h', 0, 0)")
            .execute(db.pool())
            .await
            .unwrap();
        for (id, value) in [("t", true), ("f", false)] {
            sqlx::query("INSERT INTO orgs (id, name, created_by, created_at, require_mfa) VALUES ($1, 'O', 'u', 0, $2)")
                .bind(id)
                .bind(value)
                .execute(db.pool())
                .await
                .unwrap();
        }
        assert_eq!(
            flags(
                db.pool(),
                "SELECT id, require_mfa AS flag FROM orgs ORDER BY id"
            )
            .await,
            [("f".to_owned(), false), ("t".to_owned(), true)],
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn ping_answers_while_the_database_does_and_fails_once_it_is_gone() {
    for backend in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let (url, _guard) = database_url(backend, tmp.path()).await;
        let db = Db::connect(&url, 1).await.unwrap();
        db.ping().await.unwrap();
        db.pool().close().await;
        assert!(db.ping().await.is_err(), "{backend:?}");
    }
}

/// Several instances started at once on one fresh SQLite file (a single-host fleet, or a
/// restart racing a CLI command) all come up on the same, fully migrated schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_started_together_migrate_a_sqlite_file_once() {
    for round in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("t.db").display());
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { super::Db::connect(&url, 2).await })
            })
            .collect();
        for start in starts {
            let db = start.await.unwrap();
            assert!(db.is_ok(), "round {round}: {:?}", db.err());
        }
        let db = super::Db::connect(&url, 1).await.unwrap();
        let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let expected = i64::try_from(db.dialect().migrator().iter().count()).unwrap();
        assert_eq!(applied, expected);
    }
}
