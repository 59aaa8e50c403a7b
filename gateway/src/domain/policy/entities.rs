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
use std::sync::{Arc, LazyLock, RwLock};

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

use super::OrgContext;
use crate::domain::apikeys::ApiKeyPrincipal;
use crate::domain::orgs::Role;
use crate::domain::principal::Principal;

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

#[allow(clippy::expect_used)]
static ORG_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar type name (covered by the tests).
    EntityTypeName::from_str("Zonegate::Org").expect("valid Cedar type literal")
});

/// The Cedar uid of an organisation.
pub fn org_uid(id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ORG_TYPE.clone(), EntityId::new(id))
}

#[allow(clippy::expect_used)]
static ANONYMOUS: LazyLock<EntityUid> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar entity uid (covered by a unit test).
    EntityUid::from_str(r#"Zonegate::Anonymous::"anonymous""#).expect("valid Cedar uid literal")
});

#[allow(clippy::expect_used)]
static ANONYMOUS_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar type name (covered by a unit test).
    EntityTypeName::from_str("Zonegate::Anonymous").expect("valid Cedar type literal")
});

#[allow(clippy::expect_used)]
static API_KEY_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar type name (covered by a unit test).
    EntityTypeName::from_str("Zonegate::ApiKey").expect("valid Cedar type literal")
});

#[allow(clippy::expect_used)]
static OPERATOR_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar type name (covered by a unit test).
    EntityTypeName::from_str("Zonegate::Operator").expect("valid Cedar type literal")
});

#[allow(clippy::expect_used)]
static USER_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar type name (covered by a unit test).
    EntityTypeName::from_str("Zonegate::User").expect("valid Cedar type literal")
});

/// A principal as Cedar sees it: its uid, type and entity (with the attributes policies decide
/// on). Kept here, beside the other entities, so [`Principal`] itself stays plain data.
pub trait CedarPrincipal {
    fn type_name(&self) -> &'static EntityTypeName;
    fn uid(&self) -> EntityUid;
    fn entity(&self) -> Entity;
    fn entity_in(&self, parents: HashSet<EntityUid>) -> Entity;
}

impl CedarPrincipal for Principal {
    /// The principal's Cedar entity type.
    fn type_name(&self) -> &'static EntityTypeName {
        match self {
            Principal::Anonymous => &ANONYMOUS_TYPE,
            Principal::User(_) => &USER_TYPE,
            Principal::ApiKey(_) => &API_KEY_TYPE,
            Principal::Operator(_) => &OPERATOR_TYPE,
        }
    }

    /// The principal's Cedar uid, without building the entity.
    fn uid(&self) -> EntityUid {
        match self {
            Principal::Anonymous => ANONYMOUS.clone(),
            Principal::User(u) => {
                EntityUid::from_type_name_and_id(USER_TYPE.clone(), EntityId::new(&u.user_id))
            }
            Principal::ApiKey(k) => {
                EntityUid::from_type_name_and_id(API_KEY_TYPE.clone(), EntityId::new(&k.key_id))
            }
            Principal::Operator(o) => EntityUid::from_type_name_and_id(
                OPERATOR_TYPE.clone(),
                EntityId::new(&o.operator_id),
            ),
        }
    }

    /// The principal as a Cedar entity, with the attributes policies decide on.
    fn entity(&self) -> Entity {
        self.entity_in(HashSet::new())
    }

    /// The principal as a Cedar entity that is a member of `parents` (its role groups).
    fn entity_in(&self, parents: HashSet<EntityUid>) -> Entity {
        match self {
            Principal::Anonymous => Entity::new_no_attrs(ANONYMOUS.clone(), parents),
            Principal::User(u) => {
                let uid =
                    EntityUid::from_type_name_and_id(USER_TYPE.clone(), EntityId::new(&u.user_id));
                let attrs = HashMap::from([
                    (
                        "email_verified".to_owned(),
                        RestrictedExpression::new_bool(u.email_verified),
                    ),
                    ("mfa".to_owned(), RestrictedExpression::new_bool(u.mfa)),
                ]);
                // Only constant-named boolean attributes: construction cannot fail, but if it
                // did, an attribute-less entity fails every `when` clause, which denies.
                Entity::new(uid.clone(), attrs, parents)
                    .unwrap_or_else(|_| Entity::new_no_attrs(uid, HashSet::new()))
            }
            // An operator has no attributes and no groups: policies decide on the type alone.
            Principal::Operator(_) => Entity::new_no_attrs(self.uid(), parents),
            Principal::ApiKey(k) => {
                let uid = EntityUid::from_type_name_and_id(
                    API_KEY_TYPE.clone(),
                    EntityId::new(&k.key_id),
                );
                let attrs = HashMap::from([
                    (
                        "org".to_owned(),
                        RestrictedExpression::new_entity_uid(org_uid(&k.org_id)),
                    ),
                    (
                        "scopes".to_owned(),
                        RestrictedExpression::new_set(
                            k.scopes
                                .iter()
                                .map(|s| RestrictedExpression::new_string(s.clone())),
                        ),
                    ),
                ]);
                // As for users: a failed construction yields an attribute-less entity, which
                // every `when` clause denies.
                Entity::new(uid.clone(), attrs, parents)
                    .unwrap_or_else(|_| Entity::new_no_attrs(uid, HashSet::new()))
            }
        }
    }
}

