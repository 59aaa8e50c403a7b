//! The request pipeline on pingora's `ProxyHttp` phases.
//!
//! ```text
//! pingora phase            pipeline stage (DESIGN.md)
//! ───────────────────────  ─────────────────────────────────────────────────────────────────
//! request_filter           1 admit · 2 sanitise · 3 route · 4 throttle (address)
//!                          5 authenticate · 6 throttle (principal) · 7 authorise
//!                          → gateway routes are answered here, in process (api.rs)
//! upstream_peer            8 forward: the route's upstream
//! upstream_request_filter  8 forward: gateway-set forwarding headers and the signed identity
//! response_filter          9 respond: strip internal headers, add security headers
//! fail_to_proxy            upstream failures as problem+json
//! logging                  10 record: one access event per request
//! ```
//!
//! Each stage returns `Result<_, Rejection>`; [`crate::respond::reject`] is the one place a
//! rejection becomes a response. Throttling (stages 4 and 6) uses the bounded keyed limiters
//! of [`crate::ratelimit`], configured in `[rate_limits]`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use rand::RngCore;

use crate::api::{self, Caller};
use crate::audit::{AuditEvent, AuditLog, RequestContext, SecurityEvent};
use crate::authn;
use crate::clock::Clock;
use crate::error::Rejection;
use crate::identity::{self, Signer, Subject};
use crate::policy::{Decision, PolicyEngine};
use crate::principal::Principal;
use crate::ratelimit::{KeyedLimiter, Limited, RatePolicy};
use crate::respond::{self, SecurityHeaders};
use crate::routes::{AddressLimit, Match, Params, Route, RouteTable, Target};
use crate::sanitize;
use crate::telemetry::AccessEvent;

/// Everything the pipeline needs, built once at start.
#[derive(Debug)]
pub struct GatewayState {
    pub routes: RouteTable,
    pub policy: PolicyEngine,
    pub accounts: Arc<crate::accounts::Accounts>,
    pub orgs: Arc<crate::orgs::Orgs>,
    pub keys: Arc<crate::apikeys::ApiKeys>,
    pub signer: Signer,
    pub upstreams: std::collections::HashMap<String, HttpPeer>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub public_authority: String,
    pub security: SecurityHeaders,
    pub api: axum::Router,
    pub clock: Arc<dyn Clock>,
    pub max_gateway_body_bytes: usize,
    pub request_ids: RequestIds,
    pub limits: Limits,
    pub audit: AuditLog,
}

/// The rate limiters of stages 4 and 6, from `[rate_limits]`.
#[derive(Debug)]
pub struct Limits {
    /// Per client address, on credential-guessing routes.
    pub auth_strict: KeyedLimiter<IpAddr>,
    /// Per client address, on other account routes.
    pub auth: KeyedLimiter<IpAddr>,
    /// Per API key id.
    pub api_key: KeyedLimiter<String>,
    /// Per org, over all its keys.
    pub org: KeyedLimiter<String>,
    /// One `excess_rate_limit_exceeded` audit event per limited key per minute: a client
    /// hammering past its limit must not turn into one audit row per refused request.
    events: KeyedLimiter<String>,
}

impl Limits {
    pub fn new(cfg: &crate::config::RateLimits) -> Limits {
        let cap = cfg.max_tracked_keys;
        let once_a_minute = RatePolicy::per_minute(std::num::NonZeroU32::MIN);
        Limits {
            auth_strict: KeyedLimiter::new(cfg.auth_strict, cap),
            auth: KeyedLimiter::new(cfg.auth, cap),
            api_key: KeyedLimiter::new(cfg.api_key, cap),
            org: KeyedLimiter::new(cfg.org, cap),
            events: KeyedLimiter::new(once_a_minute, cap),
        }
    }

    /// Stage 4: count a request from `client` on a route of class `class`.
    pub fn by_address(&self, class: AddressLimit, client: IpAddr) -> Result<(), Limited> {
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
        self.events.maintain();
    }
}

/// Request ids: a random per-process prefix and a counter. Unique, unguessable across restarts
/// and cheap (no syscall per request).
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            prefix: rand::rngs::OsRng.next_u64(),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:08x}", self.prefix)
    }
}

/// Per-request state carried across pingora phases.
#[derive(Debug)]
pub struct RequestCtx {
    pub id: String,
    started: Instant,
    client: Option<IpAddr>,
    user_agent: Option<String>,
    route: Option<String>,
    principal: Option<Principal>,
    decision: Option<Decision>,
    org: Option<String>,
    upstream: Option<HttpPeer>,
    rejection: Option<&'static str>,
}

