//! Cedar: loading and validating the policy set, and the one authorise call every request
//! passes through.
//!
//! A policy directory holds `schema.cedarschema` and any number of `*.cedar` files. Every policy
//! must carry an `@id("...")` annotation, unique across files, which becomes its policy id, so
//! logs and `policy explain` name policies the way the security team wrote them. The set is
//! validated strictly against the schema; an invalid set never becomes the active one.
//!
//! Decisions deny by default: no permit, a forbid, or any evaluation error is a deny.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use std::collections::HashMap;

use crate::orgs::{OrgFacts, Role};
use sha2::{Digest, Sha256};

use crate::principal::Principal;
use crate::routes::{Params, Route, RouteTable};

pub const SCHEMA_FILE: &str = "schema.cedarschema";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("policy set in {dir} fails validation against the schema:\n{message}")]
    Validation { dir: PathBuf, message: String },
    #[error("route `{route}`: {reason}")]
    Route { route: String, reason: String },
}

/// A validated schema and policy set, immutable once built.
pub struct PolicyStore {
    schema: Schema,
    /// The policies that can apply to each action. Cedar evaluates every policy of the set it
    /// is given, so deciding on this slice instead of the whole set gives the same answer
    /// (the others cannot match the action) for a fraction of the work.
    by_action: HashMap<EntityUid, PolicySet>,
    hash: String,
    dir: PathBuf,
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.dir)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// Read, parse and strictly validate a policy directory.
    pub fn load(dir: &Path) -> Result<PolicyStore, PolicyError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PolicyError::Io { path, source }
        };
        let schema_path = dir.join(SCHEMA_FILE);
        let schema_text = std::fs::read_to_string(&schema_path).map_err(io(&schema_path))?;
        let (schema, _warnings) =
            Schema::from_cedarschema_str(&schema_text).map_err(|e| PolicyError::Invalid {
                path: schema_path.clone(),
                message: format!("{e:?}"),
            })?;

        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        files.sort();

        let mut hasher = Sha256::new();
        hasher.update(schema_text.as_bytes());
        let mut policies = PolicySet::new();
        for path in &files {
            let text = std::fs::read_to_string(path).map_err(io(path))?;
            hasher.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update(text.as_bytes());
            let invalid = |message: String| PolicyError::Invalid {
                path: path.clone(),
                message,
            };
            let parsed = PolicySet::from_str(&text).map_err(|e| invalid(format!("{e:?}")))?;
            if parsed.templates().next().is_some() {
                return Err(invalid("policy templates are not supported".into()));
            }
            for policy in parsed.policies() {
                let Some(id) = policy.annotation("id") else {
                    return Err(invalid(format!(
                        "every policy needs an @id(\"...\") annotation; this one has none:\n{policy}"
                    )));
                };
                policies
                    .add(policy.new_id(PolicyId::new(id)))
                    .map_err(|_| invalid(format!("policy id `{id}` is used more than once")))?;
            }
        }

        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let message = result
                .validation_errors()
                .map(|e| format!("  - policy `{}`: {e}", e.policy_id()))
                .collect::<Vec<_>>()
                .join("\n");
            return Err(PolicyError::Validation {
                dir: dir.to_owned(),
                message,
            });
        }
        let by_action = slice_by_action(&schema, &policies).map_err(|e| PolicyError::Invalid {
            path: dir.to_owned(),
            message: e,
        })?;
        Ok(PolicyStore {
            schema,
            by_action,
            hash: hex::encode(hasher.finalize()),
            dir: dir.to_owned(),
        })
    }

    /// A hash of the schema and policy files, to tell which set is active.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Every route must name an action the schema declares and a resource type it knows.
    pub fn check_routes(&self, routes: &RouteTable) -> Result<(), PolicyError> {
        let actions: HashSet<&EntityUid> = self.schema.actions().collect();
        let types: HashSet<String> = self.schema.entity_types().map(|t| t.to_string()).collect();
        for route in routes.routes() {
            let fail = |reason: String| PolicyError::Route {
                route: route.name.clone(),
                reason,
            };
            if !actions.contains(&route.action) {
                return Err(fail(format!(
                    "action {} is not declared in {}",
                    route.action, SCHEMA_FILE
                )));
            }
            if !types.contains(&route.resource_type.to_string()) {
                return Err(fail(format!(
                    "resource type {} is not declared in {}",
                    route.resource_type, SCHEMA_FILE
                )));
            }
        }
        Ok(())
    }
}

/// Split a policy set by the actions each policy can apply to. With action groups in the
/// schema, `action in Group` would need the group hierarchy; then every action gets the whole
/// set, which is always correct.
fn slice_by_action(
    schema: &Schema,
    policies: &PolicySet,
) -> Result<HashMap<EntityUid, PolicySet>, String> {
    let grouped = schema.action_groups().next().is_some();
    let mut slices: HashMap<EntityUid, PolicySet> = HashMap::new();
    for action in schema.actions() {
        let mut slice = PolicySet::new();
        for policy in policies.policies() {
            let applies = grouped
                || match policy.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(a) => &a == action,
                    ActionConstraint::In(list) => list.contains(action),
                };
            if applies {
                slice.add(policy.clone()).map_err(|e| e.to_string())?;
            }
        }
        slices.insert(action.clone(), slice);
    }
    Ok(slices)
}

