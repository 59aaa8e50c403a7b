//! Cedar: the active policy set, the optional shadow set, and the one authorise call every
//! request passes through.
//!
//! A policy directory holds `schema.cedarschema` and `*.cedar` files (rules in [`store`]).
//! Decisions deny by default: no permit, a forbid, or any evaluation error is a deny.
//!
//! The gateway, the decision tables ([`tables`]) and `policy explain` ([`explain`]) all ask
//! through [`PolicyEngine::decide`] with a [`Query`], so the security team's tests exercise the
//! very code that enforces.

pub mod diff;
pub mod entities;
pub mod explain;
mod store;
pub mod tables;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use cedar_policy::{Authorizer, Context, Decision as CedarDecision, EntityUid, Request};

pub use entities::{group_uid, is_member, member_uid, org_uid, CedarPrincipal};
pub use store::{PolicySource, PolicyStore, SCHEMA_FILE};

use crate::domain::orgs::{OrgFacts, Role};
use crate::domain::principal::Principal;
use crate::domain::stats::CacheStats;

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

/// The outcome of one authorise call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Evaluation errors, as Cedar reports them (policy id and message; entity ids at most,
    /// never credentials). Any error denies.
    pub errors: Vec<String>,
    /// What the shadow set decided, present only when it differs from this decision.
    pub shadow: Option<ShadowDecision>,
    /// The hash of the set that decided (see [`PolicyStore::hash`]), for the decision log.
    pub policy_hash: Arc<str>,
}

/// The shadow set's differing answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDecision {
    pub allowed: bool,
    pub policies: Vec<String>,
    pub errors: Vec<String>,
}

impl Decision {
    fn deny_on_error(why: &str) -> Decision {
        Decision {
            allowed: false,
            policies: Vec::new(),
            errors: vec![why.to_owned()],
            shadow: None,
            policy_hash: Arc::from(""),
        }
    }

    /// `allow` or `deny`, for logs.
    pub fn label(&self) -> &'static str {
        label(self.allowed)
    }

    pub fn label_of(allowed: bool) -> &'static str {
        label(allowed)
    }
}

fn label(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// The org a request concerns, as the authorise call needs it.
#[derive(Debug, Clone)]
pub struct OrgContext {
    pub facts: OrgFacts,
    /// The principal's role in the org (users); API keys act through their own org.
    pub role: Option<Role>,
    /// For a `Member` resource: the role that member holds now (`None`: not a member).
    pub member_role: Option<Role>,
}

/// One question for Cedar, independent of HTTP.
#[derive(Debug)]
pub struct Query<'a> {
    pub principal: &'a Principal,
    pub action: &'a EntityUid,
    pub resource: EntityUid,
    /// The org the resource lies in, with the principal's role there.
    pub org: Option<&'a OrgContext>,
    /// Request context; the gateway's routes pass none today.
    pub context: Option<Context>,
}

/// A Cedar request context from a JSON object of plain values (strings, booleans, numbers):
/// how handlers build the context they decide with, and how the decision log rebuilds it, so
/// both give Cedar the same context. `None` if Cedar refuses the value.
pub fn json_context(fields: &serde_json::Map<String, serde_json::Value>) -> Option<Context> {
    Context::from_json_value(serde_json::Value::Object(fields.clone()), None).ok()
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub hash: String,
    pub previous_hash: String,
    /// The shadow set's hash after the reload, when one is configured.
    pub shadow_hash: Option<String>,
}

/// Holds the enforced policy set (and an optional shadow set) and answers authorisation
/// questions. Cheap to share; reloads swap whole sets atomically, so a request decides on one
/// set from start to end.
#[derive(Debug)]
pub struct PolicyEngine {
    active: ArcSwap<PolicyStore>,
    shadow: ArcSwapOption<PolicyStore>,
    shadow_dir: Option<PathBuf>,
    authorizer: Authorizer,
    shadow_mismatches: AtomicU64,
    /// The shadow set's disagreements since the sets were (re)loaded, grouped like `policy
    /// diff` groups a replay: the pipeline notes each with its route and request id.
    shadow_changes: Mutex<diff::Changes>,
    /// One reload at a time: two racing reloads could otherwise swap in the older read last.
    reloading: Mutex<()>,
    entities: entities::EntityCache,
    /// Lookups in `decisions` (questions without request context only).
    decision_stats: CacheStats,
    decisions: DecisionCache,
}

