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
//!    dropped, as governor's `retain_recent` would, at most once per sweep interval so that a
//!    flood cannot make every request pay for a full sweep.
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

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
pub use governor::clock::DefaultClock;
use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

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

/// A keyed rate limiter tracking at most `cap` keys. See the module docs for the policy at the
/// cap.
///
/// Each key's bucket is governor's GCRA state, kept here rather than in governor's keyed
/// limiter so that a tracked key costs one map lookup: asking "is it tracked?" and then
/// counting it through governor looked it up twice, under a third, shared lock. The lookup's
/// shard guard is held while the bucket is counted, so a sweep cannot drop the key in between.
///
/// The map hashes with `S`: SipHash (std's `RandomState`) by default, for keys a client can
/// choose, such as its address.
pub struct KeyedLimiter<
    K: Hash + Eq + Clone,
    C: Clock + Clone = DefaultClock,
    S: BuildHasher + Clone = RandomState,
> {
    policy: RatePolicy,
    cap: usize,
    /// Per key, the theoretical arrival time of its next request (GCRA), in nanoseconds since
    /// `start`; a key is only ever inserted with a count in it.
    buckets: DashMap<K, AtomicU64, S>,
    /// The cost of one request in time (governor's `t`).
    increment: u64,
    /// How far ahead of now a bucket may run: the burst less one request (governor's `tau`).
    tolerance: u64,
    start: C::Instant,
    overflow: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// Taken to admit a new key or to sweep, so the count cannot pass `cap` through two
    /// newcomers racing. Holds the time of the last sweep.
    gate: Mutex<Option<C::Instant>>,
    sweep_every: Nanos,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone, S: BuildHasher + Clone> fmt::Debug
    for KeyedLimiter<K, C, S>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("policy", &self.policy)
            .field("cap", &self.cap)
            .field("len", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Clone + Default> KeyedLimiter<K, DefaultClock, S> {
    /// A limiter on the monotonic system clock. `cap` is clamped to at least 1.
    pub fn new(policy: RatePolicy, cap: usize) -> Self {
        Self::with_clock(policy, cap, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone, S: BuildHasher + Clone + Default>
    KeyedLimiter<K, C, S>
{
    /// A limiter on the given clock (tests pass a `FakeRelativeClock`).
    pub fn with_clock(policy: RatePolicy, cap: usize, clock: C) -> Self {
        let overflow = RateLimiter::direct_with_clock(policy.quota, clock.clone());
        // As governor's GCRA: one request costs the replenish interval (at least 1 ns), and a
        // full bucket lets a burst of `limit` through at once.
        let increment = Nanos::from(policy.quota.replenish_interval())
            .as_u64()
            .max(1);
        let tolerance =
            increment.saturating_mul(u64::from(policy.quota.burst_size().get()).saturating_sub(1));
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
            buckets: DashMap::with_hasher(S::default()),
            increment,
            tolerance,
            start: clock.now(),
            overflow,
            clock,
            gate: Mutex::new(None),
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
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Count one request under `key`.
    pub fn check(&self, key: &K) -> Result<(), Limited> {
        if let Some(bucket) = self.buckets.get(key) {
            return self.count(&bucket);
        }
        let mut last_sweep = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the gate: another newcomer may have added this key.
        if let Some(bucket) = self.buckets.get(key) {
            return self.count(&bucket);
        }
        if self.buckets.len() >= self.cap {
            let now = self.clock.now();
            let due = last_sweep.is_none_or(|at| now.duration_since(at) >= self.sweep_every);
            if due {
                self.sweep();
                *last_sweep = Some(now);
            }
            if self.buckets.len() >= self.cap {
                drop(last_sweep);
                return self.overflow.check().map_err(|n| Limited {
                    retry_after: n.wait_time_from(self.clock.now()),
                    policy: self.policy,
                    overflow: true,
                });
            }
        }
        // A new bucket holds its first request (a full bucket cannot refuse one).
        let bucket = AtomicU64::new(0);
        let counted = self.count(&bucket);
        self.buckets.insert(key.clone(), bucket);
        counted
    }

    /// One request against a bucket, now: governor's GCRA.
    fn count(&self, bucket: &AtomicU64) -> Result<(), Limited> {
        let t0 = self.elapsed();
        let mut seen = bucket.load(Ordering::Acquire);
        loop {
            // 0 is a bucket with no count yet: full.
            let tat = if seen == 0 { t0 } else { seen };
            let earliest = tat.saturating_sub(self.tolerance);
            if t0 < earliest {
                return Err(Limited {
                    retry_after: Duration::from_nanos(earliest - t0),
                    policy: self.policy,
                    overflow: false,
                });
            }
            let next = tat.max(t0).saturating_add(self.increment);
            match bucket.compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(current) => seen = current,
            }
        }
    }

    /// Nanoseconds since the limiter was made.
    fn elapsed(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    /// Drop the keys whose buckets have been full for at least one request's time: such a
    /// bucket is indistinguishable from a new one (governor's `retain_recent`).
    fn sweep(&self) {
        let drop_below = self.elapsed().saturating_sub(self.increment);
        self.buckets
            .retain(|_, tat| tat.load(Ordering::Relaxed) > drop_below);
    }

    /// Drop keys whose buckets are full again and give the memory back. Meant for a periodic
    /// timer (e.g. every minute), so the map does not sit at the cap after a burst of traffic.
    pub fn maintain(&self) {
        let mut last_sweep = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweep();
        self.buckets.shrink_to_fit();
        *last_sweep = Some(self.clock.now());
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
    /// Many threads counting under one key, the clock stopped: exactly the burst passes,
    /// however the compare-and-swaps interleave.
    #[test]
    fn concurrent_requests_under_one_key_admit_exactly_the_burst() {
        let (l, _clock) = limiter(100, 60, 1_000);
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if l.check(&1).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100);
    }

    /// Newcomers racing from many threads at the cap: the count never passes it.
    #[test]
    fn concurrent_newcomers_stay_under_the_cap() {
        const CAP: usize = 100;
        let (l, _clock) = limiter(5, 60, CAP);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let l = &l;
                s.spawn(move || {
                    for key in 0..1_000u64 {
                        let _ = l.check(&(t * 1_000_000 + key));
                    }
                });
            }
        });
        assert_eq!(l.len(), CAP);
    }

    proptest::proptest! {
        /// The buckets kept here answer as governor's own keyed limiter does, request for
        /// request and wait for wait, whatever the keys and however time moves; and a sweep
        /// keeps the keys governor's `retain_recent` keeps.
        #[test]
        fn buckets_answer_as_governors_keyed_limiter(
            limit in 1u32..20,
            window in 1u64..120,
            steps in proptest::collection::vec(
                (0u64..4, 0u64..5_000, proptest::bool::weighted(0.1)),
                1..200,
            ),
        ) {
            let policy = RatePolicy::new(limit, window).unwrap();
            let clock = FakeRelativeClock::default();
            let ours: KeyedLimiter<u64, _> = KeyedLimiter::with_clock(policy, 1_000, clock.clone());
            let theirs: RateLimiter<u64, governor::state::keyed::DashMapStateStore<u64>, _, _> =
                RateLimiter::dashmap_with_clock(policy.quota, clock.clone());
            for (key, advance_ms, sweep) in steps {
                clock.advance(Duration::from_millis(advance_ms));
                if sweep {
                    ours.maintain();
                    theirs.retain_recent();
                    proptest::prop_assert_eq!(ours.len(), theirs.len());
                }
                let expected = theirs
                    .check_key(&key)
                    .map_err(|n| n.wait_time_from(clock.now()));
                let got = ours.check(&key).map_err(|l| l.retry_after);
                proptest::prop_assert_eq!(got, expected);
            }
        }
    }
}
