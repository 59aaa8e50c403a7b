//! SQL for orgs, memberships and invitations. Portable between SQLite and PostgreSQL (see
//! [`crate::domain::storage`]). Invitation tokens reach this module only hashed.
//!
//! Invariants that must hold under concurrency: an invitation is spent by a conditional
//! UPDATE; a membership change runs in a transaction that first takes the org's row lock
//! ([`lock_org`]: a write, so SQLite's single writer and PostgreSQL's row lock both serialise
//! changes to one org), then makes the change in one statement whose WHERE clause counts the
//! other owners. Two owners demoting each other at once: one wins, the other is refused.

use super::{MemberView, OrgFacts, OrgView, Role};
use crate::domain::storage::{Conn, Flag};

#[derive(Debug, sqlx::FromRow)]
struct FactsRow {
    suspended_at: Option<i64>,
    #[sqlx(try_from = "Flag")]
    require_mfa: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct OrgRow {
    id: String,
    name: String,
    created_at: i64,
    #[sqlx(try_from = "Flag")]
    require_mfa: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct MyOrgRow {
    id: String,
    name: String,
    created_at: i64,
    #[sqlx(try_from = "Flag")]
    require_mfa: bool,
    #[sqlx(try_from = "String")]
    role: Role,
}

#[derive(Debug, sqlx::FromRow)]
struct MemberRow {
    user_id: String,
    email: String,
    #[sqlx(try_from = "String")]
    role: Role,
    created_at: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct RoleRow {
    #[sqlx(try_from = "String")]
    role: Role,
}

/// What a platform admin sees of an org.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PlatformOrgRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub suspended_at: Option<i64>,
    #[sqlx(try_from = "Flag")]
    pub require_mfa: bool,
    pub members: i64,
}

/// A pending invitation, as spent.
#[derive(Debug, sqlx::FromRow)]
pub struct InvitationRow {
    pub org_id: String,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
}

/// A pending invitation, as read before accepting it.
#[derive(Debug, sqlx::FromRow)]
pub struct InvitationPeek {
    pub org_id: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub invited_by: String,
}

/// A pending invitation, as an org's admins see it (never the token or its hash).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PendingInvitation {
    pub id: String,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub invited_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

pub async fn facts(c: &mut Conn, org_id: &str) -> Result<Option<OrgFacts>, sqlx::Error> {
    let row: Option<FactsRow> =
        sqlx::query_as("SELECT suspended_at, require_mfa FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|r| OrgFacts {
        id: org_id.to_owned(),
        suspended: r.suspended_at.is_some(),
        require_mfa: r.require_mfa,
    }))
}

pub async fn set_require_mfa(
    c: &mut Conn,
    org_id: &str,
    require: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE orgs SET require_mfa = $1 WHERE id = $2")
        .bind(require)
        .bind(org_id)
        .execute(c)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Suspend (keeping the first suspension time) or reinstate. False if there is no such org.
pub async fn set_suspended(
    c: &mut Conn,
    org_id: &str,
    suspended: bool,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = if suspended {
        "UPDATE orgs SET suspended_at = COALESCE(suspended_at, $1) WHERE id = $2"
    } else {
        "UPDATE orgs SET suspended_at = NULL WHERE id = $2 AND $1 = $1"
    };
    let done = sqlx::query(sql).bind(now).bind(org_id).execute(c).await?;
    Ok(done.rows_affected() == 1)
}

pub async fn platform_view(
    c: &mut Conn,
    org_id: &str,
) -> Result<Option<PlatformOrgRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.name, o.created_at, o.suspended_at, o.require_mfa,
                (SELECT COUNT(*) FROM memberships m WHERE m.org_id = o.id) AS members
         FROM orgs o WHERE o.id = $1",
    )
    .bind(org_id)
    .fetch_optional(c)
    .await
}

