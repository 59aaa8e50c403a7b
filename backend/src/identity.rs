//! Verification of the gateway's identity assertion, and org authorisation. The HTTP side (the
//! middleware and extractors that apply it to requests) is in [`crate::guard`].
//!
//! zonegate authenticates callers and forwards each request with a short-lived
//! JWT in the `zonegate-identity` header. The assertion is bound to one
//! request: `htm` and `htu` must equal this request's method and target, `cd`
//! the RFC 9530 `Content-Digest` of the body received, and its `jti` is accepted
//! once (a bounded replay cache remembers ids until they expire), so a captured
//! assertion cannot be replayed, not to another endpoint, with another body, or
//! at all. Keys are files in a key directory, named by `kid`; several may be
//! live at once during rotation:
//!
//! - `identity-<n>.key`: an HS256 key shared with the gateway;
//! - `signing-<n>.pub`: an Ed25519 public key (`EdDSA`), so this backend can
//!   verify but never mint.
//!
//! This module must never:
//! - accept an algorithm other than the one its key id names (HS256 for an
//!   `identity-` key, EdDSA for a `signing-` key), so `none` and key confusion
//!   are impossible;
//! - tell the client *why* an assertion failed, or log the token; the reason
//!   category is logged, the response is a generic 401;
//! - let a handler see an org it was not authorised for: [`AuthorizedOrg`] can
//!   only be built by checking the verified identity against the path.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
pub const LEEWAY_SECS: u64 = 1;
/// The longest lifetime (`exp - iat`) accepted, which bounds how long the replay
/// cache must remember an id. The gateway's default is 5 s, its maximum 60 s.
pub const MAX_LIFETIME_SECS: u64 = 60;
/// Assertion ids remembered at once, by default. At the gateway's default
/// lifetime (5 s plus 1 s leeway) this allows ~33,000 requests a second; past
/// it, requests are refused with 503 until ids expire (fail closed).
pub const DEFAULT_REPLAY_CACHE_ENTRIES: usize = 200_000;
/// The longest `jti` accepted (the gateway's are 22 characters).
const MAX_JTI_LEN: usize = 64;
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
    jti: String,
    rid: String,
    htm: String,
    htu: String,
    /// RFC 9530 `Content-Digest` of the body, `sha-256=:<base64>:`.
    cd: String,
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
    #[error("body_mismatch")]
    BodyMismatch,
    #[error("replayed")]
    Replayed,
    /// Every slot of the replay cache holds a live id: refused rather than
    /// accepted unchecked.
    #[error("replay_cache_full")]
    ReplayCacheFull,
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
    #[error(
        "{file}: key files must be named identity-<n>.key or signing-<n>.pub, n a positive integer"
    )]
    BadFileName { file: String },
    #[error("key {kid}: must be standard base64 of exactly {KEY_LEN} bytes")]
    BadKey { kid: String },
    #[error("key id {kid} appears twice")]
    DuplicateKid { kid: String },
    #[error("no identity-<n>.key or signing-<n>.pub files found")]
    NoKeys,
}

