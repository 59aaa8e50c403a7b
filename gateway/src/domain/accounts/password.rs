//! Password rules (NIST SP 800-63B) and hashing.
//!
//! Rules: at least `min_chars` characters (8 or more; counted as Unicode code points), at most
//! 256, no composition rules, refused when on the bundled list of common passwords or when it
//! is built from the service's name or the account's own email.
//!
//! Hashing: bcrypt reads only the first 72 bytes, so a long password would be silently
//! truncated. We pre-hash instead: `bcrypt(base64(HMAC-SHA256(pepper, NFKC(password))))`, a
//! 44-byte ASCII input with no NUL. The whole password always counts, and the pepper (from the
//! key ring, stored apart from the database) means a stolen database alone cannot be attacked
//! offline. Stored as `zg1$<pepper key id>$<bcrypt>` so the pepper can rotate.
//!
//! bcrypt runs on a pool of its own ([`HashPool`]): one thread fewer than the machine has
//! cores, each at the lowest CPU priority, fed by a bounded queue. A login storm therefore
//! gets only the CPU the proxy threads leave, and when the queue is full a login is refused
//! at once as busy (503, `Retry-After`) instead of waiting without end.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{oneshot, OnceCell};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::domain::keyring::{KeyRing, Purpose, SecretKey};

const COMMON: &str = include_str!("../../../data/common-passwords.txt");
static COMMON_SET: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    COMMON
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// Longest password accepted, in characters (a denial-of-service bound, far above 64).
pub const MAX_CHARS: usize = 256;
/// Words of the service itself that no password may be built on.
const SERVICE_WORDS: [&str; 4] = ["zonegate", "deliveryzone", "delivery zone", "delivery-zone"];

/// Why a password was refused. Messages are fixed and safe to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordProblem {
    TooShort,
    TooLong,
    Common,
    Contextual,
}

impl PasswordProblem {
    pub fn message(self) -> &'static str {
        match self {
            PasswordProblem::TooShort => "The password is too short.",
            PasswordProblem::TooLong => "The password is longer than 256 characters.",
            PasswordProblem::Common => "The password is on a list of commonly used passwords.",
            PasswordProblem::Contextual => {
                "The password must not be built from your email address or the service's name."
            }
        }
    }
}

/// Check a new password against the rules.
pub fn check(password: &str, email: &str, min_chars: usize) -> Result<(), PasswordProblem> {
    let chars = password.chars().count();
    if chars < min_chars {
        return Err(PasswordProblem::TooShort);
    }
    if chars > MAX_CHARS {
        return Err(PasswordProblem::TooLong);
    }
    let folded: String = password.nfkc().collect::<String>().to_lowercase();
    if COMMON_SET.contains(folded.as_str()) || repetitive_or_sequential(&folded) {
        return Err(PasswordProblem::Common);
    }
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let mut context: Vec<&str> = vec![email, local];
    context.extend(domain.split('.').filter(|w| w.len() >= 4));
    let built_on_context = context
        .iter()
        .filter(|w| w.chars().count() >= 4)
        .any(|w| folded.contains(&w.to_lowercase()))
        || SERVICE_WORDS.iter().any(|w| folded.contains(w));
    if built_on_context {
        return Err(PasswordProblem::Contextual);
    }
    Ok(())
}

/// NIST SP 800-63B lists repetitive and sequential strings ("aaaaaaaa", "12345678") beside
/// breached passwords: one character repeated, or a run stepping up or down by one.
fn repetitive_or_sequential(folded: &str) -> bool {
    let codes: Vec<u32> = folded.chars().map(u32::from).collect();
    let steps: Vec<i64> = codes
        .windows(2)
        .map(|w| i64::from(w[1]) - i64::from(w[0]))
        .collect();
    steps.iter().all(|&d| d == 0) || steps.iter().all(|&d| d == 1) || steps.iter().all(|&d| d == -1)
}

