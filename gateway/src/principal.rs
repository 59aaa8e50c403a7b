//! Who is asking. The authenticate stage produces a [`Principal`]; the authorise stage hands it
//! to Cedar; the forward stage asserts it to the backend. Nothing downstream of authentication
//! reads credentials again.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

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
static PLATFORM_ADMIN: LazyLock<EntityUid> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar entity uid (covered by a unit test).
    EntityUid::from_str(r#"Zonegate::PlatformRole::"admin""#).expect("valid Cedar uid literal")
});

#[allow(clippy::expect_used)]
static USER_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| {
    // Invariant: a constant, syntactically valid Cedar type name (covered by a unit test).
    EntityTypeName::from_str("Zonegate::User").expect("valid Cedar type literal")
});

/// A dashboard user, authenticated by a session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPrincipal {
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    /// Authentication factors of the login this session descends from: `pwd`, `otp`.
    pub factors: Vec<String>,
    /// The session's public id (what `GET /auth/sessions` lists), never its token.
    pub session_id: String,
    /// The refresh family (one per login) the session belongs to.
    pub family_id: String,
    /// Listed in `[platform] admins`: a member of `PlatformRole::"admin"` in Cedar, which only
    /// the platform surface's policies consult.
    pub platform_admin: bool,
}

/// An authenticated (or deliberately anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credential was presented; only routes that accept anonymous callers let it through,
    /// and only where policy permits.
    Anonymous,
    /// A user with a live session.
    User(Arc<UserPrincipal>),
    /// An integrator's API key, acting within its org and scopes.
    ApiKey(Arc<crate::apikeys::ApiKeyPrincipal>),
}

impl Principal {
    /// The `kind` claim of the identity assertion and the log field `principal_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User(_) => "user",
            Principal::ApiKey(_) => "api_key",
        }
    }

    /// A stable identifier, safe to log.
    pub fn id(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User(u) => &u.user_id,
            Principal::ApiKey(k) => &k.key_id,
        }
    }

    /// The principal's Cedar entity type.
    pub fn type_name(&self) -> &'static EntityTypeName {
        match self {
            Principal::Anonymous => &ANONYMOUS_TYPE,
            Principal::User(_) => &USER_TYPE,
            Principal::ApiKey(_) => &API_KEY_TYPE,
        }
    }

    /// The principal's Cedar uid, without building the entity.
    pub fn uid(&self) -> EntityUid {
        match self {
            Principal::Anonymous => ANONYMOUS.clone(),
            Principal::User(u) => {
                EntityUid::from_type_name_and_id(USER_TYPE.clone(), EntityId::new(&u.user_id))
            }
            Principal::ApiKey(k) => {
                EntityUid::from_type_name_and_id(API_KEY_TYPE.clone(), EntityId::new(&k.key_id))
            }
        }
    }

    /// The principal as a Cedar entity, with the attributes policies decide on.
    pub fn entity(&self) -> Entity {
        self.entity_in(HashSet::new())
    }

    /// The principal as a Cedar entity that is a member of `parents` (its role groups).
    pub fn entity_in(&self, parents: HashSet<EntityUid>) -> Entity {
        match self {
            Principal::Anonymous => Entity::new_no_attrs(ANONYMOUS.clone(), parents),
            Principal::User(u) => {
                let mut parents = parents;
                if u.platform_admin {
                    parents.insert(PLATFORM_ADMIN.clone());
                }
                let uid =
                    EntityUid::from_type_name_and_id(USER_TYPE.clone(), EntityId::new(&u.user_id));
                let attrs = HashMap::from([
                    (
                        "email_verified".to_owned(),
                        RestrictedExpression::new_bool(u.email_verified),
                    ),
                    (
                        "mfa".to_owned(),
                        RestrictedExpression::new_bool(u.factors.iter().any(|f| f == "otp")),
                    ),
                ]);
                // Only constant-named boolean attributes: construction cannot fail, but if it
                // did, an attribute-less entity fails every `when` clause, which denies.
                Entity::new(uid.clone(), attrs, parents)
                    .unwrap_or_else(|_| Entity::new_no_attrs(uid, HashSet::new()))
            }
            Principal::ApiKey(k) => {
                let uid = EntityUid::from_type_name_and_id(
                    API_KEY_TYPE.clone(),
                    EntityId::new(&k.key_id),
                );
                let attrs = HashMap::from([
                    (
                        "org".to_owned(),
                        RestrictedExpression::new_entity_uid(crate::routes::org_uid(&k.org_id)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_is_in_the_gateway_namespace() {
        assert_eq!(
            Principal::Anonymous.entity().uid().to_string(),
            r#"Zonegate::Anonymous::"anonymous""#
        );
        let user = Principal::User(Arc::new(UserPrincipal {
            user_id: "u1".into(),
            email: "a@b.example".into(),
            email_verified: true,
            factors: vec!["pwd".into()],
            session_id: "s".into(),
            family_id: "f".into(),
            platform_admin: true,
        }));
        assert_eq!(user.entity().uid().to_string(), r#"Zonegate::User::"u1""#);
        assert_eq!(user.kind(), "user");
        assert_eq!(user.type_name(), user.uid().type_name());
        assert_eq!(
            Principal::Anonymous.type_name(),
            Principal::Anonymous.uid().type_name()
        );
        assert!(user
            .entity()
            .into_inner()
            .2
            .contains(&PLATFORM_ADMIN.clone()));
    }
}
