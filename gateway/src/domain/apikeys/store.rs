//! SQL for API keys. Portable between SQLite and PostgreSQL (see [`crate::domain::storage`]).
//! Key secrets never reach this module: only their HMAC under a pepper named by its key id.
//! A key's scopes are rows of `api_key_scopes`.

use super::KeyView;
use crate::domain::storage::{Conn, Db};

/// What verification needs of a key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRecord {
    pub org_id: String,
    pub secret_mac: String,
    pub pepper_id: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub previous_mac: Option<String>,
    pub previous_pepper_id: Option<String>,
    pub previous_valid_until: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: String,
    hint: String,
    created_by: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct ScopeRow {
    key_id: String,
    scope: String,
}

/// A new key's stored form.
#[derive(Debug)]
pub struct NewKey<'a> {
    pub id: &'a str,
    pub org_id: &'a str,
    pub name: &'a str,
    pub scopes: &'a [String],
    pub secret_mac: &'a str,
    pub pepper_id: &'a str,
    pub hint: &'a str,
    pub created_by: &'a str,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

pub async fn insert(c: &mut Conn, k: &NewKey<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, secret_mac, pepper_id, hint, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(k.id)
    .bind(k.org_id)
    .bind(k.name)
    .bind(k.secret_mac)
    .bind(k.pepper_id)
    .bind(k.hint)
    .bind(k.created_by)
    .bind(k.created_at)
    .bind(k.expires_at)
    .execute(&mut *c)
    .await?;
    for scope in k.scopes {
        sqlx::query("INSERT INTO api_key_scopes (key_id, scope) VALUES ($1, $2)")
            .bind(k.id)
            .bind(scope)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// A key's scopes, sorted.
pub async fn scopes(c: &mut Conn, key_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<ScopeRow> =
        sqlx::query_as("SELECT key_id, scope FROM api_key_scopes WHERE key_id = $1 ORDER BY scope")
            .bind(key_id)
            .fetch_all(c)
            .await?;
    Ok(rows.into_iter().map(|r| r.scope).collect())
}

/// Every key of an org, oldest first, with its scopes.
pub async fn list(c: &mut Conn, org_id: &str) -> Result<Vec<KeyView>, sqlx::Error> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT id, name, hint, created_by, created_at, expires_at, last_used_at, revoked_at
         FROM api_keys WHERE org_id = $1 ORDER BY created_at, id",
    )
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?;
    let scopes: Vec<ScopeRow> = sqlx::query_as(
        "SELECT s.key_id, s.scope FROM api_key_scopes s JOIN api_keys k ON k.id = s.key_id
         WHERE k.org_id = $1 ORDER BY s.key_id, s.scope",
    )
    .bind(org_id)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| KeyView {
            scopes: scopes
                .iter()
                .filter(|s| s.key_id == r.id)
                .map(|s| s.scope.clone())
                .collect(),
            id: r.id,
            name: r.name,
            hint: r.hint,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        })
        .collect())
}

/// Revoke a live key of the org. False if there is none.
pub async fn revoke(
    c: &mut Conn,
    org_id: &str,
    key_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(key_id)
    .bind(org_id)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revoke every live key of an org; returns the ids revoked.
pub async fn revoke_all(c: &mut Conn, org_id: &str, now: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND revoked_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(org_id)
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// A new secret for a live key of the org, keeping the current one valid until
/// `previous_valid_until`. False if there is no such key.
#[allow(clippy::too_many_arguments)]
pub async fn roll(
    c: &mut Conn,
    org_id: &str,
    key_id: &str,
    secret_mac: &str,
    pepper_id: &str,
    hint: &str,
    previous_valid_until: i64,
) -> Result<bool, sqlx::Error> {
    // The current secret becomes the previous one in the same statement, so two concurrent
    // rolls cannot both keep the original secret alive.
    let done = sqlx::query(
        "UPDATE api_keys SET previous_mac = secret_mac, previous_pepper_id = pepper_id,
                previous_valid_until = $1, secret_mac = $2, pepper_id = $3, hint = $4
         WHERE id = $5 AND org_id = $6 AND revoked_at IS NULL",
    )
    .bind(previous_valid_until)
    .bind(secret_mac)
    .bind(pepper_id)
    .bind(hint)
    .bind(key_id)
    .bind(org_id)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What verification needs of a key, with its scopes.
pub async fn record(
    c: &mut Conn,
    key_id: &str,
) -> Result<Option<(KeyRecord, Vec<String>)>, sqlx::Error> {
    let row: Option<KeyRecord> = sqlx::query_as(
        "SELECT org_id, secret_mac, pepper_id, expires_at, revoked_at, previous_mac,
                previous_pepper_id, previous_valid_until FROM api_keys WHERE id = $1",
    )
    .bind(key_id)
    .fetch_optional(&mut *c)
    .await?;
    match row {
        Some(record) => Ok(Some((record, scopes(c, key_id).await?))),
        None => Ok(None),
    }
}

/// Record last-used times (only ever moving forward).
pub async fn touch(db: &Db, batch: &[(String, i64)]) -> Result<(), sqlx::Error> {
    for (id, at) in batch {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(*at)
        .bind(id)
        .execute(db.pool())
        .await?;
    }
    Ok(())
}

/// Usable API keys whose MAC was made with the pepper `key_id`: live keys (not revoked, not
/// expired) under it, and rolled keys whose previous secret still verifies under it.
pub async fn count_under(c: &mut Conn, key_id: &str, now: i64) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM api_keys
         WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
           AND (pepper_id = $1 OR (previous_pepper_id = $1 AND previous_valid_until > $2))",
    )
    .bind(key_id)
    .bind(now)
    .fetch_one(c)
    .await?;
    Ok(n)
}
