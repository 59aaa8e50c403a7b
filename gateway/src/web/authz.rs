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

use cedar_policy::EntityUid;

use super::Rejection;
use crate::domain::audit::{AuditEvent, AuditLog, SecurityEvent};
use crate::domain::decisions::{DecisionLog, Entry};
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
        Principal::Anonymous | Principal::ApiKey(_) | Principal::Operator(_) => None,
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
    decisions: DecisionLog,
}

/// A question about a request's body, asked by a handler.
#[derive(Debug)]
pub struct BodyQuestion<'a> {
    pub action: &'a str,
    pub resource: EntityUid,
    pub org_id: &'a str,
    /// The Cedar context: plain values (see [`policy::json_context`]).
    pub context: serde_json::Map<String, serde_json::Value>,
}

/// Where the question comes from: the request and its route, for the decision log.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a str,
    pub route: &'a str,
}

impl Authorizer {
    pub fn new(
        policy: Arc<PolicyEngine>,
        orgs: Arc<Orgs>,
        audit: AuditLog,
        decisions: DecisionLog,
    ) -> Authorizer {
        Authorizer {
            policy,
            orgs,
            audit,
            decisions,
        }
    }

    /// May the asker take the action on the resource (in the org) given the context? A deny
    /// is a 403 and an `authz_fail` event, as in the pipeline; the decision is logged.
    pub async fn require(&self, asker: Asker<'_>, q: BodyQuestion<'_>) -> Result<(), Rejection> {
        let principal = asker.principal;
        let action = q.action;
        let org_id = q.org_id;
        let action_uid = policy::tables::action_uid(action).map_err(|_| Rejection::Internal)?;
        let context = policy::json_context(&q.context).ok_or(Rejection::Internal)?;
        let member = policy::is_member(q.resource.type_name())
            .then(|| q.resource.id().unescaped().to_owned());
        let org = org_context(&self.orgs, principal, org_id, member.as_deref()).await?;
        let query = Query {
            principal,
            action: &action_uid,
            resource: q.resource,
            org: Some(&org),
            context: Some(context),
        };
        let decision = self.policy.decide(&query);
        self.decisions.record(Entry {
            request_id: asker.request_id,
            route: asker.route,
            query: &query,
            context: Some(&q.context),
            decision: &decision,
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
