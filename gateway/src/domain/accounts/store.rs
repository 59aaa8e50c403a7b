//! SQL for accounts, email tokens, sessions, refresh families, pending second-factor logins
//! and the failed-login counter. Portable between SQLite and PostgreSQL (see
//! [`crate::domain::storage`]). Functions take a connection so callers can run several in one
//! transaction. Token values never reach this module, only their hashes.

pub use crate::domain::storage::Conn;
use crate::domain::storage::Flag;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub email_verified_at: Option<i64>,
    /// Set while a platform operator has the account disabled.
    pub disabled_at: Option<i64>,
}

const USER_COLUMNS: &str = "id, email, password_hash, email_verified_at, disabled_at";

pub async fn user_by_email(c: &mut Conn, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
    sqlx::query_as(&sql).bind(email).fetch_optional(c).await
}

pub async fn user_by_id(c: &mut Conn, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    sqlx::query_as(&sql).bind(id).fetch_optional(c).await
}

pub async fn insert_user(
    c: &mut Conn,
    id: &str,
    email: &str,
    password_hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    // ON CONFLICT keeps a concurrent second signup from failing loudly: it simply adds nothing.
    let done = sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at, password_changed_at)
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (email) DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(now)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_password(
    c: &mut Conn,
    user_id: &str,
    hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Replace a hash after a login verified the password against it (a new pepper or cost). Only
/// if it is still the hash that was verified: a password changed meanwhile wins. Unlike
/// [`set_password`] this is not a password change, so sessions are untouched.
pub async fn replace_password_hash(
    c: &mut Conn,
    user_id: &str,
    verified: &str,
    rehashed: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(rehashed)
            .bind(user_id)
            .bind(verified)
            .execute(c)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Passwords hashed under the pepper `key_id`.
pub async fn count_passwords_under(c: &mut Conn, key_id: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE password_hash LIKE $1")
        .bind(format!("zg1${key_id}$%"))
        .fetch_one(c)
        .await?;
    Ok(n)
}

/// Live logins (not revoked, not past their absolute or idle expiry) whose CSRF token was
/// made under the pepper `key_id`, or under an unrecorded one (logins older than the record).
pub async fn count_logins_under(
    c: &mut Conn,
    key_id: &str,
    now: i64,
    idle_since: i64,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM refresh_families
         WHERE (csrf_key = $1 OR csrf_key IS NULL)
           AND revoked_at IS NULL AND absolute_expires_at > $2 AND last_used_at >= $3",
    )
    .bind(key_id)
    .bind(now)
    .bind(idle_since)
    .fetch_one(c)
    .await?;
    Ok(n)
}

pub async fn mark_verified(c: &mut Conn, user_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .execute(c)
    .await?;
    Ok(())
}

// ---- Email tokens ----------------------------------------------------------------------

pub async fn insert_email_token(
    c: &mut Conn,
    hash: &str,
    user_id: &str,
    purpose: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash)
    .bind(user_id)
    .bind(purpose)
    .bind(now)
    .bind(expires_at)
    .execute(c)
    .await?;
    Ok(())
}

/// The user of an unused, unexpired email token of `purpose`, without spending it (a reset
/// checks the token before the new password, so a weak password does not burn the link).
pub async fn peek_email_token(
    c: &mut Conn,
    hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT user_id FROM email_tokens
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(hash)
    .bind(purpose)
    .bind(now)
    .fetch_optional(c)
    .await?;
    Ok(row.map(|(user_id,)| user_id))
}

