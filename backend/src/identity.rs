//! Verification of the gateway's identity assertion, and org authorisation. The HTTP side (the
//! middleware and extractors that apply it to requests) is in [`crate::guard`].
//!
//! zonegate authenticates callers and forwards each request with a short-lived
//! HS256 JWT in the `zonegate-identity` header. The assertion is bound to one
//! request: `htm` and `htu` must equal this request's method and target, so a
//! captured assertion cannot be replayed against another endpoint. Keys are
//! shared files in a key directory, named by `kid`; several may be live at once
//! during rotation.
//!
//! This module must never:
//! - accept any algorithm but HS256 (so `none` and RSA/HMAC confusion are
//!   impossible);
//! - tell the client *why* an assertion failed, or log the token; the reason
//!   category is logged, the response is a generic 401;
//! - let a handler see an org it was not authorised for: [`AuthorizedOrg`] can
//!   only be built by checking the verified identity against the path.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::clock::Clock;

/// Request header carrying the assertion.
pub const IDENTITY_HEADER: &str = "zonegate-identity";
/// Required `iss` claim.
pub const ISSUER: &str = "zonegate";
/// Default `aud` claim; the backend's own name.
pub const DEFAULT_AUDIENCE: &str = "zone-backend";
/// Tolerated clock skew between gateway and backend, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Length of every identity key.
pub const KEY_LEN: usize = 32;
/// Assertions are a few hundred bytes; anything far larger is not one of ours
/// and is rejected before any parsing.
const MAX_ASSERTION_LEN: usize = 8 * 1024;

/// What kind of principal the gateway authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    Anonymous,
    User,
    ApiKey,
    PlatformAdmin,
}

/// The caller as vouched for by the gateway, for this request only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The gateway's request id (`rid`), for correlating logs.
    pub request_id: String,
    /// The principal id (`sub`).
    pub subject: String,
    pub kind: PrincipalKind,
    /// The org the gateway authorised this request for, if any.
    pub org: Option<String>,
    pub role: Option<String>,
    pub scopes: Vec<String>,
}

/// Claims of the assertion. Unknown claims are ignored so the gateway can add
/// claims without a lockstep backend release; all listed ones are required
/// unless optional here.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    /// A single string: an array audience is rejected, not searched.
    aud: String,
    iat: u64,
    exp: u64,
    rid: String,
    htm: String,
    htu: String,
    sub: String,
    kind: PrincipalKind,
    org: Option<String>,
    role: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Why an assertion was rejected. Logged as a category; never sent to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("missing")]
    Missing,
    #[error("malformed")]
    Malformed,
    #[error("unknown_kid")]
    UnknownKid,
    #[error("bad_signature")]
    BadSignature,
    #[error("bad_claims")]
    BadClaims,
    #[error("wrong_issuer")]
    WrongIssuer,
    #[error("wrong_audience")]
    WrongAudience,
    #[error("expired")]
    Expired,
    #[error("issued_in_future")]
    IssuedInFuture,
    #[error("method_mismatch")]
    MethodMismatch,
    #[error("target_mismatch")]
    TargetMismatch,
}

/// Problems loading identity keys. Messages name files and key ids, never key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key directory: {0}")]
    ReadDir(#[source] std::io::Error),
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: identity key files must be named identity-<n>.key, n a positive integer")]
    BadFileName { file: String },
    #[error("key {kid}: must be standard base64 of exactly {KEY_LEN} bytes")]
    BadKey { kid: String },
    #[error("key id {kid} appears twice")]
    DuplicateKid { kid: String },
    #[error("no identity-<n>.key files found")]
    NoKeys,
}

/// The HMAC keys the gateway may sign with, by `kid`.
#[derive(Clone)]
pub struct IdentityKeys {
    keys: HashMap<String, DecodingKey>,
}

impl fmt::Debug for IdentityKeys {
    // Hand-written so key material can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.kids().collect();
        kids.sort_unstable();
        f.debug_struct("IdentityKeys").field("kids", &kids).finish()
    }
}

impl IdentityKeys {
    /// Loads every `identity-<n>.key` file in `dir` (kid = file stem). Other
    /// files, such as the gateway's `pepper-<n>.key`, are ignored; a file that
    /// looks like an identity key but is misnamed or malformed is an error
    /// rather than silently skipped.
    pub fn from_dir(dir: &Path) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(KeyError::ReadDir)? {
            let entry = entry.map_err(KeyError::ReadDir)?;
            let file_name = entry.file_name();
            let Some(kid) = file_name
                .to_str()
                .and_then(|name| name.strip_suffix(".key"))
                .filter(|stem| stem.starts_with("identity-"))
            else {
                continue;
            };
            if !is_identity_kid(kid) {
                return Err(KeyError::BadFileName {
                    file: file_name.to_string_lossy().into_owned(),
                });
            }
            let path = entry.path();
            let text = fs::read_to_string(&path).map_err(|source| KeyError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let bytes = decode_key_file(&text).ok_or_else(|| KeyError::BadKey {
                kid: kid.to_owned(),
            })?;
            keys.push((kid.to_owned(), bytes));
        }
        Self::from_keys(keys)
    }

