//! Keyed rate limits (per client address, per account, per API key …) on governor's GCRA, with
//! a hard cap on how many keys are tracked.
//!
//! Why a cap: the keys come from the outside world. Without one, a flood of distinct client
//! addresses or usernames grows the state map until the process runs out of memory, which turns
//! a rate limiter into a denial-of-service lever. With one, memory stays bounded by `cap`
//! entries whatever arrives:
//!
//! 1. A key that is already tracked always uses its own bucket, so clients seen before a flood
//!    keep their normal limits during it.
//! 2. A new key is admitted while fewer than `cap` keys are tracked.
//! 3. At the cap, keys whose buckets are full again (indistinguishable from a fresh key) are
//!    dropped with governor's `retain_recent`, at most once per sweep interval so that a flood
//!    cannot make every request pay for a full sweep.
//! 4. If the map is still full, the newcomer shares one overflow bucket with every other
//!    newcomer. That fails closed: under a flood of new keys, newcomers together get one key's
//!    allowance, instead of either bypassing the limit or evicting live buckets (which would
//!    let an attacker reset someone's counter by flooding).
//!
//! Time comes from a governor [`Clock`], so tests use [`governor::clock::FakeRelativeClock`]
//! and advance it instead of sleeping.
//!
//! Headers follow draft-ietf-httpapi-ratelimit-headers (the `limit=, remaining=, reset=`
//! dictionary form): `RateLimit-Policy: 5;w=60` and `RateLimit: limit=5, remaining=0, reset=12`,
//! plus `Retry-After` (RFC 9110 §10.2.3) in whole seconds.

pub mod shared;

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota, RateLimiter};

/// A limit of `limit` requests per `window`, refilled smoothly (one request every
/// `window / limit`), with bursts of up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    limit: NonZeroU32,
    window_secs: u64,
    quota: Quota,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("rate limit must allow at least one request")]
    ZeroLimit,
    #[error("rate limit window must be at least one second")]
    ZeroWindow,
    #[error("rate limit too fine: {limit} requests per {window_secs}s")]
    TooFine { limit: u32, window_secs: u64 },
    #[error("rate limit window must be at most {MAX_WINDOW_SECS} seconds (a year)")]
    WindowTooLong,
}

/// The longest window: a year. Longer is no rate; and the shared store's bucket times, in
/// microseconds in a Lua double, stay exact only for a few centuries past now.
pub const MAX_WINDOW_SECS: u64 = 366 * 24 * 60 * 60;

impl RatePolicy {
    /// `limit` requests per `window_secs` seconds. Whole seconds because the window is
    /// advertised in `RateLimit-Policy` as `w=<seconds>`.
    pub fn new(limit: u32, window_secs: u64) -> Result<RatePolicy, PolicyError> {
        let limit = NonZeroU32::new(limit).ok_or(PolicyError::ZeroLimit)?;
        if window_secs == 0 {
            return Err(PolicyError::ZeroWindow);
        }
        if window_secs > MAX_WINDOW_SECS {
            return Err(PolicyError::WindowTooLong);
        }
        let period = Duration::from_secs(window_secs) / limit.get();
        let quota = Quota::with_period(period)
            .ok_or(PolicyError::TooFine {
                limit: limit.get(),
                window_secs,
            })?
            .allow_burst(limit);
        Ok(RatePolicy {
            limit,
            window_secs,
            quota,
        })
    }

    /// `limit` requests per minute.
    pub fn per_minute(limit: NonZeroU32) -> RatePolicy {
        RatePolicy {
            limit,
            window_secs: 60,
            quota: Quota::per_minute(limit),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit.get()
    }

    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// The `RateLimit-Policy` header value, e.g. `5;w=60`.
    pub fn header_value(&self) -> String {
        format!("{};w={}", self.limit, self.window_secs)
    }
}

/// A refused request: how long to wait and which policy refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Time until the next request under this key can pass.
    pub retry_after: Duration,
    pub policy: RatePolicy,
    /// The key was not tracked and the limiter was full, so it was checked against the shared
    /// overflow bucket. Worth logging: it means many distinct keys are arriving.
    pub overflow: bool,
}

