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
//!
//! Each runtime thread talks to Redis over a connection of its own, made on first use and
//! driven on that thread (as the upstream pools are): a check never wakes another thread. The
//! keeper's connection only says whether Redis is there; its generation tells the threads
//! when to make theirs anew (after an outage).

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
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
    /// Tells this store's thread connections from another store's.
    id: usize,
    config: SharedConfig,
    script: Script,
    state: RwLock<State>,
    /// Calls that found Redis unreachable (including skipped ones while down).
    unreachable: AtomicU64,
    /// Calls past the timeout on the live connection since its last answer.
    timeouts_in_a_row: AtomicU32,
}

/// The connection and what readiness and the logs need, changed under one lock.
struct State {
    /// The live connection and its generation; `None` while down. A multiplexed connection is
    /// cheap to clone and serves every request concurrently. A failure seen on a connection
    /// that has since been replaced says nothing about the new one: the generation tells.
    live: Option<(u64, MultiplexedConnection)>,
    generation: u64,
    /// Since when it has been down, while it is.
    down_since: Option<Instant>,
    /// The outage has been logged (once per outage, including one at start).
    down_logged: bool,
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
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        SharedLimiter {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config,
            script: Script::new(GCRA),
            state: RwLock::new(State {
                live: None,
                generation: 0,
                down_since: Some(Instant::now()),
                down_logged: false,
            }),
            unreachable: AtomicU64::new(0),
            timeouts_in_a_row: AtomicU32::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_up(&self) -> bool {
        self.read().live.is_some()
    }

    pub fn health(&self) -> Health {
        let state = self.read();
        if state.live.is_some() {
            return Health::Up;
        }
        Health::Down {
            for_secs: state.down_since.map_or(0, |at| at.elapsed().as_secs()),
        }
    }

    /// Calls that found Redis unreachable since start.
    pub fn unreachable_total(&self) -> u64 {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Count one request in every bucket, or in none: `buckets` are names (e.g.
    /// `api_key:<id>`) with their policies. Waits at most the configured timeout for an
    /// answer (and, when this thread has no connection yet, up to [`CONNECT_TIMEOUT`] to make
    /// one).
    pub async fn check(&self, buckets: &[(&str, RatePolicy)]) -> Result<Verdict, Unreachable> {
        let live = self.read().live.as_ref().map(|(generation, _)| *generation);
        let Some(generation) = live else {
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
        // A thread's connection that Redis closed (its idle `timeout`, a killed client) fails
        // at once on its next use: the thread makes a new one and asks again, and only a
        // failure on that one is an outage. (Had the first call counted before its answer was
        // lost, the request is counted twice: the strict side.)
        for fresh in [false, true] {
            let mut conn = match self.thread_connection(generation, fresh).await {
                Ok(conn) => conn,
                Err(Missed::Slow) => return Err(self.timed_out(generation)),
                Err(Missed::Failed(e)) => {
                    self.unreachable.fetch_add(1, Ordering::Relaxed);
                    self.lose(Some(generation), &e);
                    return Err(Unreachable);
                }
            };
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
                Err(_) => return Err(self.timed_out(generation)),
            };
            match answer {
                Ok((0, _)) => return Ok(Verdict::Admitted),
                Ok((index, wait)) => {
                    return Ok(Verdict::Refused {
                        index: usize::try_from(index - 1).unwrap_or(usize::MAX),
                        wait: Duration::from_micros(wait),
                    })
                }
                Err(e) if fresh => {
                    self.unreachable.fetch_add(1, Ordering::Relaxed);
                    self.lose(Some(generation), &e.to_string());
                    return Err(Unreachable);
                }
                Err(_) => continue,
            }
        }
        Err(Unreachable)
    }

    /// A call under `generation` got no answer in time: this request falls back; the
    /// [`TIMEOUTS_DOWN`]th in a row marks the store down. Counted only while that generation
    /// is live (a late timeout on a replaced connection says nothing about the new one).
    fn timed_out(&self, generation: u64) -> Unreachable {
        self.unreachable.fetch_add(1, Ordering::Relaxed);
        let current = self.read().live.as_ref().map(|(g, _)| *g) == Some(generation);
        if current && self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_DOWN {
            self.lose(
                Some(generation),
                "no answer within the timeout, several times in a row",
            );
        }
        Unreachable
    }

    /// This thread's connection for `generation`, made now if it has none (or one of an
    /// earlier generation), or if `fresh` (the held one failed). Making one waits at most
    /// [`CONNECT_TIMEOUT`], once per thread and outage.
    async fn thread_connection(
        &self,
        generation: u64,
        fresh: bool,
    ) -> Result<MultiplexedConnection, Missed> {
        let held = THREAD_CONNECTIONS.with_borrow(|held| {
            held.iter()
                .find(|(id, g, _)| *id == self.id && *g == generation)
                .map(|(_, _, conn)| conn.clone())
        });
        if let Some(conn) = held.filter(|_| !fresh) {
            return Ok(conn);
        }
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.config
                .client
                .get_multiplexed_async_connection_with_config(&connection_config()),
        )
        .await
        .map_err(|_| Missed::Slow)?
        .map_err(|e| Missed::Failed(e.to_string()))?;
        THREAD_CONNECTIONS.with_borrow_mut(|held| {
            held.retain(|(id, _, _)| *id != self.id);
            held.push((self.id, generation, conn.clone()));
        });
        Ok(conn)
    }

    /// One round of upkeep, run once a second by a background job (one keeper per store):
    /// while down, connect and ping; while up, ping, so a dead connection is found even when
    /// no request is asking.
    pub async fn keep(&self) {
        let live = self.read().live.clone();
        match live {
            Some((generation, mut conn)) => {
                if let Err(e) = ping(&mut conn).await {
                    self.lose(Some(generation), &e);
                }
            }
            None => match self.connect().await {
                Ok(conn) => self.install(conn),
                Err(e) => self.lose(None, &e),
            },
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let mut conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.config
                .client
                .get_multiplexed_async_connection_with_config(&connection_config()),
        )
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        ping(&mut conn).await?;
        // Loaded now, so requests run EVALSHA without a first miss.
        tokio::time::timeout(CONNECT_TIMEOUT, self.script.load_async(&mut conn))
            .await
            .map_err(|_| "loading the script timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        warn_if_evicting(&mut conn).await;
        Ok(conn)
    }

    /// A new connection is live.
    fn install(&self, conn: MultiplexedConnection) {
        let down_for = {
            let mut state = self.write();
            state.generation += 1;
            state.live = Some((state.generation, conn));
            state.down_logged = false;
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
            state.down_since.take().map(|at| at.elapsed())
        };
        tracing::info!(
            target: "zonegate::ratelimit",
            event = "shared_limits_up",
            down_ms = down_for.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "shared rate limits reachable"
        );
    }

    /// The connection of `generation` failed (or, with `None`, connecting did): down, unless
    /// that connection has already been replaced. Logged once per outage.
    fn lose(&self, generation: Option<u64>, error: &str) {
        let log = {
            let mut state = self.write();
            if let (Some(failed), Some((live, _))) = (generation, &state.live) {
                if failed != *live {
                    return;
                }
            }
            state.live = None;
            state.down_since.get_or_insert_with(Instant::now);
            !std::mem::replace(&mut state.down_logged, true)
        };
        if log {
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
}

/// Limit buckets are keys with a time to live: a Redis that evicts such keys when full
/// (`allkeys-*`, `volatile-*`) would silently reset them. Said at connect, when Redis lets us
/// ask (managed services may refuse `CONFIG`).
async fn warn_if_evicting(conn: &mut MultiplexedConnection) {
    let asked = tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async::<Vec<String>>(conn),
    )
    .await;
    if let Ok(Ok(reply)) = asked {
        if let Some(policy) = reply.get(1).filter(|p| p.as_str() != "noeviction") {
            tracing::warn!(
                target: "zonegate::ratelimit",
                event = "shared_limits_evictable",
                maxmemory_policy = %policy,
                "Redis may evict rate-limit buckets when full, resetting them: set maxmemory-policy noeviction"
            );
        }
    }
}

thread_local! {
    /// This thread's connection to each store: (store id, generation, connection). Its driver
    /// task runs on the thread that made it.
    static THREAD_CONNECTIONS: RefCell<Vec<(usize, u64, MultiplexedConnection)>> =
        const { RefCell::new(Vec::new()) };
}

/// Why a thread has no connection to use.
enum Missed {
    Slow,
    Failed(String),
}

/// No response timeout of the client's own: every call has its own, and a client timeout
/// shorter than `timeout` would turn one slow answer into an error (which marks the store
/// down).
fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None)
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
        let url = redis_url(test)?;
        Some(limiter_at(&url, Duration::from_secs(1)))
    }

    fn redis_url(test: &str) -> Option<String> {
        let url = std::env::var("ZONEGATE_TEST_REDIS_URL").ok();
        if url.is_none() {
            eprintln!("skipping {test}: ZONEGATE_TEST_REDIS_URL is not set");
        }
        url
    }

    fn limiter_at(url: &str, timeout: Duration) -> SharedLimiter {
        SharedLimiter::new(SharedConfig {
            client: Client::open(url).unwrap(),
            key_prefix: format!("zonegate-test-{}", uuid::Uuid::new_v4()),
            timeout,
        })
    }

    #[tokio::test]
    async fn a_bucket_expires_when_it_is_full_again() {
        let Some(limiter) = redis("the bucket expiry test") else {
            return;
        };
        limiter.keep().await;
        // 3 a minute: one request takes 20 s of the bucket, so it is full again in 20 s.
        let policy = RatePolicy::new(3, 60).unwrap();
        assert_eq!(
            limiter.check(&[("expiring", policy)]).await,
            Ok(Verdict::Admitted)
        );
        let key = format!("{}:rl:expiring", limiter.config.key_prefix);
        let mut conn = limiter
            .config
            .client
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((19_000..=20_000).contains(&ttl), "{ttl}");
        let tat: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            tat.bytes().all(|b| b.is_ascii_digit()),
            "an integer, not {tat:?}"
        );
    }

