//! Stages 4 and 6, throttle: by client address (before any credential is looked at, so
//! guessing passwords, codes or reset links from one address is slow whatever the account),
//! then by principal (an API key against its own bucket and its org's, so one busy
//! integration cannot starve the org's others beyond the org's allowance), and after
//! authorisation a member's session request against its org's session allowance.
//!
//! The limiters are the bounded keyed GCRA buckets of [`crate::domain::ratelimit`], configured
//! in `[rate_limits]`. With `[redis]` configured, the principal limits are shared by every
//! instance ([`crate::domain::ratelimit::shared`]): one atomic check in Redis per stage. The
//! address limits stay local and are also counted in Redis, so neither one instance nor the
//! fleet admits more than the configured rate from an address.
//!
//! While Redis is unreachable (the shared store says so at once, without waiting):
//! - API traffic falls back to local limits of `1/instances` of each configured rate, so the
//!   fleet together still admits about the configured rate;
//! - the account routes, whose limits stand between an attacker and password guessing, fail
//!   closed: 503 with `Retry-After`.
//!
//! A refusal is a 429 with `Retry-After`, and at most one audit event per limited key per
//! minute: a client hammering past its limit must not become one audit row per refused
//! request.

use std::net::IpAddr;
use std::num::NonZeroU32;

use super::route::{AddressLimit, Route};
use super::{Pipeline, RequestCtx};
use crate::domain::audit::SecurityEvent;
use crate::domain::principal::Principal;
use crate::domain::ratelimit::shared::{SharedLimiter, Unreachable, Verdict};
use crate::domain::ratelimit::{DefaultClock, KeyedLimiter, Limited, RatePolicy};
use crate::web::Rejection;

/// The limits of one rate-limited dimension, from `[rate_limits]`.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub auth_strict: RatePolicy,
    pub auth: RatePolicy,
    pub api_key: RatePolicy,
    pub org: RatePolicy,
    /// Per signed-in user (dashboard sessions).
    pub user: RatePolicy,
    /// Per org, over all of its members' session requests the policy allowed.
    pub org_sessions: RatePolicy,
    pub max_tracked_keys: usize,
    /// IPv6 clients are counted by this prefix length.
    pub ipv6_prefix: u8,
}

/// The principal limits, by what they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    ApiKey,
    Org,
    User,
    OrgSessions,
}

impl Scope {
    /// The name in audit events, metrics and Redis keys.
    fn name(self) -> &'static str {
        match self {
            Scope::ApiKey => "api_key",
            Scope::Org => "org",
            Scope::User => "user",
            Scope::OrgSessions => "org_sessions",
        }
    }
}

/// A limiter keyed by principal ids: ids of keys, users and operators that verified, and of
/// orgs that a verified key belongs to or that the policy allowed a member's request in. The
/// gateway made every one of them and none is a client's choice, so the map hashes with
/// foldhash (seeded per process) rather than SipHash. That holds while the policies let a
/// user act only in orgs they belong to, as the shipped ones do: a policy allowing requests
/// in any org would let the path's org id be the client's choice here.
type PrincipalLimiter = KeyedLimiter<String, DefaultClock, foldhash::fast::RandomState>;

/// One limiter per principal scope.
#[derive(Debug)]
struct PrincipalLimiters {
    api_key: PrincipalLimiter,
    org: PrincipalLimiter,
    user: PrincipalLimiter,
    org_sessions: PrincipalLimiter,
}

impl PrincipalLimiters {
    /// Each configured rate divided by `share` (at least one request per window).
    fn new(cfg: &LimitsConfig, share: NonZeroU32) -> PrincipalLimiters {
        let cap = cfg.max_tracked_keys;
        let part = |p: RatePolicy| {
            let limit = (p.limit() / share.get()).max(1);
            // Same window, fewer requests: never finer than the configured policy.
            RatePolicy::new(limit, p.window_secs()).unwrap_or(p)
        };
        PrincipalLimiters {
            api_key: KeyedLimiter::new(part(cfg.api_key), cap),
            org: KeyedLimiter::new(part(cfg.org), cap),
            user: KeyedLimiter::new(part(cfg.user), cap),
            org_sessions: KeyedLimiter::new(part(cfg.org_sessions), cap),
        }
    }

    fn get(&self, scope: Scope) -> &PrincipalLimiter {
        match scope {
            Scope::ApiKey => &self.api_key,
            Scope::Org => &self.org,
            Scope::User => &self.user,
            Scope::OrgSessions => &self.org_sessions,
        }
    }

    fn maintain(&self) {
        self.api_key.maintain();
        self.org.maintain();
        self.user.maintain();
        self.org_sessions.maintain();
    }
}

