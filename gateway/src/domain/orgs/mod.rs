//! Organisations and memberships.
//!
//! A user's role in an org (owner > admin > developer > viewer) reaches Cedar as group
//! membership (see [`crate::domain::policy`]), which decides what each role may do; this module
//! stores roles, keeps the invariants that are about data rather than permission (an org
//! always keeps an owner; an invitation is spent once, by the address it was sent to), records
//! the security events, and keeps a cache so the hot path reads roles without a database round
//! trip. A changed or removed membership is dropped from the cache at once on this instance,
//! so it takes effect on the very next request; other instances see it within the
//! revalidation bound.

pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use crate::clock::Clock;
use crate::domain::accounts::tokens::Token;
use crate::domain::accounts::AccountsConfig;
use crate::domain::audit::{AuditEvent, AuditLog, SecurityEvent};
use crate::domain::mail::Mailer;
use crate::domain::storage::Db;
use store::Guarded;

#[cfg(test)]
mod tests;
pub use store::{PendingInvitation, PlatformOrgRow};

/// A permission level in an org.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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

/// A string that names no role.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a role (viewer, developer, admin, owner)")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(32).collect()))
    }
}

/// How stored roles are read: a corrupt value is an error, never some other role.
impl TryFrom<String> for Role {
    type Error = UnknownRole;
    fn try_from(s: String) -> Result<Role, UnknownRole> {
        s.parse()
    }
}

/// What accepting an invitation is decided on (see [`Orgs::pending_invitation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationCheck {
    pub org_id: String,
    /// The role the invitation grants.
    pub role: Role,
    /// The inviter's role in the org now; `None` when they are no longer a member.
    pub inviter_role: Option<Role>,
}

/// What policies need to know about an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgFacts {
    pub id: String,
    pub suspended: bool,
    pub require_mfa: bool,
}

impl OrgFacts {
    /// The facts of an org that does not exist: no flags (and no members).
    pub fn unknown(id: &str) -> OrgFacts {
        OrgFacts {
            id: id.to_owned(),
            suspended: false,
            require_mfa: false,
        }
    }
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
    #[error("the org must keep an owner")]
    LastOwner,
    #[error("invalid or expired invitation")]
    InvalidInvitation,
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
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
    db: Db,
    clock: Arc<dyn Clock>,
    mailer: Arc<Mailer>,
    audit: AuditLog,
    cfg: AccountsConfig,
    revalidate: i64,
    roles: RoleCache,
    facts: RwLock<HashMap<String, Cached<Option<OrgFacts>>>>,
    /// Lookups in `roles` and `facts` together.
    cache_stats: crate::domain::stats::CacheStats,
    /// Bumped by every removal from either cache: a value read from the database before one
    /// may describe what just changed (here or elsewhere), so it is not cached.
    generation: std::sync::atomic::AtomicU64,
}

/// Cache entries beyond this are dropped wholesale rather than growing without bound.
const CACHE_CAPACITY: usize = 100_000;

