//! Loading a policy directory: the schema, every `*.cedar` file, strict validation, and the
//! per-action slices the hot path decides on.
//!
//! Rules for a directory, enforced here so the security team hears about a mistake from
//! `zonegate policy validate`, at start and at reload alike:
//! - every policy carries `@id("...")`, unique across files: it becomes the policy id that
//!   logs, decision tables and `policy explain` use;
//! - every policy is preceded by a `//` comment saying in plain English what it allows or
//!   forbids (`policy explain` prints it);
//! - the set validates strictly against `schema.cedarschema`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint,
    ResourceConstraint, Schema, ValidationMode, Validator,
};
use sha2::{Digest, Sha256};

use super::PolicyError;

pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// Where a policy came from and what its author said it does.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub file: PathBuf,
    /// The `//` comment directly above the policy, without the slashes.
    pub comment: String,
}

/// (action, principal type, resource type).
pub(super) type SliceKey = (EntityUid, EntityTypeName, EntityTypeName);

/// A validated schema and policy set, immutable once built.
pub struct PolicyStore {
    pub(super) schema: Schema,
    pub(super) policies: PolicySet,
    /// The policies that can apply to each action. Cedar evaluates every policy of the set it
    /// is given, so deciding on this slice instead of the whole set gives the same answer
    /// (the others cannot match the action) for a fraction of the work.
    pub(super) by_action: HashMap<EntityUid, PolicySet>,
    /// The same, narrowed by principal and resource type: a policy scoped to `resource is
    /// Zonegate::Org` cannot match a zone, so it is not evaluated for one. This is what the
    /// hot path decides on; the answer is the same as on the whole set.
    pub(super) slices: HashMap<SliceKey, PolicySet>,
    pub(super) sources: HashMap<String, PolicySource>,
    hash: std::sync::Arc<str>,
    dir: PathBuf,
    /// Unique to this load: decisions cached under it can never be served by another set.
    generation: u64,
}

