//! Invalidation across instances: what one instance changes, every other stops believing from
//! its caches at once, instead of within `cache_revalidate_seconds`.
//!
//! On PostgreSQL the database announces every change that must reach the caches: triggers
//! (`migrations/gateway/postgres/0016_invalidation_notify.sql`) `NOTIFY` the channel
//! [`CHANNEL`] at commit with the id of what changed (an API key, a session, a login, a user,
//! an org, a membership), and the gateway `NOTIFY`s a policy reload itself. Every instance
//! `LISTEN`s ([`Listener`]) and drops the matching cache entries; the next request reads the
//! database. Because the notification is sent by the database after the commit, no code path
//! can forget to send it, and a read after it sees the change.
//!
//! A notification missed while the listening connection was down cannot be recovered, so the
//! instance stops trusting its caches: it empties them when the connection drops, every
//! [`DISTRUST_EVERY`] while it stays down (so nothing cached is believed for longer than
//! that), and once more when it is back (the reconcile). Readiness reports the listener and
//! fails when it has been down longer than [`READY_BOUND`]. SQLite serves one machine, whose
//! caches are invalidated in process: nothing to listen to.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Services;

/// The notification channel.
pub const CHANNEL: &str = "zonegate_invalidate";

/// While the listener is down, caches are emptied this often: the longest anything cached is
/// believed without the notifications that would have invalidated it.
pub const DISTRUST_EVERY: Duration = Duration::from_secs(1);

/// Readiness fails once the listener has been down this long.
pub const READY_BOUND: Duration = Duration::from_secs(5);

/// Each listener sends itself a notification this often, through the shared pool; one not
/// heard within [`HEARTBEAT_DEADLINE`] means the listening connection is dead (a half-open
/// TCP connection never says so itself), and it is treated as down.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(3);

/// The longest a (re)connection attempt may take before the listener counts as down again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// An API key was revoked or rolled.
    ApiKey(String),
    /// A session (by its public id) was ended.
    Session(String),
    /// A login (refresh family) was ended, with every session made from it.
    Family(String),
    /// A user was disabled or enabled, or verified their email.
    User(String),
    /// An org was suspended or reinstated, or its MFA requirement changed.
    Org(String),
    /// A membership was created, changed or removed.
    Member { org: String, user: String },
    /// An instance reloaded its policies; the others reload theirs. Carries the instance id,
    /// so the sender ignores its own.
    Policies { from: String },
    /// A listener's heartbeat (see [`HEARTBEAT`]); changes nothing.
    Heartbeat,
}

impl Invalidation {
    /// Parse a notification payload; anything else is ignored.
    pub fn parse(payload: &str) -> Option<Invalidation> {
        let (kind, id) = payload.split_once(':')?;
        if id.is_empty() {
            return None;
        }
        let id = id.to_owned();
        Some(match kind {
            "key" => Invalidation::ApiKey(id),
            "session" => Invalidation::Session(id),
            "family" => Invalidation::Family(id),
            "user" => Invalidation::User(id),
            "org" => Invalidation::Org(id),
            "member" => {
                let (org, user) = id.split_once('/')?;
                Invalidation::Member {
                    org: org.to_owned(),
                    user: user.to_owned(),
                }
            }
            "policies" => Invalidation::Policies { from: id },
            "heartbeat" => Invalidation::Heartbeat,
            _ => return None,
        })
    }

    /// The payload a policy reload announces (the others come from the triggers).
    pub fn policies_payload(instance: &str) -> String {
        format!("policies:{instance}")
    }
}

impl Services {
    /// Drop what the caches hold about what changed.
    pub fn invalidate(&self, change: &Invalidation) {
        match change {
            Invalidation::ApiKey(id) => self.keys.forget(id),
            Invalidation::Session(id) => self.accounts.forget_session(id),
            Invalidation::Family(id) => self.accounts.forget_family(id),
            Invalidation::User(id) => self.accounts.forget_user(id),
            Invalidation::Org(id) => self.orgs.forget_org(id),
            Invalidation::Member { org, user } => self.orgs.forget_membership(user, org),
            // The server reloads policies; nothing cached here depends on them.
            Invalidation::Policies { .. } | Invalidation::Heartbeat => {}
        }
    }

    /// Empty every cache of credentials and permissions: each next request reads the database.
    pub fn forget_cached(&self) {
        self.keys.forget_all();
        self.accounts.forget_all();
        self.orgs.forget_all();
    }
}

/// The listener's state, for readiness and metrics.
#[derive(Debug, Default)]
pub struct ListenerState {
    up: AtomicBool,
    /// Unix seconds when it went down (or was started), 0 while up.
    down_since: AtomicI64,
    received: AtomicU64,
}