/// Recent decisions, keyed by the generations of the sets that made them and everything the
/// question was built from ([`entities::DecisionKey`]), so an entry is exact: the same
/// question on the same sets gets the same answer, and a reload (a new generation) never meets
/// an old entry. Questions with request context (decided by handlers) are not cached. Cleared
/// when full, which bounds it.
#[derive(Debug, Default)]
struct DecisionCache(std::sync::RwLock<DecisionMap>);

/// (active generation, shadow generation, question) to answer.
type DecisionMap = std::collections::HashMap<
    (u64, Option<u64>, entities::DecisionKey),
    Arc<Decision>,
    foldhash::fast::RandomState,
>;

const DECISION_CACHE_CAPACITY: usize = 20_000;

impl PolicyEngine {
    pub fn new(store: PolicyStore) -> PolicyEngine {
        PolicyEngine::with_shadow(store, None)
    }

    /// An engine that also evaluates `shadow` (loaded from its directory) on every request.
    pub fn with_shadow(store: PolicyStore, shadow: Option<PolicyStore>) -> PolicyEngine {
        PolicyEngine {
            shadow_dir: shadow.as_ref().map(|s| s.dir().to_owned()),
            active: ArcSwap::from_pointee(store),
            shadow: ArcSwapOption::from(shadow.map(Arc::new)),
            authorizer: Authorizer::new(),
            shadow_mismatches: AtomicU64::new(0),
            shadow_changes: Mutex::new(diff::Changes::default()),
            reloading: Mutex::new(()),
            entities: entities::EntityCache::default(),
            decisions: DecisionCache::default(),
            decision_stats: CacheStats::default(),
        }
    }

    /// Lookups in the caches of built entities and of decisions.
    pub fn cache_stats(&self) -> (&CacheStats, &CacheStats) {
        (&self.entities.stats, &self.decision_stats)
    }

    pub fn active_hash(&self) -> String {
        self.active.load().hash().to_owned()
    }

    pub fn shadow_hash(&self) -> Option<String> {
        self.shadow.load().as_ref().map(|s| s.hash().to_owned())
    }

    /// The enforced set, for `explain` and the admin listener.
    pub fn active(&self) -> Arc<PolicyStore> {
        self.active.load_full()
    }

    /// How many decisions the shadow set would have made differently since start.
    pub fn shadow_mismatches(&self) -> u64 {
        self.shadow_mismatches.load(Ordering::Relaxed)
    }

    /// Note where a decision with a differing shadow answer was made (no-op without one).
    pub fn note_shadow(&self, seen: diff::Seen<'_>, decision: &Decision) {
        let Some(shadow) = &decision.shadow else {
            return;
        };
        let mut changes = self
            .shadow_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        changes.compare(
            seen,
            diff::Answer {
                allowed: decision.allowed,
                policies: &decision.policies,
            },
            diff::Answer {
                allowed: shadow.allowed,
                policies: &shadow.policies,
            },
        );
    }

    /// The shadow set's disagreements since the last (re)load, grouped.
    pub fn shadow_changes(&self) -> diff::ChangesView {
        self.shadow_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .view()
    }