/// The pingora proxy application.
#[derive(Debug, Clone)]
pub struct GatewayProxy {
    pub state: Arc<GatewayState>,
}

enum Next {
    /// Forward to the upstream chosen in ctx.
    Forward,
    /// The gateway answered the request itself.
    Answered,
}

impl GatewayProxy {
    async fn pipeline(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Next, Rejection> {
        let state = &*self.state;

        // 1. Admit: the client address comes from the socket, or from X-Forwarded-For only when
        //    the socket peer is a configured trusted proxy.
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client = peer.map(|p| {
            sanitize::client_address(p, &session.req_header().headers, &state.trusted_proxies)
        });
        ctx.user_agent = session
            .req_header()
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        // 2. Sanitise: framing, then the path, then identity headers.
        let req = session.req_header();
        sanitize::check_framing(&req.headers)?;
        if req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && session
                .as_http1()
                .is_some_and(|h1| sanitize::raw_has_content_length(&h1.get_headers_raw_bytes()))
        {
            return Err(Rejection::AmbiguousFraming);
        }
        if !req.raw_path_is_utf8() {
            return Err(Rejection::AmbiguousPath);
        }
        let target = std::str::from_utf8(req.raw_path()).map_err(|_| Rejection::AmbiguousPath)?;
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        sanitize::canonical_path(path)?;
        let doomed = sanitize::identity_headers(&req.headers);
        let path = path.to_owned();
        let req = session.req_header_mut();
        for name in &doomed {
            req.remove_header(name);
        }

        // 3. Route.
        let req = session.req_header();
        let (route, params) = match state.routes.find(&req.method, &path) {
            Match::Found(route, params) => (route, params),
            Match::MethodNotAllowed(allow) => return Err(Rejection::MethodNotAllowed { allow }),
            Match::NotFound => return Err(Rejection::NotFound),
        };
        ctx.route = Some(route.name.clone());

        // 4. Throttle by client address, before any credential is looked at, so guessing
        //    passwords, codes or reset links from one address is slow whatever the account.
        if let Some(client) = ctx.client {
            if let Err(limited) = state.limits.by_address(route.address_limit, client) {
                self.rate_limited(ctx, route, "address", &client.to_string(), &limited, None);
                return Err(Rejection::TooManyRequests(limited));
            }
        }

        // 5. Authenticate. Keys are never accepted in a URL: such a request is refused.
        if target_query(req.raw_path()).is_some_and(authn::query_has_api_key) {
            tracing::warn!(target: "zonegate::security", event = "apikey_in_url", route = %route.name,
                "an API key was sent in a query string; it must be revoked and replaced");
            return Err(Rejection::BadRequest(
                "API keys are never accepted in a URL. Send it as Authorization: Bearer, and revoke this one: it has leaked.",
            ));
        }
        let principal = match authn::authenticate(
            &state.accounts,
            &state.keys,
            &req.method,
            &req.headers,
            route,
        )
        .await
        {
            Ok(principal) => principal,
            Err(rejection) => {
                let bearer = req.headers.contains_key(http::header::AUTHORIZATION);
                if rejection == Rejection::Unauthenticated
                    && bearer
                    && route.accepts(crate::routes::CredentialKind::ApiKey)
                {
                    state.audit.record(
                        self.event(ctx, SecurityEvent::ApiKeyRejected)
                            .detail("route", route.name.as_str()),
                    );
                }
                return Err(rejection);
            }
        };

        // 6. Throttle by principal: an API key against its own bucket, then its org's, so one
        //    busy integration cannot starve the org's others beyond the org's allowance.
        if let Principal::ApiKey(key) = &principal {
            let checks = [
                ("api_key", &state.limits.api_key, &key.key_id),
                ("org", &state.limits.org, &key.org_id),
            ];
            for (scope, limiter, id) in checks {
                if let Err(limited) = limiter.check(id) {
                    self.rate_limited(ctx, route, scope, id, &limited, Some(&principal));
                    return Err(Rejection::TooManyRequests(limited));
                }
            }
        }

        // 7. Authorise: the one call, for every route. Membership and org facts come from
        //    caches, so a cached principal costs no database round trip.
        let org = match route.org_id(&params) {
            Some(org_id) => {
                let mut org = self.org_context(org_id, &principal).await?;
                if crate::policy::is_member(&route.resource_type) {
                    let member = params.resolve(&route.resource_id);
                    org.member_role = state
                        .orgs
                        .role_of(member, org_id)
                        .await
                        .map_err(Rejection::from)?;
                }
                Some(org)
            }
            None => None,
        };
        let decision = state
            .policy
            .authorize(&principal, route, &params, org.as_ref());
        if let Some(shadow) = &decision.shadow {
            tracing::warn!(
                target: "zonegate::security",
                event = "policy_shadow_mismatch",
                request_id = %ctx.id,
                route = %route.name,
                principal_kind = principal.kind(),
                principal_id = principal.id(),
                enforced = decision.label(),
                enforced_policies = %decision.policies.join(","),
                shadow = crate::policy::Decision::label_of(shadow.allowed),
                shadow_policies = %shadow.policies.join(","),
                shadow_errors = %shadow.errors.join("; "),
                "the shadow policy set decides this request differently"
            );
        }
        let allowed = decision.allowed;
        if !allowed {
            let mut event = self
                .event(ctx, SecurityEvent::AuthzFail)
                .principal(principal.id())
                .detail("principal_kind", principal.kind())
                .detail("route", route.name.as_str())
                .detail("policies", decision.policies.join(","));
            if let Some(org) = route.org_id(&params) {
                event = event.org(org);
            }
            state.audit.record(event);
        }
        ctx.decision = Some(decision);
        ctx.principal = Some(principal);
        if !allowed {
            return Err(Rejection::Forbidden);
        }
        ctx.org = route.org_id(&params).map(str::to_owned);

        // 8. Forward, or answer in process.
        match &route.target {
            Target::Upstream(name) => {
                let peer = state.upstreams.get(name).ok_or(Rejection::Internal)?;
                ctx.upstream = Some(peer.clone());
                Ok(Next::Forward)
            }
            Target::Gateway => {
                self.answer_in_process(session, ctx, &params).await?;
                Ok(Next::Answered)
            }
        }
    }

    /// An audit event with this request's client, id and user agent.
    fn event(&self, ctx: &RequestCtx, event: SecurityEvent) -> AuditEvent {
        let mut e = AuditEvent::new(event).request_id(&ctx.id);
        if let Some(client) = ctx.client {
            e = e.client(client);
        }
        if let Some(ua) = &ctx.user_agent {
            e = e.user_agent(ua);
        }
        e
    }

    /// Record a refusal by a rate limiter (at most once a minute per limited key).
    fn rate_limited(
        &self,
        ctx: &RequestCtx,
        route: &Route,
        scope: &'static str,
        key: &str,
        limited: &Limited,
        principal: Option<&Principal>,
    ) {
        if self
            .state
            .limits
            .events
            .check(&format!("{scope}:{key}"))
            .is_err()
        {
            return;
        }
        let mut event = self
            .event(ctx, SecurityEvent::RateLimitExceeded)
            .detail("scope", scope)
            .detail("route", route.name.as_str())
            .detail("policy", limited.policy.header_value())
            .detail("overflow", limited.overflow);
        if let Some(Principal::ApiKey(k)) = principal {
            event = event.principal(&k.key_id).org(&k.org_id);
        }
        self.state.audit.record(event);
    }

    async fn org_context(
        &self,
        org_id: &str,
        principal: &Principal,
    ) -> Result<crate::policy::OrgContext, Rejection> {
        let orgs = &self.state.orgs;
        let facts = orgs.facts(org_id).await.map_err(Rejection::from)?;
        let role = match principal {
            Principal::User(u) => orgs
                .role_of(&u.user_id, org_id)
                .await
                .map_err(Rejection::from)?,
            Principal::Anonymous | Principal::ApiKey(_) => None,
        };
        Ok(crate::policy::OrgContext {
            // An org that does not exist has no members and no flags: every rule that needs
            // membership denies.
            facts: facts.unwrap_or_else(|| crate::orgs::OrgFacts {
                id: org_id.to_owned(),
                suspended: false,
                require_mfa: false,
            }),
            role,
            member_role: None,
        })
    }

    async fn answer_in_process(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        _params: &Params,
    ) -> Result<(), Rejection> {
        let state = &*self.state;
        let body = read_body(session, state.max_gateway_body_bytes).await?;
        let req = session.req_header();
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(req.uri.clone());
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let request = builder.body(body).map_err(|_| Rejection::Internal)?;
        let caller = Caller {
            principal: ctx.principal.clone().unwrap_or(Principal::Anonymous),
            request_id: ctx.id.clone(),
            client: ctx.client,
        };
        // Events recorded inside the services (logins, keys) get this request's context.
        let context = RequestContext {
            client: ctx.client,
            request_id: Some(ctx.id.clone()),
            user_agent: ctx.user_agent.clone(),
        };
        let response = context
            .scope(api::dispatch(&state.api, request, caller, 1 << 20))
            .await?;
        respond::write(session, &state.security, &ctx.id, response)
            .await
            .map_err(|_| Rejection::Internal)
    }
}

/// The query part of a raw request target, if any.
fn target_query(raw: &[u8]) -> Option<&str> {
    std::str::from_utf8(raw)
        .ok()?
        .split_once('?')
        .map(|(_, q)| q)
}

/// Read a whole request body, refusing more than `limit` bytes.
async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, Rejection> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| Rejection::BadRequest("The request body could not be read."))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(Rejection::PayloadTooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            id: self.state.request_ids.next(),
            started: Instant::now(),
            client: None,
            user_agent: None,
            route: None,
            principal: None,
            decision: None,
            org: None,
            upstream: None,
            rejection: None,
        }
    }

    /// Runs the pipeline. `Ok(true)` means the gateway already answered (a rejection or one of
    /// its own endpoints); `Ok(false)` sends the request on to `upstream_peer`.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        match self.pipeline(session, ctx).await {
            Ok(Next::Forward) => Ok(false),
            Ok(Next::Answered) => Ok(true),
            Err(rejection) => {
                ctx.rejection = Some(rejection.code());
                respond::reject(session, &self.state.security, &ctx.id, &rejection).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Only an authorised request has an upstream; anything else is a bug, and fails closed.
        ctx.upstream
            .take()
            .map(Box::new)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no authorised upstream"))
    }

    /// Sets the forwarding headers (overwriting, never appending) and the signed identity.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let state = &*self.state;
        let internal = |_| Error::explain(ErrorType::InternalError, "cannot sign identity");
        let principal = ctx.principal.as_ref().ok_or_else(|| internal(()))?;
        let target =
            std::str::from_utf8(session.req_header().raw_path()).map_err(|_| internal(()))?;
        let assertion = state
            .signer
            .sign(
                Subject {
                    principal,
                    org: ctx.org.as_deref(),
                    method: upstream.method.as_str(),
                    target,
                    request_id: &ctx.id,
                },
                state.clock.unix_seconds(),
            )
            .map_err(|_| internal(()))?;
        // The gateway consumed the credentials; the backend gets the signed identity instead,
        // never a live key, session cookie or CSRF token it could leak or replay.
        for credential in ["authorization", "cookie", "x-csrf-token"] {
            upstream.remove_header(credential);
        }
        upstream.insert_header(identity::HEADER, assertion)?;
        upstream.insert_header("x-request-id", ctx.id.as_str())?;
        upstream.insert_header(http::header::HOST, state.public_authority.as_str())?;
        upstream.insert_header("x-forwarded-proto", "https")?;
        upstream.insert_header("x-forwarded-host", state.public_authority.as_str())?;
        if let Some(client) = ctx.client {
            let client = client.to_string();
            upstream.insert_header("x-forwarded-for", client.as_str())?;
            upstream.insert_header("x-real-ip", client)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        self.state.security.apply(upstream_response, &ctx.id)
    }

    /// Upstream failures become problem+json; nothing of the error's text reaches the client.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let rejection = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(400)) => {
                Some(Rejection::BadRequest("The request could not be parsed."))
            }
            (ErrorSource::Upstream, ErrorType::ConnectTimedout | ErrorType::ReadTimedout) => {
                Some(Rejection::GatewayTimeout)
            }
            (ErrorSource::Upstream, _) => Some(Rejection::BadGateway),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, _) => {
                Some(Rejection::BadRequest("The request could not be read."))
            }
            _ => Some(Rejection::Internal),
        };
        let mut code = 0;
        if let Some(rejection) = rejection {
            code = rejection.status();
            ctx.rejection = Some(rejection.code());
            if session.response_written().is_none() {
                session.set_keepalive(None);
                if respond::reject(session, &self.state.security, &ctx.id, &rejection)
                    .await
                    .is_err()
                {
                    code = 0;
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let req = session.req_header();
        AccessEvent {
            request_id: &ctx.id,
            method: req.method.as_str(),
            path: req.uri.path(),
            route: ctx.route.as_deref(),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            duration: ctx.started.elapsed(),
            client: ctx.client,
            principal_kind: ctx.principal.as_ref().map(Principal::kind),
            principal_id: ctx.principal.as_ref().map(Principal::id),
            decision: ctx.decision.as_ref(),
            rejection: ctx.rejection,
        }
        .emit();
    }
}
