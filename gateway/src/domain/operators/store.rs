//! SQL for operators and their sessions. Portable between SQLite and PostgreSQL (see
//! [`crate::domain::storage`]). Token values never reach this module, only their hashes.

pub use crate::domain::storage::Conn;

#[derive(Clone, sqlx::FromRow)]
pub struct OperatorRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub totp_sealed: String,
    pub failed_logins: i64,
    pub last_failed_at: Option<i64>,
    pub disabled_at: Option<i64>,
}

impl std::fmt::Debug for OperatorRow {
    // The hash and the sealed seed are not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("failed_logins", &self.failed_logins)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

/// What `operators list` shows: no hash, no seed.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct OperatorListing {
    pub id: String,
    pub email: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub disabled_at: Option<i64>,
}

pub async fn by_email(c: &mut Conn, email: &str) -> Result<Option<OperatorRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, password_hash, totp_sealed, failed_logins, last_failed_at, disabled_at
         FROM operators WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(c)
    .await
}

pub async fn insert(
    c: &mut Conn,
    id: &str,
    email: &str,
    password_hash: &str,
    totp_sealed: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO operators (id, email, password_hash, totp_sealed, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(totp_sealed)
    .bind(now)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list(c: &mut Conn) -> Result<Vec<OperatorListing>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, created_at, last_login_at, disabled_at FROM operators ORDER BY email",
    )
    .fetch_all(c)
    .await
}

/// Disable (`Some(now)`) or re-enable (`None`) an operator; whether one was found. Either
/// also clears the failed-login count: enabling is how another operator unblocks an account
/// someone slowed down by guessing.
pub async fn set_disabled(
    c: &mut Conn,
    email: &str,
    disabled_at: Option<i64>,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE operators SET disabled_at = $1, failed_logins = 0, last_failed_at = NULL
         WHERE email = $2 RETURNING id",
    )
    .bind(disabled_at)
    .bind(email)
    .fetch_optional(c)
    .await?;
    Ok(row.map(|(id,)| id))
}

/// Accept a TOTP step for an operator: checked and recorded in one statement, so a code is
/// accepted once across every instance, and not against a seed replaced meanwhile.
pub async fn accept_step(
    c: &mut Conn,
    id: &str,
    sealed: &str,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operators SET totp_last_step = $1
         WHERE id = $2 AND totp_sealed = $3 AND totp_last_step < $1",
    )
    .bind(step)
    .bind(id)
    .bind(sealed)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn record_failure(c: &mut Conn, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operators SET failed_logins = failed_logins + 1, last_failed_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn record_login(c: &mut Conn, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operators SET failed_logins = 0, last_failed_at = NULL, last_login_at = $1
         WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// Replace a password hash, only if it is still the one that was verified.
pub async fn replace_password_hash(
    c: &mut Conn,
    id: &str,
    old: &str,
    new: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE operators SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new)
            .bind(id)
            .bind(old)
            .execute(c)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Seeds sealed under a `totp` key other than `active`, by id, after `after`.
pub async fn sealed_not_under(
    c: &mut Conn,
    active: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, totp_sealed FROM operators
         WHERE totp_sealed NOT LIKE $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(format!("zt1${active}$%"))
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await
}

pub async fn reseal(c: &mut Conn, id: &str, old: &str, new: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE operators SET totp_sealed = $1 WHERE id = $2 AND totp_sealed = $3")
            .bind(new)
            .bind(id)
            .bind(old)
            .execute(c)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Operators' passwords hashed under the pepper `key_id`.
pub async fn count_passwords_under(c: &mut Conn, key_id: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM operators WHERE password_hash LIKE $1")
        .bind(format!("zg1${key_id}$%"))
        .fetch_one(c)
        .await?;
    Ok(n)
}

/// Operators' TOTP seeds sealed under the `totp` key `key_id`.
pub async fn count_sealed_under(c: &mut Conn, key_id: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM operators WHERE totp_sealed LIKE $1")
        .bind(format!("zt1${key_id}$%"))
        .fetch_one(c)
        .await?;
    Ok(n)
}

// ---- Sessions -----------------------------------------------------------------------------

pub async fn insert_session(
    c: &mut Conn,
    hash: &str,
    id: &str,
    operator_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO operator_sessions (token_hash, id, operator_id, created_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(hash)
    .bind(id)
    .bind(operator_id)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub operator_id: String,
    pub email: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// A session that has not ended, of an operator who is not disabled. Whether it is past its
/// idle or absolute time is for the caller to decide (with its clock and its config).
pub async fn open_session(c: &mut Conn, hash: &str) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, s.operator_id, o.email, s.created_at, s.last_seen_at
         FROM operator_sessions s JOIN operators o ON o.id = s.operator_id
         WHERE s.token_hash = $1 AND s.ended_at IS NULL AND o.disabled_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(c)
    .await
}

/// Extend a session's idle time, only while it is still open and within it (`idle_since`): a
/// session that timed out is not revived by a request racing its expiry.
pub async fn touch_session(
    c: &mut Conn,
    id: &str,
    now: i64,
    idle_since: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operator_sessions SET last_seen_at = $1
         WHERE id = $2 AND ended_at IS NULL AND last_seen_at >= $3",
    )
    .bind(now)
    .bind(id)
    .bind(idle_since)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn end_session(c: &mut Conn, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operator_sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn end_session_by_hash(c: &mut Conn, hash: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operator_sessions SET ended_at = $1 WHERE token_hash = $2 AND ended_at IS NULL",
    )
    .bind(now)
    .bind(hash)
    .execute(c)
    .await?;
    Ok(())
}

/// Delete sessions that ended or passed their absolute time before `before` (Unix seconds):
/// nothing can use them, and they would otherwise pile up. Returns how many.
pub async fn purge_sessions(c: &mut Conn, before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM operator_sessions WHERE ended_at < $1 OR created_at < $1")
        .bind(before)
        .execute(c)
        .await?;
    Ok(done.rows_affected())
}

pub async fn end_sessions_of(
    c: &mut Conn,
    operator_id: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operator_sessions SET ended_at = $1 WHERE operator_id = $2 AND ended_at IS NULL",
    )
    .bind(now)
    .bind(operator_id)
    .execute(c)
    .await?;
    Ok(done.rows_affected())
}
