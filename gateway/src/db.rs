//! The gateway's database: SQLite (the embedded default, a file under the data directory) or
//! PostgreSQL (for several gateway instances), through sqlx's `Any` driver so one set of
//! portable SQL serves both. Migrations live in `migrations/gateway/` and run at start.

use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::AnyPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/gateway");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database url must start with sqlite:// or postgres://")]
    Scheme,
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Normalise a database URL: SQLite files are created when missing.
pub fn normalise_url(url: &str) -> Result<String, DbError> {
    if url.starts_with("sqlite:") {
        if url.contains("mode=") {
            Ok(url.to_owned())
        } else if url.contains('?') {
            Ok(format!("{url}&mode=rwc"))
        } else {
            Ok(format!("{url}?mode=rwc"))
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_owned())
    } else {
        Err(DbError::Scheme)
    }
}

/// Connect and bring the schema up to date.
pub async fn connect(url: &str, max_connections: u32) -> Result<AnyPool, DbError> {
    install_default_drivers();
    let url = normalise_url(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .connect(&url)
        .await?;
    if url.starts_with("sqlite:") {
        // WAL (a property of the database file, so set once) lets readers proceed during a
        // write. sqlx turns SQLite foreign keys on for every connection by default.
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
    }
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Run migrations on a short-lived runtime of its own, then return a pool that opens
/// connections on first use, from whichever runtime serves requests. No maintenance tasks are
/// configured (no idle timeout or maximum lifetime), so creating it needs no runtime.
pub fn prepare_blocking(url: &str, max_connections: u32) -> Result<AnyPool, DbError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
    runtime.block_on(async {
        let pool = connect(url, 1).await?;
        pool.close().await;
        Ok::<(), DbError>(())
    })?;
    let url = normalise_url(url)?;
    Ok(AnyPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy(&url)?)
}