/// The limits shared through Redis, and what stands in for them while it is unreachable.
#[derive(Debug)]
struct Shared {
    store: SharedLimiter,
    /// This instance's share of each principal limit.
    fallback: PrincipalLimiters,
}

/// The rate limiters of stages 4 and 6.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    /// Per client address, on credential-guessing routes.
    auth_strict: KeyedLimiter<IpAddr>,
    /// Per client address, on other account routes.
    auth: KeyedLimiter<IpAddr>,
    /// The whole configured rates, in this instance (when nothing is shared).
    local: PrincipalLimiters,
    shared: Option<Shared>,
    /// One `excess_rate_limit_exceeded` audit event per limited key per minute.
    events: KeyedLimiter<String>,
    ipv6_prefix: u8,
}

/// Why a request counted against an address was refused.
#[derive(Debug)]
pub enum AddressRefusal {
    Limited(Limited),
    /// The shared count could not be taken (Redis unreachable): fail closed.
    Unavailable,
}

/// The address a client is counted as: an IPv4 address as it is (an IPv4-mapped IPv6 one
/// too), an IPv6 address cut to its first `prefix` bits, since one host can use every address
/// of its /64 and a per-address limit would otherwise not limit it at all.
pub fn counted_address(client: IpAddr, prefix: u8) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

impl Limits {
    /// Limits counted in this instance alone.
    pub fn new(cfg: &LimitsConfig) -> Limits {
        let cap = cfg.max_tracked_keys;
        Limits {
            config: cfg.clone(),
            auth_strict: KeyedLimiter::new(cfg.auth_strict, cap),
            auth: KeyedLimiter::new(cfg.auth, cap),
            local: PrincipalLimiters::new(cfg, NonZeroU32::MIN),
            shared: None,
            events: KeyedLimiter::new(RatePolicy::per_minute(NonZeroU32::MIN), cap),
            ipv6_prefix: cfg.ipv6_prefix,
        }
    }

    /// Limits shared through `store` by `instances` instances.
    pub fn shared(cfg: &LimitsConfig, store: SharedLimiter, instances: NonZeroU32) -> Limits {
        Limits {
            shared: Some(Shared {
                store,
                fallback: PrincipalLimiters::new(cfg, instances),
            }),
            ..Limits::new(cfg)
        }
    }

    /// The shared store, when limits are shared.
    pub fn shared_store(&self) -> Option<&SharedLimiter> {
        self.shared.as_ref().map(|s| &s.store)
    }

    fn policy(&self, scope: Scope) -> RatePolicy {
        match scope {
            Scope::ApiKey => self.config.api_key,
            Scope::Org => self.config.org,
            Scope::User => self.config.user,
            Scope::OrgSessions => self.config.org_sessions,
        }
    }

    /// Count a request from `client` on a route of class `class`: here first, then (when
    /// shared) across the fleet.
    pub async fn by_address(
        &self,
        class: AddressLimit,
        client: IpAddr,
    ) -> Result<(), AddressRefusal> {
        let client = counted_address(client, self.ipv6_prefix);
        let (name, limiter) = match class {
            AddressLimit::AuthStrict => ("auth_strict", &self.auth_strict),
            AddressLimit::Auth => ("auth", &self.auth),
            AddressLimit::None => return Ok(()),
        };
        limiter.check(&client).map_err(AddressRefusal::Limited)?;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let bucket = format!("{name}:{client}");
        match shared.store.check(&[(&bucket, limiter.policy())]).await {
            Ok(Verdict::Admitted) => Ok(()),
            Ok(Verdict::Refused { wait, .. }) => Err(AddressRefusal::Limited(Limited {
                retry_after: wait,
                policy: limiter.policy(),
                overflow: false,
            })),
            Err(Unreachable) => Err(AddressRefusal::Unavailable),
        }
    }

    /// Count one request under each `(scope, id)`. Shared: in one atomic call, all or none;
    /// returns the index of the refusing one. Otherwise, or while Redis is unreachable, in
    /// this instance's limiters, in order.
    async fn count(&self, checks: &[(Scope, &String)]) -> Result<(), (usize, Limited)> {
        let limiters = match &self.shared {
            None => &self.local,
            Some(shared) => {
                let names: Vec<String> = checks
                    .iter()
                    .map(|(scope, id)| format!("{}:{id}", scope.name()))
                    .collect();
                let buckets: Vec<(&str, RatePolicy)> = names
                    .iter()
                    .zip(checks)
                    .map(|(name, (scope, _))| (name.as_str(), self.policy(*scope)))
                    .collect();
                match shared.store.check(&buckets).await {
                    Ok(Verdict::Admitted) => return Ok(()),
                    Ok(Verdict::Refused { index, wait }) => {
                        let scope = checks.get(index).map_or(Scope::ApiKey, |c| c.0);
                        return Err((
                            index,
                            Limited {
                                retry_after: wait,
                                policy: self.policy(scope),
                                overflow: false,
                            },
                        ));
                    }
                    Err(Unreachable) => &shared.fallback,
                }
            }
        };
        for (i, (scope, id)) in checks.iter().enumerate() {
            limiters.get(*scope).check(id).map_err(|l| (i, l))?;
        }
        Ok(())
    }