/// The outcome of one authorise call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Number of evaluation errors (any error denies).
    pub errors: usize,
}

impl Decision {
    fn deny_on_error() -> Decision {
        Decision {
            allowed: false,
            policies: Vec::new(),
            errors: 1,
        }
    }

    /// `allow` or `deny`, for logs.
    pub fn label(&self) -> &'static str {
        if self.allowed {
            "allow"
        } else {
            "deny"
        }
    }
}

/// The org a request concerns, as the authorise call needs it.
#[derive(Debug, Clone)]
pub struct OrgContext {
    pub facts: OrgFacts,
    /// The principal's role in the org (users); API keys act through their own org.
    pub role: Option<Role>,
}

fn group_uid(org: &str, role: Role) -> Result<EntityUid, ()> {
    let t = EntityTypeName::from_str("Zonegate::Group").map_err(|_| ())?;
    Ok(EntityUid::from_type_name_and_id(
        t,
        EntityId::new(format!("{org}/{role}")),
    ))
}

/// The entities for one decision: the principal (in its role group), the role groups, the
/// org with its attributes, and the resource.
fn build_entities(
    principal: &Principal,
    route: &Route,
    params: &Params,
    org: Option<&OrgContext>,
) -> Result<Vec<Entity>, ()> {
    let mut entities = Vec::with_capacity(8);
    let resource = route.resource_uid(params);
    let mut principal_entity = principal.entity();
    let org_id = route.org_id(params);
    if let Some(org_id) = org_id {
        let org_uid = crate::routes::org_uid(org_id);
        let facts = org.map(|o| &o.facts);
        // Groups: owner in admin in developer in viewer, so a stronger role has every weaker one.
        let mut parent: Option<EntityUid> = None;
        for role in Role::ALL {
            let uid = group_uid(org_id, role)?;
            let parents: HashSet<EntityUid> = parent.take().into_iter().collect();
            entities.push(Entity::new_no_attrs(uid.clone(), parents));
            parent = Some(uid);
        }
        let group = |r: Role| group_uid(org_id, r).map(RestrictedExpression::new_entity_uid);
        let attrs = HashMap::from([
            ("viewers".to_owned(), group(Role::Viewer)?),
            ("developers".to_owned(), group(Role::Developer)?),
            ("admins".to_owned(), group(Role::Admin)?),
            ("owners".to_owned(), group(Role::Owner)?),
            (
                "suspended".to_owned(),
                RestrictedExpression::new_bool(facts.is_some_and(|f| f.suspended)),
            ),
            (
                "require_mfa".to_owned(),
                RestrictedExpression::new_bool(facts.is_some_and(|f| f.require_mfa)),
            ),
        ]);
        entities.push(Entity::new(org_uid.clone(), attrs, HashSet::new()).map_err(|_| ())?);
        if resource != org_uid && route.resource_type.basename() == "Zone" {
            let attrs = HashMap::from([(
                "org".to_owned(),
                RestrictedExpression::new_entity_uid(org_uid.clone()),
            )]);
            entities.push(
                Entity::new(resource.clone(), attrs, HashSet::from([org_uid])).map_err(|_| ())?,
            );
        } else if resource != org_uid {
            entities.push(Entity::new_no_attrs(
                resource.clone(),
                HashSet::from([org_uid]),
            ));
        }
        if let (Principal::User(_), Some(role)) = (principal, org.and_then(|o| o.role)) {
            principal_entity = principal.entity_in(HashSet::from([group_uid(org_id, role)?]));
        }
    } else {
        entities.push(Entity::new_no_attrs(resource, HashSet::new()));
    }
    entities.push(principal_entity);
    Ok(entities)
}

/// Holds the active policy set and answers authorisation questions. Cheap to share.
#[derive(Debug)]
pub struct PolicyEngine {
    active: ArcSwap<PolicyStore>,
    authorizer: Authorizer,
}

impl PolicyEngine {
    pub fn new(store: PolicyStore) -> PolicyEngine {
        PolicyEngine {
            active: ArcSwap::from_pointee(store),
            authorizer: Authorizer::new(),
        }
    }

    pub fn active_hash(&self) -> String {
        self.active.load().hash.clone()
    }