/// Spend an unused, unexpired email token of `purpose`; returns its user. Single use is
/// enforced by the conditional update, which comes first (so on SQLite the write lock is taken
/// by the transaction's first statement): two concurrent uses cannot both succeed.
pub async fn spend_email_token(
    c: &mut Conn,
    hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let spent = sqlx::query(
        "UPDATE email_tokens SET used_at = $1
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(hash)
    .bind(purpose)
    .execute(&mut *c)
    .await?;
    if spent.rows_affected() != 1 {
        return Ok(None);
    }
    let row: Option<(String,)> =
        sqlx::query_as("SELECT user_id FROM email_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|(user_id,)| user_id))
}

/// When the newest token of `purpose` for a user was made.
pub async fn latest_email_token(
    c: &mut Conn,
    user_id: &str,
    purpose: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let (latest,): (Option<i64>,) = sqlx::query_as(
        "SELECT MAX(created_at) FROM email_tokens WHERE user_id = $1 AND purpose = $2",
    )
    .bind(user_id)
    .bind(purpose)
    .fetch_one(c)
    .await?;
    Ok(latest)
}

/// Invalidate every unused token of `purpose` for a user (a password change voids reset links).
pub async fn void_email_tokens(
    c: &mut Conn,
    user_id: &str,
    purpose: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL")
        .bind(now)
        .bind(user_id)
        .bind(purpose)
        .execute(c)
        .await?;
    Ok(())
}

// ---- Refresh families and tokens ---------------------------------------------------------

/// A new login's family; `csrf_key` is the pepper key id its CSRF token is made with.
pub async fn insert_family(
    c: &mut Conn,
    id: &str,
    user_id: &str,
    mfa: bool,
    now: i64,
    absolute_expires_at: i64,
    csrf_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_families (id, user_id, mfa, created_at, absolute_expires_at, last_used_at, csrf_key)
         VALUES ($1, $2, $3, $4, $5, $4, $6)",
    )
    .bind(id)
    .bind(user_id)
    .bind(mfa)
    .bind(now)
    .bind(absolute_expires_at)
    .bind(csrf_key)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn insert_refresh(
    c: &mut Conn,
    hash: &str,
    family_id: &str,
    parent: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(family_id)
        .bind(parent)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub family_id: String,
    pub user_id: String,
    #[sqlx(try_from = "Flag")]
    pub mfa: bool,
    pub rotated_at: Option<i64>,
    pub absolute_expires_at: i64,
    pub last_used_at: i64,
    pub revoked_at: Option<i64>,
}

pub async fn refresh_by_hash(c: &mut Conn, hash: &str) -> Result<Option<RefreshRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.family_id, f.user_id, f.mfa, t.rotated_at, f.absolute_expires_at,
                f.last_used_at, f.revoked_at
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
         WHERE t.token_hash = $1",
    )
    .bind(hash)
    .fetch_optional(c)
    .await
}

/// Mark a token rotated if nobody has yet. True for the one caller that wins.
pub async fn claim_rotation(c: &mut Conn, hash: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL",
    )
    .bind(now)
    .bind(hash)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claim the one concurrent-refresh sibling of a token rotated between `since` and `now`. A
/// rotation after `now` means the clock was set back since: that is no concurrent refresh,
/// and the presentation is treated as reuse.
pub async fn claim_grace(
    c: &mut Conn,
    hash: &str,
    since: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET grace_used = $1
         WHERE token_hash = $2 AND rotated_at IS NOT NULL AND rotated_at >= $3
           AND rotated_at <= $5 AND grace_used = $4",
    )
    .bind(true)
    .bind(hash)
    .bind(since)
    .bind(false)
    .bind(now)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A refresh: the family was used now, and its CSRF token is re-issued under `csrf_key`.
