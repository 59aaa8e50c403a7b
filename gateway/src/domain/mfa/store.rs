//! SQL for TOTP credentials and recovery codes. Portable between SQLite and PostgreSQL (see
//! [`crate::domain::storage`]). Seeds reach this module only sealed, codes only hashed.
//!
//! Every "use once" rule is a conditional UPDATE whose `rows_affected` decides, so it holds
//! across connections, sessions and gateway instances without any in-process lock. Functions
//! that change several rows open a transaction on the connection they are given (a savepoint if
//! the caller already has one open).

use sqlx::Connection;

use crate::domain::storage::Conn;

const PENDING: &str = "pending";
const ACTIVE: &str = "active";

/// The confirmed credential a login is checked against.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveTotp {
    /// The sealed seed (ciphertext; see [`super::seal`]).
    #[sqlx(rename = "sealed_secret")]
    pub sealed: String,
    /// The last accepted time step; a code for this step or an earlier one is a replay.
    pub last_step: Option<i64>,
    pub confirmed_at: Option<i64>,
}

/// Store a new, unconfirmed seed, replacing any earlier unconfirmed one. An active credential is
/// left alone: it keeps working until [`confirm`] replaces it.
pub async fn begin_enrolment(
    c: &mut Conn,
    user_id: &str,
    sealed: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO totp_credentials (user_id, state, sealed_secret, created_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, state)
         DO UPDATE SET sealed_secret = excluded.sealed_secret, created_at = excluded.created_at",
    )
    .bind(user_id)
    .bind(PENDING)
    .bind(sealed)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

/// The sealed seed of the unconfirmed enrolment, with when it was made.
pub async fn pending(c: &mut Conn, user_id: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sealed_secret, created_at FROM totp_credentials WHERE user_id = $1 AND state = $2",
    )
    .bind(user_id)
    .bind(PENDING)
    .fetch_optional(c)
    .await
}

pub async fn active(c: &mut Conn, user_id: &str) -> Result<Option<ActiveTotp>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sealed_secret, last_step, confirmed_at FROM totp_credentials
         WHERE user_id = $1 AND state = $2",
    )
    .bind(user_id)
    .bind(ACTIVE)
    .fetch_optional(c)
    .await
}

/// Whether the user has a confirmed TOTP credential.
pub async fn has_totp(c: &mut Conn, user_id: &str) -> Result<bool, sqlx::Error> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM totp_credentials WHERE user_id = $1 AND state = $2")
            .bind(user_id)
            .bind(ACTIVE)
            .fetch_one(c)
            .await?;
    Ok(n > 0)
}

/// Make the pending seed `sealed` the active credential, with `step` (the step of the code that
/// confirmed it) as its last accepted step, and replace the recovery codes with
/// `recovery_hashes`, all in one transaction. Returns false, changing nothing, if the pending
/// seed is no longer `sealed` (a concurrent re-enrolment or a concurrent confirmation won).
pub async fn confirm(
    c: &mut Conn,
    user_id: &str,
    sealed: &str,
    step: i64,
    recovery_hashes: &[String],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = c.begin().await?;
    // The old active row must go first: (user_id, state) is the primary key.
    sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1 AND state = $2")
        .bind(user_id)
        .bind(ACTIVE)
        .execute(&mut *tx)
        .await?;
    let moved = sqlx::query(
        "UPDATE totp_credentials SET state = $1, confirmed_at = $2, last_step = $3
         WHERE user_id = $4 AND state = $5 AND sealed_secret = $6",
    )
    .bind(ACTIVE)
    .bind(now)
    .bind(step)
    .bind(user_id)
    .bind(PENDING)
    .bind(sealed)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    // Codes belonged to the credential being replaced; the new one gets a fresh set.
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    for hash in recovery_hashes {
        sqlx::query(
            "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Record `step` as used for the active credential `sealed`, if it is later than every step
/// used before. Exactly one of any number of concurrent calls with the same step succeeds; a
/// call made with a seed that has meanwhile been replaced or disabled fails.
pub async fn accept_step(
    c: &mut Conn,
    user_id: &str,
    sealed: &str,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE totp_credentials SET last_step = $1
         WHERE user_id = $2 AND state = $3 AND sealed_secret = $4
           AND (last_step IS NULL OR last_step < $1)",
    )
    .bind(step)
    .bind(user_id)
    .bind(ACTIVE)
    .bind(sealed)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Spend an unused recovery code by its hash. Exactly one of concurrent uses succeeds.
pub async fn spend_recovery_code(
    c: &mut Conn,
    user_id: &str,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recovery_codes SET used_at = $1
         WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .bind(hash)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many recovery codes the user has not used yet.
pub async fn recovery_codes_left(c: &mut Conn, user_id: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(c)
    .await?;
    Ok(n)
}

/// Remove every TOTP credential (active and pending) and recovery code of the user, in one
/// transaction. Returns whether an active credential existed.
pub async fn disable(c: &mut Conn, user_id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = c.begin().await?;
    let active = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1 AND state = $2")
        .bind(user_id)
        .bind(ACTIVE)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(active.rows_affected() == 1)
}

/// A stored seed, for re-sealing under the active key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedSeed {
    pub user_id: String,
    pub state: String,
    #[sqlx(rename = "sealed_secret")]
    pub sealed: String,
}

fn sealed_under(key_id: &str) -> String {
    format!("zt1${key_id}$%")
}

/// Up to `limit` seeds not sealed under `key_id`, ordered by (user, state) and starting after
/// `after` (a page's last row; `("", "")` for the first page).
pub async fn sealed_not_under(
    c: &mut Conn,
    key_id: &str,
    after: (&str, &str),
    limit: i64,
) -> Result<Vec<SealedSeed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, state, sealed_secret FROM totp_credentials
         WHERE sealed_secret NOT LIKE $1 AND (user_id > $2 OR (user_id = $2 AND state > $3))
         ORDER BY user_id, state LIMIT $4",
    )
    .bind(sealed_under(key_id))
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(c)
    .await
}

/// Replace a seed's sealed text with `resealed` (the same seed under another key), only if it
/// is still `seed.sealed`: a re-enrolment, confirmation or disable meanwhile wins.
pub async fn reseal(c: &mut Conn, seed: &SealedSeed, resealed: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE totp_credentials SET sealed_secret = $1
         WHERE user_id = $2 AND state = $3 AND sealed_secret = $4",
    )
    .bind(resealed)
    .bind(&seed.user_id)
    .bind(&seed.state)
    .bind(&seed.sealed)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Delete enrolments never confirmed and made before `before`: they can no longer be confirmed.
pub async fn prune_stale_enrolments(c: &mut Conn, before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM totp_credentials WHERE state = $1 AND created_at < $2")
        .bind(PENDING)
        .bind(before)
        .execute(c)
        .await?;
    Ok(done.rows_affected())
}

/// Seeds sealed under `key_id` that can still be used: active ones, and pending ones made at
/// or after `pending_since`.
pub async fn count_sealed_under(
    c: &mut Conn,
    key_id: &str,
    pending_since: i64,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM totp_credentials
         WHERE sealed_secret LIKE $1 AND (state = $2 OR created_at >= $3)",
    )
    .bind(sealed_under(key_id))
    .bind(ACTIVE)
    .bind(pending_since)
    .fetch_one(c)
    .await?;
    Ok(n)
}