    /// Decide a query on the enforced set, and on the shadow set when one is configured.
    /// Shared: a cached answer is handed out as is, not copied per request.
    pub fn decide(&self, query: &Query<'_>) -> Arc<Decision> {
        let active = self.active.load_full();
        let shadow = self.shadow.load_full();
        let key = query.context.is_none().then(|| {
            (
                active.generation(),
                shadow.as_ref().map(|s| s.generation()),
                entities::DecisionKey::of(
                    query.principal,
                    query.org,
                    query.action,
                    &query.resource,
                ),
            )
        });
        if let Some(key) = &key {
            let cached = self
                .decisions
                .0
                .read()
                .ok()
                .and_then(|m| m.get(key).cloned());
            if let Some(decision) = self.decision_stats.count(cached) {
                if decision.shadow.is_some() {
                    self.shadow_mismatches.fetch_add(1, Ordering::Relaxed);
                }
                return decision;
            }
        }
        let decision = Arc::new(self.decide_on(&active, shadow.as_deref(), query));
        if let Some(key) = key {
            if let Ok(mut map) = self.decisions.0.write() {
                if map.len() >= DECISION_CACHE_CAPACITY {
                    map.clear();
                }
                map.insert(key, Arc::clone(&decision));
            }
        }
        decision
    }

    /// Decide a query on these sets, without the decision cache.
    fn decide_on(
        &self,
        active: &PolicyStore,
        shadow: Option<&PolicyStore>,
        query: &Query<'_>,
    ) -> Decision {
        let deny = |why: &str| Decision {
            policy_hash: active.shared_hash(),
            ..Decision::deny_on_error(why)
        };
        let Ok(entities) = entities::build_with(
            query.principal,
            &query.resource,
            query.org,
            Some(&self.entities),
        ) else {
            return deny("the entities for this request could not be built");
        };
        let Ok(request) = Request::new(
            query.principal.uid(),
            query.action.clone(),
            query.resource.clone(),
            query.context.clone().unwrap_or_else(Context::empty),
            None,
        ) else {
            return deny("the request could not be built");
        };
        let key = (
            query.action.clone(),
            query.principal.type_name().clone(),
            query.resource.type_name().clone(),
        );
        let mut decision = self.evaluate(active, &request, &entities, &key);
        if let Some(shadow) = shadow {
            let other = self.evaluate(shadow, &request, &entities, &key);
            if other.allowed != decision.allowed {
                self.shadow_mismatches.fetch_add(1, Ordering::Relaxed);
                decision.shadow = Some(ShadowDecision {
                    allowed: other.allowed,
                    policies: other.policies,
                    errors: other.errors,
                });
            }
        }
        decision
    }