    /// The one authorise call: may `principal` perform the route's action on its resource?
    ///
    /// `org` describes the org the route concerns (if it names one) and the principal's role
    /// in it; membership reaches Cedar as groups: `User in Group::"<org>/<role>"`, with
    /// owner in admin in developer in viewer, and the org's `viewers`..`owners` attributes
    /// naming those groups.
    pub fn authorize(
        &self,
        principal: &Principal,
        route: &Route,
        params: &Params,
        org: Option<&OrgContext>,
    ) -> Decision {
        let store = self.active.load();
        let Ok(entities) = build_entities(principal, route, params, org) else {
            return Decision::deny_on_error();
        };
        let principal_uid = principal.entity().uid();
        let resource = route.resource_uid(params);
        // No schema validation of entities or the request here: the policies were validated
        // strictly against the schema at load, and the gateway builds entities from typed
        // code, so per-request validation would only re-check our own construction (and cost
        // ~50 µs). A principal an action does not apply to matches no permit, which denies.
        let Ok(entities) = Entities::from_entities(entities, None) else {
            return Decision::deny_on_error();
        };
        let Ok(request) = Request::new(
            principal_uid,
            route.action.clone(),
            resource,
            Context::empty(),
            None,
        ) else {
            // The schema says this action does not apply to this principal or resource type.
            return Decision::deny_on_error();
        };
        // An action the schema does not declare has no slice: nothing permits it.
        let Some(policies) = store.by_action.get(&route.action) else {
            return Decision::deny_on_error();
        };
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        let diagnostics = response.diagnostics();
        let errors = diagnostics.errors().count();
        Decision {
            allowed: response.decision() == CedarDecision::Allow && errors == 0,
            policies: diagnostics.reason().map(ToString::to_string).collect(),
            errors,
        }
    }

    /// Replace the active set. The caller validated it by constructing it.
    pub fn swap(&self, store: PolicyStore) {
        self.active.store(Arc::new(store));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::routes::Match;
    use std::collections::BTreeSet;

    fn shipped() -> (PolicyEngine, RouteTable) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let store = PolicyStore::load(&root).unwrap();
        let routes = RouteTable::load(
            &root.join("routes.toml"),
            &BTreeSet::from(["zones".to_owned()]),
        )
        .unwrap();
        store.check_routes(&routes).unwrap();
        (PolicyEngine::new(store), routes)
    }

    fn decide(
        engine: &PolicyEngine,
        routes: &RouteTable,
        method: http::Method,
        path: &str,
    ) -> Decision {
        let Match::Found(route, params) = routes.find(&method, path) else {
            panic!("no route for {path}")
        };
        engine.authorize(&Principal::Anonymous, route, &params, None)
    }

    #[test]
    fn shipped_policies_let_anonymous_reach_only_health() {
        let (engine, routes) = shipped();
        let health = decide(&engine, &routes, http::Method::GET, "/healthz");
        assert!(health.allowed);
        assert_eq!(health.policies, ["public-health"]);
        for (method, path) in [
            (http::Method::GET, "/v1/orgs/acme/zones"),
            (http::Method::POST, "/v1/orgs/acme/zones"),
            (http::Method::GET, "/v1/orgs/acme/zones/z1"),
            (http::Method::DELETE, "/v1/orgs/acme/zones/z1"),
            (http::Method::GET, "/v1/orgs/acme/coverage"),
        ] {
            let d = decide(&engine, &routes, method.clone(), path);
            assert!(!d.allowed, "{method} {path} allowed");
            assert!(d.policies.is_empty(), "denied by default, not by a rule");
        }
    }

    fn policy_dir(policy: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        std::fs::copy(root.join(SCHEMA_FILE), dir.path().join(SCHEMA_FILE)).unwrap();
        std::fs::write(dir.path().join("p.cedar"), policy).unwrap();
        dir
    }

    #[test]
    fn a_policy_without_an_id_or_failing_validation_is_refused_by_name() {
        let no_id = policy_dir("permit (principal, action, resource);");
        let e = PolicyStore::load(no_id.path()).unwrap_err().to_string();
        assert!(e.contains("@id"), "{e}");

        let bad = policy_dir(
            "@id(\"typo\")\npermit (principal, action == Zonegate::Action::\"zones:lisst\", resource);",
        );
        let e = PolicyStore::load(bad.path()).unwrap_err().to_string();
        assert!(e.contains("typo"), "{e}");

        let dup = policy_dir(
            "@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\nforbid (principal, action, resource);",
        );
        let e = PolicyStore::load(dup.path()).unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn forbid_overrides_permit_and_the_determining_policy_is_reported() {
        let dir = policy_dir(
            "@id(\"all\")\npermit (principal, action, resource);\n\
             @id(\"no-locked\")\nforbid (principal, action, resource in Zonegate::Org::\"locked\");",
        );
        let engine = PolicyEngine::new(PolicyStore::load(dir.path()).unwrap());
        let (_, routes) = shipped();
        let open = decide(
            &engine,
            &routes,
            http::Method::GET,
            "/v1/orgs/acme/zones/z1",
        );
        assert!(open.allowed);
        assert_eq!(open.policies, ["all"]);
        let locked = decide(
            &engine,
            &routes,
            http::Method::GET,
            "/v1/orgs/locked/zones/z1",
        );
        assert!(!locked.allowed);
        assert_eq!(locked.policies, ["no-locked"]);
    }
}
