//! API keys: issued once, stored as HMAC-SHA256(pepper, secret), scoped to one org, revocable
//! one by one, rollable with a grace period, verified on the hot path from memory.
//!
//! Verification: the format and checksum are checked first (no lookup for garbage); the key
//! record is found by its public id in a cache (the database on a miss or every
//! `revalidate` seconds); the MAC of the presented secret is compared in constant time. A
//! revoke on this instance updates the cache before it returns, so no later request on this
//! instance is accepted. Last-used times are kept in memory and written in batches.

pub mod format;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::domain::audit::{AuditEvent, AuditLog, SecurityEvent};
use crate::domain::keyring::{KeyRing, Purpose};
use crate::domain::mac::MacKey;
use crate::domain::storage::Db;

/// Scopes a key may carry.
pub const SCOPES: [&str; 3] = ["zones:read", "zones:write", "coverage:read"];

/// An authenticated API key, as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyPrincipal {
    pub key_id: String,
    pub org_id: String,
    pub scopes: Vec<String>,
}

/// A key as the cache holds it: what checking a presented key needs, and the principal it
/// authenticates, shared by every request that presents it (no copy per request).
struct Record {
    principal: Arc<ApiKeyPrincipal>,
    /// The stored MAC, decoded once; `None` if the stored hex is corrupt (matches nothing).
    mac: Option<[u8; 32]>,
    pepper_id: String,
    expires_at: Option<i64>,
    revoked: bool,
    /// The MAC and pepper of the secret before a roll, and until when it is accepted.
    previous: Option<(Option<[u8; 32]>, String, i64)>,
    checked_at: i64,
    /// The second of this key's last use noted for `last_used`: a key used many times a
    /// second takes the lock once a second.
    noted_at: AtomicI64,
}