    /// Builds the key set from raw `(kid, key bytes)` pairs, e.g. in tests or
    /// when embedding the backend in-process.
    pub fn from_keys(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<Self, KeyError> {
        let mut map = HashMap::new();
        for (kid, bytes) in keys {
            if bytes.len() != KEY_LEN {
                return Err(KeyError::BadKey { kid });
            }
            if map.contains_key(&kid) {
                return Err(KeyError::DuplicateKid { kid });
            }
            map.insert(kid, DecodingKey::from_secret(&bytes));
        }
        if map.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self { keys: map })
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }
}

/// `identity-<n>` with `n` a positive integer written canonically, so each
/// key has exactly one possible file name.
fn is_identity_kid(kid: &str) -> bool {
    kid.strip_prefix("identity-").is_some_and(|n| {
        !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Base64 (standard alphabet, padded) of exactly [`KEY_LEN`] bytes, with one
/// optional trailing newline.
fn decode_key_file(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    STANDARD
        .decode(text)
        .ok()
        .filter(|bytes| bytes.len() == KEY_LEN)
}

/// Checks assertions against the key set, the configured audience and a clock.
#[derive(Debug)]
pub struct IdentityVerifier {
    keys: IdentityKeys,
    audience: String,
    clock: Arc<dyn Clock>,
    validation: Validation,
}

impl IdentityVerifier {
    pub fn new(keys: IdentityKeys, audience: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        // jsonwebtoken only checks the algorithm and signature. Every claim is
        // checked in `check_claims`, in one place and against the injected clock.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Self {
            keys,
            audience: audience.into(),
            clock,
            validation,
        }
    }

    /// Verifies the assertion in `headers` for a request with this method and
    /// target (path plus `?query`, exactly as received).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        target: &str,
    ) -> Result<VerifiedIdentity, AssertionError> {
        let token = assertion_header(headers)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AssertionError::Malformed)?;
        let kid = header.kid.ok_or(AssertionError::UnknownKid)?;
        let key = self.keys.get(&kid).ok_or(AssertionError::UnknownKid)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => AssertionError::BadSignature,
                ErrorKind::Json(_) => AssertionError::BadClaims,
                _ => AssertionError::Malformed,
            })?
            .claims;
        self.check_claims(&claims, method, target)?;
        Ok(VerifiedIdentity {
            request_id: claims.rid,
            subject: claims.sub,
            kind: claims.kind,
            org: claims.org,
            role: claims.role,
            scopes: claims.scopes,
        })
    }

    fn check_claims(
        &self,
        claims: &Claims,
        method: &Method,
        target: &str,
    ) -> Result<(), AssertionError> {
        let now = self.clock.unix_seconds();
        if claims.iss != ISSUER {
            return Err(AssertionError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(AssertionError::WrongAudience);
        }
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AssertionError::Expired);
        }
        if claims.iat > now.saturating_add(LEEWAY_SECS) {
            return Err(AssertionError::IssuedInFuture);
        }
        if claims.htm != method.as_str() {
            return Err(AssertionError::MethodMismatch);
        }
        if claims.htu != target {
            return Err(AssertionError::TargetMismatch);
        }
        Ok(())
    }
}

/// The single, printable, reasonably sized assertion header. Several copies are
/// rejected: which one a proxy would honour is ambiguous.
fn assertion_header(headers: &HeaderMap) -> Result<&str, AssertionError> {
    let mut values = headers.get_all(IDENTITY_HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(IDENTITY_HEADER) {
            AssertionError::Malformed
        } else {
            AssertionError::Missing
        });
    };
    let token = value.to_str().map_err(|_| AssertionError::Malformed)?;
    if token.is_empty() || token.len() > MAX_ASSERTION_LEN {
        return Err(AssertionError::Malformed);
    }
    Ok(token)
}

/// Proof that the caller may act for the org named in the path. Store queries
/// take this rather than a string, so a query cannot be scoped to an org that
/// was not checked.
#[derive(Debug, Clone)]
pub struct AuthorizedOrg {
    org: String,
    identity: VerifiedIdentity,
}

impl AuthorizedOrg {
    pub fn id(&self) -> &str {
        &self.org
    }

    pub fn identity(&self) -> &VerifiedIdentity {
        &self.identity
    }
}