impl ListenerState {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Seconds it has been down at `now` (0 while up).
    pub fn down_for(&self, now: i64) -> i64 {
        if self.is_up() {
            0
        } else {
            now.saturating_sub(self.down_since.load(Ordering::Relaxed))
                .max(0)
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The listening task ended (the server is stopping, or it failed): down from now.
    pub fn mark_down(&self, now: i64) {
        self.set_down(now);
    }

    fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
        self.down_since.store(0, Ordering::Relaxed);
    }

    fn set_down(&self, now: i64) {
        if self.up.swap(false, Ordering::Relaxed) || self.down_since.load(Ordering::Relaxed) == 0 {
            self.down_since.store(now, Ordering::Relaxed);
        }
    }
}

/// The PostgreSQL URL the listener connects with. It may hold a password: never printed.
#[derive(Clone)]
pub struct ListenUrl(String);

impl ListenUrl {
    pub fn new(url: &str) -> ListenUrl {
        ListenUrl(url.to_owned())
    }
}

impl std::fmt::Debug for ListenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenUrl(<redacted>)")
    }
}

/// One instance's listener on [`CHANNEL`].
#[derive(Debug, Clone)]
pub struct Listener {
    url: ListenUrl,
    /// This instance's id: its own policy announcements are not acted on twice.
    instance: String,
    pub state: Arc<ListenerState>,
}

impl Listener {
    pub fn new(url: ListenUrl, instance: &str, now: i64) -> Listener {
        let state = ListenerState::default();
        state.set_down(now);
        Listener {
            url,
            instance: instance.to_owned(),
            state: Arc::new(state),
        }
    }

    /// Listen until the task is dropped: apply each notification to `services`; hand policy
    /// reloads of other instances to `on_policies`. `db` sends the heartbeats; `now` gives
    /// Unix seconds.
    pub async fn run(
        &self,
        services: Services,
        db: super::storage::Db,
        on_policies: impl Fn(),
        now: impl Fn() -> i64,
    ) {
        use sqlx::postgres::PgListener;
        // Heartbeats go out whatever the listener does; it notices when they stop arriving.
        let beats = tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let _ = sqlx::query("SELECT pg_notify($1, 'heartbeat:-')")
                    .bind(CHANNEL)
                    .execute(db.pool())
                    .await;
            }
        });
        let _stop_beats = AbortOnDrop(beats);
        loop {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut listener = PgListener::connect(&self.url.0).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            })
            .await;
            let mut listener = match connected {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    self.down(&services, now(), &e);
                    tokio::time::sleep(DISTRUST_EVERY).await;
                    continue;
                }
                Err(_) => {
                    self.down(&services, now(), &"connecting timed out");
                    tokio::time::sleep(DISTRUST_EVERY).await;
                    continue;
                }
            };
            // Back (or first up): whatever was missed meanwhile is forgotten with the rest.
            services.forget_cached();
            self.state.set_up();
            tracing::info!(target: "zonegate::invalidation", event = "invalidation_listening", channel = CHANNEL);
            loop {
                let Ok(received) =
                    tokio::time::timeout(HEARTBEAT_DEADLINE, listener.try_recv()).await
                else {
                    // Not even a heartbeat: the connection is dead without saying so.
                    self.down(&services, now(), &"no heartbeat");
                    break;
                };
                match received {
                    Ok(Some(n)) => {
                        self.state.received.fetch_add(1, Ordering::Relaxed);
                        match Invalidation::parse(n.payload()) {
                            Some(Invalidation::Policies { from }) if from != self.instance => {
                                on_policies();
                            }
                            Some(change) => services.invalidate(&change),
                            None => tracing::warn!(
                                target: "zonegate::invalidation",
                                event = "invalidation_unknown",
                                "a notification on the invalidation channel was not understood"
                            ),
                        }
                    }
                    // The connection dropped (sqlx reconnects at the next call): what was sent
                    // meanwhile is lost, so the caches are distrusted from now.
                    Ok(None) => {
                        self.down(&services, now(), &"connection lost");
                        break;
                    }
                    Err(e) => {
                        self.down(&services, now(), &e);
                        break;
                    }
                }
            }
            tokio::time::sleep(DISTRUST_EVERY).await;
        }
    }

    fn down(&self, services: &Services, now: i64, why: &dyn std::fmt::Display) {
        if self.state.is_up() {
            tracing::warn!(
                target: "zonegate::invalidation",
                event = "invalidation_listener_down",
                error = %why,
                "changes made on other instances are not announced here; caches are emptied every second until the listener is back"
            );
        }
        self.state.set_down(now);
        services.forget_cached();
    }
}

/// How full PostgreSQL's notification queue is (0 to 1). A listener that stopped reading
/// (a stopped process still connected) holds it; once full, every write that notifies fails,
/// so readiness shows it for operators to act on well before.
pub async fn queue_usage(db: &super::storage::Db) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_notification_queue_usage()")
        .fetch_one(db.pool())
        .await
}

/// Aborts a task when dropped (the heartbeats end with the listener).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Announce a policy reload to the other instances.
pub async fn announce_policies(db: &super::storage::Db, instance: &str) -> Result<(), sqlx::Error> {
    if db.dialect() != super::storage::Dialect::Postgres {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(Invalidation::policies_payload(instance))
        .execute(db.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
