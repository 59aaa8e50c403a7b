//! Stage 7, authorise: the one call into Cedar for every route, the gateway's own included.
//!
//! The route names the action and how to build the resource; the org the path names (if any)
//! comes with its flags and the caller's role there, from the org service's caches, so a
//! cached principal costs no database round trip. Deny by default: no permit, a forbid, or an
//! evaluation error is a 403. Denials are audited (`authz_fail`) with the policies that
//! decided; every decision goes to the decision log (when on); a shadow set's disagreement is
//! logged beside the enforced decision and grouped for the admin listener's `GET /policies`.

use super::route::{Params, Route};
use super::{Pipeline, RequestCtx};
use crate::domain::audit::SecurityEvent;
use crate::domain::decisions::Entry;
use crate::domain::orgs::OrgFacts;
use crate::domain::policy::diff::Seen;
use crate::domain::policy::{self, Decision, OrgContext, PolicyEngine, Query};
use crate::domain::principal::Principal;
use crate::web::{authz, Rejection};

/// Authorise `principal` for the route; on allow, the decision is kept in `ctx` for the record.
pub async fn authorise(
    p: &Pipeline,
    ctx: &mut RequestCtx,
    route: &Route,
    params: &Params,
    principal: &Principal,
) -> Result<(), Rejection> {
    let org = match route.org_id(params) {
        Some(org_id) => {
            let member =
                policy::is_member(&route.resource_type).then(|| params.resolve(&route.resource_id));
            Some(authz::org_context(&p.services.orgs, principal, org_id, member).await?)
        }
        None => None,
    };
    let decision = asking(principal, route, params, org.as_ref(), |query| {
        let decision = p.policy.decide(query);
        p.services.decisions.record(Entry {
            request_id: &ctx.id,
            route: &route.name,
            query,
            context: None,
            decision: &decision,
        });
        decision
    });
    if let Some(shadow) = &decision.shadow {
        p.policy.note_shadow(
            Seen {
                route: &route.name,
                principal_kind: principal.kind(),
                count: 1,
                request_ids: std::slice::from_ref(&ctx.id),
            },
            &decision,
        );
        tracing::warn!(
            target: "zonegate::policy",
            event = "policy_shadow_mismatch",
            request_id = %ctx.id,
            route = %route.name,
            principal_kind = principal.kind(),
            principal_id = principal.id(),
            enforced = decision.label(),
            enforced_policies = %decision.policies.join(","),
            shadow = Decision::label_of(shadow.allowed),
            shadow_policies = %shadow.policies.join(","),
            shadow_errors = %shadow.errors.join("; "),
            "the shadow policy set decides this request differently"
        );
    }
    let allowed = decision.allowed;
    if !allowed {
        let mut event = ctx
            .event(SecurityEvent::AuthzFail)
            .principal(principal.id())
            .detail("principal_kind", principal.kind())
            .detail("route", &*route.name)
            .detail("policies", decision.policies.join(","));
        if let Some(org) = route.org_id(params) {
            event = event.org(org);
        }
        p.audit.record(event);
    }
    ctx.decision = Some(decision);
    if allowed {
        Ok(())
    } else {
        Err(Rejection::Forbidden)
    }
}

/// Decide a route for a principal. A route about an org always places its resource in that
/// org, even when the caller has no org context: then nobody is a member and no flag is set.
pub fn decide(
    engine: &PolicyEngine,
    principal: &Principal,
    route: &Route,
    params: &Params,
    org: Option<&OrgContext>,
) -> std::sync::Arc<Decision> {
    asking(principal, route, params, org, |query| engine.decide(query))
}

/// Put the route's question to `decide`.
fn asking<R>(
    principal: &Principal,
    route: &Route,
    params: &Params,
    org: Option<&OrgContext>,
    decide: impl FnOnce(&Query<'_>) -> R,
) -> R {
    let unknown;
    let org = match (org, route.org_id(params)) {
        (Some(org), _) => Some(org),
        (None, Some(id)) => {
            unknown = OrgContext {
                facts: OrgFacts::unknown(id),
                role: None,
                member_role: None,
            };
            Some(&unknown)
        }
        (None, None) => None,
    };
    decide(&Query {
        principal,
        action: &route.action,
        resource: route.resource_uid(params),
        org,
        context: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;
    use crate::domain::policy::PolicyStore;
    use crate::pipeline::route::{Match, RouteTable};

    fn shipped() -> (PolicyEngine, RouteTable) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let store = PolicyStore::load(&root).unwrap();
        let routes = RouteTable::load(
            &root.join("routes.toml"),
            &BTreeSet::from(["zones".to_owned()]),
        )
        .unwrap();
        routes.check(&store).unwrap();
        (PolicyEngine::new(store), routes)
    }

    fn anonymous(
        engine: &PolicyEngine,
        routes: &RouteTable,
        method: http::Method,
        path: &str,
    ) -> std::sync::Arc<Decision> {
        let Match::Found(route, params) = routes.find(&method, path) else {
            panic!("no route for {path}")
        };
        decide(engine, &Principal::Anonymous, route, &params, None)
    }

    #[test]
    fn shipped_routes_let_anonymous_reach_only_health_and_sign_in() {
        let (engine, routes) = shipped();
        let health = anonymous(&engine, &routes, http::Method::GET, "/healthz");
        assert!(health.allowed);
        assert_eq!(health.policies, ["public-health"]);
        for (method, path) in [
            (http::Method::GET, "/v1/orgs/acme/zones"),
            (http::Method::POST, "/v1/orgs/acme/zones"),
            (http::Method::GET, "/v1/orgs/acme/zones/z1"),
            (http::Method::DELETE, "/v1/orgs/acme/zones/z1"),
            (http::Method::GET, "/v1/orgs/acme/coverage"),
            (http::Method::GET, "/v1/orgs/acme/members"),
        ] {
            let d = anonymous(&engine, &routes, method.clone(), path);
            assert!(!d.allowed, "{method} {path} allowed");
            assert!(d.policies.is_empty(), "denied by default, not by a rule");
        }
    }
}
