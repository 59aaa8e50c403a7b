//! The signed identity assertion the gateway adds to every forwarded request.
//!
//! A JWT in the `zonegate-identity` header, signed with a key from the key ring (`kid` names
//! it, so keys rotate: the backend accepts every key it has, the gateway signs with the
//! newest). Two algorithms, chosen in config:
//!
//! - `HS256` with an `identity-<n>` key, which the backend must share;
//! - `EdDSA` (Ed25519) with a `signing-<n>` key, whose public half (`signing-<n>.pub`) is all a
//!   backend holds, so a backend (or whoever reads its disk) can verify but never mint.
//!
//! Signed on every forwarded request, so the constant parts are prepared once: the encoded JOSE
//! header, and the key (for HMAC with its inner and outer pads already hashed).
//!
//! Claims: `iss` "zonegate", `aud` from config, `iat`/`exp` (a few seconds), `jti` a fresh
//! random id the backend accepts once, `rid` request id, `htm`/`htu` the method and request
//! target, `cd` the RFC 9530 `Content-Digest` of the body as forwarded (so a captured assertion
//! cannot carry another body, to another route, or twice), `sub`/`kind` the principal, `org`
//! the org the request was authorised for. The backend verifies all of it before trusting
//! anything (see backend/src/identity.rs).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use ring::signature::Ed25519KeyPair;
use serde::Serialize;

use crate::domain::keyring::{KeyRing, Purpose};
use crate::domain::principal::Principal;

/// Header that carries the assertion to the backend.
pub const HEADER: &str = "zonegate-identity";
/// Issuer claim of every assertion.
pub const ISSUER: &str = "zonegate";
/// The body digest the assertion binds (RFC 9530, shared with the backend).
pub use zonegate_common::digest::{content_digest, EMPTY_CONTENT_DIGEST};

/// How assertions are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Algorithm {
    /// HMAC-SHA-256 with a key the backend shares.
    #[serde(rename = "HS256")]
    Hs256,
    /// Ed25519: the backend holds only the public key.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Algorithm {
    pub fn jose_name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn purpose(self) -> Purpose {
        match self {
            Algorithm::Hs256 => Purpose::Identity,
            Algorithm::EdDsa => Purpose::Signing,
        }
    }
}

/// The assertion could not be signed; the request fails closed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the identity assertion could not be signed")]
pub struct SignError;

/// The configured algorithm has no usable key in the ring.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the key ring has no {purpose} key for {algorithm} assertions; run `zonegate keys rotate --dir <key dir>` to add one")]
pub struct NoSigningKey {
    purpose: &'static str,
    algorithm: &'static str,
}

/// What one assertion states.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub principal: &'a Principal,
    pub org: Option<&'a str>,
    pub method: &'a str,
    pub target: &'a str,
    pub request_id: &'a str,
    /// The body's `Content-Digest` (see [`content_digest`]).
    pub content_digest: &'a str,
}

/// The JOSE header of every assertion: the algorithm is fixed by config, never read from a
/// token.
#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

enum SigningKey {
    Hmac(crate::domain::mac::MacKey),
    Ed25519(Ed25519KeyPair),
}