/// Orgs whose id is `query` or whose name contains it (case-insensitive), by name.
pub async fn find(
    c: &mut Conn,
    query: &str,
    limit: i64,
) -> Result<Vec<PlatformOrgRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.name, o.created_at, o.suspended_at, o.require_mfa,
                (SELECT COUNT(*) FROM memberships m WHERE m.org_id = o.id) AS members
         FROM orgs o WHERE o.id = $1 OR LOWER(o.name) LIKE $2 ESCAPE '\\'
         ORDER BY o.name, o.id LIMIT $3",
    )
    .bind(query)
    .bind(crate::domain::storage::contains_pattern(
        &query.to_lowercase(),
    ))
    .bind(limit)
    .fetch_all(c)
    .await
}

/// Create an org with `owner` as its first owner.
pub async fn create(
    c: &mut Conn,
    id: &str,
    name: &str,
    owner: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO orgs (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(name)
        .bind(owner)
        .bind(now)
        .execute(&mut *c)
        .await?;
    insert_member(c, id, owner, Role::Owner, now).await
}

pub async fn mine(c: &mut Conn, user_id: &str) -> Result<Vec<OrgView>, sqlx::Error> {
    let rows: Vec<MyOrgRow> = sqlx::query_as(
        "SELECT o.id, o.name, o.created_at, o.require_mfa, m.role FROM orgs o
         JOIN memberships m ON m.org_id = o.id WHERE m.user_id = $1 ORDER BY o.created_at, o.id",
    )
    .bind(user_id)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| OrgView {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            role: Some(r.role),
            require_mfa: r.require_mfa,
        })
        .collect())
}

/// An org, with `role` as the viewer's.
pub async fn get(c: &mut Conn, org_id: &str) -> Result<Option<OrgView>, sqlx::Error> {
    let row: Option<OrgRow> =
        sqlx::query_as("SELECT id, name, created_at, require_mfa FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|r| OrgView {
        id: r.id,
        name: r.name,
        created_at: r.created_at,
        role: None,
        require_mfa: r.require_mfa,
    }))
}

pub async fn members(c: &mut Conn, org_id: &str) -> Result<Vec<MemberView>, sqlx::Error> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT m.user_id, u.email, m.role, m.created_at FROM memberships m
         JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY m.created_at, u.email",
    )
    .bind(org_id)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| MemberView {
            user_id: r.user_id,
            email: r.email,
            role: r.role,
            joined_at: r.created_at,
        })
        .collect())
}

