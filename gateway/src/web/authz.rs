//! What an authorisation question needs beyond the principal, and the handler-level check.
//!
//! [`org_context`] gathers the org a request concerns (its flags, the caller's role, the role
//! of a member being acted on) from the org service's caches; the pipeline's authorise stage
//! and [`Authorizer`] both use it, so the two ask Cedar with the same facts.
//!
//! [`Authorizer`] is for the few decisions that depend on the request body, which the
//! pipeline has not read: the role an invitation or a role change grants, the settings an
//! owner changes. The handler asks again, through the same engine, with those facts in the
//! Cedar context; the policies decide.

use std::sync::Arc;

use cedar_policy::{Context, EntityUid};

use super::Rejection;
use crate::domain::audit::{AuditEvent, AuditLog, SecurityEvent};
use crate::domain::orgs::{OrgFacts, Orgs};
use crate::domain::policy::{self, OrgContext, PolicyEngine, Query};
use crate::domain::principal::Principal;

/// The org `org_id` as Cedar sees it for `principal`; `member` is the user a `Member` resource
/// names, whose current role is looked up. An org that does not exist has no members and no
/// flags, so every rule that needs membership denies.
pub async fn org_context(
    orgs: &Orgs,
    principal: &Principal,
    org_id: &str,
    member: Option<&str>,
) -> Result<OrgContext, Rejection> {
    let facts = orgs.facts(org_id).await?;
    let role = match principal {
        Principal::User(u) => orgs.role_of(&u.user_id, org_id).await?,
        Principal::Anonymous | Principal::ApiKey(_) => None,
    };
    let member_role = match member {
        Some(user_id) => orgs.role_of(user_id, org_id).await?,
        None => None,
    };
    Ok(OrgContext {
        facts: facts.unwrap_or_else(|| OrgFacts::unknown(org_id)),
        role,
        member_role,
    })
}

/// Handler-level authorisation with request context.
#[derive(Debug, Clone)]
pub struct Authorizer {
    policy: Arc<PolicyEngine>,
    orgs: Arc<Orgs>,
    audit: AuditLog,
}

impl Authorizer {
    pub fn new(policy: Arc<PolicyEngine>, orgs: Arc<Orgs>, audit: AuditLog) -> Authorizer {
        Authorizer {
            policy,
            orgs,
            audit,
        }
    }

    /// May `principal` do `action` on `resource` (in `org_id`) given `context`? A deny is a
    /// 403 and an `authz_fail` event, as in the pipeline.
    pub async fn require(
        &self,
        principal: &Principal,
        action: &str,
        resource: EntityUid,
        org_id: &str,
        context: Context,
    ) -> Result<(), Rejection> {
        let action_uid = policy::tables::action_uid(action).map_err(|_| Rejection::Internal)?;
        let member = (resource.type_name().basename() == "Member")
            .then(|| resource.id().unescaped().to_owned());
        let org = org_context(&self.orgs, principal, org_id, member.as_deref()).await?;
        let decision = self.policy.decide(&Query {
            principal,
            action: &action_uid,
            resource,
            org: Some(&org),
            context: Some(context),
        });
        if decision.allowed {
            return Ok(());
        }
        self.audit.record(
            AuditEvent::new(SecurityEvent::AuthzFail)
                .principal(principal.id())
                .org(org_id)
                .detail("principal_kind", principal.kind())
                .detail("action", action)
                .detail("policies", decision.policies.join(",")),
        );
        Err(Rejection::Forbidden)
    }
}