/// The Cedar uid of an org member, as the subject of a role change or removal.
pub fn member_uid(user_id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(MEMBER_TYPE.clone(), EntityId::new(user_id))
}

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
    Entity::new(org_uid(id), attrs, HashSet::new()).map_err(|_| ())
}

/// Everything that goes into the principal's and the org's entities.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BaseKey {
    org: String,
    suspended: bool,
    require_mfa: bool,
    role: Option<Role>,
    principal: PrincipalKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PrincipalKey {
    Anonymous,
    User {
        id: String,
        verified: bool,
        mfa: bool,
    },
    /// The key's principal as verification cached it: shared, not copied, per request.
    ApiKey(Arc<ApiKeyPrincipal>),
    Operator {
        id: String,
    },
}

impl PrincipalKey {
    fn of(principal: &Principal) -> PrincipalKey {
        match principal {
            Principal::Anonymous => PrincipalKey::Anonymous,
            Principal::User(u) => PrincipalKey::User {
                id: u.user_id.clone(),
                verified: u.email_verified,
                mfa: u.mfa,
            },
            Principal::ApiKey(k) => PrincipalKey::ApiKey(Arc::clone(k)),
            Principal::Operator(o) => PrincipalKey::Operator {
                id: o.operator_id.clone(),
            },
        }
    }
}

impl BaseKey {
    fn of(principal: &Principal, org: &OrgContext) -> BaseKey {
        BaseKey {
            org: org.facts.id.clone(),
            suspended: org.facts.suspended,
            require_mfa: org.facts.require_mfa,
            role: org.role,
            principal: PrincipalKey::of(principal),
        }
    }
}

/// Everything one decision without request context is computed from: the principal's and the
/// org's entities (as for [`EntityCache`]), the member's role for a `Member` resource, the
/// action and the resource. Equal keys build equal entities and equal requests, so they get
/// the same answer from the same policy set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct DecisionKey {
    principal: PrincipalKey,
    org: Option<(BaseKey, Option<Role>)>,
    action: EntityUid,
    resource: EntityUid,
}

