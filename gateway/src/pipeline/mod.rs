//! The request pipeline of the public and platform listeners: the gateway's own pingora server
//! application, which reads each request of a connection with its own HTTP/1.1 session
//! ([`downstream`]) and runs the stages, one file each, named as in DESIGN.md:
//!
//! ```text
//! read the head        a head that cannot be parsed is refused here (problem+json, closed)
//! 1  admit             request id, client address, user agent
//! 2  sanitise          framing, canonical path, identity headers stripped
//! 3  route             method + path to a route, or 404/405
//! 4  throttle          by client address
//! 5  authenticate      API key, session cookie, or anonymous
//! 6  throttle          by principal
//! 7  authorise         the one Cedar call
//! 8  forward           to the route's upstream (pooled per thread), or the gateway's own API
//! 9  respond           security headers on every answer; refusals as problem+json
//! 10 record            one access event (and, with tracing on, the request's spans)
//! ```
//!
//! Each stage returns `Result<_, Rejection>`; [`crate::web::rejection`] is the one place a
//! rejection becomes a response, and [`respond`] writes it. There is no task, channel or boxed
//! future per request: a connection's requests are served on its own task, one after the
//! other, start to end.

pub mod admit;
pub mod authenticate;
pub mod authorise;
pub mod downstream;
pub mod exchange;
pub mod forward;
pub mod metrics;
pub mod record;
pub mod respond;
pub mod route;
pub mod sanitise;
pub mod throttle;
pub mod trace;
pub mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::http::RequestHeader;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

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
use downstream::{Connection, HeadError, HeadLimits, Session};
use forward::Forwarded;
use route::{Match, RouteTable, Target};
use throttle::Limits;
use upstream::Upstreams;

/// Everything the pipeline needs, built once at start.
#[derive(Debug)]
pub struct Pipeline {
    pub routes: Arc<RouteTable>,
    /// The surface this listener serves: a path of the other one is a 404 whatever the route
    /// table holds (a route whose first segment is a parameter would otherwise match it).
    pub surface: route::Surface,
    pub policy: Arc<PolicyEngine>,
    pub services: Services,
    pub signer: Signer,
    pub upstreams: Upstreams,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `https://host[:port]`: the only Origin a browser's unsafe request may carry.
    pub public_origin: String,
    /// `host[:port]`, sent upstream as Host.
    pub public_authority: String,
    /// The same, as a header value, built once.
    pub public_authority_value: http::HeaderValue,
    pub security: SecurityHeaders,
    pub api: Api,
    pub clock: Arc<dyn Clock>,
    pub max_gateway_body_bytes: usize,
    pub request_ids: RequestIds,
    pub limits: Arc<Limits>,
    pub audit: AuditLog,
    /// Time, size and connection limits for clients.
    pub client: ClientLimits,
    /// Shared by the public and platform listeners' pipelines.
    pub metrics: Arc<metrics::Metrics>,
    /// Spans per request and stage, when an OTLP endpoint is configured.
    pub tracing: Option<trace::Tracing>,
}

/// What one client may hold of the gateway: time to send a request, size of its head, and
/// connections. A slow or idle client is cut off at these, so it cannot hold memory or
/// connections for long (slowloris).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// For the TLS handshake of a new connection.
    pub tls_handshake_timeout: Duration,
    /// For the whole request head of a new connection's first request.
    pub header_timeout: Duration,
    /// For each read of a request body.
    pub body_read_timeout: Duration,
    /// For a write to the client to make progress (a client that stops reading).
    pub write_timeout: Duration,
    /// For an idle keep-alive connection's next request to start (and then its head).
    pub keepalive_idle: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

/// Per-request state carried through the stages.
#[derive(Debug)]
pub struct RequestCtx {
    pub id: String,
    started: Instant,
    pub admitted: Admitted,
    /// The route's index in the listener's table ([`Pipeline::route_of`]).
    route: Option<usize>,
    pub principal: Option<Principal>,
    pub decision: Option<std::sync::Arc<Decision>>,
    /// The org the request was authorised for, asserted to the upstream.
    pub org: Option<String>,
    rejection: Option<&'static str>,
    /// The socket peer is a configured trusted proxy: its forwarded headers (client address,
    /// trace context) are believed.
    pub peer_trusted: bool,
    /// The request's spans, when tracing is on.
    pub trace: Option<trace::RequestTrace>,
}