impl Orgs {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        mailer: Arc<Mailer>,
        audit: AuditLog,
        cfg: AccountsConfig,
    ) -> Orgs {
        Orgs {
            db,
            clock,
            mailer,
            audit,
            revalidate: cfg.cache_revalidate,
            cfg,
            roles: RwLock::new(HashMap::new()),
            facts: RwLock::new(HashMap::new()),
            cache_stats: Default::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.unix_seconds()).unwrap_or(i64::MAX)
    }

    fn fresh<K, Q, T>(&self, map: &RwLock<HashMap<K, Cached<T>>>, key: &Q) -> Option<T>
    where
        K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
        T: Clone,
    {
        let now = self.now();
        let found = map.read().ok().and_then(|map| {
            let entry = map.get(key)?;
            (now - entry.checked_at < self.revalidate).then(|| entry.value.clone())
        });
        self.cache_stats.count(found)
    }

    /// Lookups in the role and org-fact caches.
    pub fn cache_stats(&self) -> &crate::domain::stats::CacheStats {
        &self.cache_stats
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Cache a value read when the caches were at `generation`; not if anything was removed
    /// since (the read may predate the change that removed it).
    fn remember<K: std::hash::Hash + Eq, T>(
        &self,
        map: &RwLock<HashMap<K, Cached<T>>>,
        key: K,
        value: T,
        generation: u64,
    ) {
        if let Ok(mut map) = map.write() {
            if self.generation() != generation {
                return;
            }
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
        let generation = self.generation();
        let role = store::role(&mut *self.db.acquire().await?, org_id, user_id).await?;
        self.remember(&self.roles, key, role, generation);
        Ok(role)
    }

    /// Suspension and MFA requirement of an org, or None if it does not exist. Cached.
    pub async fn facts(&self, org_id: &str) -> Result<Option<OrgFacts>, OrgError> {
        // Looked up by the borrowed id: a hit (every request about an org) allocates no key.
        if let Some(facts) = self.fresh(&self.facts, org_id) {
            return Ok(facts);
        }
        let generation = self.generation();
        let facts = store::facts(&mut *self.db.acquire().await?, org_id).await?;
        self.remember(&self.facts, org_id.to_owned(), facts.clone(), generation);
        Ok(facts)
    }

    /// Require (or stop requiring) a second factor of every member's session. Takes effect on
    /// the next request: the cached facts are dropped here.
    pub async fn set_require_mfa(
        &self,
        org_id: &str,
        actor: &str,
        require: bool,
    ) -> Result<(), OrgError> {
        let changed =
            store::set_require_mfa(&mut *self.db.acquire().await?, org_id, require).await?;
        self.forget_facts(org_id);
        if !changed {
            return Err(OrgError::NotFound);
        }
        let event = if require {
            SecurityEvent::OrgMfaRequired
        } else {
            SecurityEvent::OrgMfaOptional
        };
        self.audit
            .record(AuditEvent::new(event).principal(actor).org(org_id));
        Ok(())
    }

    /// Suspend or reinstate an org (platform administration, by `operator`). Takes effect on
    /// the next request: the cached facts are dropped here.
    pub async fn set_suspended(
        &self,
        org_id: &str,
        operator: &str,
        suspended: bool,
    ) -> Result<(), OrgError> {
        let now = self.now();
        let changed =
            store::set_suspended(&mut *self.db.acquire().await?, org_id, suspended, now).await?;
        self.forget_facts(org_id);
        if !changed {
            return Err(OrgError::NotFound);
        }
        let event = if suspended {
            SecurityEvent::OrgSuspended
        } else {
            SecurityEvent::OrgReinstated
        };
        self.audit
            .record(AuditEvent::new(event).principal(operator).org(org_id));
        Ok(())
    }

    /// What a platform operator sees of an org: its settings, suspension and size.
    pub async fn platform_view(&self, org_id: &str) -> Result<PlatformOrgRow, OrgError> {
        store::platform_view(&mut *self.db.acquire().await?, org_id)
            .await?
            .ok_or(OrgError::NotFound)
    }

    /// Orgs whose id is `query` or whose name contains it, at most `limit` (platform).
    pub async fn find(&self, query: &str, limit: u32) -> Result<Vec<PlatformOrgRow>, OrgError> {
        Ok(store::find(&mut *self.db.acquire().await?, query, i64::from(limit)).await?)
    }

    /// An org changed elsewhere (suspended, reinstated, MFA requirement).
    pub fn forget_org(&self, org_id: &str) {
        self.forget_facts(org_id);
    }

    /// A membership changed elsewhere.
    pub fn forget_membership(&self, user_id: &str, org_id: &str) {
        self.forget_role(user_id, org_id);
    }

    /// Empty both caches.
    pub fn forget_all(&self) {
        self.bump();
        if let Ok(mut map) = self.facts.write() {
            map.clear();
        }
        if let Ok(mut map) = self.roles.write() {
            map.clear();
        }
    }

    fn forget_facts(&self, org_id: &str) {
        self.bump();
        if let Ok(mut map) = self.facts.write() {
            map.remove(org_id);
        }
    }

    fn forget_role(&self, user_id: &str, org_id: &str) {
        self.bump();
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
        let mut tx = self.db.begin().await?;
        store::create(&mut tx, &id, name, user_id, now).await?;
        tx.commit().await?;
        self.forget_role(user_id, &id);
        self.audit.record(
            AuditEvent::new(SecurityEvent::OrgCreated)
                .principal(user_id)
                .org(&id),
        );
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
        Ok(store::mine(&mut *self.db.acquire().await?, user_id).await?)
    }

    pub async fn get(&self, org_id: &str, viewer: Option<&str>) -> Result<OrgView, OrgError> {
        let mut org = store::get(&mut *self.db.acquire().await?, org_id)
            .await?
            .ok_or(OrgError::NotFound)?;
        if let Some(user) = viewer {
            org.role = self.role_of(user, org_id).await?;
        }
        Ok(org)
    }

    pub async fn members(&self, org_id: &str) -> Result<Vec<MemberView>, OrgError> {
        Ok(store::members(&mut *self.db.acquire().await?, org_id).await?)
    }

    /// Invite an email to the org with a role (who may grant which role is the policy's
    /// business, decided before this is called). The link is single-use and expires with
    /// `verify_ttl`.
    pub async fn invite(
        &self,
        org_id: &str,
        actor: &str,
        email: &str,
        role: Role,
    ) -> Result<(), OrgError> {
        let email =
            crate::domain::accounts::normalise_email(email).map_err(|_| OrgError::InvalidEmail)?;
        let org = self.get(org_id, None).await?;
        let token = Token::generate();
        let now = self.now();
        store::insert_invitation(
            &mut *self.db.acquire().await?,
            &uuid::Uuid::new_v4().simple().to_string(),
            &token.hash(),
            org_id,
            &email,
            role,
            actor,
            now,
            now + self.cfg.verify_ttl,
        )
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
            tracing::error!(target: "zonegate::mail", event = "mail_failed", error = %e);
        }
        self.audit.record(
            AuditEvent::new(SecurityEvent::MemberInvited)
                .principal(actor)
                .org(org_id)
                .detail("role", role.as_str()),
        );
        Ok(())
    }

    /// The invitation `token` holds for this user, read but not spent: the org, the role it
    /// grants, and the inviter's role in the org now (read from the store, not a cache), for
    /// the policy to decide whether it still holds.
    pub async fn pending_invitation(
        &self,
        user_email: &str,
        token: &str,
    ) -> Result<InvitationCheck, OrgError> {
        let token = Token::from_presented(token).ok_or(OrgError::InvalidInvitation)?;
        let mut c = self.db.acquire().await?;
        let peek = store::peek_invitation(&mut c, &token.hash(), user_email, self.now())
            .await?
            .ok_or(OrgError::InvalidInvitation)?;
        let inviter_role = store::role(&mut c, &peek.org_id, &peek.invited_by).await?;
        Ok(InvitationCheck {
            org_id: peek.org_id,
            role: peek.role,
            inviter_role,
        })
    }

    /// An org's pending invitations, newest first.
    pub async fn invitations(&self, org_id: &str) -> Result<Vec<PendingInvitation>, OrgError> {
        Ok(store::pending_invitations(&mut *self.db.acquire().await?, org_id, self.now()).await?)
    }

    /// Withdraw a pending invitation (the policy decided the actor may); its link stops
    /// working at once.
    pub async fn revoke_invitation(
        &self,
        org_id: &str,
        actor: &str,
        id: &str,
    ) -> Result<(), OrgError> {
        if !store::revoke_invitation(&mut *self.db.acquire().await?, org_id, id).await? {
            return Err(OrgError::NotFound);
        }
        self.audit.record(
            AuditEvent::new(SecurityEvent::MemberInvitationRevoked)
                .principal(actor)
                .org(org_id)
                .detail("invitation", id),
        );
        Ok(())
    }

    /// Accept an invitation as `user_id`, whose verified email must be the invited one. An
    /// existing member keeps the stronger of their role and the invited one.
    pub async fn accept(
        &self,
        user_id: &str,
        user_email: &str,
        token: &str,
    ) -> Result<OrgView, OrgError> {
        let token = Token::from_presented(token).ok_or(OrgError::InvalidInvitation)?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let invitation = store::spend_invitation(&mut tx, &token.hash(), user_email, now)
            .await?
            .ok_or(OrgError::InvalidInvitation)?;
        let org_id = invitation.org_id;
        if !store::lock_org(&mut tx, &org_id).await? {
            return Err(OrgError::InvalidInvitation);
        }
        let role = store::join(&mut tx, &org_id, user_id, invitation.role, now).await?;
        tx.commit().await?;
        self.forget_role(user_id, &org_id);
        self.audit.record(
            AuditEvent::new(SecurityEvent::MemberJoined)
                .principal(user_id)
                .org(&org_id)
                .detail("role", role.as_str()),
        );
        self.get(&org_id, Some(user_id)).await
    }

    /// Change a member's role (the policy decided the actor may). The last owner cannot be
    /// demoted; concurrent changes cannot leave the org without one.
    pub async fn change_role(
        &self,
        org_id: &str,
        actor: &str,
        target: &str,
        role: Role,
    ) -> Result<(), OrgError> {
        let mut tx = self.db.begin().await?;
        if !store::lock_org(&mut tx, org_id).await? {
            return Err(OrgError::NotFound);
        }
        let previous = store::role(&mut tx, org_id, target)
            .await?
            .ok_or(OrgError::NotFound)?;
        match store::change_role(&mut tx, org_id, target, role).await? {
            Guarded::Done => {}
            Guarded::NoMember => return Err(OrgError::NotFound),
            Guarded::LastOwner => return Err(OrgError::LastOwner),
        }
        tx.commit().await?;
        self.forget_role(target, org_id);
        self.audit.record(
            AuditEvent::new(SecurityEvent::MemberRoleChanged)
                .principal(actor)
                .org(org_id)
                .detail("member", target)
                .detail("role", role.as_str())
                .detail("previous_role", previous.as_str()),
        );
        Ok(())
    }

    /// Remove a member, or leave when `actor == target` (the policy decided the actor may).
    /// The last owner can neither be removed nor leave.
    pub async fn remove(&self, org_id: &str, actor: &str, target: &str) -> Result<(), OrgError> {
        let mut tx = self.db.begin().await?;
        if !store::lock_org(&mut tx, org_id).await? {
            return Err(OrgError::NotFound);
        }
        match store::remove_member(&mut tx, org_id, target).await? {
            Guarded::Done => {}
            Guarded::NoMember => return Err(OrgError::NotFound),
            Guarded::LastOwner => return Err(OrgError::LastOwner),
        }
        tx.commit().await?;
        self.forget_role(target, org_id);
        let event = if actor == target {
            AuditEvent::new(SecurityEvent::MemberLeft)
        } else {
            AuditEvent::new(SecurityEvent::MemberRemoved).detail("member", target)
        };
        self.audit.record(event.principal(actor).org(org_id));
        Ok(())
    }
}
