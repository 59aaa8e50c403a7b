//! The session cache: what keeps the hot path free of database round trips.
//!
//! A verified session is kept in memory under its token hash until it expires. Revocations made
//! on this instance (logout, ending a session, a reused refresh token, a password change) remove
//! entries at once. Revocations made on *another* instance are seen within `revalidate`
//! seconds, when an entry is next checked against the database: that bound is the price of not
//! touching the database per request, and is documented for operators.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::principal::UserPrincipal;

#[derive(Debug, Clone)]
struct Entry {
    user: Arc<UserPrincipal>,
    expires_at: i64,
    checked_at: i64,
}

#[derive(Debug)]
pub struct SessionCache {
    entries: RwLock<HashMap<String, Entry>>,
    /// Families and session ids revoked on this instance. `put` refuses them, so a session a
    /// concurrent request read just before the revocation cannot be cached back to life.
    revoked: RwLock<std::collections::HashSet<String>>,
    revalidate: i64,
    capacity: usize,
    /// Bumped by every removal: a session read from the database before one may describe
    /// what was just revoked (here or, through the invalidation listener, elsewhere), so it
    /// is not cached (see [`SessionCache::put`]).
    generation: std::sync::atomic::AtomicU64,
    pub stats: crate::domain::stats::CacheStats,
}

impl SessionCache {
    pub fn new(revalidate_seconds: i64, capacity: usize) -> SessionCache {
        SessionCache {
            entries: RwLock::new(HashMap::new()),
            revoked: RwLock::new(std::collections::HashSet::new()),
            revalidate: revalidate_seconds,
            capacity,
            generation: std::sync::atomic::AtomicU64::new(0),
            stats: Default::default(),
        }
    }

    /// A cached session that is neither expired nor due for revalidation.
    pub fn get(&self, hash: &str, now: i64) -> Option<Arc<UserPrincipal>> {
        let found = self.entries.read().ok().and_then(|entries| {
            let e = entries.get(hash)?;
            (now < e.expires_at && now - e.checked_at < self.revalidate).then(|| e.user.clone())
        });
        self.stats.count(found)
    }

    /// The current generation: read it before reading a session from the database, and
    /// hand it to [`SessionCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Cache a session read from the database when the cache was at `generation`. Refused if
    /// anything was removed since (the read may predate a revocation) or if its login or
    /// session was revoked on this instance.
    pub fn put(
        &self,
        hash: String,
        user: Arc<UserPrincipal>,
        expires_at: i64,
        now: i64,
        generation: u64,
    ) {
        let revoked = self.revoked.read().map_or(true, |r| {
            r.contains(&user.family_id) || r.contains(&user.session_id)
        });
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the write lock: a removal takes it too, after bumping.
        if revoked || self.generation() != generation {
            return;
        }
        if entries.len() >= self.capacity {
            entries.retain(|_, e| now < e.expires_at && now - e.checked_at < self.revalidate);
            if entries.len() >= self.capacity {
                // Still full of live entries: drop everything rather than grow without bound;
                // the next request per session repopulates from the database.
                entries.clear();
            }
        }
        entries.insert(
            hash,
            Entry {
                user,
                expires_at,
                checked_at: now,
            },
        );
    }

    pub fn remove_session(&self, hash: &str) {
        self.bump();
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(hash);
        }
    }

    pub fn remove_family(&self, family_id: &str) {
        self.tombstone(family_id);
        self.bump();
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, e| e.user.family_id != family_id);
        }
    }

    pub fn remove_public_id(&self, public_id: &str) {
        self.tombstone(public_id);
        self.bump();
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, e| e.user.session_id != public_id);
        }
    }

    /// Drop every entry (the listener for other instances' changes was down).
    pub fn clear(&self) {
        self.bump();
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    /// Drop every session of a user except those of `keep_family`.
    pub fn remove_user(&self, user_id: &str, keep_family: Option<&str>) {
        self.bump();
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, e| {
                e.user.user_id != user_id || Some(e.user.family_id.as_str()) == keep_family
            });
        }
    }

    fn tombstone(&self, id: &str) {
        if let Ok(mut revoked) = self.revoked.write() {
            // Bounded like the cache: past the bound, entries of long-expired logins go.
            if revoked.len() >= self.capacity {
                revoked.clear();
            }
            revoked.insert(id.to_owned());
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