impl AuthorizedOrg {
    /// The org named in the path, if the verified identity was authorised for exactly it
    /// (the decoded path segment compared with the claim: the gateway names the org it
    /// authorised, and nothing else is accepted).
    pub fn for_path(identity: VerifiedIdentity, path_org: String) -> Option<AuthorizedOrg> {
        (identity.org.as_deref() == Some(path_org.as_str())).then_some(AuthorizedOrg {
            org: path_org,
            identity,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn kid_names_are_canonical() {
        assert!(is_identity_kid("identity-1"));
        assert!(is_identity_kid("identity-42"));
        for bad in [
            "identity-0",
            "identity-01",
            "identity-",
            "identity-x",
            "identity--1",
            "pepper-1",
        ] {
            assert!(!is_identity_kid(bad), "{bad}");
        }
    }

    #[test]
    fn key_files_are_padded_base64_of_32_bytes() {
        let key = STANDARD.encode([7u8; KEY_LEN]);
        assert_eq!(decode_key_file(&key), Some(vec![7u8; KEY_LEN]));
        assert_eq!(
            decode_key_file(&format!("{key}\n")),
            Some(vec![7u8; KEY_LEN])
        );
        assert_eq!(
            decode_key_file(&format!("{key}\r\n")),
            Some(vec![7u8; KEY_LEN])
        );
        assert_eq!(decode_key_file(&format!("{key}\n\n")), None);
        assert_eq!(
            decode_key_file(key.trim_end_matches('=')),
            None,
            "padding required"
        );
        assert_eq!(decode_key_file(&STANDARD.encode([7u8; 31])), None);
        assert_eq!(decode_key_file("not base64!"), None);
    }

    #[test]
    fn loads_identity_keys_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("identity-1.key"),
            STANDARD.encode([1u8; 32]) + "\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("identity-2.key"),
            STANDARD.encode([2u8; 32]),
        )
        .unwrap();
        fs::write(dir.path().join("pepper-1.key"), "not an identity key").unwrap();
        fs::write(dir.path().join("identity-3.key.tmp"), "half-written").unwrap();
        let keys = IdentityKeys::from_dir(dir.path()).unwrap();
        let mut kids: Vec<&str> = keys.kids().collect();
        kids.sort_unstable();
        assert_eq!(kids, ["identity-1", "identity-2"]);
        // Debug output lists key ids only, never key bytes.
        assert_eq!(
            format!("{keys:?}"),
            r#"IdentityKeys { kids: ["identity-1", "identity-2"] }"#
        );
    }

    #[test]
    fn rejects_bad_key_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            IdentityKeys::from_dir(dir.path()),
            Err(KeyError::NoKeys)
        ));
        fs::write(
            dir.path().join("identity-1.key"),
            STANDARD.encode([1u8; 16]),
        )
        .unwrap();
        let err = IdentityKeys::from_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::BadKey { kid } if kid == "identity-1"),
            "{err}"
        );
        fs::remove_file(dir.path().join("identity-1.key")).unwrap();
        fs::write(
            dir.path().join("identity-one.key"),
            STANDARD.encode([1u8; 32]),
        )
        .unwrap();
        let err = IdentityKeys::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::BadFileName { .. }), "{err}");
        let missing = dir.path().join("missing");
        assert!(matches!(
            IdentityKeys::from_dir(&missing),
            Err(KeyError::ReadDir(_))
        ));
    }

    #[test]
    fn from_keys_validates_length_and_duplicates() {
        let err = IdentityKeys::from_keys(vec![("k".to_owned(), vec![0; 31])]).unwrap_err();
        assert!(matches!(err, KeyError::BadKey { .. }));
        let twice = vec![("k".to_owned(), vec![0; 32]), ("k".to_owned(), vec![1; 32])];
        assert!(matches!(
            IdentityKeys::from_keys(twice),
            Err(KeyError::DuplicateKid { .. })
        ));
        assert!(matches!(
            IdentityKeys::from_keys(Vec::new()),
            Err(KeyError::NoKeys)
        ));
    }

    mod verifier {
        use super::*;
        use jsonwebtoken::{encode, EncodingKey, Header};
        use serde_json::{json, Value};
        use std::time::{Duration, SystemTime, UNIX_EPOCH};

        const NOW: u64 = 1_700_000_000;
        const KEY: [u8; KEY_LEN] = [5; KEY_LEN];
        const TARGET: &str = "/v1/orgs/acme/zones?x=1";

        #[derive(Debug)]
        struct FixedClock;

        impl Clock for FixedClock {
            fn now(&self) -> SystemTime {
                UNIX_EPOCH + Duration::from_secs(NOW)
            }
        }

        fn verifier() -> IdentityVerifier {
            let keys = IdentityKeys::from_keys(vec![("identity-1".to_owned(), KEY.to_vec())]);
            IdentityVerifier::new(keys.unwrap(), DEFAULT_AUDIENCE, Arc::new(FixedClock))
        }

        fn claims() -> Value {
            json!({
                "iss": "zonegate", "aud": "zone-backend", "iat": NOW, "exp": NOW + 30,
                "rid": "r1", "htm": "GET", "htu": TARGET, "sub": "u1", "kind": "api_key",
                "org": "acme", "scopes": ["zones:read"],
            })
        }

        fn sign(claims: &Value, alg: Algorithm, kid: Option<&str>, key: &[u8]) -> String {
            let mut header = Header::new(alg);
            header.kid = kid.map(str::to_owned);
            encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
        }

        fn verify(
            token: &str,
            method: Method,
            target: &str,
        ) -> Result<VerifiedIdentity, AssertionError> {
            let mut headers = HeaderMap::new();
            headers.insert(IDENTITY_HEADER, token.parse().unwrap());
            verifier().verify(&headers, &method, target)
        }

        fn verify_claims(
            edit: impl FnOnce(&mut Value),
        ) -> Result<VerifiedIdentity, AssertionError> {
            let mut claims = claims();
            edit(&mut claims);
            verify(
                &sign(&claims, Algorithm::HS256, Some("identity-1"), &KEY),
                Method::GET,
                TARGET,
            )
        }

        #[test]
        fn valid_assertion_yields_the_identity() {
            let identity = verify_claims(|_| {}).unwrap();
            assert_eq!(
                identity,
                VerifiedIdentity {
                    request_id: "r1".to_owned(),
                    subject: "u1".to_owned(),
                    kind: PrincipalKind::ApiKey,
                    org: Some("acme".to_owned()),
                    role: None,
                    scopes: vec!["zones:read".to_owned()],
                }
            );
        }

        #[test]
        fn each_failure_has_its_category() {
            use AssertionError::*;
            type Edit = fn(&mut Value);
            let cases: [(AssertionError, Edit); 10] = [
                (WrongIssuer, |c| c["iss"] = json!("other")),
                (WrongAudience, |c| c["aud"] = json!("other")),
                (BadClaims, |c| c["aud"] = json!(["zone-backend"])),
                (BadClaims, |c| c["kind"] = json!("root")),
                (BadClaims, |c| c["exp"] = json!(1.5)),
                (BadClaims, |c| {
                    drop(c.as_object_mut().map(|c| c.remove("rid")))
                }),
                (Expired, |c| c["exp"] = json!(NOW - LEEWAY_SECS - 1)),
                (IssuedInFuture, |c| c["iat"] = json!(NOW + LEEWAY_SECS + 1)),
                (MethodMismatch, |c| c["htm"] = json!("POST")),
                (TargetMismatch, |c| c["htu"] = json!("/v1/orgs/acme/zones")),
            ];
            for (expected, edit) in cases {
                assert_eq!(verify_claims(edit).unwrap_err(), expected);
            }
            assert!(verify_claims(|c| c["exp"] = json!(NOW - LEEWAY_SECS)).is_ok());
            assert!(verify_claims(|c| c["iat"] = json!(NOW + LEEWAY_SECS)).is_ok());
        }

        #[test]
        fn keys_and_algorithms_are_enforced() {
            let claims = claims();
            let forged = sign(&claims, Algorithm::HS256, Some("identity-1"), &[6; KEY_LEN]);
            assert_eq!(
                verify(&forged, Method::GET, TARGET),
                Err(AssertionError::BadSignature)
            );
            let unknown = sign(&claims, Algorithm::HS256, Some("identity-2"), &KEY);
            assert_eq!(
                verify(&unknown, Method::GET, TARGET),
                Err(AssertionError::UnknownKid)
            );
            let no_kid = sign(&claims, Algorithm::HS256, None, &KEY);
            assert_eq!(
                verify(&no_kid, Method::GET, TARGET),
                Err(AssertionError::UnknownKid)
            );
            let hs512 = sign(&claims, Algorithm::HS512, Some("identity-1"), &KEY);
            assert_eq!(
                verify(&hs512, Method::GET, TARGET),
                Err(AssertionError::Malformed)
            );
            let b64 =
                |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            let none = format!(
                "{}.{}.",
                b64(json!({"alg": "none", "kid": "identity-1"})),
                b64(claims)
            );
            assert_eq!(
                verify(&none, Method::GET, TARGET),
                Err(AssertionError::Malformed)
            );
            let missing = verifier().verify(&HeaderMap::new(), &Method::GET, TARGET);
            assert_eq!(missing, Err(AssertionError::Missing));
        }
    }
}
