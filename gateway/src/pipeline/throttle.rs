//! Stages 4 and 6, throttle: by client address (before any credential is looked at, so
//! guessing passwords, codes or reset links from one address is slow whatever the account),
//! then by principal (an API key against its own bucket, then its org's, so one busy
//! integration cannot starve the org's others beyond the org's allowance).
//!
//! The limiters are the bounded keyed GCRA buckets of [`crate::domain::ratelimit`], configured
//! in `[rate_limits]`. A refusal is a 429 with `Retry-After`, and at most one audit event per
//! limited key per minute: a client hammering past its limit must not become one audit row per
//! refused request.

use std::net::IpAddr;
use std::num::NonZeroU32;

use super::route::{AddressLimit, Route};
use super::{Pipeline, RequestCtx};
use crate::domain::audit::SecurityEvent;
use crate::domain::principal::Principal;
use crate::domain::ratelimit::{KeyedLimiter, Limited, RatePolicy};
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

/// The rate limiters of stages 4 and 6.
#[derive(Debug)]
pub struct Limits {
    /// Per client address, on credential-guessing routes.
    auth_strict: KeyedLimiter<IpAddr>,
    /// Per client address, on other account routes.
    auth: KeyedLimiter<IpAddr>,
    /// Per API key id.
    api_key: KeyedLimiter<String>,
    /// Per org, over all its keys.
    org: KeyedLimiter<String>,
    /// Per signed-in user.
    user: KeyedLimiter<String>,
    /// Per org, over its members' authorised session requests.
    org_sessions: KeyedLimiter<String>,
    /// One `excess_rate_limit_exceeded` audit event per limited key per minute.
    events: KeyedLimiter<String>,
    ipv6_prefix: u8,
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
    pub fn new(cfg: &LimitsConfig) -> Limits {
        let cap = cfg.max_tracked_keys;
        Limits {
            auth_strict: KeyedLimiter::new(cfg.auth_strict, cap),
            auth: KeyedLimiter::new(cfg.auth, cap),
            api_key: KeyedLimiter::new(cfg.api_key, cap),
            org: KeyedLimiter::new(cfg.org, cap),
            user: KeyedLimiter::new(cfg.user, cap),
            org_sessions: KeyedLimiter::new(cfg.org_sessions, cap),
            events: KeyedLimiter::new(RatePolicy::per_minute(NonZeroU32::MIN), cap),
            ipv6_prefix: cfg.ipv6_prefix,
        }
    }

    /// Count a request from `client` on a route of class `class`.
    pub fn by_address(&self, class: AddressLimit, client: IpAddr) -> Result<(), Limited> {
        let client = counted_address(client, self.ipv6_prefix);
        match class {
            AddressLimit::AuthStrict => self.auth_strict.check(&client),
            AddressLimit::Auth => self.auth.check(&client),
            AddressLimit::None => Ok(()),
        }
    }

    /// Drop idle keys and give memory back; run periodically.
    pub fn maintain(&self) {
        self.auth_strict.maintain();
        self.auth.maintain();
        self.api_key.maintain();
        self.org.maintain();
        self.user.maintain();
        self.org_sessions.maintain();
        self.events.maintain();
    }
}

/// Stage 4: throttle by client address.
pub fn by_address(p: &Pipeline, ctx: &RequestCtx, route: &Route) -> Result<(), Rejection> {
    let Some(client) = ctx.admitted.client else {
        return Ok(());
    };
    p.limits
        .by_address(route.address_limit, client)
        .map_err(|limited| {
            let counted = counted_address(client, p.limits.ipv6_prefix);
            refuse(
                p,
                ctx,
                route,
                "address",
                &counted.to_string(),
                limited,
                None,
            )
        })
}

/// Stage 6: throttle by principal.
pub fn by_principal(
    p: &Pipeline,
    ctx: &RequestCtx,
    route: &Route,
    principal: &Principal,
) -> Result<(), Rejection> {
    match principal {
        Principal::ApiKey(key) => {
            let checks = [
                ("api_key", &p.limits.api_key, &key.key_id),
                ("org", &p.limits.org, &key.org_id),
            ];
            for (scope, limiter, id) in checks {
                limiter.check(id).map_err(|limited| {
                    refuse(p, ctx, route, scope, id, limited, Some(principal))
                })?;
            }
        }
        // Denied requests count here too: a user hammering an org they are not in is held
        // by their own allowance.
        Principal::User(user) => p.limits.user.check(&user.user_id).map_err(|limited| {
            refuse(
                p,
                ctx,
                route,
                "user",
                &user.user_id,
                limited,
                Some(principal),
            )
        })?,
        // Operators share the per-user allowance (their ids never collide with users').
        Principal::Operator(op) => p.limits.user.check(&op.operator_id).map_err(|limited| {
            refuse(
                p,
                ctx,
                route,
                "user",
                &op.operator_id,
                limited,
                Some(principal),
            )
        })?,
        Principal::Anonymous => {}
    }
    Ok(())
}

/// After authorisation: a member's session request against its org's session allowance.
/// Counted only once the policy allowed it, so nobody outside an org can spend its budget.
pub fn by_org_after_authorise(
    p: &Pipeline,
    ctx: &RequestCtx,
    route: &Route,
    principal: &Principal,
) -> Result<(), Rejection> {
    let (Principal::User(_), Some(org)) = (principal, &ctx.org) else {
        return Ok(());
    };
    p.limits
        .org_sessions
        .check(org)
        .map_err(|limited| refuse(p, ctx, route, "org_sessions", org, limited, Some(principal)))
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
            .detail("route", route.name.as_str())
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

    #[test]
    fn rotating_through_a_64_does_not_escape_the_address_limit() {
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
            assert!(limits.by_address(AddressLimit::AuthStrict, client).is_ok());
        }
        let fourth = ip("2001:db8:0:7:ffff::9");
        assert!(limits.by_address(AddressLimit::AuthStrict, fourth).is_err());
        // Another /64 has its own allowance.
        assert!(limits
            .by_address(AddressLimit::AuthStrict, ip("2001:db8:0:8::1"))
            .is_ok());
    }
}