    fn evaluate(
        &self,
        store: &PolicyStore,
        request: &Request,
        entities: &cedar_policy::Entities,
        key: &store::SliceKey,
    ) -> Decision {
        // An action the schema does not declare, or one that does not apply to this principal
        // or resource type, has no slice: nothing permits it.
        let Some(policies) = store.slices.get(key) else {
            return Decision {
                policy_hash: store.shared_hash(),
                ..Decision::deny_on_error(
                    "the schema does not declare this action for this principal and resource",
                )
            };
        };
        let response = self.authorizer.is_authorized(request, policies, entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
        // Sorted: Cedar reports them from a set, and logs should not reorder from run to run.
        let mut policies: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        policies.sort_unstable();
        Decision {
            allowed: response.decision() == CedarDecision::Allow && errors.is_empty(),
            policies,
            errors,
            shadow: None,
            policy_hash: store.shared_hash(),
        }
    }

    /// Re-read the enforced (and shadow) directories: validate, let `check` refuse a set its
    /// caller cannot use (the route table checks that every route's action is still declared),
    /// then swap. On any error nothing changes and the old sets stay in force.
    pub fn reload(
        &self,
        check: &dyn Fn(&PolicyStore) -> Result<(), PolicyError>,
    ) -> Result<Reloaded, PolicyError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let load = |dir: &Path| -> Result<PolicyStore, PolicyError> {
            let store = PolicyStore::load(dir)?;
            check(&store)?;
            Ok(store)
        };
        let dir = self.active.load().dir().to_owned();
        let store = load(&dir)?;
        let shadow = match &self.shadow_dir {
            Some(dir) => Some(load(dir)?),
            None => None,
        };
        let reloaded = Reloaded {
            hash: store.hash().to_owned(),
            previous_hash: self.active_hash(),
            shadow_hash: shadow.as_ref().map(|s| s.hash().to_owned()),
        };
        self.active.store(Arc::new(store));
        if shadow.is_some() {
            self.shadow.store(shadow.map(Arc::new));
        }
        // Groups of the old sets would be read as the new sets' disagreements.
        *self
            .shadow_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = diff::Changes::default();
        Ok(reloaded)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn shipped() -> PolicyEngine {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        PolicyEngine::new(PolicyStore::load(&root).unwrap())
    }

    fn uid(text: &str) -> EntityUid {
        text.parse().unwrap()
    }

    /// An anonymous caller asks for `action` on `resource` (in org `acme` unless a Gateway).
    fn anonymous(engine: &PolicyEngine, action: &str, resource: &str) -> Arc<Decision> {
        anonymous_in(engine, action, resource, "acme")
    }

    fn anonymous_in(
        engine: &PolicyEngine,
        action: &str,
        resource: &str,
        org: &str,
    ) -> Arc<Decision> {
        let action = tables::action_uid(action).unwrap();
        let resource = uid(resource);
        let org = OrgContext {
            facts: OrgFacts {
                id: org.into(),
                suspended: false,
                require_mfa: false,
            },
            role: None,
            member_role: None,
        };
        let in_org = resource.type_name().basename() != "Gateway";
        engine.decide(&Query {
            principal: &Principal::Anonymous,
            action: &action,
            resource,
            org: in_org.then_some(&org),
            context: None,
        })
    }

    #[test]
    fn shipped_policies_let_anonymous_reach_only_health() {
        let engine = shipped();
        let health = anonymous(&engine, "health", r#"Zonegate::Gateway::"public""#);
        assert!(health.allowed);
        assert_eq!(health.policies, ["public-health"]);
        for (action, resource) in [
            ("zones:list", r#"Zonegate::Org::"acme""#),
            ("zones:create", r#"Zonegate::Org::"acme""#),
            ("zones:read", r#"Zonegate::Zone::"z1""#),
            ("zones:delete", r#"Zonegate::Zone::"z1""#),
            ("coverage:read", r#"Zonegate::Org::"acme""#),
        ] {
            let d = anonymous(&engine, action, resource);
            assert!(!d.allowed, "{action} allowed");
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
        let no_comment = policy_dir("@id(\"x\")\npermit (principal, action, resource);");
        let e = PolicyStore::load(no_comment.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x` needs a `//` comment"), "{e}");

        let no_id = policy_dir("// all\npermit (principal, action, resource);");
        let e = PolicyStore::load(no_id.path()).unwrap_err().to_string();
        assert!(e.contains("@id"), "{e}");

        let bad = policy_dir(
            "// typo\n@id(\"typo\")\npermit (principal, action == Zonegate::Action::\"zones:lisst\", resource);",
        );
        let e = PolicyStore::load(bad.path()).unwrap_err().to_string();
        assert!(e.contains("typo"), "{e}");

        let dup = policy_dir(
            "// a\n@id(\"a\")\npermit (principal, action, resource);\n// a again\n@id(\"a\")\nforbid (principal, action, resource);",
        );
        let e = PolicyStore::load(dup.path()).unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn forbid_overrides_permit_and_the_determining_policy_is_reported() {
        let dir = policy_dir(
            "// all\n@id(\"all\")\npermit (principal, action, resource);\n\
             // not locked\n@id(\"no-locked\")\nforbid (principal, action, resource in Zonegate::Org::\"locked\");",
        );
        let engine = PolicyEngine::new(PolicyStore::load(dir.path()).unwrap());
        let open = anonymous(&engine, "zones:read", r#"Zonegate::Zone::"z1""#);
        assert!(open.allowed);
        assert_eq!(open.policies, ["all"]);
        let locked = anonymous_in(&engine, "zones:read", r#"Zonegate::Zone::"z1""#, "locked");
        assert!(!locked.allowed);
        assert_eq!(locked.policies, ["no-locked"]);
    }

    #[test]
    fn the_shipped_decision_tables_pass() {
        let engine = shipped();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/tests");
        let report = tables::run(&engine, &root).unwrap();
        assert!(report.passed(), "{}", report.render());
        assert!(report.cases > 100, "{}", report.cases);
    }

    #[test]
    fn a_table_mismatch_fails_with_a_readable_diff() {
        let engine = shipped();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.toml"),
            r#"
[[case]]
name = "viewers delete zones (wrong on purpose)"
principal = { user = "u", role = "viewer" }
action = "zones:delete"
resource = { zone = "z", org = "acme" }
expect = "allow"

[[case]]
name = "developers delete zones"
principal = { user = "u", role = "developer" }
action = "zones:delete"
resource = { zone = "z", org = "acme" }
expect = "allow"
policies = ["zones-write-zone"]
"#,
        )
        .unwrap();
        let report = tables::run(&engine, dir.path()).unwrap();
        assert!(!report.passed());
        let text = report.render();
        assert!(
            text.contains("FAIL") && text.contains("viewers delete zones (wrong on purpose)"),
            "{text}"
        );
        assert!(text.contains("- expected: allow"), "{text}");
        assert!(
            text.contains("+ got:      deny by no policy (denied by default)"),
            "{text}"
        );
        assert!(
            text.contains("2 cases in 1 files: 1 passed, 1 failed"),
            "{text}"
        );

        std::fs::write(dir.path().join("t.toml"), "[[case]]\nname = \"x\"\n").unwrap();
        let e = tables::run(&engine, dir.path()).unwrap_err().to_string();
        assert!(e.contains("t.toml"), "{e}");
    }

    fn copy_shipped(to: &Path) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    }

    fn viewer_deletes(engine: &PolicyEngine) -> Arc<Decision> {
        let user = Principal::User(std::sync::Arc::new(
            crate::domain::principal::UserPrincipal {
                user_id: "u".into(),
                email: String::new(),
                email_verified: true,
                mfa: false,
                session_id: String::new(),
                family_id: String::new(),
            },
        ));
        let org = OrgContext {
            facts: OrgFacts {
                id: "acme".into(),
                suspended: false,
                require_mfa: false,
            },
            role: Some(Role::Viewer),
            member_role: None,
        };
        engine.decide(&Query {
            principal: &user,
            action: &tables::action_uid("zones:delete").unwrap(),
            resource: uid(r#"Zonegate::Zone::"z1""#),
            org: Some(&org),
            context: None,
        })
    }

    const VIEWERS_DELETE: &str = "\n// Viewers may delete zones too.\n@id(\"viewers-delete\")\npermit (principal is Zonegate::User, action == Zonegate::Action::\"zones:delete\", resource is Zonegate::Zone) when { principal in resource.org.viewers };\n";

    #[test]
    fn reload_swaps_a_valid_set_and_keeps_the_old_one_when_invalid() {
        let dir = tempfile::tempdir().unwrap();
        copy_shipped(dir.path());
        let engine = PolicyEngine::new(PolicyStore::load(dir.path()).unwrap());
        let accept_all = |_: &PolicyStore| Ok(());
        let first = engine.active_hash();
        assert!(!viewer_deletes(&engine).allowed);

        std::fs::write(dir.path().join("extra.cedar"), VIEWERS_DELETE).unwrap();
        let r = engine.reload(&accept_all).unwrap();
        assert_eq!(r.previous_hash, first);
        assert_ne!(r.hash, first);
        assert!(
            viewer_deletes(&engine).allowed,
            "the new rule applies after reload"
        );

        let good = engine.active_hash();
        std::fs::write(dir.path().join("broken.cedar"), "// broken\n@id(\"broken\")\npermit (principal, action == Zonegate::Action::\"zones:nope\", resource);").unwrap();
        let e = engine.reload(&accept_all).unwrap_err().to_string();
        assert!(e.contains("broken"), "{e}");
        assert_eq!(engine.active_hash(), good, "the old set stays in force");
        assert!(viewer_deletes(&engine).allowed);
    }

    #[test]
    fn shadow_differences_are_reported_and_counted_but_never_enforced() {
        let enforced = tempfile::tempdir().unwrap();
        copy_shipped(enforced.path());
        let shadow = tempfile::tempdir().unwrap();
        copy_shipped(shadow.path());
        std::fs::write(shadow.path().join("extra.cedar"), VIEWERS_DELETE).unwrap();
        let engine = PolicyEngine::with_shadow(
            PolicyStore::load(enforced.path()).unwrap(),
            Some(PolicyStore::load(shadow.path()).unwrap()),
        );
        let d = viewer_deletes(&engine);
        assert!(!d.allowed, "only the enforced set decides");
        let s = d.shadow.clone().expect("the shadow set differs");
        assert!(s.allowed);
        assert_eq!(s.policies, ["viewers-delete"]);
        assert_eq!(engine.shadow_mismatches(), 1);

        // Where both agree, nothing is reported.
        let d = anonymous(&engine, "health", r#"Zonegate::Gateway::"public""#);
        assert!(d.allowed && d.shadow.is_none());
        assert_eq!(engine.shadow_mismatches(), 1);
    }

    #[test]
    fn explain_names_the_matching_policies_and_their_comments() {
        let engine = shipped();
        let subject = tables::subject(
            &tables::PrincipalSpec {
                user: Some("u".into()),
                role: Some("developer".into()),
                verified: Some(false),
                ..Default::default()
            },
            "zones:update",
            &tables::ResourceSpec {
                zone: Some("z".into()),
                org: Some("acme".into()),
                ..Default::default()
            },
            None,
            &engine,
        )
        .unwrap();
        let e = explain::explain(&engine, &subject);
        assert!(!e.decision.allowed);
        let text = e.render(&subject);
        assert!(
            text.contains("why: forbidden by users-must-be-verified"),
            "{text}"
        );
        assert!(text.contains("matched  permit zones-write-zone (orgs.cedar): Developers and above change and delete zones."), "{text}");
    }

    fn shared_engine() -> &'static PolicyEngine {
        static ENGINE: std::sync::OnceLock<PolicyEngine> = std::sync::OnceLock::new();
        ENGINE.get_or_init(shipped)
    }

    proptest::proptest! {
        // Each case loads a fresh policy set to compare with; 64 cases keep it quick.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The decision cache, the entity cache and the (action, principal, resource) slices
        /// never change an answer: a long-lived engine (warm caches, entries for other callers
        /// and flags) decides every question like a fresh one.
        #[test]
        fn cached_and_sliced_decisions_match_fresh_ones(
            role in 0usize..5,
            user in 0usize..3,
            verified: bool,
            mfa: bool,
            suspended: bool,
            require_mfa: bool,
            resource in 0usize..3,
            action in 0usize..6,
        ) {
            let principal = Principal::User(std::sync::Arc::new(crate::domain::principal::UserPrincipal {
                user_id: format!("u{user}"),
                email: String::new(),
                email_verified: verified,
                mfa,
                session_id: String::new(),
                family_id: String::new(),
            }));
            let org = OrgContext {
                facts: OrgFacts { id: "acme".into(), suspended, require_mfa },
                role: Role::ALL.get(role).copied(),
                member_role: Some(Role::Viewer),
            };
            let actions = ["zones:list", "zones:update", "members:update", "apikeys:revoke", "orgs:update", "coverage:read"];
            let resource = match resource {
                0 => org_uid("acme"),
                1 => r#"Zonegate::Zone::"z1""#.parse::<cedar_policy::EntityUid>().unwrap(),
                _ => r#"Zonegate::Member::"u9""#.parse::<cedar_policy::EntityUid>().unwrap(),
            };
            let action = tables::action_uid(actions[action]).unwrap();
            let query = || Query {
                principal: &principal,
                action: &action,
                resource: resource.clone(),
                org: Some(&org),
                context: None,
            };
            let warm = shared_engine().decide(&query());
            let again = shared_engine().decide(&query());
            let fresh = shipped().decide(&query());
            proptest::prop_assert_eq!(&warm, &fresh);
            proptest::prop_assert_eq!(&again, &fresh);
        }
    }
}
