//! Rate limits shared by every instance, kept in Redis: N gateways behind a load balancer
//! together admit the configured rate, not N times it.
//!
//! The algorithm is governor's GCRA, computed in one Lua script ([`GCRA`]) so that reading
//! and advancing a bucket is atomic across instances. Each bucket is one string key holding its
//! theoretical arrival time (TAT) in microseconds, expiring when the bucket is full again; the
//! time is Redis's own (`TIME`), so the instances' clocks never disagree about a bucket. One
//! call checks several buckets (an API key and its org) all-or-nothing: a request refused by
//! its org spends nothing of its key's allowance, and the common path is one round trip.
//!
//! Redis being unreachable is a normal state, not an error: a call that fails (or the
//! [`TIMEOUTS_DOWN`]th in a row to take longer than the configured timeout) marks the store
//! down and drops the connection, and until the background keeper ([`SharedLimiter::keep`], once a second) has connected and pinged again,
//! callers skip Redis at once and use their fallback (the pipeline: local limits divided by the
//! instance count for API traffic, a refusal for the account routes). Both transitions are
//! logged once, and readiness reports the state.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};

use super::RatePolicy;

/// GCRA over every bucket in `KEYS`, all-or-nothing. `ARGV` holds two integers per key: the
/// emission interval T (microseconds per request) and the tolerance τ = T × limit (a burst of
/// `limit`). A request is admitted when every bucket's new TAT, max(TAT, now) + T, is at most
/// τ ahead of now; then every TAT advances and expires when its bucket is full again.
/// Returns `{0, 0}` when admitted, or `{i, wait}` with the 1-based index of the first
/// refusing bucket and the microseconds until it would admit.
///
/// Numbers: Lua's are doubles, exact to 2^53 µs (285 years past 1970); `%d` writes them
/// without an exponent.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  if next_tat - now > tolerance then
    return {i, next_tat - tolerance - now}
  end
  tats[i] = next_tat
end
for i, key in ipairs(KEYS) do
  local ttl = math.max(1, math.ceil((tats[i] - now) / 1000))
  redis.call('SET', key, string.format('%d', tats[i]), 'PX', ttl)
end
return {0, 0}
";

/// Consecutive calls past the timeout that mark the store down. One slow answer (a busy
/// machine) costs only its own request a fallback; a store that stopped answering (a
/// half-open connection says nothing) is down after this many.
const TIMEOUTS_DOWN: u32 = 3;

/// How long connecting and the keeper's ping may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the shared limits live and how long a request may wait for them.
#[derive(Clone)]
pub struct SharedConfig {
    /// The Redis client, built from the URL and the password from the environment or a file.
    pub client: Client,
    /// Every key is `<prefix>:rl:<bucket>`, so one Redis can serve other things too.
    pub key_prefix: String,
    /// The longest a request waits for Redis before it counts as unreachable.
    pub timeout: Duration,
}

impl fmt::Debug for SharedConfig {
    // The connection info would print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConfig")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a shared check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every bucket had room; each was counted.
    Admitted,
    /// The bucket at this index (into the checked list) refused; nothing was counted. Wait
    /// this long before it would admit.
    Refused { index: usize, wait: Duration },
}

/// Redis could not answer in time (or is known to be down): the caller falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared rate-limit store is unreachable")]
pub struct Unreachable;

/// The shared limits' connection and its health.
pub struct SharedLimiter {
    config: SharedConfig,
    script: Script,
    /// `None` while down; the keeper puts a fresh one here. A multiplexed connection is cheap
    /// to clone and serves every request concurrently.
    conn: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// Since when it has been down (for readiness), when it is.
    down_since: Mutex<Option<Instant>>,
    /// Calls that found Redis unreachable (including skipped ones while down).
    unreachable: AtomicU64,
    /// Calls past the timeout since the last answer.
    timeouts_in_a_row: AtomicU32,
}

impl fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("config", &self.config)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// Health for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down { for_secs: u64 },
}

