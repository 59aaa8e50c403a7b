//! Key rotation that finishes: what stored material still depends on each key of the ring, so
//! an old key can be retired (its file deleted) without breaking anything it made.
//!
//! After `zonegate keys rotate` the newest key of each purpose makes all new material, and the
//! old keys move out of use on their own:
//!
//! - **pepper**: a password hashed under it is re-hashed under the new pepper at the owner's
//!   next successful login (accounts); an API key's MAC keeps verifying under it until the key
//!   is rolled or revoked (its holder has the only copy of the secret, so nothing can re-MAC
//!   it); a login's CSRF token is re-made at its next refresh, and the login ends at its idle
//!   or absolute expiry anyway.
//! - **totp**: seeds are re-sealed under the new key by a background job of every running
//!   instance ([`crate::domain::mfa::Mfa::reseal_all`]).
//! - **identity** and **signing**: nothing is stored; they only sign assertions, each verified
//!   as it is forwarded. A backend must hold the new key (or `.pub`) before an instance loads
//!   the rotated ring.
//!
//! [`dependents`] counts, per key, what is still stored under it, and the running instances
//! that still make new material with it (an instance started before the rotation keeps the
//! old key active until it restarts; each records its active keys, [`note_in_use`]). `keys
//! retire` refuses the active key of a purpose and any key with a dependent. Counts come from
//! the shared database, so they cover every instance.

use std::fmt;

use crate::domain::accounts::store as accounts_store;
use crate::domain::apikeys::store as apikeys_store;
use crate::domain::keyring::{KeyRing, Purpose};
use crate::domain::mfa::store as mfa_store;
use crate::domain::mfa::ENROLMENT_TTL;
use crate::domain::operators::store as operators_store;
use crate::domain::storage::Db;

/// Seconds after its last heartbeat that an instance still counts as using its keys: three
/// missed minutes (an instance records its keys every minute, see [`note_in_use`]).
pub const INSTANCE_SEEN_WITHIN: i64 = 180;

/// Record that the running instance `instance` makes new material with `active` (its active
/// key ids), now. Called at start and every minute; the rows go with [`forget_instance`].
pub async fn note_in_use(
    db: &Db,
    instance: &str,
    active: &[String],
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut c = db.acquire().await?;
    for key in active {
        sqlx::query(
            "INSERT INTO key_ring_users (instance_id, key_id, seen_at) VALUES ($1, $2, $3)
             ON CONFLICT (instance_id, key_id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(instance)
        .bind(key)
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// An instance stopping: it makes nothing with any key any more.
pub async fn forget_instance(db: &Db, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM key_ring_users WHERE instance_id = $1")
        .bind(instance)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// What still depends on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub id: String,
    pub purpose: Purpose,
    /// The newest key of its purpose: it makes new material and cannot be retired.
    pub active: bool,
    /// Password hashes made with this pepper.
    pub passwords: i64,
    /// Usable API keys whose MAC (or rolled predecessor's MAC) was made with this pepper.
    pub api_keys: i64,
    /// Live logins whose CSRF token was made with this pepper (or an unrecorded one).
    pub logins: i64,
    /// Usable TOTP seeds sealed under this key.
    pub totp_seeds: i64,
    /// Running instances seen using it as an active key (they make new material with it
    /// until restarted on the rotated ring).
    pub instances: i64,
}

impl KeyUse {
    /// Stored things that would break if the key were deleted now.
    pub fn dependents(&self) -> i64 {
        self.passwords + self.api_keys + self.logins + self.totp_seeds + self.instances
    }
}

impl fmt::Display for KeyUse {
    /// "3 passwords, 1 API key, 2 logins", or "nothing stored".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            (self.passwords, "password", "passwords"),
            (self.api_keys, "API key", "API keys"),
            (self.logins, "login", "logins"),
            (self.totp_seeds, "TOTP seed", "TOTP seeds"),
            (self.instances, "running instance", "running instances"),
        ]
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
        .collect();
        if parts.is_empty() {
            f.write_str("nothing stored")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Count, for every key of `ring`, what the database still holds under it. `now` is Unix
/// seconds; a login unused for `refresh_idle` seconds has ended and is not counted.
pub async fn dependents(
    db: &Db,
    ring: &KeyRing,
    now: i64,
    refresh_idle: i64,
) -> Result<Vec<KeyUse>, sqlx::Error> {
    let mut c = db.acquire().await?;
    let mut uses = Vec::new();
    for key in ring.keys() {
        let active = ring
            .active(key.purpose)
            .is_some_and(|a| a.number == key.number);
        let mut usage = KeyUse {
            id: key.id.clone(),
            purpose: key.purpose,
            active,
            passwords: 0,
            api_keys: 0,
            logins: 0,
            totp_seeds: 0,
            instances: 0,
        };
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM key_ring_users WHERE key_id = $1 AND seen_at > $2",
        )
        .bind(&key.id)
        .bind(now - INSTANCE_SEEN_WITHIN)
        .fetch_one(&mut *c)
        .await?;
        usage.instances = n;
        match key.purpose {
            Purpose::Pepper => {
                usage.passwords = accounts_store::count_passwords_under(&mut c, &key.id).await?
                    + operators_store::count_passwords_under(&mut c, &key.id).await?;
                usage.api_keys = apikeys_store::count_under(&mut c, &key.id, now).await?;
                // Logins made before CSRF keys were recorded could be under any old pepper;
                // the active one needs no count (it cannot be retired anyway).
                if !active {
                    usage.logins = accounts_store::count_logins_under(
                        &mut c,
                        &key.id,
                        now,
                        now - refresh_idle,
                    )
                    .await?;
                }
            }
            Purpose::Totp => {
                usage.totp_seeds =
                    mfa_store::count_sealed_under(&mut c, &key.id, now - ENROLMENT_TTL).await?
                        + operators_store::count_sealed_under(&mut c, &key.id).await?;
            }
            Purpose::Identity | Purpose::Signing => {}
        }
        uses.push(usage);
    }
    Ok(uses)
}

/// Why a key cannot be retired.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error("no key `{0}` in the key directory; `zonegate keys status` lists them")]
    Unknown(String),
    #[error("{0} is the active {1} key; run `zonegate keys rotate` first, then retire it once nothing depends on it")]
    Active(String, &'static str),
    #[error("{id} is still needed by {what}; {how}")]
    InUse {
        id: String,
        what: String,
        how: &'static str,
    },
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    KeyRing(#[from] crate::domain::keyring::KeyRingError),
}

/// Check that the key `id` can be retired: it exists, is not active, and nothing depends on
/// it. Returns its counts (all zero) for the caller to record.
pub async fn check_retire(
    db: &Db,
    ring: &KeyRing,
    id: &str,
    now: i64,
    refresh_idle: i64,
) -> Result<KeyUse, RetireError> {
    let usage = dependents(db, ring, now, refresh_idle)
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| RetireError::Unknown(id.to_owned()))?;
    if usage.active {
        return Err(RetireError::Active(usage.id, usage.purpose.name()));
    }
    if usage.dependents() > 0 {
        let how = match usage.purpose {
            _ if usage.instances > 0 => "restart every instance on the rotated key ring first (each stops counting when it stops, or three minutes after it was last seen)",
            Purpose::Totp => "running instances re-seal seeds in the background (at start and every hour); check again shortly",
            _ => "passwords move to the new pepper as their users log in, API keys as they are rolled or revoked, logins as they refresh or expire",
        };
        return Err(RetireError::InUse {
            what: usage.to_string(),
            id: usage.id,
            how,
        });
    }
    Ok(usage)
}

#[cfg(test)]
mod tests;