impl Limited {
    /// Whole seconds for `Retry-After` and `reset`: rounded up, so a client that waits that long
    /// is not refused again, and at least 1, since 0 would invite an immediate retry.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limited ({}), retry after {}s",
            self.policy.header_value(),
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for Limited {}

/// governor's DashMap store behind an `Arc`, so the limiter can ask whether a key is tracked
/// (`contains_key`), which `RateLimiter` itself does not offer. Every state operation is passed
/// straight through.
struct SharedStore<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        StateStore::measure_and_replace(&*self.0, key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

/// A keyed rate limiter tracking at most `cap` keys. See the module docs for the policy at the
/// cap.
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock + Clone = DefaultClock> {
    policy: RatePolicy,
    cap: usize,
    keys: Arc<DashMapStateStore<K>>,
    keyed: RateLimiter<K, SharedStore<K>, C, NoOpMiddleware<C::Instant>>,
    overflow: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// Tracked keys take it shared; admitting a new key or sweeping takes it exclusively, so
    /// the count cannot pass `cap` through two newcomers racing, and a sweep cannot drop a key
    /// between "is it tracked?" and its check. Holds the time of the last sweep.
    gate: RwLock<Option<C::Instant>>,
    sweep_every: Nanos,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> fmt::Debug for KeyedLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("policy", &self.policy)
            .field("cap", &self.cap)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K, DefaultClock> {
    /// A limiter on the monotonic system clock. `cap` is clamped to at least 1.
    pub fn new(policy: RatePolicy, cap: usize) -> Self {
        Self::with_clock(policy, cap, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> KeyedLimiter<K, C> {
    /// A limiter on the given clock (tests pass a `FakeRelativeClock`).
    pub fn with_clock(policy: RatePolicy, cap: usize, clock: C) -> Self {
        let keys: Arc<DashMapStateStore<K>> = Arc::new(DashMapStateStore::default());
        let keyed = RateLimiter::new(policy.quota, SharedStore(keys.clone()), clock.clone());
        let overflow = RateLimiter::direct_with_clock(policy.quota, clock.clone());
        // A sweep frees only keys whose bucket has been full for one refill interval, so
        // sweeping more often than that finds little; and never more than once a second, since
        // a sweep walks the whole map.
        let sweep_every = Nanos::from(
            policy
                .quota
                .replenish_interval()
                .max(Duration::from_secs(1)),
        );
        KeyedLimiter {
            policy,
            cap: cap.max(1),
            keys,
            keyed,
            overflow,
            clock,
            gate: RwLock::new(None),
            sweep_every,
        }
    }

    pub fn policy(&self) -> RatePolicy {
        self.policy
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// How many keys have their own bucket now (never more than `cap`).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Count one request under `key`.
    pub fn check(&self, key: &K) -> Result<(), Limited> {
        {
            let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
            if self.keys.contains_key(key) {
                return self
                    .keyed
                    .check_key(key)
                    .map_err(|n| self.limited(&n, false));
            }
        }
        let mut last_sweep = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the exclusive lock: another newcomer may have added this key.
        if !self.keys.contains_key(key) && self.keys.len() >= self.cap {
            let now = self.clock.now();
            let due = last_sweep.is_none_or(|at| now.duration_since(at) >= self.sweep_every);
            if due {
                self.keyed.retain_recent();
                *last_sweep = Some(now);
            }
            if self.keys.len() >= self.cap {
                drop(last_sweep);
                return self.overflow.check().map_err(|n| self.limited(&n, true));
            }
        }
        self.keyed
            .check_key(key)
            .map_err(|n| self.limited(&n, false))
    }

    /// Drop keys whose buckets are full again and give the memory back. Meant for a periodic
    /// timer (e.g. every minute), so the map does not sit at the cap after a burst of traffic.
    pub fn maintain(&self) {
        let mut last_sweep = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
        *last_sweep = Some(self.clock.now());
    }

    fn limited(&self, not_until: &NotUntil<C::Instant>, overflow: bool) -> Limited {
        Limited {
            retry_after: not_until.wait_time_from(self.clock.now()),
            policy: self.policy,
            overflow,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        limit: u32,
        window: u64,
        cap: usize,
    ) -> (KeyedLimiter<u64, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let policy = RatePolicy::new(limit, window).unwrap();
        (KeyedLimiter::with_clock(policy, cap, clock.clone()), clock)
    }

    #[test]
    fn policy_validation_and_header() {
        assert_eq!(RatePolicy::new(0, 60), Err(PolicyError::ZeroLimit));
        assert_eq!(RatePolicy::new(5, 0), Err(PolicyError::ZeroWindow));
        assert_eq!(
            RatePolicy::new(5, MAX_WINDOW_SECS + 1),
            Err(PolicyError::WindowTooLong)
        );
        assert!(RatePolicy::new(5, MAX_WINDOW_SECS).is_ok());
        let p = RatePolicy::new(5, 60).unwrap();
        assert_eq!(p.header_value(), "5;w=60");
        assert_eq!(p, RatePolicy::per_minute(NonZeroU32::new(5).unwrap()));
    }

    #[test]
    fn exhausted_quota_is_limited_with_sane_retry() {
        let (l, _clock) = limiter(5, 60, 100);
        for _ in 0..5 {
            l.check(&1).unwrap();
        }
        let limited = l.check(&1).unwrap_err();
        // One request refills every 60/5 = 12 seconds.
        assert_eq!(limited.retry_after, Duration::from_secs(12));
        assert_eq!(limited.retry_after_secs(), 12);
        assert!(!limited.overflow);
        assert_eq!(limited.policy.header_value(), "5;w=60");
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let policy = RatePolicy::new(5, 60).unwrap();
        let at = |ms| Limited {
            retry_after: Duration::from_millis(ms),
            policy,
            overflow: false,
        };
        assert_eq!(at(0).retry_after_secs(), 1);
        assert_eq!(at(1).retry_after_secs(), 1);
        assert_eq!(at(1000).retry_after_secs(), 1);
        assert_eq!(at(1001).retry_after_secs(), 2);
    }

    #[test]
    fn recovers_after_the_clock_advances() {
        let (l, clock) = limiter(5, 60, 100);
        for _ in 0..5 {
            l.check(&7).unwrap();
        }
        let wait = l.check(&7).unwrap_err().retry_after;
        clock.advance(wait - Duration::from_millis(1));
        assert!(
            l.check(&7).is_err(),
            "still limited just before the wait ends"
        );
        clock.advance(Duration::from_millis(1));
        l.check(&7).unwrap();
        assert!(
            l.check(&7).is_err(),
            "one refilled request, not a new burst"
        );
        // A whole window refills the whole burst.
        clock.advance(Duration::from_secs(60));
        for _ in 0..5 {
            l.check(&7).unwrap();
        }
        assert!(l.check(&7).is_err());
    }

    #[test]
    fn one_key_over_the_limit_leaves_others_alone() {
        let (l, _clock) = limiter(3, 60, 100);
        for _ in 0..3 {
            l.check(&1).unwrap();
        }
        assert!(l.check(&1).is_err());
        for _ in 0..3 {
            l.check(&2).unwrap();
        }
        assert!(l.check(&2).is_err());
        assert!(l.check(&1).is_err());
    }

    #[test]
    fn a_million_distinct_keys_stay_under_the_cap() {
        const CAP: usize = 1_000;
        let (l, _clock) = limiter(5, 60, CAP);
        l.check(&u64::MAX).unwrap();
        for key in 0..1_000_000u64 {
            let _ = l.check(&key);
        }
        assert!(l.len() <= CAP, "len {} > cap {CAP}", l.len());
        assert_eq!(l.len(), CAP);
        // A key tracked before the flood still has its own bucket (4 of 5 left).
        for _ in 0..4 {
            l.check(&u64::MAX).unwrap();
        }
        let own = l.check(&u64::MAX).unwrap_err();
        assert!(!own.overflow);
        // Newcomers share the overflow bucket, which the flood has drained: fail closed.
        let newcomer = l.check(&2_000_000).unwrap_err();
        assert!(newcomer.overflow);
    }

    #[test]
    fn idle_keys_are_swept_at_the_cap_and_by_maintenance() {
        let (l, clock) = limiter(5, 60, 10);
        for key in 0..10 {
            l.check(&key).unwrap();
        }
        assert_eq!(l.len(), 10);
        // Once the old buckets have refilled, a newcomer at the cap triggers a sweep and gets
        // a bucket of its own.
        clock.advance(Duration::from_secs(61));
        l.check(&100).unwrap();
        assert_eq!(l.len(), 1);
        for _ in 0..4 {
            l.check(&100).unwrap();
        }
        assert!(!l.check(&100).unwrap_err().overflow);

        // governor keeps a key until one refill interval after its bucket is full again.
        clock.advance(Duration::from_secs(60 + 11));
        l.maintain();
        assert_eq!(l.len(), 1, "bucket full only just now: kept");
        clock.advance(Duration::from_secs(1));
        l.maintain();
        assert!(l.is_empty());
    }
}