/// Hashes and verifies passwords on a [`HashPool`].
#[derive(Debug)]
pub struct PasswordHasher {
    cost: u32,
    peppers: Vec<(String, SecretKey)>,
    active: usize,
    pool: HashPool,
    dummy: OnceCell<String>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Jobs each worker may have waiting: at bcrypt cost 12 (~0.25 s a hash here), a queued login
/// waits at most about two seconds before a worker takes it.
const QUEUE_PER_WORKER: usize = 8;

/// Threads that run bcrypt and nothing else, at the lowest CPU priority, behind a bounded
/// queue. The threads end when the pool is dropped (their queue closes).
#[derive(Debug)]
pub struct HashPool {
    jobs: crossbeam_channel::Sender<Job>,
}

impl HashPool {
    /// `workers` threads (at least one), each with [`QUEUE_PER_WORKER`] places in the queue.
    pub fn new(workers: usize) -> HashPool {
        let workers = workers.max(1);
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(workers * QUEUE_PER_WORKER);
        for n in 0..workers {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("zonegate-bcrypt-{n}"))
                .spawn(move || {
                    if let Err(e) = zonegate_sys::thread::lower_current_thread_priority() {
                        tracing::warn!(target: "zonegate::accounts", error = %e, "bcrypt thread keeps normal priority");
                    }
                    for job in queue {
                        job();
                    }
                });
            if let Err(e) = spawned {
                // The pool works with the threads it has; with none, every job is refused.
                tracing::error!(target: "zonegate::accounts", error = %e, "could not start a bcrypt thread");
            }
        }
        HashPool { jobs }
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.jobs.len()
    }

    /// Run `work` on the pool; [`HashError::Busy`] at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone (client disconnected): nobody to tell.
            let _ = done.send(work());
        });
        self.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => HashError::Busy,
            crossbeam_channel::TrySendError::Disconnected(_) => HashError::Failed,
        })?;
        result.await.map_err(|_| HashError::Failed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the key ring has no pepper key")]
    NoPepper,
    #[error("every password worker is busy")]
    Busy,
    #[error("password hashing failed")]
    Failed,
}

impl PasswordHasher {
    /// Password jobs waiting for a bcrypt thread.
    pub fn queued(&self) -> usize {
        self.pool.queued()
    }

    /// A hasher with `workers` bcrypt threads (see [`HashPool`]).
    pub fn new(ring: &KeyRing, cost: u32, workers: usize) -> Result<PasswordHasher, HashError> {
        let active_id = ring
            .active(Purpose::Pepper)
            .ok_or(HashError::NoPepper)?
            .id
            .clone();
        let peppers: Vec<(String, SecretKey)> = ring
            .all(Purpose::Pepper)
            .map(|k| (k.id.clone(), k.secret.clone()))
            .collect();
        let active = peppers
            .iter()
            .position(|(id, _)| *id == active_id)
            .ok_or(HashError::NoPepper)?;
        Ok(PasswordHasher {
            cost,
            peppers,
            active,
            pool: HashPool::new(workers),
            dummy: OnceCell::new(),
        })
    }

    fn prehash(pepper: &SecretKey, password: &str) -> Zeroizing<String> {
        let normalised = Zeroizing::new(password.nfkc().collect::<String>());
        // HMAC accepts keys of any length; 32 bytes never fails.
        let mut mac = match Hmac::<Sha256>::new_from_slice(pepper.expose()) {
            Ok(m) => m,
            Err(_) => return Zeroizing::new(String::new()),
        };
        mac.update(normalised.as_bytes());
        Zeroizing::new(STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Hash a new password with the active pepper.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let (kid, pepper) = self.peppers.get(self.active).ok_or(HashError::NoPepper)?;
        let input = Self::prehash(pepper, password);
        let cost = self.cost;
        let hashed = self
            .pool
            .run(move || bcrypt::hash(input.as_str(), cost).map_err(|_| HashError::Failed))
            .await??;
        Ok(format!("zg1${kid}${hashed}"))
    }

    /// Whether a stored hash should be replaced after the password was verified against it:
    /// made under a pepper other than the active one (after `keys rotate`, so the old pepper
    /// can be retired), or at another bcrypt cost than configured (a raised cost reaches every
    /// account that logs in). A malformed hash never verifies, so it never gets here.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Some((kid, hashed)) = stored
            .strip_prefix("zg1$")
            .and_then(|rest| rest.split_once('$'))
        else {
            return false;
        };
        let active = self.peppers.get(self.active).map(|(id, _)| id.as_str());
        // `$2b$12$...`: the cost is the second field.
        let cost = hashed.split('$').nth(2).and_then(|c| c.parse::<u32>().ok());
        active != Some(kid) || cost != Some(self.cost)
    }