impl DecisionKey {
    pub(super) fn of(
        principal: &Principal,
        org: Option<&OrgContext>,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> DecisionKey {
        DecisionKey {
            principal: match org {
                // The base key holds the principal already.
                Some(_) => PrincipalKey::Anonymous,
                None => PrincipalKey::of(principal),
            },
            org: org.map(|o| (BaseKey::of(principal, o), o.member_role)),
            action: action.clone(),
            resource: resource.clone(),
        }
    }
}

/// The principal and org entities of recent decisions, closed and ready: building them (their
/// attributes are evaluated, the hierarchy closed) was most of a decision's cost, and they are
/// the same for every request a caller makes in one org. The key holds everything they are
/// built from, so an entry can never be stale; the map is cleared when full, which bounds it.
#[derive(Debug, Default)]
pub struct EntityCache {
    map: RwLock<HashMap<BaseKey, Entities>>,
    pub stats: crate::domain::stats::CacheStats,
}

const CACHE_CAPACITY: usize = 10_000;

impl EntityCache {
    fn get_or_build(&self, principal: &Principal, org: &OrgContext) -> Result<Entities, ()> {
        let key = BaseKey::of(principal, org);
        let cached = self.map.read().ok().and_then(|map| map.get(&key).cloned());
        if let Some(e) = self.stats.count(cached) {
            return Ok(e);
        }
        let base = base_entities(principal, org)?;
        if let Ok(mut map) = self.map.write() {
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
            map.insert(key, base.clone());
        }
        Ok(base)
    }
}

/// The principal (in its role groups) and the org.
fn base_entities(principal: &Principal, org: &OrgContext) -> Result<Entities, ()> {
    let mut parents = HashSet::new();
    if let (Principal::User(_), Some(role)) = (principal, org.role) {
        parents.extend(
            Role::ALL
                .into_iter()
                .filter(|r| *r <= role)
                .map(|r| group_uid(&org.facts.id, r)),
        );
    }
    Entities::from_entities([org_entity(org)?, principal.entity_in(parents)], None).map_err(|_| ())
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

/// [`build`], reusing the principal's and org's entities from `cache`.
pub fn build_with(
    principal: &Principal,
    resource: &EntityUid,
    org: Option<&OrgContext>,
    cache: Option<&EntityCache>,
) -> Result<Entities, EntityError> {
    build_inner(principal, resource, org, cache).map_err(|()| EntityError)
}

fn build_inner(
    principal: &Principal,
    resource: &EntityUid,
    org: Option<&OrgContext>,
    cache: Option<&EntityCache>,
) -> Result<Entities, ()> {
    // No schema anywhere here: the policies were validated strictly against it at load and
    // these entities come from typed code, so per-request validation would only re-check our
    // own construction (and cost several times the decision itself).
    let Some(org) = org else {
        return Entities::from_entities(
            [
                Entity::new_no_attrs(resource.clone(), HashSet::new()),
                principal.entity(),
            ],
            None,
        )
        .map_err(|_| ());
    };
    let base = match cache {
        Some(cache) => cache.get_or_build(principal, org)?,
        None => base_entities(principal, org)?,
    };
    let org_uid = org_uid(&org.facts.id);
    if resource == &org_uid {
        return Ok(base);
    }
    // Every resource below an org is `in` it and names it as `org`; a member also carries the
    // role it holds now.
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
    let entity = Entity::new(resource.clone(), attrs, HashSet::from([org_uid])).map_err(|_| ())?;
    base.add_entities([entity], None).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::principal::UserPrincipal;
    use std::sync::Arc;

    #[test]
    fn principals_are_in_the_gateway_namespace() {
        assert_eq!(
            Principal::Anonymous.entity().uid().to_string(),
            r#"Zonegate::Anonymous::"anonymous""#
        );
        let user = Principal::User(Arc::new(UserPrincipal {
            user_id: "u1".into(),
            email: "a@b.example".into(),
            email_verified: true,
            mfa: false,
            session_id: "s".into(),
            family_id: "f".into(),
        }));
        assert_eq!(user.entity().uid().to_string(), r#"Zonegate::User::"u1""#);
        assert_eq!(user.kind(), "user");
        assert_eq!(user.type_name(), user.uid().type_name());
        assert_eq!(
            Principal::Anonymous.type_name(),
            Principal::Anonymous.uid().type_name()
        );
        let operator = Principal::Operator(Arc::new(crate::domain::principal::OperatorPrincipal {
            operator_id: "op-1".into(),
            email: "ops@example.com".into(),
            session_id: "s".into(),
        }));
        assert_eq!(
            operator.entity().uid().to_string(),
            r#"Zonegate::Operator::"op-1""#
        );
        assert_eq!(operator.type_name(), operator.uid().type_name());
        assert_eq!(operator.kind(), "operator");
    }
}