/// The keys the gateway may sign with, by `kid`, each with the one algorithm it
/// verifies.
#[derive(Clone)]
pub struct IdentityKeys {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
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
    /// Loads every `identity-<n>.key` (HS256) and `signing-<n>.pub` (Ed25519
    /// public) file in `dir` (kid = file stem). Other files, such as the
    /// gateway's `pepper-<n>.key` and `signing-<n>.key`, are ignored (see
    /// [`private_signing_key_files`]); a file that looks like a key but is
    /// misnamed or malformed is an error rather than silently skipped.
    pub fn from_dir(dir: &Path) -> Result<Self, KeyError> {
        let mut shared = Vec::new();
        let mut public = Vec::new();
        for entry in fs::read_dir(dir).map_err(KeyError::ReadDir)? {
            let entry = entry.map_err(KeyError::ReadDir)?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let (kid, into) = if let Some(stem) = name
                .strip_suffix(".key")
                .filter(|stem| stem.starts_with("identity-"))
            {
                (stem, &mut shared)
            } else if let Some(stem) = name
                .strip_suffix(".pub")
                .filter(|stem| stem.starts_with("signing-"))
            {
                (stem, &mut public)
            } else {
                continue;
            };
            if !is_kid(kid) {
                return Err(KeyError::BadFileName {
                    file: name.to_owned(),
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
            into.push((kid.to_owned(), bytes));
        }
        Self::from_parts(shared, public)
    }

    /// Builds the key set from raw `(kid, key bytes)` HS256 keys, e.g. in tests
    /// or when embedding the backend in-process.
    pub fn from_keys(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<Self, KeyError> {
        Self::from_parts(keys, Vec::new())
    }

    /// Builds the key set from HS256 keys and Ed25519 public keys.
    pub fn from_parts(
        shared: impl IntoIterator<Item = (String, Vec<u8>)>,
        public: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Self, KeyError> {
        let mut map = HashMap::new();
        let shared = shared
            .into_iter()
            .map(|(kid, b)| (kid, b, Algorithm::HS256));
        let public = public
            .into_iter()
            .map(|(kid, b)| (kid, b, Algorithm::EdDSA));
        for (kid, bytes, algorithm) in shared.chain(public) {
            if bytes.len() != KEY_LEN {
                return Err(KeyError::BadKey { kid });
            }
            if map.contains_key(&kid) {
                return Err(KeyError::DuplicateKid { kid });
            }
            let key = match algorithm {
                Algorithm::EdDSA => DecodingKey::from_ed_der(&bytes),
                _ => DecodingKey::from_secret(&bytes),
            };
            map.insert(kid, (algorithm, key));
        }
        if map.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self { keys: map })
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    fn get(&self, kid: &str) -> Option<&(Algorithm, DecodingKey)> {
        self.keys.get(kid)
    }
}

/// The gateway's Ed25519 private keys (`signing-<n>.key`) in `dir`: never read
/// by the backend, but a backend of its own should not hold them (it needs only
/// the `.pub` files), so `zone-backend serve` warns. A directory shared with the
/// gateway, as `zonegate dev` runs it, has them by design.
pub fn private_signing_key_files(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with("signing-") && name.ends_with(".key"))
        .collect();
    found.sort_unstable();
    found
}

/// `identity-<n>` or `signing-<n>` with `n` a positive integer written
/// canonically, so each key has exactly one possible file name.
fn is_kid(kid: &str) -> bool {
    kid.strip_prefix("identity-")
        .or_else(|| kid.strip_prefix("signing-"))
        .is_some_and(|n| {
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

/// Assertion ids seen and not yet expired, bounded: an id is remembered until
/// its assertion could no longer verify (`exp` plus the leeway), and no longer.
#[derive(Debug)]
struct ReplayCache {
    /// `jti` → the Unix second after which it can be forgotten.
    seen: HashMap<String, u64>,
    capacity: usize,
    /// Expired ids are swept at most once a second (or when the cache is full).
    next_sweep: u64,
}

impl ReplayCache {
    fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            capacity: capacity.max(1),
            next_sweep: 0,
        }
    }

    /// Accept `jti` once. Called only for an assertion that passed every other
    /// check, so nobody without a signing key can fill the cache.
    fn admit(&mut self, jti: &str, forget_after: u64, now: u64) -> Result<(), AssertionError> {
        if now >= self.next_sweep || self.seen.len() >= self.capacity {
            self.seen.retain(|_, until| *until >= now);
            self.next_sweep = now.saturating_add(1);
        }
        if self.seen.contains_key(jti) {
            return Err(AssertionError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(AssertionError::ReplayCacheFull);
        }
        self.seen.insert(jti.to_owned(), forget_after);
        Ok(())
    }
}

/// Checks assertions against the key set, the configured audience, a clock and
/// the ids already used.
#[derive(Debug)]
pub struct IdentityVerifier {
    keys: IdentityKeys,
    audience: String,
    clock: Arc<dyn Clock>,
    /// One per algorithm: jsonwebtoken refuses a validation naming algorithms of
    /// another family than the key's.
    hs256: Validation,
    eddsa: Validation,
    replay: Mutex<ReplayCache>,
}

impl IdentityVerifier {
    pub fn new(keys: IdentityKeys, audience: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self::with_replay_capacity(keys, audience, clock, DEFAULT_REPLAY_CACHE_ENTRIES)
    }

    pub fn with_replay_capacity(
        keys: IdentityKeys,
        audience: impl Into<String>,
        clock: Arc<dyn Clock>,
        replay_capacity: usize,
    ) -> Self {
        // jsonwebtoken only checks the algorithm and signature (and that the
        // header's algorithm matches the key's family). Every claim is checked
        // in `check_claims`, in one place and against the injected clock.
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation
        };
        Self {
            keys,
            audience: audience.into(),
            clock,
            hs256: validation(Algorithm::HS256),
            eddsa: validation(Algorithm::EdDSA),
            replay: Mutex::new(ReplayCache::new(replay_capacity)),
        }
    }

    /// Verifies the assertion in `headers` for a request with this method,
    /// target (path plus `?query`, exactly as received) and body, and spends
    /// its id: the same assertion never verifies twice.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        target: &str,
        body: &[u8],
    ) -> Result<VerifiedIdentity, AssertionError> {
        let token = assertion_header(headers)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AssertionError::Malformed)?;
        let kid = header.kid.ok_or(AssertionError::UnknownKid)?;
        let (algorithm, key) = self.keys.get(&kid).ok_or(AssertionError::UnknownKid)?;
        // The key decides the algorithm, never the token.
        if header.alg != *algorithm {
            return Err(AssertionError::Malformed);
        }
        let validation = match algorithm {
            Algorithm::EdDSA => &self.eddsa,
            _ => &self.hs256,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => AssertionError::BadSignature,
                ErrorKind::Json(_) => AssertionError::BadClaims,
                _ => AssertionError::Malformed,
            })?
            .claims;
        let now = self.clock.unix_seconds();
        self.check_claims(&claims, method, target, now)?;
        if claims.cd != content_digest(body) {
            return Err(AssertionError::BodyMismatch);
        }
        self.replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(&claims.jti, claims.exp.saturating_add(LEEWAY_SECS), now)?;
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
        now: u64,
    ) -> Result<(), AssertionError> {
        if claims.iss != ISSUER {
            return Err(AssertionError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(AssertionError::WrongAudience);
        }
        if claims.jti.is_empty()
            || claims.jti.len() > MAX_JTI_LEN
            || claims.exp < claims.iat
            || claims.exp - claims.iat > MAX_LIFETIME_SECS
        {
            return Err(AssertionError::BadClaims);
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

pub use zonegate_common::digest::content_digest;

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
        assert!(is_kid("identity-1"));
        assert!(is_kid("identity-42"));
        assert!(is_kid("signing-3"));
        for bad in [
            "signing-0",
            "identity-0",
            "identity-01",
            "identity-",
            "identity-x",
            "identity--1",
            "pepper-1",
        ] {
            assert!(!is_kid(bad), "{bad}");
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
        fs::write(
            dir.path().join("signing-1.pub"),
            STANDARD.encode([3u8; 32]) + "\n",
        )
        .unwrap();
        let keys = IdentityKeys::from_dir(dir.path()).unwrap();
        let mut kids: Vec<&str> = keys.kids().collect();
        kids.sort_unstable();
        assert_eq!(kids, ["identity-1", "identity-2", "signing-1"]);
        assert_eq!(keys.get("signing-1").unwrap().0, Algorithm::EdDSA);
        assert_eq!(keys.get("identity-1").unwrap().0, Algorithm::HS256);
        // Debug output lists key ids only, never key bytes.
        assert_eq!(
            format!("{keys:?}"),
            r#"IdentityKeys { kids: ["identity-1", "identity-2", "signing-1"] }"#
        );
        // The gateway's Ed25519 private key is never loaded, only noted for a warning.
        fs::write(dir.path().join("signing-1.key"), STANDARD.encode([4u8; 32])).unwrap();
        let keys = IdentityKeys::from_dir(dir.path()).unwrap();
        assert_eq!(private_signing_key_files(dir.path()), ["signing-1.key"]);
        assert_eq!(keys.kids().count(), 3);
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

        /// Ed25519 seed of the test signing key, and its PKCS#8 v1 wrapping (RFC 8410).
        const SEED: [u8; 32] = [9; 32];
        const PKCS8_PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];

        #[derive(Debug)]
        struct FixedClock;

        impl Clock for FixedClock {
            fn now(&self) -> SystemTime {
                UNIX_EPOCH + Duration::from_secs(NOW)
            }
        }

        /// A clock tests move by hand.
        #[derive(Debug)]
        struct SteppedClock(std::sync::atomic::AtomicU64);

        impl Clock for SteppedClock {
            fn now(&self) -> SystemTime {
                UNIX_EPOCH + Duration::from_secs(self.0.load(std::sync::atomic::Ordering::SeqCst))
            }
        }

        fn ed25519_public() -> Vec<u8> {
            use ring::signature::KeyPair;
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&SEED).unwrap();
            pair.public_key().as_ref().to_vec()
        }

        fn keys() -> IdentityKeys {
            IdentityKeys::from_parts(
                vec![("identity-1".to_owned(), KEY.to_vec())],
                vec![("signing-1".to_owned(), ed25519_public())],
            )
            .unwrap()
        }

        fn verifier() -> IdentityVerifier {
            IdentityVerifier::new(keys(), DEFAULT_AUDIENCE, Arc::new(FixedClock))
        }

        fn claims() -> Value {
            json!({
                "iss": "zonegate", "aud": "zone-backend", "iat": NOW, "exp": NOW + 5,
                "jti": "aaaaaaaaaaaaaaaaaaaaaa",
                "rid": "r1", "htm": "GET", "htu": TARGET, "cd": content_digest(b""),
                "sub": "u1", "kind": "api_key", "org": "acme", "scopes": ["zones:read"],
            })
        }

        fn sign_ed25519(claims: &Value, kid: &str) -> String {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.to_owned());
            let der = [PKCS8_PREFIX.as_slice(), SEED.as_slice()].concat();
            encode(&header, claims, &EncodingKey::from_ed_der(&der)).unwrap()
        }

        fn headers(token: &str) -> HeaderMap {
            let mut headers = HeaderMap::new();
            headers.insert(IDENTITY_HEADER, token.parse().unwrap());
            headers
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
            verifier().verify(&headers(token), &method, target, b"")
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
            let cases: [(AssertionError, Edit); 14] = [
                (WrongIssuer, |c| c["iss"] = json!("other")),
                (WrongAudience, |c| c["aud"] = json!("other")),
                (BadClaims, |c| c["aud"] = json!(["zone-backend"])),
                (BadClaims, |c| c["kind"] = json!("root")),
                (BadClaims, |c| c["exp"] = json!(1.5)),
                (BadClaims, |c| {
                    drop(c.as_object_mut().map(|c| c.remove("rid")))
                }),
                (BadClaims, |c| c["jti"] = json!("")),
                (BadClaims, |c| c["jti"] = json!("j".repeat(65))),
                (BadClaims, |c| c["exp"] = json!(NOW + MAX_LIFETIME_SECS + 1)),
                (BodyMismatch, |c| c["cd"] = json!(content_digest(b"{}"))),
                (Expired, |c| {
                    c["iat"] = json!(NOW - 10);
                    c["exp"] = json!(NOW - LEEWAY_SECS - 1);
                }),
                (IssuedInFuture, |c| c["iat"] = json!(NOW + LEEWAY_SECS + 1)),
                (MethodMismatch, |c| c["htm"] = json!("POST")),
                (TargetMismatch, |c| c["htu"] = json!("/v1/orgs/acme/zones")),
            ];
            for (expected, edit) in cases {
                assert_eq!(verify_claims(edit).unwrap_err(), expected);
            }
            assert!(verify_claims(|c| {
                c["iat"] = json!(NOW - 10);
                c["exp"] = json!(NOW - LEEWAY_SECS);
            })
            .is_ok());
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
            let missing = verifier().verify(&HeaderMap::new(), &Method::GET, TARGET, b"");
            assert_eq!(missing, Err(AssertionError::Missing));
        }

        #[test]
        fn an_assertion_is_accepted_once_and_only_with_its_body() {
            let verifier = verifier();
            let mut c = claims();
            c["htm"] = json!("POST");
            c["cd"] = json!(content_digest(br#"{"name":"a"}"#));
            let token = sign(&c, Algorithm::HS256, Some("identity-1"), &KEY);
            let post = |body: &[u8]| verifier.verify(&headers(&token), &Method::POST, TARGET, body);
            // Another body: refused, and the id is not spent by the attempt.
            assert_eq!(post(br#"{"name":"b"}"#), Err(AssertionError::BodyMismatch));
            assert!(post(br#"{"name":"a"}"#).is_ok());
            assert_eq!(post(br#"{"name":"a"}"#), Err(AssertionError::Replayed));
        }

        #[test]
        fn eddsa_assertions_verify_with_the_public_key_and_the_kid_fixes_the_algorithm() {
            let token = sign_ed25519(&claims(), "signing-1");
            assert!(verify(&token, Method::GET, TARGET).is_ok());
            // An EdDSA signature under an HMAC key id, and an HMAC under the Ed25519 key id
            // (keyed with the public key, which anyone may hold): both refused.
            let wrong_kid = sign_ed25519(&claims(), "identity-1");
            assert_eq!(
                verify(&wrong_kid, Method::GET, TARGET),
                Err(AssertionError::Malformed)
            );
            let confused = sign(
                &claims(),
                Algorithm::HS256,
                Some("signing-1"),
                &ed25519_public(),
            );
            assert_eq!(
                verify(&confused, Method::GET, TARGET),
                Err(AssertionError::Malformed)
            );
            let mut other = claims();
            other["sub"] = json!("u2");
            let forged = format!(
                "{}.{}",
                token.rsplit_once('.').unwrap().0,
                sign_ed25519(&other, "signing-1")
                    .rsplit_once('.')
                    .unwrap()
                    .1
            );
            assert_eq!(
                verify(&forged, Method::GET, TARGET),
                Err(AssertionError::BadSignature)
            );
        }

        #[test]
        fn the_replay_cache_is_bounded_and_forgets_expired_ids() {
            let clock = Arc::new(SteppedClock(std::sync::atomic::AtomicU64::new(NOW)));
            let verifier =
                IdentityVerifier::with_replay_capacity(keys(), DEFAULT_AUDIENCE, clock.clone(), 2);
            let token = |jti: &str, iat: u64| {
                let mut c = claims();
                c["jti"] = json!(jti);
                c["iat"] = json!(iat);
                c["exp"] = json!(iat + 5);
                sign(&c, Algorithm::HS256, Some("identity-1"), &KEY)
            };
            let verify = |t: &str| verifier.verify(&headers(t), &Method::GET, TARGET, b"");
            assert!(verify(&token("a", NOW)).is_ok());
            assert!(verify(&token("b", NOW)).is_ok());
            // Full of live ids: refused, never accepted unchecked.
            assert_eq!(
                verify(&token("c", NOW)),
                Err(AssertionError::ReplayCacheFull)
            );
            // Once a and b could no longer verify (exp + leeway), their slots are free, and a
            // fresh assertion is accepted.
            clock.0.store(
                NOW + 5 + LEEWAY_SECS + 1,
                std::sync::atomic::Ordering::SeqCst,
            );
            let later = NOW + 5 + LEEWAY_SECS + 1;
            assert!(verify(&token("c", later)).is_ok());
            assert!(verify(&token("d", later)).is_ok());
            assert_eq!(verify(&token("d", later)), Err(AssertionError::Replayed));
        }
    }
}
