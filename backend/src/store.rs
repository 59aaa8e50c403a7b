//! Zone persistence: SQLite through sqlx.
//!
//! Every query that touches zones takes an [`AuthorizedOrg`] and filters on its
//! id, so one org's data can never be read or changed through another org's
//! request, even with a guessed zone id.
//!
//! This module must never build SQL from strings (values are always bound),
//! validate input (it receives an already validated [`Area`]), or answer a
//! query without the org filter.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use uuid::Uuid;

use crate::geometry::Area;
use crate::identity::AuthorizedOrg;
use zonegate_common::time::rfc3339_micros;

/// Schema migrations, compiled into the binary and applied at start.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations/backend");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
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

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the database at a `sqlite://PATH` URL and
    /// applies pending migrations.
    pub async fn open(database_url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(database_url)
            .map_err(StoreError::Url)?
            .create_if_missing(true)
            // WAL lets readers proceed while a write is in progress.
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
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
             WHERE org = ? ORDER BY created_at, id",
        )
        .bind(org.id())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Zone::try_from).collect()
    }

    pub async fn get(&self, org: &AuthorizedOrg, id: Uuid) -> Result<Option<Zone>, StoreError> {
        let row: Option<ZoneRow> = sqlx::query_as(
            "SELECT id, org, name, area, created_at, updated_at FROM zones \
             WHERE org = ? AND id = ?",
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
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "UPDATE zones SET name = ?, area = ?, min_lon = ?, min_lat = ?, max_lon = ?, \
             max_lat = ?, updated_at = ? WHERE org = ? AND id = ? RETURNING created_at",
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
    pub async fn patch(
        &self,
        org: &AuthorizedOrg,
        id: Uuid,
        name: Option<String>,
        area: Option<Area>,
        now: SystemTime,
    ) -> Result<Option<Zone>, StoreError> {
        let now = rfc3339_micros(now);
        let stored = area.as_ref().map(area_json).transpose()?;
        let bounds = area.as_ref().map(Area::bounds);
        let row: Option<ZoneRow> = sqlx::query_as(
            "UPDATE zones SET name = COALESCE(?, name), area = COALESCE(?, area), \
             min_lon = COALESCE(?, min_lon), min_lat = COALESCE(?, min_lat), \
             max_lon = COALESCE(?, max_lon), max_lat = COALESCE(?, max_lat), updated_at = ? \
             WHERE org = ? AND id = ? \
             RETURNING id, org, name, area, created_at, updated_at",
        )
        .bind(name)
        .bind(stored)
        .bind(bounds.as_ref().map(|b| b.min_lon))
        .bind(bounds.as_ref().map(|b| b.min_lat))
        .bind(bounds.as_ref().map(|b| b.max_lon))
        .bind(bounds.as_ref().map(|b| b.max_lat))
        .bind(&now)
        .bind(org.id())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Zone::try_from).transpose()
    }

    /// `false` if the org has no such zone.
    pub async fn delete(&self, org: &AuthorizedOrg, id: Uuid) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM zones WHERE org = ? AND id = ?")
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
             WHERE org = ? AND min_lon <= ? AND max_lon >= ? AND min_lat <= ? AND max_lat >= ? \
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