/// The role `user_id` holds in `org_id`. A stored value that is not a role is an error, never
/// a weaker or stronger role.
pub async fn role(c: &mut Conn, org_id: &str, user_id: &str) -> Result<Option<Role>, sqlx::Error> {
    let row: Option<RoleRow> =
        sqlx::query_as("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|r| r.role))
}

pub async fn insert_member(
    c: &mut Conn,
    org_id: &str,
    user_id: &str,
    role: Role,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

/// What a guarded change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    Done,
    /// The member does not exist.
    NoMember,
    /// The change would leave the org without an owner.
    LastOwner,
}

/// Take the org's row lock for the rest of the transaction (a no-op write). Returns false if
/// there is no such org. Must be the transaction's first statement, so SQLite takes its write
/// lock up front instead of failing to upgrade a read lock later.
pub async fn lock_org(c: &mut Conn, org_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE orgs SET created_at = created_at WHERE id = $1")
        .bind(org_id)
        .execute(c)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Owners of `org_id` other than the member being changed, as a subquery the guarded
/// statements share; run under [`lock_org`], it cannot be overtaken.
const OTHER_OWNERS: &str = "(SELECT COUNT(*) FROM memberships o
      WHERE o.org_id = memberships.org_id AND o.role = 'owner' AND o.user_id <> memberships.user_id)";

/// Give a member a new role, unless that would leave the org without an owner.
pub async fn change_role(
    c: &mut Conn,
    org_id: &str,
    user_id: &str,
    role: Role,
) -> Result<Guarded, sqlx::Error> {
    let sql = format!(
        "UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3
           AND ($1 = 'owner' OR role <> 'owner' OR {OTHER_OWNERS} > 0)"
    );
    let done = sqlx::query(&sql)
        .bind(role.as_str())
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    guarded(c, done.rows_affected(), org_id, user_id).await
}

/// Remove a member, unless that would leave the org without an owner.
pub async fn remove_member(
    c: &mut Conn,
    org_id: &str,
    user_id: &str,
) -> Result<Guarded, sqlx::Error> {
    let sql = format!(
        "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2
           AND (role <> 'owner' OR {OTHER_OWNERS} > 0)"
    );
    let done = sqlx::query(&sql)
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    guarded(c, done.rows_affected(), org_id, user_id).await
}

/// Why a guarded statement changed nothing (or that it did).
async fn guarded(
    c: &mut Conn,
    affected: u64,
    org_id: &str,
    user_id: &str,
) -> Result<Guarded, sqlx::Error> {
    if affected == 1 {
        return Ok(Guarded::Done);
    }
    Ok(match role(c, org_id, user_id).await? {
        Some(_) => Guarded::LastOwner,
        None => Guarded::NoMember,
    })
}

/// Raise a member's role to `role` if it is stronger than the one held; add the membership if
/// there is none. Returns the role held afterwards.
pub async fn join(
    c: &mut Conn,
    org_id: &str,
    user_id: &str,
    role: Role,
    now: i64,
) -> Result<Role, sqlx::Error> {
    match self::role(c, org_id, user_id).await? {
        Some(existing) if existing >= role => Ok(existing),
        Some(_) => {
            sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
                .bind(role.as_str())
                .bind(org_id)
                .bind(user_id)
                .execute(c)
                .await?;
            Ok(role)
        }
        None => {
            insert_member(c, org_id, user_id, role, now).await?;
            Ok(role)
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_invitation(
    c: &mut Conn,
    id: &str,
    token_hash: &str,
    org_id: &str,
    email: &str,
    role: Role,
    invited_by: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invitations (id, token_hash, org_id, email, role, invited_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(token_hash)
    .bind(org_id)
    .bind(email)
    .bind(role.as_str())
    .bind(invited_by)
    .bind(now)
    .bind(expires_at)
    .execute(c)
    .await?;
    Ok(())
}

/// An unused, unexpired invitation for `email`, without spending it.
pub async fn peek_invitation(
    c: &mut Conn,
    token_hash: &str,
    email: &str,
    now: i64,
) -> Result<Option<InvitationPeek>, sqlx::Error> {
    sqlx::query_as(
        "SELECT org_id, role, invited_by FROM invitations
         WHERE token_hash = $1 AND email = $2 AND accepted_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(email)
    .bind(now)
    .fetch_optional(c)
    .await
}

/// An org's unused, unexpired invitations, newest first.
pub async fn pending_invitations(
    c: &mut Conn,
    org_id: &str,
    now: i64,
) -> Result<Vec<PendingInvitation>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, role, invited_by, created_at, expires_at FROM invitations
         WHERE org_id = $1 AND accepted_at IS NULL AND expires_at > $2
         ORDER BY created_at DESC, id",
    )
    .bind(org_id)
    .bind(now)
    .fetch_all(c)
    .await
}

/// Delete an org's unused invitation; false when there is none by that id.
pub async fn revoke_invitation(c: &mut Conn, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM invitations WHERE org_id = $1 AND id = $2 AND accepted_at IS NULL",
    )
    .bind(org_id)
    .bind(id)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Spend an unused, unexpired invitation for `email`. Exactly one of concurrent uses succeeds.
/// The spending UPDATE comes first, so on SQLite the transaction holds the write lock from its
/// first statement.
pub async fn spend_invitation(
    c: &mut Conn,
    token_hash: &str,
    email: &str,
    now: i64,
) -> Result<Option<InvitationRow>, sqlx::Error> {
    let spent = sqlx::query(
        "UPDATE invitations SET accepted_at = $1
         WHERE token_hash = $2 AND email = $3 AND accepted_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(token_hash)
    .bind(email)
    .execute(&mut *c)
    .await?;
    if spent.rows_affected() != 1 {
        return Ok(None);
    }
    sqlx::query_as("SELECT org_id, email, role FROM invitations WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(c)
        .await
}
