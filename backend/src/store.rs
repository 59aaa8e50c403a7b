//! Zone persistence through sqlx: SQLite for one machine (the default), PostgreSQL for a fleet
//! (`--database postgres://...`). The SQL is the same for both (`$n` placeholders, text and
//! double columns); each has its own migrations (`migrations/backend/{sqlite,postgres}`).
//!
//! Every query that touches zones takes an [`AuthorizedOrg`] and filters on its
//! id, so one org's data can never be read or changed through another org's
//! request, even with a guessed zone id.
//!
//! This module must never build SQL from strings (values are always bound),
//! validate input (it receives an already validated [`Area`]), or answer a
//! query without the org filter.

use std::time::SystemTime;

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::AnyPool;
use uuid::Uuid;

use crate::geometry::Area;
use crate::identity::AuthorizedOrg;
use zonegate_common::time::rfc3339_micros;

/// Schema migrations, compiled into the binary and applied at start (PostgreSQL runs them
/// under an advisory lock, so instances started together do not race).
static SQLITE: Migrator = sqlx::migrate!("../migrations/backend/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../migrations/backend/postgres");

/// Pooled connections per backend process (sqlx's own default).
const DEFAULT_CONNECTIONS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL: use sqlite://PATH or postgres://...")]
    Url,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot encode area: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("stored zone {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
}

/// A zone as stored and as returned by the API.
#[derive(Debug, Clone, Serialize)]
pub struct Zone {
    pub id: Uuid,
    pub org: String,
    pub name: String,
    pub area: Area,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, sqlx::FromRow)]
struct ZoneRow {
    id: String,
    org: String,
    name: String,
    area: String,
    created_at: String,
    updated_at: String,
}

impl TryFrom<ZoneRow> for Zone {
    type Error = StoreError;