pub async fn touch_family(
    c: &mut Conn,
    family_id: &str,
    now: i64,
    csrf_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_families SET last_used_at = $1, csrf_key = $2 WHERE id = $3")
        .bind(now)
        .bind(csrf_key)
        .bind(family_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Revoke a family and every session made from it.
pub async fn revoke_family(
    c: &mut Conn,
    family_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(reason)
        .bind(family_id)
        .execute(&mut *c)
        .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(family_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Revoke every family (and so every session) of a user, except `keep` if given.
pub async fn revoke_user_families(
    c: &mut Conn,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let keep = keep.unwrap_or("");
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2
         WHERE user_id = $3 AND id <> $4 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(user_id)
    .bind(keep)
    .execute(&mut *c)
    .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND family_id <> $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .bind(keep)
        .execute(c)
        .await?;
    Ok(())
}

// ---- Sessions -----------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
pub async fn insert_session(
    c: &mut Conn,
    hash: &str,
    public_id: &str,
    user_id: &str,
    family_id: &str,
    now: i64,
    expires_at: i64,
    user_agent: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, public_id, user_id, family_id, created_at, expires_at, user_agent)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(hash)
    .bind(public_id)
    .bind(user_id)
    .bind(family_id)
    .bind(now)
    .bind(expires_at)
    .bind(user_agent)
    .execute(c)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub public_id: String,
    pub user_id: String,
    pub family_id: String,
    pub email: String,
    pub email_verified_at: Option<i64>,
    #[sqlx(try_from = "Flag")]
    pub mfa: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A live session: not revoked, not expired, its family not revoked.
pub async fn live_session(
    c: &mut Conn,
    hash: &str,
    now: i64,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.public_id, s.user_id, s.family_id, s.created_at, s.expires_at, u.email,
                u.email_verified_at, f.mfa
         FROM sessions s
         JOIN users u ON u.id = s.user_id
         JOIN refresh_families f ON f.id = s.family_id
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
           AND f.revoked_at IS NULL AND u.disabled_at IS NULL",
    )
    .bind(hash)
    .bind(now)
    .fetch_optional(c)
    .await
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct SessionListing {
    #[sqlx(rename = "public_id")]
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub user_agent: Option<String>,
}

pub async fn list_sessions(
    c: &mut Conn,
    user_id: &str,
    now: i64,
) -> Result<Vec<SessionListing>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.public_id, s.created_at, s.expires_at, s.user_agent
         FROM sessions s JOIN refresh_families f ON f.id = s.family_id
         WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND f.revoked_at IS NULL
         ORDER BY s.created_at, s.public_id",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(c)
    .await
}

/// Revoke one live session by its public id, only if it belongs to `user_id`. False if there
/// is no such session.
pub async fn revoke_session_by_public_id(
    c: &mut Conn,
    user_id: &str,
    public_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $1
         WHERE public_id = $2 AND user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(public_id)
    .bind(user_id)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke_session_by_hash(c: &mut Conn, hash: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(hash)
        .execute(c)
        .await?;
    Ok(())
}

/// End every pending second-factor login of a user: after a password change or reset, or a
/// change of the second factor, a password step taken before it must not complete.
pub async fn void_pending_logins(c: &mut Conn, user_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE pending_logins SET completed_at = $1 WHERE user_id = $2 AND completed_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .execute(c)
    .await?;
    Ok(())
}

/// Start a pending second-factor login (its token hashed).
pub async fn insert_pending_login(
    c: &mut Conn,
    hash: &str,
    user_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pending_logins (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(user_id)
    .bind(now)
    .bind(expires_at)
    .execute(c)
    .await?;
    Ok(())
}

/// Count one attempt on a live pending login, atomically and only while fewer than `limit`
/// were made; returns its user when counted. Parallel submissions cannot exceed the limit.
pub async fn count_pending_attempt(
    c: &mut Conn,
    hash: &str,
    now: i64,
    limit: i64,
) -> Result<Option<String>, sqlx::Error> {
    let counted = sqlx::query(
        "UPDATE pending_logins SET attempts = attempts + 1
         WHERE token_hash = $1 AND completed_at IS NULL AND expires_at > $2 AND attempts < $3",
    )
    .bind(hash)
    .bind(now)
    .bind(limit)
    .execute(&mut *c)
    .await?;
    if counted.rows_affected() != 1 {
        return Ok(None);
    }
    let row: Option<(String,)> =
        sqlx::query_as("SELECT user_id FROM pending_logins WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|(user_id,)| user_id))
}

/// Attempts made on a user's pending logins created after `since`.
pub async fn recent_pending_attempts(
    c: &mut Conn,
    user_id: &str,
    since: i64,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM pending_logins
         WHERE user_id = $1 AND created_at > $2",
    )
    .bind(user_id)
    .bind(since)
    .fetch_one(c)
    .await?;
    Ok(n)
}

/// Complete a pending login, once; its successful attempt stops counting against the account.
pub async fn complete_pending_login(
    c: &mut Conn,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE pending_logins SET completed_at = $1, attempts = attempts - 1
         WHERE token_hash = $2 AND completed_at IS NULL",
    )
    .bind(now)
    .bind(hash)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The failed-login counter and the time of the last counted failure.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct LockoutRow {
    pub failed_logins: i64,
    pub last_failed_at: Option<i64>,
}

pub async fn lockout_state(c: &mut Conn, user_id: &str) -> Result<LockoutRow, sqlx::Error> {
    let row: Option<LockoutRow> =
        sqlx::query_as("SELECT failed_logins, last_failed_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(c)
            .await?;
    Ok(row.unwrap_or_default())
}

/// Count one failure atomically; returns the new count (0 for an unknown user).
pub async fn record_failed_login(
    c: &mut Conn,
    user_id: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE users SET failed_logins = failed_logins + 1, last_failed_at = $1 WHERE id = $2 \
         RETURNING failed_logins",
    )
    .bind(now)
    .bind(user_id)
    .fetch_optional(c)
    .await?;
    Ok(row.map_or(0, |(n,)| n))
}

/// Clear the counter. Writes only when there is something to clear, so a normal login costs
/// no write.
pub async fn clear_failed_logins(c: &mut Conn, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET failed_logins = 0, last_failed_at = NULL WHERE id = $1 AND failed_logins <> 0",
    )
    .bind(user_id)
    .execute(c)
    .await?;
    Ok(())
}

// ---- Device cookies (lockout.rs) ---------------------------------------------------------------

/// The failed-login counter of a device cookie, if the token is a device of this user.
pub async fn device_lockout(
    c: &mut Conn,
    token_hash: &str,
    user_id: &str,
) -> Result<Option<LockoutRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT failed_logins, last_failed_at FROM login_devices \
         WHERE token_hash = $1 AND user_id = $2",
    )
    .bind(token_hash)
    .bind(user_id)
    .fetch_optional(c)
    .await
}

/// Count one failure against a device, atomically.
pub async fn record_device_failure(
    c: &mut Conn,
    token_hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE login_devices SET failed_logins = failed_logins + 1, last_failed_at = $1 \
         WHERE token_hash = $2",
    )
    .bind(now)
    .bind(token_hash)
    .execute(c)
    .await?;
    Ok(())
}

/// A successful login from a device: remember it (or refresh it, clearing its counter), and
/// forget this user's devices unused since `stale_before`.
pub async fn device_login(
    c: &mut Conn,
    token_hash: &str,
    user_id: &str,
    now: i64,
    stale_before: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_devices (token_hash, user_id, created_at, last_login_at) \
         VALUES ($1, $2, $3, $3) \
         ON CONFLICT (token_hash) DO UPDATE SET last_login_at = excluded.last_login_at, \
         failed_logins = 0, last_failed_at = NULL \
         WHERE login_devices.user_id = excluded.user_id",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(now)
    .execute(&mut *c)
    .await?;
    sqlx::query("DELETE FROM login_devices WHERE user_id = $1 AND last_login_at < $2")
        .bind(user_id)
        .bind(stale_before)
        .execute(c)
        .await?;
    Ok(())
}

// ---- Platform administration ---------------------------------------------------------------

/// What a platform operator sees of a user: no hash, no token.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PlatformUserRow {
    pub id: String,
    pub email: String,
    pub created_at: i64,
    pub email_verified_at: Option<i64>,
    pub disabled_at: Option<i64>,
    #[sqlx(try_from = "Flag")]
    pub mfa: bool,
    /// Logins (refresh families) not revoked and not past their absolute expiry.
    pub live_logins: i64,
    /// Orgs the user is a member of.
    pub orgs: i64,
}