/// Mints assertions with the active key of the configured algorithm.
pub struct Signer {
    kid: String,
    algorithm: Algorithm,
    /// `base64url(header) + "."`, the same for every assertion of this key.
    encoded_header: String,
    key: SigningKey,
    audience: String,
    /// `{"iss":"zonegate","aud":"<audience>","iat":`, the same for every assertion.
    claims_prefix: Vec<u8>,
    ttl: u64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer using the ring's active key for `algorithm`.
    pub fn new(
        ring: &KeyRing,
        algorithm: Algorithm,
        audience: &str,
        ttl: Duration,
    ) -> Result<Signer, NoSigningKey> {
        let missing = NoSigningKey {
            purpose: algorithm.purpose().name(),
            algorithm: algorithm.jose_name(),
        };
        let active = ring.active(algorithm.purpose()).ok_or(missing.clone())?;
        let key = match algorithm {
            Algorithm::Hs256 => {
                SigningKey::Hmac(crate::domain::mac::MacKey::new(active.secret.expose()))
            }
            Algorithm::EdDsa => SigningKey::Ed25519(
                Ed25519KeyPair::from_seed_unchecked(active.secret.expose())
                    .map_err(|_| missing.clone())?,
            ),
        };
        let header = serde_json::to_vec(&JoseHeader {
            alg: algorithm.jose_name(),
            typ: "JWT",
            kid: &active.id,
        })
        .map_err(|_| missing)?;
        Ok(Signer {
            kid: active.id.clone(),
            algorithm,
            encoded_header: format!("{}.", URL_SAFE_NO_PAD.encode(header)),
            key,
            audience: audience.to_owned(),
            claims_prefix: claims_prefix(audience),
            ttl: ttl.as_secs(),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The claims as JSON, written directly: through serde's per-field machinery they cost
    /// more than the HMAC over them. Same bytes as serde_json would write (a test compares).
    fn claims(&self, subject: &Subject<'_>, jti: &str, now: u64) -> Vec<u8> {
        let strings = [
            jti,
            subject.request_id,
            subject.method,
            subject.target,
            subject.content_digest,
            subject.principal.id(),
            subject.org.unwrap_or(""),
        ];
        // Room for every string escaped as in the usual case (not at all), the names and
        // the two numbers: one allocation.
        let mut out = Vec::with_capacity(
            self.claims_prefix.len() + strings.iter().map(|s| s.len()).sum::<usize>() + 128,
        );
        out.extend_from_slice(&self.claims_prefix);
        out.extend_from_slice(itoa::Buffer::new().format(now).as_bytes());
        out.extend_from_slice(b",\"exp\":");
        out.extend_from_slice(itoa::Buffer::new().format(now + self.ttl).as_bytes());
        json_field(&mut out, "jti", jti);
        json_field(&mut out, "rid", subject.request_id);
        json_field(&mut out, "htm", subject.method);
        json_field(&mut out, "htu", subject.target);
        json_field(&mut out, "cd", subject.content_digest);
        json_field(&mut out, "sub", subject.principal.id());
        json_field(&mut out, "kind", subject.principal.kind());
        if let Some(org) = subject.org {
            json_field(&mut out, "org", org);
        }
        out.push(b'}');
        out
    }

    /// Sign an assertion issued at `now` (Unix seconds).
    pub fn sign(&self, subject: Subject<'_>, now: u64) -> Result<String, SignError> {
        // Unique, not secret: 128 bits from the thread's CSPRNG (seeded from the OS), which
        // costs no system call per request.
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let mut jti = [0u8; 22];
        URL_SAFE_NO_PAD
            .encode_slice(id, &mut jti)
            .map_err(|_| SignError)?;
        let jti = std::str::from_utf8(&jti).map_err(|_| SignError)?;
        let payload = self.claims(&subject, jti, now);
        let mut token =
            String::with_capacity(self.encoded_header.len() + payload.len() * 4 / 3 + 90);
        token.push_str(&self.encoded_header);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        // The JWS signing input is `header.payload`: everything written so far.
        match &self.key {
            SigningKey::Hmac(key) => {
                let tag = key.sign(token.as_bytes());
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(tag, &mut token);
            }
            SigningKey::Ed25519(pair) => {
                let signature = pair.sign(token.as_bytes());
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
            }
        }
        Ok(token)
    }
}

/// The claims' constant start: issuer and audience, up to the issue time's value.
fn claims_prefix(audience: &str) -> Vec<u8> {
    let mut out = br#"{"iss":"#.to_vec();
    json_string(&mut out, ISSUER);
    out.extend_from_slice(br#","aud":"#);
    json_string(&mut out, audience);
    out.extend_from_slice(br#","iat":"#);
    out
}

/// `,"name":"value"` (a name that needs no escaping).
fn json_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    json_string(out, value);
}

/// `value` as a JSON string, escaped as serde_json escapes it: `"`, `\` and the control
/// characters, nothing else. Runs of plain bytes are copied whole.
fn json_string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    // The usual value needs no escaping: found with a fold that has no early exit (so the
    // compiler may vectorise it; these values are short, so most of it runs scalar), then
    // copied at once.
    let escapes = bytes.iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !escapes {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::principal::{Principal, UserPrincipal};
    use std::sync::Arc;

    fn user() -> Principal {
        Principal::User(Arc::new(UserPrincipal {
            user_id: "u1".into(),
            email: "a@b.example".into(),
            email_verified: true,
            mfa: false,
            session_id: "s".into(),
            family_id: "f".into(),
        }))
    }

    fn ring() -> (tempfile::TempDir, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::init(&dir.path().join("keys")).unwrap();
        let ring = KeyRing::load(&dir.path().join("keys")).unwrap();
        (dir, ring)
    }

    fn sign(signer: &Signer, digest: &str) -> String {
        signer
            .sign(
                Subject {
                    principal: &user(),
                    org: Some("acme"),
                    method: "POST",
                    target: "/v1/orgs/acme/zones?x=1",
                    request_id: "r1",
                    content_digest: digest,
                },
                1_800_000_000,
            )
            .unwrap()
    }

    fn validation(alg: jsonwebtoken::Algorithm) -> jsonwebtoken::Validation {
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_audience(&["zone-backend"]);
        validation.validate_exp = false;
        validation
    }

    /// A changed byte anywhere breaks the signature.
    fn tampered(token: &str) -> String {
        let mut forged = token.to_owned().into_bytes();
        let at = forged.len() / 2;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(forged).unwrap()
    }

    #[test]
    fn hs256_assertions_verify_with_their_key_id_and_bind_body_and_id() {
        let (_dir, ring) = ring();
        let signer = Signer::new(
            &ring,
            Algorithm::Hs256,
            "zone-backend",
            Duration::from_secs(5),
        )
        .unwrap();
        let digest = content_digest(b"{}");
        let token = sign(&signer, &digest);
        let key = ring.active(Purpose::Identity).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some(key.id.as_str()));
        let decoding = jsonwebtoken::DecodingKey::from_secret(key.secret.expose());
        let validation = validation(jsonwebtoken::Algorithm::HS256);
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "u1");
        assert_eq!(claims["org"], "acme");
        assert_eq!(claims["htu"], "/v1/orgs/acme/zones?x=1");
        assert_eq!(claims["cd"], digest.as_str());
        assert_eq!(claims["exp"], 1_800_000_005);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        // Every assertion has its own id, even for the same request at the same second.
        let again = jsonwebtoken::decode::<serde_json::Value>(
            &sign(&signer, &digest),
            &decoding,
            &validation,
        )
        .unwrap()
        .claims;
        assert_ne!(again["jti"], claims["jti"]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(
            &tampered(&token),
            &decoding,
            &validation
        )
        .is_err());
    }

    #[test]
    fn eddsa_assertions_verify_with_the_public_key_alone() {
        let (dir, ring) = ring();
        let signer = Signer::new(
            &ring,
            Algorithm::EdDsa,
            "zone-backend",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(signer.key_id(), "signing-1");
        let token = sign(&signer, EMPTY_CONTENT_DIGEST);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some("signing-1"));
        // The backend's file: the public key only.
        let public = std::fs::read_to_string(dir.path().join("keys/signing-1.pub")).unwrap();
        let public = base64::engine::general_purpose::STANDARD
            .decode(public.trim())
            .unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_ed_der(&public);
        let validation = validation(jsonwebtoken::Algorithm::EdDSA);
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["cd"], EMPTY_CONTENT_DIGEST);
        assert!(jsonwebtoken::decode::<serde_json::Value>(
            &tampered(&token),
            &decoding,
            &validation
        )
        .is_err());
    }

    #[test]
    fn a_ring_without_a_signing_key_cannot_sign_eddsa_and_says_what_to_run() {
        let (dir, _) = ring();
        std::fs::remove_file(dir.path().join("keys/signing-1.key")).unwrap();
        let ring = KeyRing::load(&dir.path().join("keys")).unwrap();
        let err = Signer::new(
            &ring,
            Algorithm::EdDsa,
            "zone-backend",
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(err.to_string().contains("zonegate keys rotate"), "{err}");
        assert!(Signer::new(
            &ring,
            Algorithm::Hs256,
            "zone-backend",
            Duration::from_secs(5)
        )
        .is_ok());
    }

    /// The claims as serde_json writes them: what the hand-written encoder must match.
    #[derive(Serialize)]
    struct Reference<'a> {
        iss: &'static str,
        aud: &'a str,
        iat: u64,
        exp: u64,
        jti: &'a str,
        rid: &'a str,
        htm: &'a str,
        htu: &'a str,
        cd: &'a str,
        sub: &'a str,
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        org: Option<&'a str>,
    }

    fn matches_serde(audience: &str, target: &str, user_id: &str, org: Option<&str>, now: u64) {
        let (_dir, ring) = ring();
        let signer =
            Signer::new(&ring, Algorithm::Hs256, audience, Duration::from_secs(5)).unwrap();
        let principal = Principal::User(Arc::new(UserPrincipal {
            user_id: user_id.into(),
            email: "a@b.example".into(),
            email_verified: true,
            mfa: false,
            session_id: "s".into(),
            family_id: "f".into(),
        }));
        let subject = Subject {
            principal: &principal,
            org,
            method: "GET",
            target,
            request_id: "r-1",
            content_digest: EMPTY_CONTENT_DIGEST,
        };
        let written = signer.claims(&subject, "jti-value", now);
        let reference = serde_json::to_vec(&Reference {
            iss: ISSUER,
            aud: audience,
            iat: now,
            exp: now + 5,
            jti: "jti-value",
            rid: "r-1",
            htm: "GET",
            htu: target,
            cd: EMPTY_CONTENT_DIGEST,
            sub: user_id,
            kind: principal.kind(),
            org,
        })
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&reference)
        );
    }

    #[test]
    fn claims_are_the_json_serde_writes_for_every_escape() {
        matches_serde(
            "zone-backend",
            "/v1/orgs/acme/zones?x=1",
            "u1",
            Some("acme"),
            0,
        );
        matches_serde(
            "a\"b\\c",
            "/p\u{0}\u{1f}\u{7f}\u{8}\u{c}\n\r\t\"é𝄞",
            "\\",
            None,
            u64::MAX - 5,
        );
    }

    proptest::proptest! {
        #[test]
        fn claims_match_serde_for_any_strings(
            audience in ".{0,12}",
            target in "\\PC{0,40}|[\\x00-\\x7f]{0,40}",
            user_id in ".{0,12}",
            org in proptest::option::of(".{0,12}"),
            now in 0u64..u64::MAX - 5,
        ) {
            matches_serde(&audience, &target, &user_id, org.as_deref(), now);
        }
    }
}