    /// Drop idle keys and give memory back; run periodically.
    pub fn maintain(&self) {
        self.auth_strict.maintain();
        self.auth.maintain();
        self.local.maintain();
        if let Some(shared) = &self.shared {
            shared.fallback.maintain();
        }
        self.events.maintain();
    }
}

/// Stage 4: throttle by client address.
pub async fn by_address(p: &Pipeline, ctx: &RequestCtx, route: &Route) -> Result<(), Rejection> {
    let Some(client) = ctx.admitted.client else {
        return Ok(());
    };
    match p.limits.by_address(route.address_limit, client).await {
        Ok(()) => Ok(()),
        Err(AddressRefusal::Limited(limited)) => {
            let counted = counted_address(client, p.limits.ipv6_prefix);
            Err(refuse(
                p,
                ctx,
                route,
                "address",
                &counted.to_string(),
                limited,
                None,
            ))
        }
        // Counted as a refusal (`unavailable`) and in the shared store's unreachable checks.
        Err(AddressRefusal::Unavailable) => Err(Rejection::Unavailable),
    }
}

/// Stage 6: throttle by principal.
pub async fn by_principal(
    p: &Pipeline,
    ctx: &RequestCtx,
    route: &Route,
    principal: &Principal,
) -> Result<(), Rejection> {
    let (first, second) = match principal {
        Principal::ApiKey(key) => (
            (Scope::ApiKey, &key.key_id),
            Some((Scope::Org, &key.org_id)),
        ),
        // Denied requests count here too: a user hammering an org they are not in is held
        // by their own allowance.
        Principal::User(user) => ((Scope::User, &user.user_id), None),
        // Operators share the per-user allowance (their ids never collide with users').
        Principal::Operator(op) => ((Scope::User, &op.operator_id), None),
        Principal::Anonymous => return Ok(()),
    };
    let pair;
    let checks: &[(Scope, &String)] = match second {
        Some(second) => {
            pair = [first, second];
            &pair
        }
        None => std::slice::from_ref(&first),
    };
    p.limits.count(checks).await.map_err(|(i, limited)| {
        let (scope, id) = checks[i.min(checks.len() - 1)];
        refuse(p, ctx, route, scope.name(), id, limited, Some(principal))
    })
}

/// After authorisation: a member's session request against its org's session allowance.
/// Counted only once the policy allowed it, so nobody outside an org can spend its budget.
pub async fn by_org_after_authorise(
    p: &Pipeline,
    ctx: &RequestCtx,
    route: &Route,
    principal: &Principal,
) -> Result<(), Rejection> {
    let (Principal::User(_), Some(org)) = (principal, &ctx.org) else {
        return Ok(());
    };
    p.limits
        .count(&[(Scope::OrgSessions, org)])
        .await
        .map_err(|(_, limited)| {
            refuse(p, ctx, route, "org_sessions", org, limited, Some(principal))
        })
}

