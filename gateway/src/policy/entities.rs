//! The entities one decision sees: the principal (with its role groups as ancestors), the org
//! with its flags and role groups, and the resource. Built the same way for the gateway's
//! requests, the decision tables and `policy explain`, so all three decide alike.
//!
//! Speed: this runs on every request. Role groups are never created as entities: a user's
//! entity lists the group of its role *and every weaker role* as ancestors, so the hierarchy
//! owner ⊇ admin ⊇ developer ⊇ viewer is already closed and Cedar's `in` needs nothing else.
//! That keeps a decision to three small entities.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{LazyLock, RwLock};

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

use super::OrgContext;
use crate::orgs::Role;
use crate::principal::Principal;

#[allow(clippy::expect_used)]
static GROUP_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar type name (covered by the tests).
    EntityTypeName::from_str("Zonegate::Group").expect("valid Cedar type literal")
});

#[allow(clippy::expect_used)]
static MEMBER_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: as above.
    EntityTypeName::from_str("Zonegate::Member").expect("valid Cedar type literal")
});

/// Whether a route's resource is an org member (its current role is then looked up).
pub fn is_member(type_name: &EntityTypeName) -> bool {
    type_name == &*MEMBER_TYPE
}

/// `Zonegate::Group::"<org>/<role>"`.
pub fn group_uid(org: &str, role: Role) -> EntityUid {
    EntityUid::from_type_name_and_id(GROUP_TYPE.clone(), EntityId::new(format!("{org}/{role}")))
}

/// The org entity: its four role groups and its flags.
fn org_entity(org: &OrgContext) -> Result<Entity, ()> {
    let id = &org.facts.id;
    let group = |r: Role| RestrictedExpression::new_entity_uid(group_uid(id, r));
    let attrs = HashMap::from([
        ("viewers".to_owned(), group(Role::Viewer)),
        ("developers".to_owned(), group(Role::Developer)),
        ("admins".to_owned(), group(Role::Admin)),
        ("owners".to_owned(), group(Role::Owner)),
        (
            "suspended".to_owned(),
            RestrictedExpression::new_bool(org.facts.suspended),
        ),
        (
            "require_mfa".to_owned(),
            RestrictedExpression::new_bool(org.facts.require_mfa),
        ),
    ]);
    Entity::new(crate::routes::org_uid(id), attrs, HashSet::new()).map_err(|_| ())
}

/// Org entities already built, by org id and flags: building one evaluates its six
/// attributes, which was most of a decision's cost. The flags are part of the key, so an entry
/// can never be stale; the map is cleared when full, which bounds it.
#[derive(Debug, Default)]
pub struct OrgEntityCache(RwLock<HashMap<(String, bool, bool), Entity>>);

const ORG_CACHE_CAPACITY: usize = 10_000;

impl OrgEntityCache {
    fn get_or_build(&self, org: &OrgContext) -> Result<Entity, ()> {
        let f = &org.facts;
        if let Ok(map) = self.0.read() {
            // Borrowed lookup would need the key's parts together; a short String is cheaper
            // than the attribute evaluation it saves.
            if let Some(e) = map.get(&(f.id.clone(), f.suspended, f.require_mfa)) {
                return Ok(e.clone());
            }
        }
        let entity = org_entity(org)?;
        if let Ok(mut map) = self.0.write() {
            if map.len() >= ORG_CACHE_CAPACITY {
                map.clear();
            }
            map.insert((f.id.clone(), f.suspended, f.require_mfa), entity.clone());
        }
        Ok(entity)
    }
}

/// The entities could not be built (a Cedar construction error); the decision denies.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the entities for this decision could not be built")]
pub struct EntityError;

/// All entities for deciding whether `principal` may act on `resource` (which lies in `org`,
/// when given). An error here denies.
pub fn build(
    principal: &Principal,
    resource: &EntityUid,
    org: Option<&OrgContext>,
) -> Result<Entities, EntityError> {
    build_with(principal, resource, org, None)
}

/// [`build`], reusing org entities from `cache`.
pub fn build_with(
    principal: &Principal,
    resource: &EntityUid,
    org: Option<&OrgContext>,
    cache: Option<&OrgEntityCache>,
) -> Result<Entities, EntityError> {
    build_inner(principal, resource, org, cache).map_err(|()| EntityError)
}

fn build_inner(
    principal: &Principal,
    resource: &EntityUid,
    org: Option<&OrgContext>,
    cache: Option<&OrgEntityCache>,
) -> Result<Entities, ()> {
    let mut entities = Vec::with_capacity(3);
    let mut principal_parents = HashSet::new();
    match org {
        Some(org) => {
            let org_uid = crate::routes::org_uid(&org.facts.id);
            if let (Principal::User(_), Some(role)) = (principal, org.role) {
                principal_parents.extend(
                    Role::ALL
                        .into_iter()
                        .filter(|r| *r <= role)
                        .map(|r| group_uid(&org.facts.id, r)),
                );
            }
            if resource != &org_uid {
                // Every resource below an org is `in` it and names it as `org`; a member also
                // carries the role it holds now.
                let mut attrs = HashMap::from([(
                    "org".to_owned(),
                    RestrictedExpression::new_entity_uid(org_uid.clone()),
                )]);
                if resource.type_name() == &*MEMBER_TYPE {
                    let role = org.member_role.map_or("none", Role::as_str);
                    attrs.insert(
                        "role".to_owned(),
                        RestrictedExpression::new_string(role.to_owned()),
                    );
                }
                entities.push(
                    Entity::new(resource.clone(), attrs, HashSet::from([org_uid]))
                        .map_err(|_| ())?,
                );
            }
            entities.push(match cache {
                Some(cache) => cache.get_or_build(org)?,
                None => org_entity(org)?,
            });
        }
        None => entities.push(Entity::new_no_attrs(resource.clone(), HashSet::new())),
    }
    entities.push(principal.entity_in(principal_parents));
    // No schema here: the policies were validated strictly against it at load and these
    // entities come from typed code, so per-request validation would only re-check our own
    // construction (and cost several times the decision itself).
    Entities::from_entities(entities, None).map_err(|_| ())
}
