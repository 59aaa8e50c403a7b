//! The request pipeline of the public listener: the gateway's own pingora HTTP application,
//! which reads each request with pingora's HTTP/1 session and runs the stages, one file each,
//! named as in DESIGN.md:
//!
//! ```text
//! read the head        a head pingora cannot parse is refused here (problem+json, closed)
//! 1  admit             request id, client address, user agent
//! 2  sanitise          framing, canonical path, identity headers stripped
//! 3  route             method + path to a route, or 404/405
//! 4  throttle          by client address
//! 5  authenticate      API key, session cookie, or anonymous
//! 6  throttle          by principal
//! 7  authorise         the one Cedar call
//! 8  forward           to the route's upstream (pooled per thread), or the gateway's own API
//! 9  respond           security headers on every answer; refusals as problem+json
//! 10 record            one access event
//! ```
//!
//! Each stage returns `Result<_, Rejection>`; [`crate::web::rejection`] is the one place a
//! rejection becomes a response, and [`respond`] writes it. There is no task or channel per
//! request: the request is served on the connection's own task, start to end.

pub mod admit;
pub mod authenticate;
pub mod authorise;
pub mod forward;
pub mod record;
pub mod respond;
pub mod route;
pub mod sanitise;
pub mod throttle;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;

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
use forward::Forwarded;
use route::{Match, RouteTable, Target};
use throttle::Limits;
use upstream::Upstreams;

/// Everything the pipeline needs, built once at start.
#[derive(Debug)]
pub struct Pipeline {
    pub routes: Arc<RouteTable>,
    pub policy: Arc<PolicyEngine>,
    pub services: Services,
    pub signer: Signer,
    pub upstreams: Upstreams,
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
    /// Seconds an idle client connection is kept open for its next request.
    pub keepalive_idle_seconds: u64,
}

/// Per-request state carried through the stages.
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
    rejection: Option<&'static str>,
}

impl RequestCtx {
    fn new(id: String) -> RequestCtx {
        RequestCtx {
            id,
            started: Instant::now(),
            admitted: Admitted::default(),
            route: None,
            principal: None,
            decision: None,
            org: None,
            rejection: None,
        }
    }

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

/// The pingora HTTP application of the public listener.
#[derive(Debug, Clone)]
pub struct GatewayApp {
    pub pipeline: Arc<Pipeline>,
}

/// What the stages decided for a request.
enum Outcome {
    /// Answered (forwarded or in process); whether the connection may be reused.
    Answered(Forwarded),
    /// Refused, with a response still to write.
    Refused(Rejection),
}

impl GatewayApp {
    /// Stages 1 to 8, in order, each with its explicit short-circuit.
    async fn run(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<Forwarded, Rejection> {
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
                let upstream = p.upstreams.get(name).ok_or(Rejection::Internal)?;
                forward::forward(p, session, ctx, upstream).await
            }
            Target::Gateway => {
                forward::answer_in_process(p, session, ctx).await?;
                Ok(Forwarded::Complete)
            }
        }
    }

    /// A request head that could not be read: refused with problem+json where the client can
    /// still hear it, the connection closed either way.
    async fn refuse_head(&self, mut session: ServerSession, error: &pingora::Error) {
        let rejection = match error.etype() {
            ErrorType::InvalidHTTPHeader => {
                Rejection::BadRequest("The request head could not be parsed.")
            }
            // The client went away or stalled: nobody to answer.
            _ => return,
        };
        let id = self.pipeline.request_ids.next();
        session.set_keepalive(None);
        let _ = respond::reject(
            &mut session,
            &self.pipeline.security,
            &id,
            &rejection,
            false,
        )
        .await;
        record::AccessEvent {
            request_id: &id,
            method: "",
            path: "",
            route: None,
            status: rejection.status(),
            duration: std::time::Duration::ZERO,
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            principal_kind: None,
            principal_id: None,
            decision: None,
            rejection: Some(rejection.code()),
        }
        .emit();
        session.shutdown().await;
    }
}

#[async_trait]
impl HttpServerApp for GatewayApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // The client closed an idle keep-alive connection: normal.
            Ok(false) => return None,
            Err(e) => {
                self.refuse_head(session, &e).await;
                return None;
            }
        }
        let p = &*self.pipeline;
        if *shutdown.borrow() {
            // Draining: answer this one, then close.
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(p.keepalive_idle_seconds));
        }
        let mut ctx = RequestCtx::new(p.request_ids.next());
        let outcome = match self.run(&mut session, &mut ctx).await {
            Ok(forwarded) => Outcome::Answered(forwarded),
            Err(rejection) => Outcome::Refused(rejection),
        };
        let reusable = match outcome {
            Outcome::Answered(forwarded) => forwarded == Forwarded::Complete,
            Outcome::Refused(rejection) => {
                ctx.rejection = Some(rejection.code());
                let head_only = session.req_header().method == http::Method::HEAD;
                // A refusal after part of a response went out cannot be sent: close instead.
                session.response_written().is_none()
                    && respond::reject(&mut session, &p.security, &ctx.id, &rejection, head_only)
                        .await
                        .is_ok()
                    && !rejection.closes_connection()
            }
        };
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
        if !reusable {
            session.set_keepalive(None);
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        }
    }
}
