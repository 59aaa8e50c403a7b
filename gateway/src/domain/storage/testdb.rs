//! Databases for the storage tests: SQLite always, and PostgreSQL too when
//! `ZONEGATE_TEST_POSTGRES_URL` is set (`.ci/run` sets it). Each test gets its own database,
//! dropped with it, so tests run in parallel without seeing each other's rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// A throwaway PostgreSQL database, dropped when the fixture is.
pub(crate) struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Best effort: a leftover database only costs disk on a test server.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                sqlx::any::install_default_drivers();
                let pool = sqlx::AnyPool::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&pool)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) fn backends() -> Vec<Backend> {
    if std::env::var("ZONEGATE_TEST_POSTGRES_URL").is_ok() {
        vec![Backend::Sqlite, Backend::Postgres]
    } else {
        eprintln!("ZONEGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL half of the storage tests");
        vec![Backend::Sqlite]
    }
}

/// A migrated pool on a fresh database for `backend` (a SQLite file in `dir`), and the guard
/// that drops a PostgreSQL database afterwards.
pub(crate) async fn database(
    backend: Backend,
    dir: &Path,
    max_connections: u32,
) -> (super::Db, Option<PgDatabase>) {
    let (url, guard) = database_url(backend, dir).await;
    (
        super::Db::connect(&url, max_connections).await.unwrap(),
        guard,
    )
}

/// A fresh, empty (unmigrated) database for `backend`, as a URL.
pub(crate) async fn database_url(backend: Backend, dir: &Path) -> (String, Option<PgDatabase>) {
    let (url, db) = match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("t.db").display()), None),
        Backend::Postgres => {
            let admin_url = std::env::var("ZONEGATE_TEST_POSTGRES_URL").unwrap();
            let name = format!("zg_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(b, _)| b);
            (
                format!("{base}/{name}"),
                Some(PgDatabase { admin_url, name }),
            )
        }
    };
    (url, db)
}