    fn try_from(row: ZoneRow) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            id: row.id.clone(),
            reason,
        };
        let id = Uuid::parse_str(&row.id).map_err(|e| corrupt(e.to_string()))?;
        let geometry = serde_json::from_str(&row.area).map_err(|e| corrupt(e.to_string()))?;
        let area = Area::from_stored(geometry).map_err(|e| corrupt(e.to_string()))?;
        Ok(Self {
            id,
            org: row.org,
            name: row.name,
            area,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl std::fmt::Debug for Store {
    // The pool's options hold the URL, which may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at a `sqlite://PATH` URL (creating the file if missing) or a
    /// `postgres://` one, and applies pending migrations.
    pub async fn open(database_url: &str) -> Result<Self, StoreError> {
        Self::open_with_connections(database_url, DEFAULT_CONNECTIONS).await
    }

    /// As [`Store::open`], with at most `connections` pooled connections. One makes every
    /// query run on the same connection, where statements prepared by earlier queries are
    /// reused: how a test makes that reuse certain rather than a matter of timing.
    pub async fn open_with_connections(
        database_url: &str,
        connections: u32,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, migrator) = if let Some(path) = database_url.strip_prefix("sqlite://") {
            let sep = if path.contains('?') { '&' } else { '?' };
            (format!("sqlite://{path}{sep}mode=rwc"), &SQLITE)
        } else if database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
        {
            (database_url.to_owned(), &POSTGRES)
        } else {
            return Err(StoreError::Url);
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections.max(1))
            .connect(&url)
            .await?;
        if std::ptr::eq(migrator, &SQLITE) {
            // WAL lets readers proceed while a write is in progress (a property of the file).
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        migrator.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// All zones of the org, oldest first (ties broken by id so the order is
    /// stable).
    pub async fn list(&self, org: &AuthorizedOrg) -> Result<Vec<Zone>, StoreError> {
        let rows: Vec<ZoneRow> = sqlx::query_as(
            "SELECT id, org, name, area, created_at, updated_at FROM zones \
             WHERE org = $1 ORDER BY created_at, id",
        )
        .bind(org.id())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Zone::try_from).collect()
    }

    pub async fn get(&self, org: &AuthorizedOrg, id: Uuid) -> Result<Option<Zone>, StoreError> {
        let row: Option<ZoneRow> = sqlx::query_as(
            "SELECT id, org, name, area, created_at, updated_at FROM zones \
             WHERE org = $1 AND id = $2",
        )
        .bind(org.id())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Zone::try_from).transpose()
    }

    pub async fn create(
        &self,
        org: &AuthorizedOrg,
        name: String,
        area: Area,
        now: SystemTime,
    ) -> Result<Zone, StoreError> {
        let id = Uuid::new_v4();
        let now = rfc3339_micros(now);
        let bounds = area.bounds();
        sqlx::query(
            "INSERT INTO zones (id, org, name, area, min_lon, min_lat, max_lon, max_lat, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id.to_string())
        .bind(org.id())
        .bind(&name)
        .bind(area_json(&area)?)
        .bind(bounds.min_lon)
        .bind(bounds.min_lat)
        .bind(bounds.max_lon)
        .bind(bounds.max_lat)
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(Zone {
            id,
            org: org.id().to_owned(),
            name,
            area,
            created_at: now.clone(),
            updated_at: now,
        })
    }

    /// Replaces name and area. `None` if the org has no such zone.
    pub async fn update(
        &self,
        org: &AuthorizedOrg,
        id: Uuid,
        name: String,
        area: Area,
        now: SystemTime,
    ) -> Result<Option<Zone>, StoreError> {
        let now = rfc3339_micros(now);
        let bounds = area.bounds();
        let created_at: Option<String> = sqlx::query_scalar(
            "UPDATE zones SET name = $1, area = $2, min_lon = $3, min_lat = $4, max_lon = $5, \
             max_lat = $6, updated_at = $7 WHERE org = $8 AND id = $9 RETURNING created_at",
        )
        .bind(&name)
        .bind(area_json(&area)?)
        .bind(bounds.min_lon)
        .bind(bounds.min_lat)
        .bind(bounds.max_lon)
        .bind(bounds.max_lat)
        .bind(&now)
        .bind(org.id())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(created_at.map(|created_at| Zone {
            id,
            org: org.id().to_owned(),
            name,
            area,
            created_at,
            updated_at: now,
        }))
    }

    /// Changes the name, the area, or both, in one statement (a JSON Merge Patch: what is not
    /// given stays as stored, so two patches of different fields never undo each other).
    /// `None` if the org has no such zone.
    ///
    /// A patch without an area is its own statement rather than the area's columns bound as
    /// NULL: sqlx 0.8's `Any` driver sends a NULL `f64` to PostgreSQL as a 4-byte float, and
    /// PostgreSQL keeps the statement prepared with those types on that connection, so the
    /// next patch that moves the area there had its 8-byte floats refused (a 500).
    pub async fn patch(
        &self,
        org: &AuthorizedOrg,
        id: Uuid,
        name: Option<String>,
        area: Option<Area>,
        now: SystemTime,
    ) -> Result<Option<Zone>, StoreError> {
        let now = rfc3339_micros(now);
        let query = match &area {
            Some(area) => {
                let bounds = area.bounds();
                sqlx::query_as(
                    "UPDATE zones SET name = COALESCE($1, name), area = $2, min_lon = $3, \
                     min_lat = $4, max_lon = $5, max_lat = $6, updated_at = $7 \
                     WHERE org = $8 AND id = $9 \
                     RETURNING id, org, name, area, created_at, updated_at",
                )
                .bind(name)
                .bind(area_json(area)?)
                .bind(bounds.min_lon)
                .bind(bounds.min_lat)
                .bind(bounds.max_lon)
                .bind(bounds.max_lat)
            }
            None => sqlx::query_as(
                "UPDATE zones SET name = COALESCE($1, name), updated_at = $2 \
                 WHERE org = $3 AND id = $4 \
                 RETURNING id, org, name, area, created_at, updated_at",
            )
            .bind(name),
        };
        let row: Option<ZoneRow> = query
            .bind(&now)
            .bind(org.id())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Zone::try_from).transpose()
    }

    /// `false` if the org has no such zone.
    pub async fn delete(&self, org: &AuthorizedOrg, id: Uuid) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM zones WHERE org = $1 AND id = $2")
            .bind(org.id())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Zones of the org whose bounding box contains the point (edges
    /// included). Candidates only: the caller runs the exact area test.
    pub async fn zones_with_bounds_containing(
        &self,
        org: &AuthorizedOrg,
        lon: f64,
        lat: f64,
    ) -> Result<Vec<Zone>, StoreError> {
        let rows: Vec<ZoneRow> = sqlx::query_as(
            "SELECT id, org, name, area, created_at, updated_at FROM zones \
             WHERE org = $1 AND min_lon <= $2 AND max_lon >= $3 AND min_lat <= $4 AND max_lat >= $5 \
             ORDER BY created_at, id",
        )
        .bind(org.id())
        .bind(lon)
        .bind(lon)
        .bind(lat)
        .bind(lat)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Zone::try_from).collect()
    }
}

fn area_json(area: &Area) -> Result<String, StoreError> {
    serde_json::to_string(area).map_err(StoreError::Encode)
}
