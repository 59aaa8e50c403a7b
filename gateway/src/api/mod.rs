//! The endpoints the gateway answers itself (routes whose upstream is `gateway`), as an
//! ordinary axum application.
//!
//! Requests reach this router only after the full pipeline (sanitise, route, authenticate,
//! authorise): the pipeline hands over the authorised request in process, with the [`Caller`]
//! attached, so handlers read like a web service and never re-check access themselves. Where a
//! decision depends on the body (the role an invitation grants), the handler asks Cedar again
//! through [`Authorizer`] with that in the context: the same engine, the same policies.
//!
//! Every handler is registered through [`Handlers`], which records its method and path, so at
//! start [`Api::check`] can hold the handlers against the route table: a gateway route without
//! a handler, or a handler without a route, stops the gateway naming it.

pub mod audit;
pub mod auth;
pub mod contract;
pub mod dashboard;
pub mod extract;
pub mod keys;
pub mod mfa;
pub mod orgs;
pub mod platform;
pub mod security_txt;

use std::sync::Arc;

use axum::handler::Handler;
use axum::routing::MethodFilter;
use axum::{Json, Router};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde_json::json;

pub use extract::{Authorizer, Caller, CurrentOperator, CurrentUser, JsonBody};

use crate::domain::policy::PolicyEngine;
use crate::domain::Services;
use crate::web::Rejection;

/// A router that remembers what it serves.
pub struct Handlers<S = ()> {
    router: Router<S>,
    served: Vec<(Method, &'static str)>,
}

impl<S> std::fmt::Debug for Handlers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Handlers<S> {
    fn default() -> Self {
        Handlers {
            router: Router::new(),
            served: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Handlers<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `method` on `path` (axum's syntax, `{param}` for a segment) with `handler`.
    pub fn on<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        // The five methods used below all have a filter; anything else would be a typo here,
        // and is simply not served, which the start-up check then reports.
        if let Ok(filter) = MethodFilter::try_from(method.clone()) {
            self.router = self.router.route(path, axum::routing::on(filter, handler));
            self.served.push((method, path));
        }
        self
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::GET, path, handler)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::POST, path, handler)
    }

    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::PUT, path, handler)
    }

    pub fn patch<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::PATCH, path, handler)
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::DELETE, path, handler)
    }

    /// Give the handlers their state.
    pub fn with_state<S2>(self, state: S) -> Handlers<S2> {
        Handlers {
            router: self.router.with_state(state),
            served: self.served,
        }
    }
}

impl Handlers<()> {
    pub fn merge(mut self, other: Handlers<()>) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }
}

/// A handler registered with no route in the route table, or a gateway route with no handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiRouteError {
    #[error(
        "route `{route}` ({method} {path}) has upstream \"gateway\" but no handler answers it"
    )]
    Unhandled {
        route: String,
        method: Method,
        path: String,
    },
    #[error("the gateway answers {method} {path}, but no route in the route table leads there")]
    Unrouted { method: Method, path: &'static str },
}

/// The gateway's own application.
#[derive(Debug, Clone)]
pub struct Api {
    router: Router,
    served: Arc<Vec<(Method, &'static str)>>,
}

impl Api {
    /// The public listener's application. `security_txt` is the rendered
    /// `/.well-known/security.txt`, when configured.
    pub fn new(
        services: &Services,
        policy: Arc<PolicyEngine>,
        security_txt: Option<Arc<str>>,
    ) -> Api {
        let authorizer = Authorizer::new(
            policy,
            services.orgs.clone(),
            services.audit.clone(),
            services.decisions.clone(),
        );
        let handlers = Handlers::new()
            .get("/healthz", health)
            .get("/openapi.json", contract::openapi)
            .get("/.well-known/security.txt", move || {
                let text = security_txt.clone();
                async move { security_txt::answer(text) }
            })
            .merge(auth::handlers(services.accounts.clone()))
            .merge(mfa::handlers(services.accounts.clone()))
            .merge(orgs::handlers(services.orgs.clone(), authorizer))
            .merge(keys::handlers(services.keys.clone()))
            .merge(audit::handlers(services.trail.clone()))
            .merge(dashboard::handlers());
        Api::serving(handlers)
    }

    /// The platform listener's application: `/platform/` and nothing else.
    pub fn platform(state: platform::PlatformState) -> Api {
        Api::serving(platform::handlers(state))
    }

    fn serving(handlers: Handlers) -> Api {
        Api {
            router: handlers.router.fallback(|| async { Rejection::NotFound }),
            served: Arc::new(handlers.served),
        }
    }

    /// What the handlers serve, as (method, path pattern).
    pub fn served(&self) -> &[(Method, &'static str)] {
        &self.served
    }

    /// Hold the handlers against the gateway routes of the route table, both ways. Path
    /// parameters match by position, whatever their names.
    pub fn check<'a>(
        &self,
        gateway_routes: impl IntoIterator<Item = (&'a str, &'a Method, &'a str)>,
    ) -> Result<(), ApiRouteError> {
        let shape = |path: &str| -> String {
            path.split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        };
        let served = |method: &Method, path: &str| {
            // axum answers HEAD with the GET handler.
            let method = if method == Method::HEAD {
                &Method::GET
            } else {
                method
            };
            self.served
                .iter()
                .any(|(m, p)| m == method && shape(p) == shape(path))
        };
        let mut routed: Vec<(Method, String)> = Vec::new();
        for (name, method, path) in gateway_routes {
            if !served(method, path) {
                return Err(ApiRouteError::Unhandled {
                    route: name.to_owned(),
                    method: method.clone(),
                    path: path.to_owned(),
                });
            }
            routed.push((method.clone(), shape(path)));
        }
        for (method, path) in self.served.iter() {
            if !routed.iter().any(|(m, p)| m == method && *p == shape(path)) {
                return Err(ApiRouteError::Unrouted {
                    method: method.clone(),
                    path,
                });
            }
        }
        Ok(())
    }

    /// Run one authorised request through the router and collect the answer, bounded in size.
    pub async fn dispatch(
        &self,
        request: http::Request<Bytes>,
        caller: Caller,
        max_response_bytes: usize,
    ) -> Result<http::Response<Bytes>, Rejection> {
        use tower::ServiceExt;
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(caller);
        let request = http::Request::from_parts(parts, axum::body::Body::from(body));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|never: std::convert::Infallible| -> Rejection { match never {} })?;
        let (parts, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, max_response_bytes);
        let bytes = limited
            .collect()
            .await
            .map_err(|_| Rejection::Internal)?
            .to_bytes();
        Ok(http::Response::from_parts(parts, bytes))
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}