impl RequestCtx {
    pub fn new(id: String) -> RequestCtx {
        RequestCtx {
            id,
            started: Instant::now(),
            admitted: Admitted::default(),
            route: None,
            principal: None,
            decision: None,
            org: None,
            rejection: None,
            peer_trusted: false,
            trace: None,
        }
    }

    /// A pipeline stage begins: with tracing on, the previous stage's span ends and this one's
    /// opens. A branch and nothing more when tracing is off.
    #[inline]
    pub fn stage(&mut self, name: &'static str) {
        if let Some(trace) = &mut self.trace {
            trace.stage(name, opentelemetry::trace::SpanKind::Internal);
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

/// What becomes of a connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// It carries the next request.
    Next,
    /// It is closed, the client told so.
    Close,
    /// It is closed, the client told so, while the client may still be sending the request's
    /// body: what arrives is read and dropped for a while first, so that the answer is not
    /// lost to a reset (`Connection::close_lingering`).
    Linger,
    /// It is dropped at once: the answer broke off.
    Abort,
}

/// What the stages decided for a request.
enum Outcome {
    /// Answered (forwarded or in process); whether the connection may be reused.
    Answered(Forwarded),
    /// Refused, with a response still to write.
    Refused(Rejection),
}

impl Pipeline {
    /// The route `ctx`'s request matched, if it got that far.
    pub fn route_of(&self, ctx: &RequestCtx) -> Option<&route::Route> {
        ctx.route.and_then(|i| self.routes.get(i))
    }

    /// Stages 1 to 7 on a request head, in order, each with its explicit short-circuit: who is
    /// asking, and may they. Returns where the request goes. Needs no connection, so tests and
    /// benches run it in process.
    pub async fn check(
        &self,
        ctx: &mut RequestCtx,
        req: &mut RequestHeader,
        raw_headers: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<&Target, Rejection> {
        ctx.admitted = admit::admit(peer, &req.headers, &self.trusted_proxies);
        ctx.peer_trusted = peer.is_some_and(|ip| admit::is_trusted(ip, &self.trusted_proxies));
        if let Some(tracing) = &self.tracing {
            let parent = ctx.peer_trusted.then_some(&req.headers);
            ctx.trace = Some(tracing.start(parent));
        }

        ctx.stage("sanitise");
        let target = sanitise::sanitise(req, raw_headers)?;

        ctx.stage("route");
        if route::Surface::of_path(&target.path) != self.surface {
            return Err(Rejection::NotFound);
        }
        let (route, params) = match self.routes.find(&req.method, &target.path) {
            Match::Found(route, params) => (route, params),
            Match::MethodNotAllowed(allow) => return Err(Rejection::MethodNotAllowed { allow }),
            Match::NotFound => return Err(Rejection::NotFound),
        };
        ctx.route = Some(route.index());

        ctx.stage("throttle.address");
        throttle::by_address(self, ctx, route).await?;

        ctx.stage("authenticate");
        let principal = authenticate::authenticate(
            self,
            ctx,
            &req.method,
            &req.headers,
            target.query.as_deref(),
            route,
        )
        .await?;

        // The principal moves into `ctx` once these stages are done with it, allowed or not
        // (the access event names it either way): no second reference to count.
        let admitted = async {
            ctx.stage("throttle.principal");
            throttle::by_principal(self, ctx, route, &principal).await?;

            ctx.stage("authorise");
            authorise::authorise(self, ctx, route, &params, &principal).await?;
            // Owned once: the assertion to the upstream and the org's limiter both need it.
            ctx.org = route.org_id(&params).map(str::to_owned);
            ctx.stage("throttle.org");
            throttle::by_org_after_authorise(self, ctx, route, &principal).await
        }
        .await;
        ctx.principal = Some(principal);
        admitted?;
        Ok(&route.target)
    }
}

impl GatewayApp {
    /// The stages, then stage 8: forward, or answer in process.
    async fn run(
        &self,
        session: &mut Session<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<Forwarded, Rejection> {
        let p = &*self.pipeline;
        let peer = session.client_addr();
        // The raw head is shared, not copied: `sanitise` reads it beside the parsed fields.
        let raw_head = session.raw_head_bytes();
        let target = p
            .check(ctx, session.req_header_mut(), Some(&raw_head), peer)
            .await?;
        match target {
            Target::Upstream(name) => {
                let upstream = p.upstreams.get(name).ok_or(Rejection::Internal)?;
                // A client span: its id is the upstream's parent in `traceparent`.
                if let Some(trace) = &mut ctx.trace {
                    trace.stage("forward", opentelemetry::trace::SpanKind::Client);
                }
                forward::forward(p, session, ctx, upstream).await
            }
            Target::Gateway => {
                ctx.stage("gateway_api");
                // The API's own refusals (a wrong password, an expired token) are logged and
                // counted like the stages' ones.
                if let Some(code) = forward::answer_in_process(p, session, ctx).await? {
                    ctx.rejection = Some(code);
                    if let Some(kind) = metrics::account_failure_kind(code) {
                        p.metrics.authentication_failed(kind);
                    }
                }
                Ok(Forwarded::Complete)
            }
        }
    }

    /// A request head that could not be read: refused with problem+json where the client can
    /// still hear it, the connection closed either way.
    async fn refuse_head(&self, conn: &mut Connection, error: HeadError) {
        let rejection = match error {
            HeadError::Unparsable => Rejection::BadRequest("The request head could not be parsed."),
            // Over a limit, complete or still arriving.
            HeadError::TooLarge => Rejection::HeaderFieldsTooLarge,
            // The client went away: nobody to answer.
            HeadError::Gone => return,
        };
        let p = &*self.pipeline;
        let id = p.request_ids.next();
        let _ = respond::refuse(conn, &p.security, &id, &rejection).await;
        record::AccessEvent {
            request_id: &id,
            method: "",
            path: "",
            route: None,
            status: rejection.status(),
            duration: std::time::Duration::ZERO,
            client: conn.peer(),
            principal_kind: None,
            principal_id: None,
            decision: None,
            rejection: Some(rejection.code()),
        }
        .emit();
        p.metrics.request(
            None,
            None,
            rejection.status(),
            std::time::Duration::ZERO,
            Some(rejection.code()),
        );
        // The rest of the head, and any body, may still be on its way.
        conn.close_lingering(p.client.write_timeout).await;
    }

    /// One request on the connection, start to end: the stages, the answer, the access
    /// event. Returns what becomes of the connection.
    async fn serve(&self, mut session: Session<'_>, shutdown: &ShutdownWatch) -> After {
        let p = &*self.pipeline;
        if *shutdown.borrow() {
            // Draining: answer this one, then close.
            session.set_keepalive(false);
        }
        let mut ctx = RequestCtx::new(p.request_ids.next());
        let outcome = match self.run(&mut session, &mut ctx).await {
            Ok(forwarded) => Outcome::Answered(forwarded),
            Err(rejection) => Outcome::Refused(rejection),
        };
        // A response that broke off after its head went out (the upstream failed mid-body, the
        // client stopped reading, a refusal came too late to send).
        let cut_short = match &outcome {
            Outcome::Answered(forwarded) => *forwarded == Forwarded::Broken,
            Outcome::Refused(_) => session.response_written().is_some(),
        };
        let answered = match outcome {
            Outcome::Answered(forwarded) => forwarded == Forwarded::Complete,
            Outcome::Refused(rejection) => {
                ctx.rejection = Some(rejection.code());
                ctx.stage("respond");
                let head_only = session.req_header().method == http::Method::HEAD;
                // A refusal after part of a response went out cannot be sent: close instead.
                session.response_written().is_none()
                    && respond::reject(&mut session, &p.security, &ctx.id, &rejection, head_only)
                        .await
                        .is_ok()
            }
        };
        let status = session.response_written().map_or(0, |s| s.as_u16());
        let req = session.req_header();
        let route = p.route_of(&ctx);
        record::AccessEvent {
            request_id: &ctx.id,
            method: req.method.as_str(),
            path: req.uri.path(),
            route: route.map(|r| &*r.name),
            status,
            duration: ctx.started.elapsed(),
            client: ctx.admitted.client,
            principal_kind: ctx.principal.as_ref().map(Principal::kind),
            principal_id: ctx.principal.as_ref().map(Principal::id),
            decision: ctx.decision.as_deref(),
            rejection: ctx.rejection,
        }
        .emit();
        if let Some(trace) = ctx.trace.take() {
            trace.finish(&trace::Finished {
                method: req.method.as_str(),
                route: route.map(|r| &*r.name),
                path: req.uri.path(),
                status,
                request_id: &ctx.id,
                principal_kind: ctx.principal.as_ref().map(Principal::kind),
                principal_id: ctx.principal.as_ref().map(Principal::id),
                decision: ctx.decision.as_deref(),
                rejection: ctx.rejection,
            });
        }
        if let Some(decision) = &ctx.decision {
            p.metrics.decision(decision);
        }
        p.metrics.request(
            route.map(|r| &r.metrics),
            Some(&req.method),
            status,
            ctx.started.elapsed(),
            ctx.rejection,
        );
        if cut_short {
            // Dropped as it is, not ended: a chunked body's last chunk (or a TLS close_notify)
            // would let the client take the truncated answer for a whole one. A connection
            // that ends mid-body is the honest signal.
            After::Abort
        } else if answered && session.reusable() {
            After::Next
        } else if session.body_in_flight() {
            After::Linger
        } else {
            After::Close
        }
    }
}

/// What reading a request head fails with once the head is over the configured size or
/// field count, before it is complete (raised by `server::heads`).
#[derive(Debug, thiserror::Error)]
#[error("the request head is over the configured size or field limit")]
pub struct HeadTooLarge;

#[async_trait]
impl ServerApp for GatewayApp {
    /// Serve a connection's requests, one after the other on this task, until it closes.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = &self.pipeline.client;
        let mut conn = Connection::new(
            stream,
            HeadLimits {
                max_bytes: limits.max_header_bytes,
                max_fields: limits.max_headers,
            },
            limits.body_read_timeout,
        );
        // A new connection has the header timeout for its whole first head; a kept-alive one
        // waits up to the idle time for its next request to start, then has the header
        // timeout too. A client that trickles bytes is cut off either way.
        let mut deadline = limits.header_timeout;
        // A graceful shutdown, awaited while the connection waits for a head: one future for
        // the connection's life (registering with the signal per request cost about 230
        // instructions a request, a shared lock taken and released).
        let mut watch = shutdown.clone();
        let mut stopped = std::pin::pin!(watch.changed());
        // A new connection's first head is awaited whatever the signal: its client has just
        // connected to send it (bounded by the header timeout, within the grace period).
        let mut kept_alive = false;
        loop {
            let stop = kept_alive.then_some(stopped.as_mut());
            let read = match tokio::time::timeout(deadline, conn.read_request(stop)).await {
                Ok(Ok(Some(session))) => Ok(session),
                // The client closed an idle keep-alive connection: normal.
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => Err(e),
                // Too slow to send a head: closed without an answer, like an idle connection.
                Err(_) => return None,
            };
            match read {
                Ok(session) => match self.serve(session, shutdown).await {
                    After::Next => {}
                    After::Close => break,
                    After::Linger => {
                        conn.close_lingering(limits.write_timeout).await;
                        return None;
                    }
                    After::Abort => return None,
                },
                Err(e) => {
                    self.refuse_head(&mut conn, e).await;
                    return None;
                }
            }
            deadline = limits.keepalive_idle + limits.header_timeout;
            kept_alive = true;
        }
        let _ = tokio::time::timeout(limits.write_timeout, conn.shutdown()).await;
        None
    }
}
