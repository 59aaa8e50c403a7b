//! Who is asking. The authenticate stage produces a [`Principal`]; the authorise stage hands it
//! to Cedar (as an entity, see [`crate::domain::policy::CedarPrincipal`]); the forward stage
//! asserts it to the backend. Nothing downstream of authentication reads credentials again.

use std::sync::Arc;

/// A dashboard user, authenticated by a session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPrincipal {
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    /// Whether the login this session descends from used a second factor (TOTP or a recovery
    /// code) after the password.
    pub mfa: bool,
    /// The session's public id (what `GET /auth/sessions` lists), never its token.
    pub session_id: String,
    /// The refresh family (one per login) the session belongs to.
    pub family_id: String,
}

/// A platform operator, authenticated by a platform session cookie on the platform listener
/// (password and TOTP at login). Never a user: it has no org role and no customer session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPrincipal {
    pub operator_id: String,
    pub email: String,
    /// The platform session's public id, never its token.
    pub session_id: String,
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
    ApiKey(Arc<crate::domain::apikeys::ApiKeyPrincipal>),
    /// A platform operator (platform listener only).
    Operator(Arc<OperatorPrincipal>),
}

impl Principal {
    /// The `kind` claim of the identity assertion and the log field `principal_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User(_) => "user",
            Principal::ApiKey(_) => "api_key",
            Principal::Operator(_) => "operator",
        }
    }

    /// A stable identifier, safe to log.
    pub fn id(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User(u) => &u.user_id,
            Principal::ApiKey(k) => &k.key_id,
            Principal::Operator(o) => &o.operator_id,
        }
    }
}

impl UserPrincipal {
    /// The factors of the login, as the account API lists them: `pwd`, then `otp` if used.
    pub fn factors(&self) -> &'static [&'static str] {
        if self.mfa {
            &["pwd", "otp"]
        } else {
            &["pwd"]
        }
    }
}
