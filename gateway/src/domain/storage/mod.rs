//! The gateway's database: SQLite (the embedded default, a file under the data directory) or
//! PostgreSQL (for several gateway instances).
//!
//! [`Db`] is the one handle every store takes: a pool on sqlx's `Any` driver, so each store's
//! SQL is written once for both, and the [`Dialect`] it was opened with, for the few things
//! only one database has (a PostgreSQL-only feature checks `db.dialect()` here, never the URL).
//!
//! Each domain module keeps its SQL in its own `store` module, with typed rows
//! (`#[derive(sqlx::FromRow)]`). Booleans are `BOOLEAN` columns: written as `bool`, read as
//! [`Flag`] (SQLite hands them back as integers). Lists are rows of their own table.
//!
//! Migrations (`migrations/gateway/`, see its README) are the portable `common/` ones merged
//! with the dialect's own folder into one ordered sequence, run at start.

use std::borrow::Cow;
use std::fmt;

use sqlx::any::{install_default_drivers, AnyPoolOptions, AnyTypeInfo, AnyTypeInfoKind};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, Migrator};
use sqlx::{Any, AnyPool, Decode, Type};

#[cfg(test)]
pub(crate) mod testdb;
#[cfg(test)]
mod tests;

static COMMON: Migrator = sqlx::migrate!("../migrations/gateway/common");
static SQLITE: Migrator = sqlx::migrate!("../migrations/gateway/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../migrations/gateway/postgres");

/// A connection, for store functions several callers run inside one transaction.
pub type Conn = sqlx::AnyConnection;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database url must start with sqlite:// or postgres://")]
    Scheme,
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect of a database URL, and the URL as sqlx should open it (SQLite files are
    /// created when missing).
    pub fn of_url(url: &str) -> Result<(Dialect, String), DbError> {
        if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            Ok((Dialect::Sqlite, url))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok((Dialect::Postgres, url.to_owned()))
        } else {
            Err(DbError::Scheme)
        }
    }

    /// The migrations this dialect runs: `common/` and its own folder, in version order.
    pub fn migrator(self) -> Migrator {
        let own = match self {
            Dialect::Sqlite => &SQLITE,
            Dialect::Postgres => &POSTGRES,
        };
        let mut all: Vec<Migration> = COMMON.iter().chain(own.iter()).cloned().collect();
        all.sort_by_key(|m| m.version);
        Migrator {
            migrations: Cow::Owned(all),
            ..Migrator::DEFAULT
        }
    }
}

/// SQLite has no advisory lock like the one sqlx takes around PostgreSQL migrations, so
/// instances started together on one file each applied the first migration ("table users
/// already exists"). An exclusive lock on a file beside the database (`<file>.migrate-lock`,
/// left in place) lets one migrate while the others wait, then find nothing to do. Released
/// when the returned file is dropped, or by the system if the process dies.
async fn sqlite_migration_lock(url: &str) -> Result<Option<std::fs::File>, DbError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(None);
    }
    let lock_path = format!("{path}.migrate-lock");
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&lock_path)?;
        zonegate_sys::files::lock_exclusive(&file)?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| DbError::Sqlx(sqlx::Error::Io(std::io::Error::other(e))))?;
    locked
        .map(Some)
        .map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))
}

/// Whether an error means the database cannot be reached or used right now (down, restarting,
/// the pool exhausted), as opposed to a statement the database refused. Callers answer the
/// first with "retry shortly" and never with a decision that depends on data they could not
/// read.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutdown,
        // restart, cancelled).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
        _ => false,
    }
}

/// The database handle: a pool and its dialect. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

impl fmt::Debug for Db {
    // The pool's options hold the URL, which may hold a password: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("dialect", &self.dialect)
            .field("size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Connect and bring the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        install_default_drivers();
        let (dialect, url) = Dialect::of_url(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .connect(&url)
            .await?;
        let db = Db { pool, dialect };
        // Held until the migrations are applied (SQLite only; see the function).
        let _lock = match dialect {
            Dialect::Sqlite => sqlite_migration_lock(&url).await?,
            Dialect::Postgres => None,
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Run migrations on a short-lived runtime of its own, then return a handle whose pool
    /// opens connections on first use, from whichever runtime serves requests. No maintenance
    /// tasks are configured (no idle timeout or maximum lifetime), so creating it needs no
    /// runtime.
    pub fn prepare_blocking(url: &str, max_connections: u32) -> Result<Db, DbError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
        runtime.block_on(async {
            let db = Db::connect(url, 1).await?;
            db.pool.close().await;
            Ok::<(), DbError>(())
        })?;
        let (dialect, url) = Dialect::of_url(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy(&url)?;
        Ok(Db { pool, dialect })
    }

    async fn migrate(&self) -> Result<(), DbError> {
        if self.dialect == Dialect::Sqlite {
            // WAL (a property of the database file, so set once) lets readers proceed during
            // a write. sqlx turns SQLite foreign keys on for every connection by default.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await?;
        }
        self.dialect.migrator().run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether the database answers a query (readiness).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// A connection from the pool.
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Any>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// A transaction.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>, sqlx::Error> {
        self.pool.begin().await
    }
}

/// A `BOOLEAN` column as read back: PostgreSQL returns a boolean, SQLite (which has no boolean
/// storage class) an integer 0 or 1. Use as `#[sqlx(try_from = "Flag")] field: bool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl From<Flag> for bool {
    fn from(f: Flag) -> bool {
        f.0
    }
}

impl Type<Any> for Flag {
    fn type_info() -> AnyTypeInfo {
        <bool as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        matches!(
            ty.kind(),
            AnyTypeInfoKind::Bool
                | AnyTypeInfoKind::SmallInt
                | AnyTypeInfoKind::Integer
                | AnyTypeInfoKind::BigInt
        )
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        match <bool as Decode<Any>>::decode(value.clone()) {
            Ok(b) => Ok(Flag(b)),
            Err(_) => match <i64 as Decode<Any>>::decode(value)? {
                0 => Ok(Flag(false)),
                1 => Ok(Flag(true)),
                other => Err(format!("{other} is not a boolean").into()),
            },
        }
    }
}

/// A `LIKE ... ESCAPE '\'` pattern matching any text that contains `text` literally: its own
/// `%`, `_` and `\` are escaped, so a search for `50%` finds "50%" and not everything.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
