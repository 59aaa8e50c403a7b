//! zone-backend: delivery zones per organisation, and "which zones cover this
//! point?" queries, served behind the zonegate gateway.
//!
//! The gateway authenticates and authorises callers; this service trusts only
//! what the gateway signs (see [`identity`]) and still enforces org isolation
//! itself, so a gateway policy mistake cannot leak one org's zones to another.
//!
//! Module map, one responsibility each:
//! - [`config`]: `BackendConfig` and the command line;
//! - [`identity`]: verifying the gateway's assertion, org authorisation;
//! - [`guard`]: the middleware and extractors that apply it to requests;
//! - [`zones`]: HTTP handlers;
//! - [`geometry`]: validating areas, point coverage;
//! - [`store`]: SQLite persistence;
//! - [`problem`]: the single error type, rendered as RFC 9457 problem+json;
//! - [`extract`]: extractors that turn axum rejections into that error type;
//! - [`clock`]: the injectable time source (shared with the gateway: `zonegate-common`).
//!
//! Embedding (tests, the gateway's `dev` command): build an [`AppState`] and
//! call [`app`], or hand an already-bound listener to [`serve_listener`], or
//! let [`bind`] pick the port and report it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub mod config;
pub mod extract;
pub mod geometry;
pub mod guard;
mod headers;
pub mod identity;
pub mod problem;
pub mod store;
pub mod zones;

pub use config::BackendConfig;
pub use identity::{IdentityKeys, IdentityVerifier, KeyError, VerifiedIdentity};
pub use store::{Store, StoreError};
pub use zonegate_common::clock;
pub use zonegate_common::clock::{Clock, SystemClock};

/// Largest accepted request body. Larger bodies get 413 before being parsed.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Shared state of all handlers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Store,
    verifier: Arc<IdentityVerifier>,
    clock: Arc<dyn Clock>,
}

impl AppState {
    /// `clock` drives zone timestamps; give the verifier the same one, so
    /// tests can control time in one place.
    pub fn new(store: Store, verifier: IdentityVerifier, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            verifier: Arc::new(verifier),
            clock,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl FromRef<AppState> for Arc<IdentityVerifier> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.verifier)
    }
}

/// The complete HTTP service.
///
/// Layer order matters: security headers wrap everything (errors included);
/// the identity check wraps every route and the 404/405 fallbacks except
/// `/healthz`, so unauthenticated callers learn nothing, not even which paths
/// exist.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/v1/orgs/{org}/zones",
            get(zones::list_zones).post(zones::create_zone),
        )
        .route(
            "/v1/orgs/{org}/zones/{zone}",
            get(zones::get_zone)
                .put(zones::replace_zone)
                .patch(zones::patch_zone)
                .delete(zones::delete_zone),
        )
        .route("/v1/orgs/{org}/coverage", get(zones::coverage))
        .method_not_allowed_fallback(problem::method_not_allowed)
        .fallback(problem::not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.verifier),
            guard::require_identity,
        ));

    Router::new()
        .route("/healthz", get(healthz))
        .method_not_allowed_fallback(problem::method_not_allowed)
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(headers::security_headers))
        .with_state(state)
}

/// Liveness only: answers while the process serves HTTP, checks nothing else.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Why the backend could not start or stopped. Start-up errors name the flag
/// to fix.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("--key-dir {}: {source}", dir.display())]
    Keys {
        dir: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("--database: {0}")]
    Database(#[source] StoreError),
    #[error("--audience: must not be empty")]
    EmptyAudience,
    #[error("--listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("server error: {0}")]
    Serve(#[source] io::Error),
}

impl BackendError {
    /// True when the configuration is at fault (the binary exits with 2).
    pub fn is_config_error(&self) -> bool {
        !matches!(self, Self::Serve(_))
    }
}

/// Loads the keys and opens (and migrates) the database for `config`, with
/// the system clock.
pub async fn build_state(config: &BackendConfig) -> Result<AppState, BackendError> {
    if config.audience.is_empty() {
        return Err(BackendError::EmptyAudience);
    }
    let keys = IdentityKeys::from_dir(&config.key_dir).map_err(|source| BackendError::Keys {
        dir: config.key_dir.clone(),
        source,
    })?;
    let store = Store::open(&config.database_url)
        .await
        .map_err(BackendError::Database)?;
    let kids: Vec<&str> = keys.kids().collect();
    tracing::info!(?kids, audience = %config.audience, "identity keys loaded");

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let verifier = IdentityVerifier::with_replay_capacity(
        keys,
        config.audience.clone(),
        Arc::clone(&clock),
        config.replay_cache_entries,
    );
    Ok(AppState::new(store, verifier, clock))
}

/// Prepares everything, binds `config.listen`, and returns the bound address
/// with the server future. Configuration errors surface here, before the
/// caller spawns anything; bind port 0 and read the address to embed the
/// backend on a free port.
pub async fn bind(
    config: BackendConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl Future<Output = Result<(), BackendError>> + Send + 'static,
    ),
    BackendError,
> {
    // Keys and database first: a misconfigured backend never accepts a
    // connection.
    let state = build_state(&config).await?;
    let bind_error = |source| BackendError::Bind {
        addr: config.listen,
        source,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((addr, serve_listener(listener, state, shutdown)))
}

/// Serves `config` until `shutdown` completes.
pub async fn serve(
    config: BackendConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BackendError> {
    let (_, server) = bind(config, shutdown).await?;
    server.await
}

/// Serves on an already-bound listener until `shutdown` completes, then lets
/// in-flight requests finish and closes the database.
pub async fn serve_listener(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BackendError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "zone-backend listening");
    }
    let result = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(BackendError::Serve);
    state.store.close().await;
    tracing::info!("zone-backend stopped");
    result
}