/// Numbers each load, so a reloaded set (even of identical files) is a new generation.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

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
        let mut sources = HashMap::new();
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
                let comment = comment_above(&text, policy).ok_or_else(|| {
                    invalid(format!(
                        "policy `{id}` needs a `//` comment directly above it saying in plain English what it does"
                    ))
                })?;
                policies
                    .add(policy.new_id(PolicyId::new(id)))
                    .map_err(|_| invalid(format!("policy id `{id}` is used more than once")))?;
                sources.insert(
                    id.to_owned(),
                    PolicySource {
                        file: path.clone(),
                        comment,
                    },
                );
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
        let slices = slice_by_scope(&schema, &by_action).map_err(|e| PolicyError::Invalid {
            path: dir.to_owned(),
            message: e,
        })?;
        Ok(PolicyStore {
            schema,
            policies,
            by_action,
            slices,
            sources,
            hash: hex::encode(hasher.finalize()).into(),
            dir: dir.to_owned(),
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Which load this is (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A hash of the schema and policy files, to tell which set is active.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The hash, shared: every decision made on this set carries it.
    pub fn shared_hash(&self) -> std::sync::Arc<str> {
        self.hash.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Number of policies in the set.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The policy with this id, where it came from and what its comment says.
    pub fn policy(&self, id: &str) -> Option<(&Policy, &PolicySource)> {
        let policy = self.policies.policy(&PolicyId::new(id))?;
        Some((policy, self.sources.get(id)?))
    }

    /// The policies that can apply to `action`, in id order.
    pub fn policies_for(&self, action: &EntityUid) -> Vec<&Policy> {
        let mut list: Vec<&Policy> = self
            .by_action
            .get(action)
            .map(|s| s.policies().collect())
            .unwrap_or_default();
        list.sort_by_key(|p| p.id().to_string());
        list
    }

    /// The policies the hot path evaluates for this action, principal type and resource type.
    pub fn slice(
        &self,
        action: &EntityUid,
        principal: &EntityTypeName,
        resource: &EntityTypeName,
    ) -> Option<&PolicySet> {
        self.slices
            .get(&(action.clone(), principal.clone(), resource.clone()))
    }

    /// Whether the schema declares this action.
    pub fn declares_action(&self, action: &EntityUid) -> bool {
        self.by_action.contains_key(action)
    }

    /// Every use (a route, by name) must name an action the schema declares and a resource
    /// type it knows: a route table checks itself against the set with this.
    pub fn check_uses<'a>(
        &self,
        uses: impl IntoIterator<Item = (&'a str, &'a EntityUid, &'a EntityTypeName)>,
    ) -> Result<(), PolicyError> {
        let actions: HashSet<&EntityUid> = self.schema.actions().collect();
        let types: HashSet<String> = self.schema.entity_types().map(|t| t.to_string()).collect();
        for (name, action, resource_type) in uses {
            let fail = |reason: String| PolicyError::Route {
                route: name.to_owned(),
                reason,
            };
            if !actions.contains(action) {
                return Err(fail(format!(
                    "action {action} is not declared in {SCHEMA_FILE}"
                )));
            }
            if !types.contains(&resource_type.to_string()) {
                return Err(fail(format!(
                    "resource type {resource_type} is not declared in {SCHEMA_FILE}"
                )));
            }
        }
        Ok(())
    }
}

/// The `//` comment lines directly above a policy (above its annotations), joined; `None`
/// when there is none. Cedar drops comments when parsing, so they are read from the text.
fn comment_above(text: &str, policy: &Policy) -> Option<String> {
    let id = policy.annotation("id")?;
    // The policy starts at its first annotation; `@id` is found by its literal spelling, which
    // the parser accepted, so it is present (possibly after other annotations).
    let needle_plain = format!("@id(\"{id}\")");
    let at = text.find(&needle_plain)?;
    // Whole lines before the annotation's own line.
    let before = &text[..at];
    let before = &before[..before.rfind('\n').map_or(0, |i| i + 1)];
    let mut lines: Vec<&str> = Vec::new();
    for line in before.lines().rev() {
        let line = line.trim();
        if line.starts_with('@') && lines.is_empty() {
            continue; // another annotation of the same policy
        }
        match line.strip_prefix("//") {
            Some(comment) => lines.push(comment.trim()),
            None => break,
        }
    }
    // A blank line ends the comment block: a comment separated from the policy is not its.
    if lines.is_empty() {
        return None;
    }
    lines.reverse();
    let comment = lines.join(" ").trim().to_owned();
    (!comment.is_empty()).then_some(comment)
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

/// Split each action's slice further by the principal and resource types the schema lets the
/// action apply to, keeping a policy only where its scope can match that pair.
fn slice_by_scope(
    schema: &Schema,
    by_action: &HashMap<EntityUid, PolicySet>,
) -> Result<HashMap<SliceKey, PolicySet>, String> {
    let mut slices = HashMap::new();
    for (action, policies) in by_action {
        let principals: Vec<&EntityTypeName> = schema
            .principals_for_action(action)
            .map(Iterator::collect)
            .unwrap_or_default();
        let resources: Vec<&EntityTypeName> = schema
            .resources_for_action(action)
            .map(Iterator::collect)
            .unwrap_or_default();
        for principal in &principals {
            for resource in &resources {
                let mut slice = PolicySet::new();
                for policy in policies.policies() {
                    if principal_may_match(&policy.principal_constraint(), principal)
                        && resource_may_match(&policy.resource_constraint(), resource)
                    {
                        slice.add(policy.clone()).map_err(|e| e.to_string())?;
                    }
                }
                slices.insert(
                    (action.clone(), (*principal).clone(), (*resource).clone()),
                    slice,
                );
            }
        }
    }
    Ok(slices)
}

/// Whether an entity of type `t` can satisfy the scope constraint. `in` an entity is kept
/// whatever the types, since membership is data.
fn principal_may_match(c: &PrincipalConstraint, t: &EntityTypeName) -> bool {
    match c {
        PrincipalConstraint::Any | PrincipalConstraint::In(_) => true,
        PrincipalConstraint::Eq(uid) => uid.type_name() == t,
        PrincipalConstraint::Is(is) | PrincipalConstraint::IsIn(is, _) => is == t,
    }
}

fn resource_may_match(c: &ResourceConstraint, t: &EntityTypeName) -> bool {
    match c {
        ResourceConstraint::Any | ResourceConstraint::In(_) => true,
        ResourceConstraint::Eq(uid) => uid.type_name() == t,
        ResourceConstraint::Is(is) | ResourceConstraint::IsIn(is, _) => is == t,
    }
}