    /// Verify a password against a stored hash. Malformed hashes or unknown peppers are a
    /// mismatch (`Ok(false)`), never an error the caller could tell apart; the only error is a
    /// pool too busy to check at all, which says nothing about the password.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, HashError> {
        let Some((kid, hashed)) = stored
            .strip_prefix("zg1$")
            .and_then(|rest| rest.split_once('$'))
        else {
            return Ok(false);
        };
        let Some((_, pepper)) = self.peppers.iter().find(|(id, _)| id == kid) else {
            return Ok(false);
        };
        let input = Self::prehash(pepper, password);
        let hashed = hashed.to_owned();
        match self
            .pool
            .run(move || bcrypt::verify(input.as_str(), &hashed).unwrap_or(false))
            .await
        {
            Ok(matches) => Ok(matches),
            Err(HashError::Busy) => Err(HashError::Busy),
            Err(_) => Ok(false),
        }
    }

    /// Spend the same bcrypt work as a real verification, for unknown accounts, so response
    /// time does not tell whether an email is registered. Busy exactly when a real one would
    /// be, for the same reason.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), HashError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| self.hash("zonegate dummy password for timing"))
            .await?;
        self.verify(password, dummy).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn length_is_counted_in_characters_and_64_is_accepted() {
        assert_eq!(
            check("short7!", "a@b.example", 8),
            Err(PasswordProblem::TooShort)
        );
        assert_eq!(
            check("éàèùçôî", "a@b.example", 8),
            Err(PasswordProblem::TooShort)
        );
        assert_eq!(check("éàèùçôîâ", "a@b.example", 8), Ok(()));
        let sixty_four: String = "correct horse battery staple ".repeat(3)[..64].to_owned();
        assert_eq!(check(&sixty_four, "a@b.example", 8), Ok(()));
        assert_eq!(
            check(&"x".repeat(257), "a@b.example", 8),
            Err(PasswordProblem::TooLong)
        );
    }

    #[test]
    fn no_composition_rules_only_the_blocklist() {
        // All lower case letters: fine unless common.
        assert_eq!(check("mauvecantaloupe", "a@b.example", 8), Ok(()));
        assert_eq!(
            check("aaaaaaaaaaaaaaaa", "a@b.example", 8),
            Err(PasswordProblem::Common)
        );
        assert_eq!(
            check("password123", "a@b.example", 8),
            Err(PasswordProblem::Common)
        );
        assert_eq!(
            check("PassWord123", "a@b.example", 8),
            Err(PasswordProblem::Common)
        );
        assert_eq!(
            check("abcdefghij", "a@b.example", 8),
            Err(PasswordProblem::Common)
        );
        assert_eq!(
            check("9876543210", "a@b.example", 8),
            Err(PasswordProblem::Common)
        );
        assert!(COMMON_SET.len() >= 10_000);
    }

    #[test]
    fn email_words_and_service_name_are_refused() {
        let email = "marguerite@florist.example";
        assert_eq!(
            check("marguerite2026", email, 8),
            Err(PasswordProblem::Contextual)
        );
        assert_eq!(
            check("bestflorist!!", email, 8),
            Err(PasswordProblem::Contextual)
        );
        assert_eq!(
            check("myZoneGate-pass", email, 8),
            Err(PasswordProblem::Contextual)
        );
    }

    /// Known-answer vectors from Openwall's crypt_blowfish suite (SECURITY-REQUIREMENTS §2.3),
    /// through the bcrypt crate the product uses.
    #[test]
    fn bcrypt_known_answer_vectors() {
        let ok: [(&[u8], &str); 8] = [
            (
                b"U*U",
                "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            ),
            (
                b"U*U",
                "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            ),
            (
                b"U*U",
                "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            ),
            (
                b"U*U*",
                "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK",
            ),
            (
                b"U*U*U",
                "$2a$05$XXXXXXXXXXXXXXXXXXXXXOAcXxm9kjPGEMsLznoKqmqw7tc8WCx4a",
            ),
            (
                b"",
                "$2a$05$CCCCCCCCCCCCCCCCCCCCC.7uG0VCzI2bS7j6ymqJi9CdcdxiRTWNy",
            ),
            (
                b"\xff\xff\xa3",
                "$2b$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e",
            ),
            (
                b"\xa3",
                "$2y$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq",
            ),
        ];
        for (pw, hash) in ok {
            assert!(bcrypt::verify(pw, hash).unwrap(), "{hash}");
        }
        let long = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789chars after 72 are ignored";
        assert!(bcrypt::verify(
            &long[..],
            "$2a$05$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui"
        )
        .unwrap());
        assert!(!bcrypt::verify(
            b"U*V",
            "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
        )
        .unwrap());
        assert!(!bcrypt::verify(
            b"\xa3",
            "$2x$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e"
        )
        .unwrap_or(false));
        assert!(bcrypt::verify(
            b"U*U",
            "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeX"
        )
        .is_err());
        assert!(bcrypt::verify(
            b"U*U",
            "$2b$03$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
        )
        .is_err());
    }

    fn hasher() -> (tempfile::TempDir, PasswordHasher) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        let ring = KeyRing::load(&dir).unwrap();
        (tmp, PasswordHasher::new(&ring, 4, 2).unwrap())
    }

    #[tokio::test]
    async fn a_long_password_is_never_truncated() {
        let (_tmp, hasher) = hasher();
        let p: String =
            "a long passphrase that goes well past bcrypt's seventy-two byte limit, on purpose"
                .into();
        assert!(p.len() > 72);
        let stored = hasher.hash(&p).await.unwrap();
        assert!(stored.starts_with("zg1$pepper-1$$2b$04$"), "{stored}");
        assert!(hasher.verify(&p, &stored).await.unwrap());
        let truncated_plus_x = format!("{}X", &p[..72]);
        assert!(!hasher.verify(&truncated_plus_x, &stored).await.unwrap());
        assert!(!hasher.verify(&p[..72], &stored).await.unwrap());
        // Multi-byte passwords of 64 characters work too (128 bytes of UTF-8).
        let e = "é".repeat(64);
        let stored = hasher.hash(&e).await.unwrap();
        assert!(hasher.verify(&e, &stored).await.unwrap());
        assert!(!hasher.verify(&"é".repeat(63), &stored).await.unwrap());
    }

    #[tokio::test]
    async fn a_hash_under_an_old_pepper_or_cost_needs_rehashing_and_still_verifies() {
        const PW: &str = "correct horse battery staple";
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        let before = PasswordHasher::new(&KeyRing::load(&dir).unwrap(), 4, 1).unwrap();
        let old = before.hash(PW).await.unwrap();
        assert!(!before.needs_rehash(&old));
        KeyRing::rotate(&dir).unwrap();
        let after = PasswordHasher::new(&KeyRing::load(&dir).unwrap(), 4, 1).unwrap();
        assert!(after.needs_rehash(&old));
        assert!(after.verify(PW, &old).await.unwrap());
        let new = after.hash(PW).await.unwrap();
        assert!(new.starts_with("zg1$pepper-2$"), "{new}");
        assert!(!after.needs_rehash(&new));
        // A raised cost reaches existing hashes the same way.
        let costlier = PasswordHasher::new(&KeyRing::load(&dir).unwrap(), 5, 1).unwrap();
        assert!(costlier.needs_rehash(&new));
        assert!(!costlier.needs_rehash("garbage"));
    }

    #[tokio::test]
    async fn malformed_or_foreign_hashes_never_verify() {
        let (_tmp, hasher) = hasher();
        assert!(!hasher.verify("x", "garbage").await.unwrap());
        assert!(!hasher
            .verify(
                "U*U",
                "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
            )
            .await
            .unwrap());
        assert!(!hasher.verify("x", "zg1$pepper-9$$2b$04$abc").await.unwrap());
        hasher.verify_dummy("whatever").await.unwrap();
    }

    /// Work runs on the pool's own threads, at the lowest priority.
    #[tokio::test]
    async fn pool_threads_run_at_background_priority() {
        let pool = HashPool::new(1);
        let (name, nice) = pool
            .run(|| {
                (
                    std::thread::current().name().map(str::to_owned),
                    zonegate_sys::thread::current_thread_nice().unwrap(),
                )
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("zonegate-bcrypt-0"));
        assert_eq!(nice, zonegate_sys::thread::BACKGROUND_NICE);
    }

    /// A full queue refuses at once, as busy; the queued work still completes, and the pool
    /// takes work again once it has room.
    #[tokio::test]
    async fn a_full_queue_is_busy_at_once_and_recovers() {
        let pool = std::sync::Arc::new(HashPool::new(1));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        // Awaited, not blocked on: the test runtime has one thread, which must also run the
        // task that submits the blocking job.
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let blocker = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    started_tx.send(()).unwrap();
                    gate.recv().unwrap();
                })
                .await
            })
        };
        started.await.unwrap();
        // The worker is held; fill its queue.
        let queued: Vec<_> = (0..QUEUE_PER_WORKER)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move || i).await })
            })
            .collect();
        // Let every queued task reach the queue before the one that must be refused.
        while pool.jobs.len() < QUEUE_PER_WORKER {
            tokio::task::yield_now().await;
        }
        assert!(matches!(pool.run(|| ()).await, Err(HashError::Busy)));
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for (i, q) in queued.into_iter().enumerate() {
            assert_eq!(q.await.unwrap().unwrap(), i);
        }
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
