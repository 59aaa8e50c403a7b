//! Organisations and memberships.
//!
//! A user's role in an org (owner > admin > developer > viewer) reaches Cedar as group
//! membership (see [`crate::policy`]); this module stores it and keeps a cache so the hot path
//! reads roles without a database round trip. A changed or removed membership is dropped from
//! the cache at once on this instance, so it takes effect on the very next request; other
//! instances see it within the revalidation bound.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use sqlx::{AnyPool, Row};

use crate::accounts::tokens::Token;
use crate::accounts::AccountsConfig;
use crate::clock::Clock;
use crate::error::Rejection;
use crate::mail::Mailer;

/// A permission level in an org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Role, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// What policies need to know about an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgFacts {
    pub id: String,
    pub suspended: bool,
    pub require_mfa: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub role: Option<Role>,
    /// Whether every member's session must have used a second factor.
    pub require_mfa: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub joined_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    #[error("invalid org name")]
    InvalidName,
    #[error("invalid email")]
    InvalidEmail,
    #[error("not found")]
    NotFound,
    #[error("the actor's role does not allow this change")]
    NotAllowed,
    #[error("the org must keep an owner")]
    LastOwner,
    #[error("invalid or expired invitation")]
    InvalidInvitation,
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<OrgError> for Rejection {
    fn from(e: OrgError) -> Rejection {
        match e {
            OrgError::InvalidName => Rejection::Unprocessable(
                "The org name must be 1 to 100 characters, without control characters.",
            ),
            OrgError::InvalidEmail => Rejection::Unprocessable("The email address is not valid."),
            OrgError::NotFound => Rejection::NotFound,
            OrgError::NotAllowed => Rejection::Forbidden,
            OrgError::LastOwner => Rejection::Conflict("An org must keep at least one owner."),
            OrgError::InvalidInvitation => Rejection::InvalidToken,
            OrgError::Storage(err) => {
                tracing::error!(event = "storage_error", error = %err);
                Rejection::Internal
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Cached<T> {
    value: T,
    checked_at: i64,
}

/// Cached role per (user, org): `None` caches "not a member" too.
type RoleCache = RwLock<HashMap<(String, String), Cached<Option<Role>>>>;

/// The org service.
#[derive(Debug)]
pub struct Orgs {
    pool: AnyPool,
    clock: Arc<dyn Clock>,
    mailer: Arc<Mailer>,
    cfg: AccountsConfig,
    revalidate: i64,
    roles: RoleCache,
    facts: RwLock<HashMap<String, Cached<Option<OrgFacts>>>>,
}

/// Cache entries beyond this are dropped wholesale rather than growing without bound.
const CACHE_CAPACITY: usize = 100_000;

impl Orgs {
    pub fn new(
        pool: AnyPool,
        clock: Arc<dyn Clock>,
        mailer: Arc<Mailer>,
        cfg: AccountsConfig,
    ) -> Orgs {
        Orgs {
            pool,
            clock,
            mailer,
            revalidate: cfg.cache_revalidate,
            cfg,
            roles: RwLock::new(HashMap::new()),
            facts: RwLock::new(HashMap::new()),
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.unix_seconds()).unwrap_or(i64::MAX)
    }

    fn fresh<K: std::hash::Hash + Eq, T: Clone>(
        &self,
        map: &RwLock<HashMap<K, Cached<T>>>,
        key: &K,
    ) -> Option<T> {
        let now = self.now();
        let map = map.read().ok()?;
        let entry = map.get(key)?;
        (now - entry.checked_at < self.revalidate).then(|| entry.value.clone())
    }

    fn store<K: std::hash::Hash + Eq, T>(
        &self,
        map: &RwLock<HashMap<K, Cached<T>>>,
        key: K,
        value: T,
    ) {
        if let Ok(mut map) = map.write() {
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
            map.insert(
                key,
                Cached {
                    value,
                    checked_at: self.now(),
                },
            );
        }
    }

    /// The user's role in an org, if any. Cached.
    pub async fn role_of(&self, user_id: &str, org_id: &str) -> Result<Option<Role>, OrgError> {
        let key = (user_id.to_owned(), org_id.to_owned());
        if let Some(role) = self.fresh(&self.roles, &key) {
            return Ok(role);
        }
        let role = self
            .member_role(&mut *self.pool.acquire().await?, org_id, user_id)
            .await?;
        self.store(&self.roles, key, role);
        Ok(role)
    }

    /// Suspension and MFA requirement of an org, or None if it does not exist. Cached.
    pub async fn facts(&self, org_id: &str) -> Result<Option<OrgFacts>, OrgError> {
        let key = org_id.to_owned();
        if let Some(facts) = self.fresh(&self.facts, &key) {
            return Ok(facts);
        }
        let row = sqlx::query("SELECT suspended_at, require_mfa FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?;
        let facts = match row {
            Some(r) => Some(OrgFacts {
                id: key.clone(),
                suspended: r.try_get::<Option<i64>, _>("suspended_at")?.is_some(),
                require_mfa: r.try_get::<i64, _>("require_mfa")? != 0,
            }),
            None => None,
        };
        self.store(&self.facts, key, facts.clone());
        Ok(facts)
    }

    /// Require (or stop requiring) a second factor of every member's session. Takes effect on
    /// the next request: the cached facts are dropped here.
    pub async fn set_require_mfa(&self, org_id: &str, require: bool) -> Result<(), OrgError> {
        let done = sqlx::query("UPDATE orgs SET require_mfa = $1 WHERE id = $2")
            .bind(i64::from(require))
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        self.forget_facts(org_id);
        if done.rows_affected() == 0 {
            return Err(OrgError::NotFound);
        }
        Ok(())
    }

    /// Suspend or reinstate an org (platform administration). Takes effect on the next
    /// request: the cached facts are dropped here.
    pub async fn set_suspended(&self, org_id: &str, suspended: bool) -> Result<(), OrgError> {
        let now = self.now();
        let done = sqlx::query(
            "UPDATE orgs SET suspended_at = CASE WHEN $1 = 1 THEN COALESCE(suspended_at, $2) ELSE NULL END WHERE id = $3",
        )
        .bind(i64::from(suspended))
        .bind(now)
        .bind(org_id)
        .execute(&self.pool)
        .await?;
        self.forget_facts(org_id);
        if done.rows_affected() == 0 {
            return Err(OrgError::NotFound);
        }
        Ok(())
    }

    /// What a platform admin sees of an org: its settings, suspension and size.
    pub async fn platform_view(&self, org_id: &str) -> Result<serde_json::Value, OrgError> {
        let row = sqlx::query(
            "SELECT o.id, o.name, o.created_at, o.suspended_at, o.require_mfa,
                    (SELECT COUNT(*) FROM memberships m WHERE m.org_id = o.id) AS members
             FROM orgs o WHERE o.id = $1",
        )
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(OrgError::NotFound)?;
        Ok(serde_json::json!({
            "id": row.try_get::<String, _>("id")?,
            "name": row.try_get::<String, _>("name")?,
            "created_at": row.try_get::<i64, _>("created_at")?,
            "suspended_at": row.try_get::<Option<i64>, _>("suspended_at")?,
            "require_mfa": row.try_get::<i64, _>("require_mfa")? != 0,
            "members": row.try_get::<i64, _>("members")?,
        }))
    }

    fn forget_facts(&self, org_id: &str) {
        if let Ok(mut map) = self.facts.write() {
            map.remove(org_id);
        }
    }

    fn forget_role(&self, user_id: &str, org_id: &str) {
        if let Ok(mut map) = self.roles.write() {
            map.remove(&(user_id.to_owned(), org_id.to_owned()));
        }
    }

    /// Create an org; the creator becomes its owner.
    pub async fn create(&self, user_id: &str, name: &str) -> Result<OrgView, OrgError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(OrgError::InvalidName);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO orgs (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(name)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(Role::Owner.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.forget_role(user_id, &id);
        tracing::info!(target: "zonegate::security", event = "org_created", org_id = %id, user_id = %user_id);
        Ok(OrgView {
            id,
            name: name.to_owned(),
            created_at: now,
            role: Some(Role::Owner),
            require_mfa: false,
        })
    }

    /// The orgs a user belongs to, with their role in each.
    pub async fn mine(&self, user_id: &str) -> Result<Vec<OrgView>, OrgError> {
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.created_at, o.require_mfa, m.role FROM orgs o
             JOIN memberships m ON m.org_id = o.id WHERE m.user_id = $1 ORDER BY o.created_at, o.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OrgView {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    role: r.try_get::<String, _>("role")?.parse().ok(),
                    require_mfa: r.try_get::<i64, _>("require_mfa")? != 0,
                })
            })
            .collect()
    }

    pub async fn get(&self, org_id: &str, viewer: Option<&str>) -> Result<OrgView, OrgError> {
        let row = sqlx::query("SELECT id, name, created_at, require_mfa FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(OrgError::NotFound)?;
        let role = match viewer {
            Some(user) => self.role_of(user, org_id).await?,
            None => None,
        };
        Ok(OrgView {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
            role,
            require_mfa: row.try_get::<i64, _>("require_mfa")? != 0,
        })
    }

    pub async fn members(&self, org_id: &str) -> Result<Vec<MemberView>, OrgError> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.email, m.role, m.created_at FROM memberships m
             JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY m.created_at, u.email",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberView {
                    user_id: r.try_get("user_id")?,
                    email: r.try_get("email")?,
                    role: r
                        .try_get::<String, _>("role")?
                        .parse()
                        .unwrap_or(Role::Viewer),
                    joined_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn owner_count(
        &self,
        conn: &mut sqlx::AnyConnection,
        org_id: &str,
    ) -> Result<i64, OrgError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM memberships WHERE org_id = $1 AND role = 'owner'",
        )
        .bind(org_id)
        .fetch_one(conn)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Invite an email to the org with a role. Admins may invite up to admin; only owners may
    /// invite owners. The link is single-use and expires with `verify_ttl`.
    pub async fn invite(
        &self,
        org_id: &str,
        actor: &str,
        email: &str,
        role: Role,
    ) -> Result<(), OrgError> {
        let email = crate::accounts::normalise_email(email).map_err(|_| OrgError::InvalidEmail)?;
        let actor_role = self
            .role_of(actor, org_id)
            .await?
            .ok_or(OrgError::NotAllowed)?;
        if role == Role::Owner && actor_role != Role::Owner {
            return Err(OrgError::NotAllowed);
        }
        let org = self.get(org_id, None).await?;
        let token = Token::generate();
        let now = self.now();
        sqlx::query(
            "INSERT INTO invitations (token_hash, org_id, email, role, invited_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token.hash())
        .bind(org_id)
        .bind(&email)
        .bind(role.as_str())
        .bind(actor)
        .bind(now)
        .bind(now + self.cfg.verify_ttl)
        .execute(&self.pool)
        .await?;
        let body = format!(
            "You are invited to join the organisation \"{}\" on Delivery Zone as {role}.\n\n\
             Sign in with this email address, then open:\n\n{}/accept-invitation#token={}\n\n\
             The link works once and expires in {} minutes.\n",
            org.name
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>(),
            self.cfg.public_origin,
            token.expose(),
            self.cfg.verify_ttl / 60
        );
        if let Err(e) = self
            .mailer
            .send(&email, "You are invited to Delivery Zone", body)
            .await
        {
            tracing::error!(event = "mail_failed", error = %e);
        }
        tracing::info!(target: "zonegate::security", event = "member_invited", org_id = %org_id, user_id = %actor, role = %role);
        Ok(())
    }

    /// Accept an invitation as `user_id`, whose verified email must be the invited one.
    pub async fn accept(
        &self,
        user_id: &str,
        user_email: &str,
        token: &str,
    ) -> Result<OrgView, OrgError> {
        let token = Token::from_presented(token).ok_or(OrgError::InvalidInvitation)?;
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT org_id, email, role FROM invitations
             WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2",
        )
        .bind(token.hash())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(OrgError::InvalidInvitation)?;
        let org_id: String = row.try_get("org_id")?;
        let email: String = row.try_get("email")?;
        let role: Role = row
            .try_get::<String, _>("role")?
            .parse()
            .map_err(|()| OrgError::InvalidInvitation)?;
        if email != user_email {
            return Err(OrgError::InvalidInvitation);
        }
        let spent = sqlx::query(
            "UPDATE invitations SET accepted_at = $1 WHERE token_hash = $2 AND accepted_at IS NULL",
        )
        .bind(now)
        .bind(token.hash())
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            return Err(OrgError::InvalidInvitation);
        }
        // An existing member keeps the stronger of their role and the invited one.
        match self.member_role(&mut tx, &org_id, user_id).await? {
            Some(existing) if existing >= role => {}
            Some(_) => {
                sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
                    .bind(role.as_str())
                    .bind(&org_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&org_id)
                    .bind(user_id)
                    .bind(role.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.forget_role(user_id, &org_id);
        tracing::info!(target: "zonegate::security", event = "member_joined", org_id = %org_id, user_id = %user_id, role = %role);
        self.get(&org_id, Some(user_id)).await
    }

    /// Change a member's role. Admins manage members below owner and cannot grant owner;
    /// the last owner cannot be demoted.
    pub async fn change_role(
        &self,
        org_id: &str,
        actor: &str,
        target: &str,
        role: Role,
    ) -> Result<(), OrgError> {
        let actor_role = self
            .role_of(actor, org_id)
            .await?
            .ok_or(OrgError::NotAllowed)?;
        let mut tx = self.pool.begin().await?;
        let current = self
            .member_role(&mut tx, org_id, target)
            .await?
            .ok_or(OrgError::NotFound)?;
        if actor_role != Role::Owner && (current == Role::Owner || role == Role::Owner) {
            return Err(OrgError::NotAllowed);
        }
        if current == Role::Owner
            && role != Role::Owner
            && self.owner_count(&mut tx, org_id).await? <= 1
        {
            return Err(OrgError::LastOwner);
        }
        sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
            .bind(role.as_str())
            .bind(org_id)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.forget_role(target, org_id);
        tracing::info!(target: "zonegate::security", event = "member_role_changed", org_id = %org_id, user_id = %actor, member = %target, role = %role);
        Ok(())
    }

    /// Remove a member (or leave, when `actor == target`). Admins cannot remove owners; the
    /// last owner can neither be removed nor leave.
    pub async fn remove(&self, org_id: &str, actor: &str, target: &str) -> Result<(), OrgError> {
        let actor_role = self
            .role_of(actor, org_id)
            .await?
            .ok_or(OrgError::NotAllowed)?;
        let mut tx = self.pool.begin().await?;
        let current = self
            .member_role(&mut tx, org_id, target)
            .await?
            .ok_or(OrgError::NotFound)?;
        if actor != target && actor_role != Role::Owner && current == Role::Owner {
            return Err(OrgError::NotAllowed);
        }
        if current == Role::Owner && self.owner_count(&mut tx, org_id).await? <= 1 {
            return Err(OrgError::LastOwner);
        }
        sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.forget_role(target, org_id);
        tracing::info!(target: "zonegate::security", event = "member_removed", org_id = %org_id, user_id = %actor, member = %target);
        Ok(())
    }

    async fn member_role(
        &self,
        conn: &mut sqlx::AnyConnection,
        org_id: &str,
        user_id: &str,
    ) -> Result<Option<Role>, OrgError> {
        let row = sqlx::query("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<String, _>("role")?.parse().ok(),
            None => None,
        })
    }
}