    /// A TCP proxy in front of Redis that can go silent without closing anything, as a
    /// half-open connection or a stalled Redis does, or close every connection it carries, as
    /// Redis does with an idle client past its `timeout`.
    struct Proxy {
        url: String,
        silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
        close: tokio::sync::watch::Sender<u64>,
    }

    impl Proxy {
        fn close_all(&self) {
            self.close.send_modify(|n| *n += 1);
        }
    }

    async fn proxy(target: &str) -> Proxy {
        use std::sync::atomic::AtomicBool;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = target
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = std::sync::Arc::new(AtomicBool::new(false));
        let (close, closed) = tokio::sync::watch::channel(0u64);
        let quiet = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&target).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let mut closed_up = closed.clone();
                closed_up.mark_unchanged();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        tokio::select! {
                            read = cr.read(&mut buf) => match read {
                                Ok(n) if n > 0 && sw.write_all(&buf[..n]).await.is_ok() => {}
                                _ => break,
                            },
                            _ = closed_up.changed() => break,
                        }
                    }
                });
                let mut closed_down = closed.clone();
                closed_down.mark_unchanged();
                let quiet = quiet.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        tokio::select! {
                            read = sr.read(&mut buf) => match read {
                                Ok(n) if n > 0 => {
                                    // Silent: answers are swallowed, the connection stays open.
                                    if !quiet.load(Ordering::SeqCst)
                                        && cw.write_all(&buf[..n]).await.is_err()
                                    {
                                        break;
                                    }
                                }
                                _ => break,
                            },
                            _ = closed_down.changed() => break,
                        }
                    }
                });
            }
        });
        Proxy {
            url: format!("redis://{addr}/"),
            silent,
            close,
        }
    }

    #[tokio::test]
    async fn a_connection_redis_closed_is_made_anew_without_an_outage() {
        let Some(url) = redis_url("the closed connection test") else {
            return;
        };
        let proxy = proxy(&url).await;
        let limiter = limiter_at(&proxy.url, Duration::from_secs(1));
        limiter.keep().await;
        let policy = RatePolicy::new(100, 60).unwrap();
        assert_eq!(limiter.check(&[("k", policy)]).await, Ok(Verdict::Admitted));
        // Redis drops every client (an idle timeout, a restart of the proxy's peer).
        proxy.close_all();
        tokio::task::yield_now().await;
        assert_eq!(limiter.check(&[("k", policy)]).await, Ok(Verdict::Admitted));
        assert_eq!(
            limiter.health(),
            Health::Up,
            "one lost connection is no outage"
        );
        assert_eq!(limiter.unreachable_total(), 0);
    }

    #[tokio::test]
    async fn a_silent_store_costs_each_request_the_timeout_then_is_down_after_three() {
        let Some(url) = redis_url("the silent store test") else {
            return;
        };
        let proxy = proxy(&url).await;
        let silent = proxy.silent.clone();
        let limiter = limiter_at(&proxy.url, Duration::from_millis(50));
        limiter.keep().await;
        assert_eq!(limiter.health(), Health::Up);
        let policy = RatePolicy::new(100, 60).unwrap();
        assert_eq!(limiter.check(&[("k", policy)]).await, Ok(Verdict::Admitted));

        silent.store(true, Ordering::SeqCst);
        for _ in 0..TIMEOUTS_DOWN - 1 {
            assert_eq!(limiter.check(&[("k", policy)]).await, Err(Unreachable));
            assert_eq!(
                limiter.health(),
                Health::Up,
                "one slow answer is not an outage"
            );
        }
        assert_eq!(limiter.check(&[("k", policy)]).await, Err(Unreachable));
        assert!(matches!(limiter.health(), Health::Down { .. }));
        // Down: callers fall back at once, without waiting for the timeout.
        let started = Instant::now();
        assert_eq!(limiter.check(&[("k", policy)]).await, Err(Unreachable));
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(limiter.unreachable_total(), u64::from(TIMEOUTS_DOWN) + 1);

        // Answering again: the keeper reconnects and the limits are shared again.
        silent.store(false, Ordering::SeqCst);
        limiter.keep().await;
        assert_eq!(limiter.health(), Health::Up);
        assert_eq!(limiter.check(&[("k", policy)]).await, Ok(Verdict::Admitted));
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
