//! The signed identity assertion the gateway adds to every forwarded request.
//!
//! A JWT in the `zonegate-identity` header, HS256 with a key from the key ring (`kid` names it,
//! so keys rotate: the backend accepts every key it has, the gateway signs with the newest).
//! Claims: `iss` "zonegate", `aud` from config, `iat`/`exp` (short-lived), `rid` request id,
//! `htm`/`htu` the method and request target it is bound to (so it cannot be replayed to
//! another route), `sub`/`kind` the principal, `org` the org the request was authorised for.
//! The backend verifies all of it before trusting anything (see backend/src/identity.rs).

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::domain::keyring::{KeyRing, Purpose};
use crate::domain::principal::Principal;

/// Header that carries the assertion to the backend.
pub const HEADER: &str = "zonegate-identity";
/// Issuer claim of every assertion.
pub const ISSUER: &str = "zonegate";

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    rid: &'a str,
    htm: &'a str,
    htu: &'a str,
    sub: &'a str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<&'a str>,
}

/// The assertion could not be signed (a key the JWT library refuses); the request fails closed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the identity assertion could not be signed")]
pub struct SignError;

/// What one assertion states.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub principal: &'a Principal,
    pub org: Option<&'a str>,
    pub method: &'a str,
    pub target: &'a str,
    pub request_id: &'a str,
}

/// Mints assertions with the active identity key.
pub struct Signer {
    header: Header,
    key: EncodingKey,
    audience: String,
    ttl: u64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.header.kid)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer using the ring's active identity key. `None` if the ring has no identity key
    /// (which [`KeyRing::load`] already refuses).
    pub fn new(ring: &KeyRing, audience: &str, ttl: Duration) -> Option<Signer> {
        let key = ring.active(Purpose::Identity)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.id.clone());
        Some(Signer {
            header,
            key: EncodingKey::from_secret(key.secret.expose()),
            audience: audience.to_owned(),
            ttl: ttl.as_secs(),
        })
    }

    pub fn key_id(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    /// Sign an assertion issued at `now` (Unix seconds).
    pub fn sign(&self, subject: Subject<'_>, now: u64) -> Result<String, SignError> {
        let claims = Claims {
            iss: ISSUER,
            aud: &self.audience,
            iat: now,
            exp: now + self.ttl,
            rid: subject.request_id,
            htm: subject.method,
            htu: subject.target,
            sub: subject.principal.id(),
            kind: subject.principal.kind(),
            org: subject.org,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|_| SignError)
    }
}