/// Record a refusal (at most once a minute per limited key) and turn it into the 429.
fn refuse(
    p: &Pipeline,
    ctx: &RequestCtx,
    route: &Route,
    scope: &'static str,
    key: &str,
    limited: Limited,
    principal: Option<&Principal>,
) -> Rejection {
    p.metrics.rate_limited(scope);
    if p.limits.events.check(&format!("{scope}:{key}")).is_ok() {
        let mut event = ctx
            .event(SecurityEvent::RateLimitExceeded)
            .detail("scope", scope)
            .detail("route", &*route.name)
            .detail("policy", limited.policy.header_value())
            .detail("overflow", limited.overflow);
        match principal {
            Some(Principal::ApiKey(k)) => event = event.principal(&k.key_id).org(&k.org_id),
            Some(Principal::User(u)) => event = event.principal(&u.user_id),
            Some(Principal::Operator(o)) => event = event.principal(&o.operator_id),
            _ => {}
        }
        p.audit.record(event);
    }
    Rejection::TooManyRequests(limited)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::ratelimit::RatePolicy;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_prefix() {
        assert_eq!(
            counted_address(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            counted_address(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            counted_address(ip("2001:db8:1:2::1"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(counted_address(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(counted_address(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(counted_address(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[tokio::test]
    async fn rotating_through_a_64_does_not_escape_the_address_limit() {
        let strict = RatePolicy::new(3, 60).unwrap();
        let limits = Limits::new(&LimitsConfig {
            auth_strict: strict,
            auth: strict,
            api_key: strict,
            org: strict,
            user: strict,
            org_sessions: strict,
            max_tracked_keys: 100,
            ipv6_prefix: 64,
        });
        for i in 1..=3u16 {
            let client = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, i, 0, 0, 1));
            assert!(limits
                .by_address(AddressLimit::AuthStrict, client)
                .await
                .is_ok());
        }
        let fourth = ip("2001:db8:0:7:ffff::9");
        assert!(limits
            .by_address(AddressLimit::AuthStrict, fourth)
            .await
            .is_err());
        // Another /64 has its own allowance.
        assert!(limits
            .by_address(AddressLimit::AuthStrict, ip("2001:db8:0:8::1"))
            .await
            .is_ok());
    }

    fn config(limit: u32) -> LimitsConfig {
        let policy = RatePolicy::new(limit, 60).unwrap();
        LimitsConfig {
            auth_strict: policy,
            auth: policy,
            api_key: policy,
            org: policy,
            user: policy,
            org_sessions: policy,
            max_tracked_keys: 100,
            ipv6_prefix: 64,
        }
    }

    /// A shared store that is down (nothing listens on port 1; the keeper never connected).
    fn unreachable_store() -> SharedLimiter {
        use crate::domain::ratelimit::shared::SharedConfig;
        SharedLimiter::new(SharedConfig {
            client: redis::Client::open("redis://127.0.0.1:1/").unwrap(),
            key_prefix: "t".into(),
            timeout: std::time::Duration::from_millis(50),
        })
    }

    #[tokio::test]
    async fn without_redis_api_traffic_gets_this_instances_share_and_accounts_fail_closed() {
        let instances = NonZeroU32::new(3).unwrap();
        let limits = Limits::shared(&config(9), unreachable_store(), instances);
        let key = "key-1".to_owned();
        let org = "org-1".to_owned();
        // 9 per minute shared by 3 instances: 3 here.
        for _ in 0..3 {
            limits
                .count(&[(Scope::ApiKey, &key), (Scope::Org, &org)])
                .await
                .unwrap();
        }
        let (index, limited) = limits
            .count(&[(Scope::ApiKey, &key), (Scope::Org, &org)])
            .await
            .unwrap_err();
        assert_eq!(index, 0);
        assert_eq!(limited.policy.header_value(), "3;w=60");
        // An address on an account route is not counted anywhere: refused.
        assert!(matches!(
            limits
                .by_address(AddressLimit::AuthStrict, ip("192.0.2.1"))
                .await,
            Err(AddressRefusal::Unavailable)
        ));
        assert!(limits
            .by_address(AddressLimit::None, ip("192.0.2.1"))
            .await
            .is_ok());

        // Alone (no Redis configured), the whole rate is this instance's.
        let alone = Limits::new(&config(9));
        for _ in 0..9 {
            alone.count(&[(Scope::ApiKey, &key)]).await.unwrap();
        }
        assert!(alone.count(&[(Scope::ApiKey, &key)]).await.is_err());
    }

    #[tokio::test]
    async fn two_instances_share_address_and_user_limits_through_redis() {
        let Ok(url) = std::env::var("ZONEGATE_TEST_REDIS_URL") else {
            eprintln!("skipping the shared address test: ZONEGATE_TEST_REDIS_URL is not set");
            return;
        };
        use crate::domain::ratelimit::shared::SharedConfig;
        let prefix = format!("zonegate-test-{}", uuid::Uuid::new_v4());
        let instance = || {
            Limits::shared(
                &config(3),
                SharedLimiter::new(SharedConfig {
                    client: redis::Client::open(url.as_str()).unwrap(),
                    key_prefix: prefix.clone(),
                    timeout: std::time::Duration::from_secs(1),
                }),
                NonZeroU32::new(2).unwrap(),
            )
        };
        let (a, b) = (instance(), instance());
        a.shared_store().unwrap().keep().await;
        b.shared_store().unwrap().keep().await;

        // 3 login attempts a minute from one address: 2 here and 1 there spend them all,
        // though each instance alone has room left.
        let client = ip("192.0.2.9");
        for limits in [&a, &a, &b] {
            limits
                .by_address(AddressLimit::AuthStrict, client)
                .await
                .unwrap();
        }
        for limits in [&a, &b] {
            assert!(matches!(
                limits.by_address(AddressLimit::AuthStrict, client).await,
                Err(AddressRefusal::Limited(_))
            ));
        }
        // The same for a signed-in user.
        let user = "user-1".to_owned();
        for limits in [&a, &b, &b] {
            limits.count(&[(Scope::User, &user)]).await.unwrap();
        }
        let (_, limited) = a.count(&[(Scope::User, &user)]).await.unwrap_err();
        assert_eq!(limited.policy.header_value(), "3;w=60");
    }
}
