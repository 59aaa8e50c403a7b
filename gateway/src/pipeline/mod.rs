//! The request pipeline of the public listener, on pingora's `ProxyHttp` phases. This file
//! only calls the stages, one file each, named as in DESIGN.md:
//!
//! ```text
//! pingora phase            pipeline stage
//! ───────────────────────  ─────────────────────────────────────────────────────────────────
//! request_filter           admit · sanitise · route · throttle (address) · authenticate ·
//!                          throttle (principal) · authorise · forward: pick the upstream, or
//!                          answer in process (the gateway's own API, crate::api)
//! upstream_peer            forward: the authorised upstream (none: fail closed)
//! upstream_request_filter  forward: forwarding headers and the signed identity
//! response_filter          respond: strip internal headers, add security headers
//! fail_to_proxy            respond: upstream and framing failures as problem+json
//! logging                  record: one access event per request
//! ```
//!
//! Each stage returns `Result<_, Rejection>`; [`crate::web::rejection`] is the one place a
//! rejection becomes a response, and [`respond`] writes it.

pub mod admit;
pub mod authenticate;
pub mod authorise;
pub mod forward;
pub mod record;
pub mod respond;
pub mod route;
pub mod sanitise;
pub mod throttle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};

use crate::api::Api;
use crate::clock::Clock;
use crate::domain::audit::{AuditEvent, AuditLog, SecurityEvent};
use crate::domain::identity::Signer;
use crate::domain::policy::{Decision, PolicyEngine};
use crate::domain::principal::Principal;
use crate::domain::Services;
use crate::web::security::SecurityHeaders;
use crate::web::Rejection;
use admit::{Admitted, RequestIds};
use route::{Match, RouteTable, Target};
use throttle::Limits;

/// Everything the pipeline needs, built once at start.
#[derive(Debug)]
pub struct Pipeline {
    pub routes: Arc<RouteTable>,
    pub policy: Arc<PolicyEngine>,
    pub services: Services,
    pub signer: Signer,
    pub upstreams: HashMap<String, HttpPeer>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `https://host[:port]`: the only Origin a browser's unsafe request may carry.
    pub public_origin: String,
    /// `host[:port]`, sent upstream as Host.
    pub public_authority: String,
    pub security: SecurityHeaders,
    pub api: Api,
    pub clock: Arc<dyn Clock>,
    pub max_gateway_body_bytes: usize,
    pub request_ids: RequestIds,
    pub limits: Arc<Limits>,
    pub audit: AuditLog,
}

/// Per-request state carried across pingora phases.
#[derive(Debug)]
pub struct RequestCtx {
    pub id: String,
    started: Instant,
    pub admitted: Admitted,
    route: Option<String>,
    pub principal: Option<Principal>,
    pub decision: Option<Decision>,
    /// The org the request was authorised for, asserted to the upstream.
    pub org: Option<String>,
    upstream: Option<HttpPeer>,
    rejection: Option<&'static str>,
}

impl RequestCtx {
    /// An audit event with this request's client, id and user agent.
    pub fn event(&self, event: SecurityEvent) -> AuditEvent {
        let mut e = AuditEvent::new(event).request_id(&self.id);
        if let Some(client) = self.admitted.client {
            e = e.client(client);
        }
        if let Some(ua) = &self.admitted.user_agent {
            e = e.user_agent(ua);
        }
        e
    }
}

/// The pingora proxy application of the public listener.
#[derive(Debug, Clone)]
pub struct GatewayProxy {
    pub pipeline: Arc<Pipeline>,
}

enum Next {
    /// Forward to the upstream chosen in ctx.
    Forward,
    /// The gateway answered the request itself.
    Answered,
}

impl GatewayProxy {
    /// Stages 1 to 8, in order, each with its explicit short-circuit.
    async fn run(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Next, Rejection> {
        let p = &*self.pipeline;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.admitted = admit::admit(peer, &session.req_header().headers, &p.trusted_proxies);

        let raw_headers = session.as_http1().map(|h1| h1.get_headers_raw_bytes());
        let target = sanitise::sanitise(session.req_header_mut(), raw_headers.as_deref())?;

        let req = session.req_header();
        let (route, params) = match p.routes.find(&req.method, &target.path) {
            Match::Found(route, params) => (route, params),
            Match::MethodNotAllowed(allow) => return Err(Rejection::MethodNotAllowed { allow }),
            Match::NotFound => return Err(Rejection::NotFound),
        };
        ctx.route = Some(route.name.clone());

        throttle::by_address(p, ctx, route)?;

        let principal = authenticate::authenticate(
            p,
            ctx,
            &req.method,
            &req.headers,
            target.query.as_deref(),
            route,
        )
        .await?;
        ctx.principal = Some(principal.clone());

        throttle::by_principal(p, ctx, route, &principal)?;

        authorise::authorise(p, ctx, route, &params, &principal).await?;
        ctx.org = route.org_id(&params).map(str::to_owned);

        match &route.target {
            Target::Upstream(name) => {
                ctx.upstream = Some(forward::upstream(p, name)?.clone());
                Ok(Next::Forward)
            }
            Target::Gateway => {
                forward::answer_in_process(p, session, ctx).await?;
                Ok(Next::Answered)
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            id: self.pipeline.request_ids.next(),
            started: Instant::now(),
            admitted: Admitted::default(),
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
        match self.run(session, ctx).await {
            Ok(Next::Forward) => Ok(false),
            Ok(Next::Answered) => Ok(true),
            Err(rejection) => {
                ctx.rejection = Some(rejection.code());
                respond::reject(session, &self.pipeline.security, &ctx.id, &rejection).await?;
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

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let target = std::str::from_utf8(session.req_header().raw_path())
            .map_err(|_| Error::explain(ErrorType::InternalError, "request target"))?;
        forward::upstream_request(&self.pipeline, ctx, target, upstream)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        respond::secure(upstream_response, &self.pipeline.security, &ctx.id)
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
                if respond::reject(session, &self.pipeline.security, &ctx.id, &rejection)
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
        record::AccessEvent {
            request_id: &ctx.id,
            method: req.method.as_str(),
            path: req.uri.path(),
            route: ctx.route.as_deref(),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            duration: ctx.started.elapsed(),
            client: ctx.admitted.client,
            principal_kind: ctx.principal.as_ref().map(Principal::kind),
            principal_id: ctx.principal.as_ref().map(Principal::id),
            decision: ctx.decision.as_ref(),
            rejection: ctx.rejection,
        }
        .emit();
    }
}