impl std::fmt::Debug for Record {
    // The MACs are left out: verification data, with no reason to be in any output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("principal", &self.principal)
            .field("pepper_id", &self.pepper_id)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .field("checked_at", &self.checked_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub hint: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A newly issued or rolled key: the only time the full key exists outside the client.
pub struct IssuedKey {
    pub view: KeyView,
    pub key: Zeroizing<String>,
    pub previous_valid_until: Option<i64>,
}

impl std::fmt::Debug for IssuedKey {
    // `Zeroizing<String>` would print the key; only the public parts are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("view", &self.view)
            .field("previous_valid_until", &self.previous_valid_until)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key request")]
    Invalid(&'static str),
    #[error("not found")]
    NotFound,
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// What the hot path reads: the cached records, and the keys revoked on this instance.
#[derive(Debug, Default)]
struct KeyCache {
    /// By key id. Only keys found in the database are cached, so every id in it was made by
    /// the gateway; a client picks only what is looked up. Hence foldhash, not SipHash.
    records: HashMap<String, Arc<Record>, foldhash::fast::RandomState>,
    /// Keys revoked on this instance. Checked after every lookup, so a record a concurrent
    /// request read just before the revoke cannot be re-cached into acceptance.
    revoked: std::collections::HashSet<String>,
}

#[derive(Debug)]
pub struct ApiKeys {
    db: Db,
    clock: Arc<dyn Clock>,
    /// Each pepper by id, prepared for HMAC once rather than on every request.
    peppers: Vec<(String, MacKey)>,
    active_pepper: String,
    revalidate: i64,
    roll_grace: i64,
    /// Lookups in `cache`.
    cache_stats: crate::domain::stats::CacheStats,
    /// Records and revocations under one lock: a cached key is found and checked under one
    /// shared acquisition, reading the record in place.
    cache: RwLock<KeyCache>,
    /// Bumped by every removal from `cache`: a record read from the database before one may
    /// describe a key just revoked or rolled (here or elsewhere), so it is not cached.
    generation: std::sync::atomic::AtomicU64,
    last_used: Mutex<(HashMap<String, i64>, i64)>,
    audit: AuditLog,
}

const LAST_USED_FLUSH_SECONDS: i64 = 30;

/// A stored MAC as bytes; `None` for anything but the 64 lowercase hex digits the gateway
/// writes (as the string comparison before it, an uppercase copy matches nothing).
fn decode_mac(stored: &str) -> Option<[u8; 32]> {
    if stored.len() != 64 || !format::is_lower_hex(stored) {
        return None;
    }
    let mut mac = [0u8; 32];
    hex::decode_to_slice(stored, &mut mac).ok().map(|()| mac)
}

impl ApiKeys {
    pub fn new(
        db: Db,
        ring: &KeyRing,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        revalidate: i64,
        roll_grace: i64,
    ) -> Option<ApiKeys> {
        let active_pepper = ring.active(Purpose::Pepper)?.id.clone();
        Some(ApiKeys {
            db,
            audit,
            clock,
            peppers: ring
                .all(Purpose::Pepper)
                .map(|k| (k.id.clone(), MacKey::new(k.secret.expose())))
                .collect(),
            active_pepper,
            revalidate,
            roll_grace,
            cache: RwLock::new(KeyCache::default()),
            cache_stats: Default::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
            last_used: Mutex::new((HashMap::new(), 0)),
        })
    }

    /// Record a key lifecycle event: who acted, on which key, in which org. Never the secret.
    fn audit(&self, event: SecurityEvent, key_id: &str, org_id: &str, actor: &str) {
        self.audit.record(
            AuditEvent::new(event)
                .principal(actor)
                .org(org_id)
                .detail("key_id", key_id),
        );
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.unix_seconds()).unwrap_or(i64::MAX)
    }

    fn pepper(&self, pepper_id: &str) -> Option<&MacKey> {
        self.peppers
            .iter()
            .find(|(id, _)| id == pepper_id)
            .map(|(_, key)| key)
    }

    fn mac(&self, pepper_id: &str, secret: &str) -> Option<String> {
        Some(hex::encode(self.pepper(pepper_id)?.sign(secret.as_bytes())))
    }

    /// Whether `secret` under pepper `pepper_id` gives the stored MAC, compared in constant
    /// time, with nothing allocated: this runs on every API-key request. No stored MAC (a
    /// corrupt one) or no such pepper matches nothing.
    fn mac_matches(&self, pepper_id: &str, secret: &str, stored: Option<&[u8; 32]>) -> bool {
        let (Some(pepper), Some(stored)) = (self.pepper(pepper_id), stored) else {
            return false;
        };
        bool::from(pepper.sign(secret.as_bytes()).ct_eq(stored))
    }

    fn check_scopes(scopes: &[String]) -> Result<Vec<String>, KeyError> {
        if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
            return Err(KeyError::Invalid(
                "Scopes must be a non-empty list of zones:read, zones:write, coverage:read.",
            ));
        }
        let mut out = scopes.to_vec();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Issue a key for an org. The full key is returned here and never again.
    pub async fn create(
        &self,
        org_id: &str,
        creator: &str,
        name: &str,
        scopes: &[String],
        expires_at: Option<i64>,
    ) -> Result<IssuedKey, KeyError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(KeyError::Invalid(
                "The key name must be 1 to 100 characters, without control characters.",
            ));
        }
        let scopes = Self::check_scopes(scopes)?;
        let now = self.now();
        if expires_at.is_some_and(|t| t <= now) {
            return Err(KeyError::Invalid("expires_at must be in the future."));
        }
        let (id, key) = format::generate();
        let parsed = format::parse(&key).ok_or(KeyError::Invalid("internal key format"))?;
        let mac = self
            .mac(&self.active_pepper, parsed.secret)
            .ok_or(KeyError::Invalid("no pepper"))?;
        let hint = format::hint(&id, &key);
        let mut tx = self.db.begin().await?;
        store::insert(
            &mut tx,
            &store::NewKey {
                id: &id,
                org_id,
                name,
                scopes: &scopes,
                secret_mac: &mac,
                pepper_id: &self.active_pepper,
                hint: &hint,
                created_by: creator,
                created_at: now,
                expires_at,
            },
        )
        .await?;
        tx.commit().await?;
        self.audit(SecurityEvent::ApiKeyCreated, &id, org_id, creator);
        Ok(IssuedKey {
            view: KeyView {
                id,
                name: name.to_owned(),
                hint,
                scopes,
                created_by: creator.to_owned(),
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
            },
            key,
            previous_valid_until: None,
        })
    }

    pub async fn list(&self, org_id: &str) -> Result<Vec<KeyView>, KeyError> {
        self.flush_last_used().await;
        Ok(store::list(&mut *self.db.acquire().await?, org_id).await?)
    }

    /// Revoke one key of an org. Once this returns, this instance refuses the key.
    pub async fn revoke(&self, org_id: &str, key_id: &str, actor: &str) -> Result<(), KeyError> {
        let revoked =
            store::revoke(&mut *self.db.acquire().await?, org_id, key_id, self.now()).await?;
        if !revoked {
            return Err(KeyError::NotFound);
        }
        self.bump();
        if let Ok(mut cache) = self.cache.write() {
            cache.revoked.insert(key_id.to_owned());
            cache.records.remove(key_id);
        }
        self.audit(SecurityEvent::ApiKeyRevoked, key_id, org_id, actor);
        Ok(())
    }

    /// A key revoked or rolled elsewhere: its record is re-read at its next use.
    pub fn forget(&self, key_id: &str) {
        self.bump();
        if let Ok(mut cache) = self.cache.write() {
            cache.records.remove(key_id);
        }
    }

    /// Empty the cache.
    pub fn forget_all(&self) {
        self.bump();
        if let Ok(mut cache) = self.cache.write() {
            cache.records.clear();
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Revoke every live key of an org (platform administration, by `actor`); returns how
    /// many. Each key is refused from the next request on this instance, as for [`Self::revoke`].
    pub async fn revoke_all(&self, org_id: &str, actor: &str) -> Result<usize, KeyError> {
        let ids = store::revoke_all(&mut *self.db.acquire().await?, org_id, self.now()).await?;
        self.bump();
        if let Ok(mut cache) = self.cache.write() {
            for id in &ids {
                cache.revoked.insert(id.clone());
                cache.records.remove(id);
            }
        }
        for id in &ids {
            self.audit(SecurityEvent::ApiKeyRevoked, id, org_id, actor);
        }
        Ok(ids.len())
    }

    /// Issue a new secret for a key; the old one keeps working for the roll grace period.
    pub async fn roll(
        &self,
        org_id: &str,
        key_id: &str,
        actor: &str,
    ) -> Result<IssuedKey, KeyError> {
        let now = self.now();
        let until = now + self.roll_grace;
        let key = format::with_new_secret(key_id);
        // An id no key could have (wrong characters or length) names no key: 404, like an
        // unknown one, rather than a complaint about formats the caller never sent.
        let secret = format::parse(&key).ok_or(KeyError::NotFound)?.secret;
        let mac = self
            .mac(&self.active_pepper, secret)
            .ok_or(KeyError::Invalid("no pepper"))?;
        let hint = format::hint(key_id, &key);
        let rolled = store::roll(
            &mut *self.db.acquire().await?,
            org_id,
            key_id,
            &mac,
            &self.active_pepper,
            &hint,
            until,
        )
        .await?;
        if !rolled {
            return Err(KeyError::NotFound);
        }
        self.forget(key_id);
        self.audit(SecurityEvent::ApiKeyRolled, key_id, org_id, actor);
        let view = self
            .list(org_id)
            .await?
            .into_iter()
            .find(|k| k.id == key_id)
            .ok_or(KeyError::NotFound)?;
        Ok(IssuedKey {
            view,
            key,
            previous_valid_until: Some(until),
        })
    }

    async fn load(&self, key_id: &str) -> Result<Option<Arc<Record>>, sqlx::Error> {
        let Some((r, scopes)) = store::record(&mut *self.db.acquire().await?, key_id).await? else {
            return Ok(None);
        };
        let previous = match (r.previous_mac, r.previous_pepper_id, r.previous_valid_until) {
            (Some(m), Some(p), Some(u)) => Some((decode_mac(&m), p, u)),
            _ => None,
        };
        Ok(Some(Arc::new(Record {
            principal: Arc::new(ApiKeyPrincipal {
                key_id: key_id.to_owned(),
                org_id: r.org_id,
                scopes,
            }),
            mac: decode_mac(&r.secret_mac),
            pepper_id: r.pepper_id,
            expires_at: r.expires_at,
            revoked: r.revoked_at.is_some(),
            previous,
            checked_at: self.now(),
            noted_at: AtomicI64::new(0),
        })))
    }

    /// Lookups in the key cache.
    pub fn cache_stats(&self) -> &crate::domain::stats::CacheStats {
        &self.cache_stats
    }

    /// The hot path: a presented key to a principal, or `None` (one answer for every refusal).
    /// An error only when the key could not be checked (the database is out of reach): that is
    /// no verdict on the key, and the caller must not treat it as one.
    pub async fn verify(
        &self,
        presented: &str,
    ) -> Result<Option<Arc<ApiKeyPrincipal>>, sqlx::Error> {
        let Some(parsed) = format::parse(presented) else {
            return Ok(None);
        };
        let now = self.now();
        {
            // A poisoned lock refuses every key: fail closed.
            let Ok(cache) = self.cache.read() else {
                return Ok(None);
            };
            let fresh = cache
                .records
                .get(parsed.id)
                .filter(|r| now - r.checked_at < self.revalidate);
            if let Some(record) = self.cache_stats.count(fresh) {
                // Checked in place under the shared lock: no reference count is touched on
                // the way, only the principal's when the key is good.
                let revoked_here = cache.revoked.contains(parsed.id);
                return Ok(self.check(record, revoked_here, &parsed, now));
            }
        }
        let generation = self.generation();
        let Some(record) = self.load(parsed.id).await? else {
            return Ok(None);
        };
        let revoked_here = {
            let Ok(mut cache) = self.cache.write() else {
                return Ok(None);
            };
            if cache.records.len() >= 100_000 {
                cache.records.clear();
            }
            // Not if anything was removed meanwhile: this read may predate it.
            if self.generation() == generation {
                cache
                    .records
                    .insert(parsed.id.to_owned(), Arc::clone(&record));
            }
            // Read under the same lock as the insert: a revoke here either came before (and
            // is in the set) or comes after (and removes what was just inserted).
            cache.revoked.contains(parsed.id)
        };
        // Checked with the lock released: the MAC holds up no other request.
        Ok(self.check(&record, revoked_here, &parsed, now))
    }

    /// A presented key against its record: not revoked (there, or `revoked_here` on this
    /// instance), not expired, and its secret's MAC the stored one (or, within the roll grace,
    /// the previous one).
    fn check(
        &self,
        record: &Record,
        revoked_here: bool,
        parsed: &format::ParsedKey<'_>,
        now: i64,
    ) -> Option<Arc<ApiKeyPrincipal>> {
        if record.revoked || revoked_here || record.expires_at.is_some_and(|t| now >= t) {
            return None;
        }
        let matches =
            |mac: Option<&[u8; 32]>, pepper: &str| self.mac_matches(pepper, parsed.secret, mac);
        let current = matches(record.mac.as_ref(), &record.pepper_id);
        let previous = record
            .previous
            .as_ref()
            .is_some_and(|(mac, pepper, until)| now < *until && matches(mac.as_ref(), pepper));
        if !(current || previous) {
            return None;
        }
        // Read before written: a key in use from several threads leaves the shared line
        // alone for the rest of the second.
        if record.noted_at.load(Ordering::Relaxed) != now
            && record.noted_at.swap(now, Ordering::Relaxed) != now
        {
            self.note_use(parsed.id, now);
        }
        Some(Arc::clone(&record.principal))
    }

    /// Remember a use; every LAST_USED_FLUSH_SECONDS one request spawns the batched write,
    /// so no request waits on it.
    fn note_use(&self, key_id: &str, now: i64) {
        let due = match self.last_used.lock() {
            Ok(mut pending) => {
                pending.0.insert(key_id.to_owned(), now);
                if now - pending.1 >= LAST_USED_FLUSH_SECONDS {
                    pending.1 = now;
                    Some(std::mem::take(&mut pending.0))
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        if let Some(batch) = due {
            let db = self.db.clone();
            tokio::spawn(async move { write_last_used(&db, batch).await });
        }
    }

    async fn flush_last_used(&self) {
        let batch = match self.last_used.lock() {
            Ok(mut pending) => std::mem::take(&mut pending.0),
            Err(_) => return,
        };
        write_last_used(&self.db, batch).await;
    }
}

async fn write_last_used(db: &Db, batch: HashMap<String, i64>) {
    let batch: Vec<(String, i64)> = batch.into_iter().collect();
    if let Err(e) = store::touch(db, &batch).await {
        tracing::warn!(target: "zonegate::storage", event = "apikey_last_used_write_failed", error = %e);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::clock::ManualClock;

    async fn setup() -> (tempfile::TempDir, ApiKeys, Arc<ManualClock>, String) {
        let tmp = tempfile::tempdir().unwrap();
        let keys_dir = tmp.path().join("keys");
        KeyRing::init(&keys_dir).unwrap();
        let ring = KeyRing::load(&keys_dir).unwrap();
        let db = Db::connect(
            &format!("sqlite://{}", tmp.path().join("t.db").display()),
            2,
        )
        .await
        .unwrap();
        let pool = db.pool().clone();
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at, password_changed_at) VALUES ('u', 'u@x.example', 'x', 0, 0)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO orgs (id, name, created_by, created_at) VALUES ('o', 'O', 'u', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let (audit, _writer) = AuditLog::detached(db.clone(), clock.clone(), 16);
        let keys = ApiKeys::new(db, &ring, clock.clone(), audit, 30, 3600).unwrap();
        (tmp, keys, clock, "o".to_owned())
    }

    #[tokio::test]
    async fn roll_keeps_the_old_secret_only_for_the_grace_period() {
        let (_tmp, keys, clock, org) = setup().await;
        let scopes = vec!["zones:read".to_owned()];
        let first = keys.create(&org, "u", "ci", &scopes, None).await.unwrap();
        assert_eq!(keys.verify(&first.key).await.unwrap().unwrap().org_id, org);
        let rolled = keys.roll(&org, &first.view.id, "u").await.unwrap();
        assert_eq!(rolled.view.id, first.view.id);
        assert!(
            keys.verify(&first.key).await.unwrap().is_some(),
            "old secret within grace"
        );
        assert!(keys.verify(&rolled.key).await.unwrap().is_some());
        clock.advance(3600);
        assert!(
            keys.verify(&first.key).await.unwrap().is_none(),
            "old secret after grace"
        );
        assert!(keys.verify(&rolled.key).await.unwrap().is_some());
        // An id no key could have is not found, like an unknown one (schemathesis sent `\u{84}`).
        for id in ["\u{84}", "not_a_key_id", "", "k2"] {
            assert!(
                matches!(keys.roll(&org, id, "u").await, Err(KeyError::NotFound)),
                "{id:?}"
            );
        }
    }

    /// Uses are noted once a second per key (the lock is taken that often, not per request),
    /// and the list shows the latest second a key was used in.
    #[tokio::test]
    async fn the_last_use_shown_is_the_latest_second_a_key_was_used_in() {
        let (_tmp, keys, clock, org) = setup().await;
        let scopes = vec!["zones:read".to_owned()];
        let made = keys.create(&org, "u", "ci", &scopes, None).await.unwrap();
        let used_at = |views: Vec<KeyView>| {
            views
                .into_iter()
                .find(|v| v.id == made.view.id)
                .unwrap()
                .last_used_at
        };
        assert_eq!(used_at(keys.list(&org).await.unwrap()), None);
        // The first use starts a background write of its own; the ones after it wait for the
        // next (or for a list, which writes them first).
        assert!(keys.verify(&made.key).await.unwrap().is_some());
        clock.advance(1);
        for _ in 0..3 {
            assert!(keys.verify(&made.key).await.unwrap().is_some());
        }
        assert_eq!(used_at(keys.list(&org).await.unwrap()), Some(1_800_000_001));
        clock.advance(5);
        for _ in 0..2 {
            assert!(keys.verify(&made.key).await.unwrap().is_some());
        }
        assert_eq!(used_at(keys.list(&org).await.unwrap()), Some(1_800_000_006));
        // A refused presentation is no use.
        clock.advance(5);
        assert!(keys
            .verify(&format::with_new_secret(&made.view.id))
            .await
            .unwrap()
            .is_none());
        assert_eq!(used_at(keys.list(&org).await.unwrap()), Some(1_800_000_006));
    }

    #[tokio::test]
    async fn expired_revoked_and_forged_keys_fail_alike() {
        let (_tmp, keys, clock, org) = setup().await;
        let scopes = vec!["zones:read".to_owned()];
        let expiring = keys
            .create(&org, "u", "short", &scopes, Some(1_800_000_100))
            .await
            .unwrap();
        let other = keys
            .create(&org, "u", "other", &scopes, None)
            .await
            .unwrap();
        assert!(keys.verify(&expiring.key).await.unwrap().is_some());
        clock.advance(100);
        assert!(
            keys.verify(&expiring.key).await.unwrap().is_none(),
            "expired"
        );
        // Same id, different secret (valid checksum): the MAC does not match.
        let forged = format::with_new_secret(&other.view.id);
        assert!(keys.verify(&forged).await.unwrap().is_none());
        keys.revoke(&org, &other.view.id, "u").await.unwrap();
        assert!(
            keys.verify(&other.key).await.unwrap().is_none(),
            "revoked, at once"
        );
        assert!(matches!(
            keys.revoke(&org, &other.view.id, "u").await,
            Err(KeyError::NotFound)
        ));
        // Only the MAC is stored, never the secret.
        let stored: Vec<(String,)> = sqlx::query_as("SELECT secret_mac FROM api_keys")
            .fetch_all(keys.db.pool())
            .await
            .unwrap();
        let secret = format::parse(&expiring.key).unwrap().secret;
        assert!(stored
            .iter()
            .all(|(mac,)| !mac.contains(secret) && mac.len() == 64));
        assert!(
            !format!("{expiring:?}").contains(expiring.key.as_str()),
            "Debug never shows a key"
        );
        let listed = serde_json::to_string(&keys.list(&org).await.unwrap()).unwrap();
        assert!(!listed.contains(secret) && !listed.contains(expiring.key.as_str()));
    }

    /// A cached key authenticates as one shared principal: a request makes no copy of it.
    #[tokio::test]
    async fn every_request_with_a_key_shares_its_cached_principal() {
        let (_tmp, keys, _clock, org) = setup().await;
        let scopes = vec!["zones:read".to_owned()];
        let made = keys.create(&org, "u", "ci", &scopes, None).await.unwrap();
        let first = keys.verify(&made.key).await.unwrap().unwrap();
        let second = keys.verify(&made.key).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        // The cached record's Debug (within the service's) shows no MAC, in any form.
        let stored: (String,) = sqlx::query_as("SELECT secret_mac FROM api_keys")
            .fetch_one(keys.db.pool())
            .await
            .unwrap();
        let mac = decode_mac(&stored.0).unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains(&made.view.id), "{shown}");
        for form in [
            stored.0.clone(),
            format!("{mac:?}"),
            format!("{:?}", Some(mac)),
        ] {
            assert!(!shown.contains(&form), "{shown}");
        }
        assert_eq!(
            *first,
            ApiKeyPrincipal {
                key_id: made.view.id.clone(),
                org_id: org,
                scopes,
            }
        );
    }

    /// A stored MAC that is not 64 lowercase hex digits matches no secret, the right one
    /// included.
    #[tokio::test]
    async fn a_corrupt_stored_mac_matches_nothing() {
        let (_tmp, keys, _clock, org) = setup().await;
        let scopes = vec!["zones:read".to_owned()];
        let made = keys.create(&org, "u", "ci", &scopes, None).await.unwrap();
        let stored: (String,) = sqlx::query_as("SELECT secret_mac FROM api_keys")
            .fetch_one(keys.db.pool())
            .await
            .unwrap();
        let uppercase = stored.0.to_ascii_uppercase();
        for corrupt in [
            &stored.0[..63],
            &format!("{}zz", &stored.0[..62]),
            "",
            &uppercase,
        ] {
            sqlx::query("UPDATE api_keys SET secret_mac = ?")
                .bind(corrupt)
                .execute(keys.db.pool())
                .await
                .unwrap();
            keys.forget(&made.view.id);
            assert!(
                keys.verify(&made.key).await.unwrap().is_none(),
                "{corrupt:?}"
            );
        }
        assert_eq!(decode_mac(&stored.0).map(hex::encode), Some(stored.0));
    }
}
