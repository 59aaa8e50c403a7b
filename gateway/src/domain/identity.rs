//! The signed identity assertion the gateway adds to every forwarded request.
//!
//! A JWT in the `zonegate-identity` header, HS256 with a key from the key ring (`kid` names it,
//! so keys rotate: the backend accepts every key it has, the gateway signs with the newest).
//! Signed on every forwarded request, so the constant parts are prepared once: the encoded JOSE
//! header, and the HMAC key with its inner and outer pads already hashed (ring's `hmac::Key`).
//! Claims: `iss` "zonegate", `aud` from config, `iat`/`exp` (short-lived), `rid` request id,
//! `htm`/`htu` the method and request target it is bound to (so it cannot be replayed to
//! another route), `sub`/`kind` the principal, `org` the org the request was authorised for.
//! The backend verifies all of it before trusting anything (see backend/src/identity.rs).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
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

/// The JOSE header of every assertion: the algorithm is fixed, never read from a token.
#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// Mints assertions with the active identity key.
pub struct Signer {
    kid: String,
    /// `base64url(header) + "."`, the same for every assertion of this key.
    encoded_header: String,
    key: ring::hmac::Key,
    audience: String,
    ttl: u64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer using the ring's active identity key. `None` if the ring has no identity key
    /// (which [`KeyRing::load`] already refuses).
    pub fn new(ring: &KeyRing, audience: &str, ttl: Duration) -> Option<Signer> {
        let key = ring.active(Purpose::Identity)?;
        let header = serde_json::to_vec(&JoseHeader {
            alg: "HS256",
            typ: "JWT",
            kid: &key.id,
        })
        .ok()?;
        Some(Signer {
            kid: key.id.clone(),
            encoded_header: format!("{}.", URL_SAFE_NO_PAD.encode(header)),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.secret.expose()),
            audience: audience.to_owned(),
            ttl: ttl.as_secs(),
        })
    }

    pub fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
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
        let payload = serde_json::to_vec(&claims).map_err(|_| SignError)?;
        let mut token =
            String::with_capacity(self.encoded_header.len() + payload.len() * 4 / 3 + 48);
        token.push_str(&self.encoded_header);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let tag = ring::hmac::sign(&self.key, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::principal::{Principal, UserPrincipal};
    use std::sync::Arc;

    #[test]
    fn assertions_verify_as_hs256_jwts_with_their_key_id() {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::init(&dir.path().join("keys")).unwrap();
        let ring = KeyRing::load(&dir.path().join("keys")).unwrap();
        let signer = Signer::new(&ring, "zone-backend", Duration::from_secs(30)).unwrap();
        let user = Principal::User(Arc::new(UserPrincipal {
            user_id: "u1".into(),
            email: "a@b.example".into(),
            email_verified: true,
            mfa: false,
            session_id: "s".into(),
            family_id: "f".into(),
            platform_admin: false,
        }));
        let token = signer
            .sign(
                Subject {
                    principal: &user,
                    org: Some("acme"),
                    method: "GET",
                    target: "/v1/orgs/acme/zones?x=1",
                    request_id: "r1",
                },
                1_800_000_000,
            )
            .unwrap();
        let key = ring.active(Purpose::Identity).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some(key.id.as_str()));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&["zone-backend"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(key.secret.expose()),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "u1");
        assert_eq!(claims["org"], "acme");
        assert_eq!(claims["htu"], "/v1/orgs/acme/zones?x=1");
        assert_eq!(claims["exp"], 1_800_000_030);
        // A changed byte anywhere breaks the signature.
        let mut forged = token.clone().into_bytes();
        let at = forged.len() / 2;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        assert!(jsonwebtoken::decode::<serde_json::Value>(
            std::str::from_utf8(&forged).unwrap(),
            &jsonwebtoken::DecodingKey::from_secret(key.secret.expose()),
            &validation,
        )
        .is_err());
    }
}
