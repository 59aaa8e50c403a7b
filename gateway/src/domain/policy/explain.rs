//! `zonegate policy explain`: for one request, the decision, the policies that determined it,
//! and why: every policy that can apply to the action, whether it matched, and its comment.

use std::fmt::Write as _;

use cedar_policy::{Authorizer, Effect, PolicySet, Request};

use super::tables::Subject;
use super::{entities, CedarPrincipal, Decision, PolicyEngine};

/// One policy's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVerdict {
    pub id: String,
    pub effect: &'static str,
    pub file: String,
    pub comment: String,
    /// Whether its scope and conditions matched this request.
    pub matched: bool,
    pub error: Option<String>,
}

/// The decision and each considered policy's verdict.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    pub policies: Vec<PolicyVerdict>,
    pub hash: String,
}

/// Decide `subject` on the enforced set and evaluate each policy for its action on its own,
/// to say which matched.
pub fn explain(engine: &PolicyEngine, subject: &Subject) -> Explanation {
    let decision = engine.decide(&subject.query());
    let store = engine.active();
    let mut policies = Vec::new();
    let built = entities::build(&subject.principal, &subject.resource, subject.org.as_ref());
    let request = Request::new(
        subject.principal.entity().uid(),
        subject.action.clone(),
        subject.resource.clone(),
        subject
            .context
            .clone()
            .unwrap_or_else(cedar_policy::Context::empty),
        None,
    );
    if let (Ok(entities), Ok(request)) = (built, request) {
        let authorizer = Authorizer::new();
        for policy in store.policies_for(&subject.action) {
            let id = policy.id().to_string();
            let mut alone = PolicySet::new();
            if alone.add(policy.clone()).is_err() {
                continue;
            }
            let response = authorizer.is_authorized(&request, &alone, &entities);
            let diagnostics = response.diagnostics();
            let matched = diagnostics.reason().next().is_some();
            let error = diagnostics.errors().next().map(ToString::to_string);
            let (file, comment) = store
                .policy(&id)
                .map(|(_, s)| {
                    (
                        s.file
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        s.comment.clone(),
                    )
                })
                .unwrap_or_default();
            policies.push(PolicyVerdict {
                id,
                effect: match policy.effect() {
                    Effect::Permit => "permit",
                    Effect::Forbid => "forbid",
                },
                file,
                comment,
                matched,
                error,
            });
        }
    }
    Explanation {
        decision: std::sync::Arc::unwrap_or_clone(decision),
        policies,
        hash: store.hash().to_owned(),
    }
}

impl Explanation {
    /// The plain-text report `policy explain` prints.
    pub fn render(&self, subject: &Subject) -> String {
        let mut out = String::new();
        let d = &self.decision;
        let _ = writeln!(out, "decision:  {}", d.label().to_uppercase());
        let _ = writeln!(out, "principal: {}", describe_principal(subject));
        let _ = writeln!(out, "action:    {}", subject.action);
        let _ = writeln!(out, "resource:  {}", describe_resource(subject));
        let _ = writeln!(out, "policy set {}", self.hash);
        let _ = writeln!(out);
        let forbids: Vec<&PolicyVerdict> = self
            .policies
            .iter()
            .filter(|p| p.matched && p.effect == "forbid")
            .collect();
        let permits: Vec<&PolicyVerdict> = self
            .policies
            .iter()
            .filter(|p| p.matched && p.effect == "permit")
            .collect();
        let why = if !d.errors.is_empty() {
            "an evaluation error occurred, and any error denies".to_owned()
        } else if !forbids.is_empty() {
            format!(
                "forbidden by {}; a matching forbid overrides every permit",
                ids(&forbids)
            )
        } else if !permits.is_empty() {
            format!("permitted by {}, and no forbid matched", ids(&permits))
        } else if self.policies.is_empty() {
            "no policy mentions this action, so it is denied by default".to_owned()
        } else {
            "no permit matched, so it is denied by default".to_owned()
        };
        let _ = writeln!(out, "why: {why}");
        for e in &d.errors {
            let _ = writeln!(out, "  evaluation error: {e}");
        }
        if !self.policies.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "policies for this action:");
            for p in &self.policies {
                let mark = if p.matched { "matched" } else { "-" };
                let _ = writeln!(
                    out,
                    "  {mark:<8} {:<6} {} ({}): {}",
                    p.effect, p.id, p.file, p.comment
                );
                if let Some(e) = &p.error {
                    let _ = writeln!(out, "           error: {e}");
                }
            }
        }
        out
    }
}

fn ids(list: &[&PolicyVerdict]) -> String {
    list.iter()
        .map(|p| p.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_principal(subject: &Subject) -> String {
    use crate::domain::principal::Principal;
    let uid = subject.principal.entity().uid();
    match &subject.principal {
        Principal::Anonymous => format!("{uid} (no credential)"),
        Principal::User(u) => {
            let role = match (&subject.org, subject.org.as_ref().and_then(|o| o.role)) {
                (Some(org), Some(role)) => format!("{role} of org {}", org.facts.id),
                (Some(org), None) => format!("not a member of org {}", org.facts.id),
                (None, _) => "no org involved".to_owned(),
            };
            format!(
                "{uid} ({}, {}, {role})",
                if u.email_verified {
                    "email verified"
                } else {
                    "email NOT verified"
                },
                if u.mfa {
                    "second factor used"
                } else {
                    "no second factor"
                },
            )
        }
        Principal::ApiKey(k) => format!(
            "{uid} (API key of org {}, scopes: {})",
            k.org_id,
            if k.scopes.is_empty() {
                "none".to_owned()
            } else {
                k.scopes.join(", ")
            }
        ),
        Principal::Operator(_) => format!("{uid} (platform operator)"),
    }
}

fn describe_resource(subject: &Subject) -> String {
    match &subject.org {
        Some(org) => format!(
            "{} in org {} (suspended: {}, requires MFA: {})",
            subject.resource, org.facts.id, org.facts.suspended, org.facts.require_mfa
        ),
        None => subject.resource.to_string(),
    }
}