const PLATFORM_USER_COLUMNS: &str = "u.id, u.email, u.created_at, u.email_verified_at, u.disabled_at,
    EXISTS (SELECT 1 FROM totp_credentials t WHERE t.user_id = u.id AND t.state = 'active') AS mfa,
    (SELECT COUNT(*) FROM refresh_families f
      WHERE f.user_id = u.id AND f.revoked_at IS NULL AND f.absolute_expires_at > $1) AS live_logins,
    (SELECT COUNT(*) FROM memberships m WHERE m.user_id = u.id) AS orgs";

pub async fn platform_user(
    c: &mut Conn,
    id: &str,
    now: i64,
) -> Result<Option<PlatformUserRow>, sqlx::Error> {
    let sql = format!("SELECT {PLATFORM_USER_COLUMNS} FROM users u WHERE u.id = $2");
    sqlx::query_as(&sql)
        .bind(now)
        .bind(id)
        .fetch_optional(c)
        .await
}

/// Users whose id is `query` or whose email contains it (case-insensitive), by email.
pub async fn find_users(
    c: &mut Conn,
    query: &str,
    limit: i64,
    now: i64,
) -> Result<Vec<PlatformUserRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {PLATFORM_USER_COLUMNS} FROM users u
         WHERE u.id = $2 OR u.email LIKE $3 ESCAPE '\\'
         ORDER BY u.email LIMIT $4"
    );
    sqlx::query_as(&sql)
        .bind(now)
        .bind(query)
        .bind(crate::domain::storage::contains_pattern(
            &query.to_lowercase(),
        ))
        .bind(limit)
        .fetch_all(c)
        .await
}

/// Disable (`Some(now)`) or re-enable (`None`) a user; whether the user exists.
pub async fn set_disabled(
    c: &mut Conn,
    id: &str,
    disabled_at: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
        .bind(disabled_at)
        .bind(id)
        .execute(c)
        .await?;
    Ok(done.rows_affected() == 1)
}