impl SharedLimiter {
    /// Down until the keeper has connected (so nothing waits on a connection at start).
    pub fn new(config: SharedConfig) -> SharedLimiter {
        SharedLimiter {
            config,
            script: Script::new(GCRA),
            conn: RwLock::new(None),
            up: AtomicBool::new(false),
            down_since: Mutex::new(Some(Instant::now())),
            unreachable: AtomicU64::new(0),
            timeouts_in_a_row: AtomicU32::new(0),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn health(&self) -> Health {
        if self.is_up() {
            return Health::Up;
        }
        let since = *self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Health::Down {
            for_secs: since.map_or(0, |at| at.elapsed().as_secs()),
        }
    }

    /// Calls that found Redis unreachable since start.
    pub fn unreachable_total(&self) -> u64 {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Count one request in every bucket, or in none: `buckets` are names (e.g.
    /// `api_key:<id>`) with their policies. Never waits longer than the configured timeout.
    pub async fn check(&self, buckets: &[(&str, RatePolicy)]) -> Result<Verdict, Unreachable> {
        let conn = self
            .conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(mut conn) = conn.filter(|_| self.is_up()) else {
            self.unreachable.fetch_add(1, Ordering::Relaxed);
            return Err(Unreachable);
        };
        let mut invocation = self.script.prepare_invoke();
        for (bucket, policy) in buckets {
            let (interval, tolerance) = gcra_micros(*policy);
            invocation
                .key(format!("{}:rl:{bucket}", self.config.key_prefix))
                .arg(interval)
                .arg(tolerance);
        }
        let answer = tokio::time::timeout(
            self.config.timeout,
            invocation.invoke_async::<(u64, u64)>(&mut conn),
        )
        .await;
        let answer = match answer {
            Ok(answer) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                answer
            }
            Err(_) => {
                self.unreachable.fetch_add(1, Ordering::Relaxed);
                if self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_DOWN {
                    self.mark_down("no answer within the timeout, several times in a row");
                }
                return Err(Unreachable);
            }
        };
        match answer {
            Ok((0, _)) => Ok(Verdict::Admitted),
            Ok((index, wait)) => Ok(Verdict::Refused {
                index: usize::try_from(index - 1).unwrap_or(usize::MAX),
                wait: Duration::from_micros(wait),
            }),
            Err(e) => {
                self.unreachable.fetch_add(1, Ordering::Relaxed);
                self.mark_down(&e.to_string());
                Err(Unreachable)
            }
        }
    }

    /// One round of upkeep, run once a second by a background job: while down, connect and
    /// ping; while up, ping, so a dead connection is found even when no request is asking.
    pub async fn keep(&self) {
        let current = self
            .conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(mut conn) if self.is_up() => {
                if let Err(e) = ping(&mut conn).await {
                    self.mark_down(&e);
                }
            }
            _ => match self.connect().await {
                Ok(conn) => {
                    *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some(conn);
                    self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                    self.mark_up();
                }
                Err(e) => self.mark_down(&e),
            },
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let mut conn = self
            .config
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        ping(&mut conn).await?;
        // Loaded now, so requests run EVALSHA without a first miss.
        tokio::time::timeout(CONNECT_TIMEOUT, self.script.load_async(&mut conn))
            .await
            .map_err(|_| "loading the script timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(conn)
    }

    fn mark_down(&self, error: &str) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = None;
        let mut since = self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.is_none() {
            *since = Some(Instant::now());
        }
        if self.up.swap(false, Ordering::AcqRel) {
            // The error says what failed (refused, reset, timeout); redis-rs never puts the
            // password in it.
            tracing::warn!(
                target: "zonegate::ratelimit",
                event = "shared_limits_down",
                error = %error,
                "shared rate limits unreachable: API traffic uses local limits divided by the instance count, account routes are refused"
            );
        }
    }

    fn mark_up(&self) {
        let since = self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(
                target: "zonegate::ratelimit",
                event = "shared_limits_up",
                down_ms = since.map_or(0, |at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
                "shared rate limits reachable"
            );
        }
    }
}

async fn ping(conn: &mut MultiplexedConnection) -> Result<(), String> {
    let pong = tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::cmd("PING").query_async::<String>(conn),
    )
    .await
    .map_err(|_| "PING timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("PING answered {pong:?}"))
    }
}

/// A policy's GCRA parameters in microseconds: T = window / limit, τ = T × limit.
fn gcra_micros(policy: RatePolicy) -> (u64, u64) {
    let window = policy.window_secs().saturating_mul(1_000_000);
    let interval = (window / u64::from(policy.limit())).max(1);
    (interval, interval.saturating_mul(u64::from(policy.limit())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn gcra_parameters_allow_a_burst_of_the_limit() {
        let (t, tau) = gcra_micros(RatePolicy::new(5, 60).unwrap());
        assert_eq!(t, 12_000_000);
        assert_eq!(tau, 60_000_000);
        let (t, tau) = gcra_micros(RatePolicy::new(3, 1).unwrap());
        assert_eq!(t, 333_333);
        assert_eq!(tau, 999_999);
    }

    #[test]
    fn debug_never_shows_the_connection_info() {
        let client = Client::open("redis://:hunter2@127.0.0.1:1/").unwrap();
        let limiter = SharedLimiter::new(SharedConfig {
            client,
            key_prefix: "p".into(),
            timeout: Duration::from_millis(50),
        });
        let shown = format!("{limiter:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("up: false"), "{shown}");
    }

    /// A test Redis from `ZONEGATE_TEST_REDIS_URL`, or `None` (saying so).
    fn redis(test: &str) -> Option<SharedLimiter> {
        let Ok(url) = std::env::var("ZONEGATE_TEST_REDIS_URL") else {
            eprintln!("skipping {test}: ZONEGATE_TEST_REDIS_URL is not set");
            return None;
        };
        let prefix = format!("zonegate-test-{}", uuid::Uuid::new_v4());
        Some(SharedLimiter::new(SharedConfig {
            client: Client::open(url).unwrap(),
            key_prefix: prefix,
            timeout: Duration::from_secs(1),
        }))
    }

    #[tokio::test]
    async fn buckets_are_counted_together_or_not_at_all() {
        let Some(limiter) = redis("the shared GCRA test") else {
            return;
        };
        assert_eq!(
            limiter
                .check(&[("k", RatePolicy::new(1, 60).unwrap())])
                .await,
            Err(Unreachable),
            "down until the keeper connects"
        );
        limiter.keep().await;
        assert_eq!(limiter.health(), Health::Up);

        let key = RatePolicy::new(3, 60).unwrap();
        let org = RatePolicy::new(4, 60).unwrap();
        for _ in 0..3 {
            let v = limiter.check(&[("key:a", key), ("org:o", org)]).await;
            assert_eq!(v, Ok(Verdict::Admitted));
        }
        // The key's burst is spent: refused by the key (index 0), 20 s per request.
        match limiter.check(&[("key:a", key), ("org:o", org)]).await {
            Ok(Verdict::Refused { index: 0, wait }) => {
                assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
            }
            other => panic!("{other:?}"),
        }
        // Another key of the org: one left in the org, then refused by the org (index 1)
        // without spending the new key's allowance.
        assert_eq!(
            limiter.check(&[("key:b", key), ("org:o", org)]).await,
            Ok(Verdict::Admitted)
        );
        assert!(matches!(
            limiter.check(&[("key:b", key), ("org:o", org)]).await,
            Ok(Verdict::Refused { index: 1, .. })
        ));
        for _ in 0..2 {
            assert_eq!(
                limiter.check(&[("key:b", key)]).await,
                Ok(Verdict::Admitted)
            );
        }
        assert!(matches!(
            limiter.check(&[("key:b", key)]).await,
            Ok(Verdict::Refused { index: 0, .. })
        ));
    }

    #[tokio::test]
    async fn two_limiters_share_one_bucket_and_parallel_calls_never_overspend() {
        let Some(a) = redis("the shared bucket test") else {
            return;
        };
        let a = std::sync::Arc::new(a);
        let b = std::sync::Arc::new(SharedLimiter::new(a.config.clone()));
        a.keep().await;
        b.keep().await;
        let policy = RatePolicy::new(50, 3600).unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..200 {
            let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
            calls.spawn(async move { limiter.check(&[("shared", policy)]).await });
        }
        let verdicts = calls.join_all().await;
        let admitted = verdicts
            .iter()
            .filter(|v| **v == Ok(Verdict::Admitted))
            .count();
        assert_eq!(admitted, 50, "{verdicts:?}");
    }

    #[tokio::test]
    async fn an_unreachable_store_is_down_and_calls_fail_fast() {
        // Nothing listens on port 1.
        let limiter = SharedLimiter::new(SharedConfig {
            client: Client::open("redis://127.0.0.1:1/").unwrap(),
            key_prefix: "p".into(),
            timeout: Duration::from_millis(50),
        });
        limiter.keep().await;
        assert!(matches!(limiter.health(), Health::Down { .. }));
        let policy = RatePolicy::new(1, 60).unwrap();
        assert_eq!(limiter.check(&[("k", policy)]).await, Err(Unreachable));
        assert!(limiter.unreachable_total() >= 1);
    }
}
