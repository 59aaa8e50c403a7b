//! Assembling the gateway from a validated config, and running it.
//!
//! [`prepare`] does every check that can fail (keys, TLS files, routes, policies) before a
//! single socket is bound, so a bad deployment fails at start with a message naming the file,
//! never halfway through serving. [`run`] then builds the pingora server with its three
//! listeners and blocks until shutdown.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::prelude::HttpPeer;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::identity::Signer;
use crate::keyring::{KeyRing, KeyRingError};
use crate::policy::{PolicyEngine, PolicyError};
use crate::proxy::{GatewayProxy, GatewayState, RequestIds};
use crate::redirect::RedirectToHttps;
use crate::respond::SecurityHeaders;
use crate::routes::{RouteError, RouteTable};
use crate::tls::{CertResolver, TlsError};

/// Why the gateway would not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("key ring: {0}")]
    KeyRing(#[from] KeyRingError),
    #[error("routes: {0}")]
    Routes(#[from] RouteError),
    #[error("policies: {0}")]
    Policy(#[from] PolicyError),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Db(#[from] crate::db::DbError),
    #[error("mail: {0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("{0}")]
    Other(String),
}

/// Everything validated and loaded, ready to serve.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    pub state: Arc<GatewayState>,
    pub certs: Arc<CertResolver>,
    /// The audit writer, started by [`run`] on the maintenance service's runtime (there is no
    /// runtime yet when the gateway is prepared; events recorded before it runs wait queued).
    pub audit_writer: crate::audit::AuditWriter,
    pub pool: sqlx::AnyPool,
}

/// Load and check everything the config points at.
pub fn prepare(config: Config, clock: Arc<dyn Clock>) -> Result<Prepared, StartError> {
    let ring = KeyRing::load(&config.key_dir)?;
    let certs = Arc::new(CertResolver::load(&config.tls.cert, &config.tls.key)?);
    let upstream_names: BTreeSet<String> = config.upstreams.keys().cloned().collect();
    let routes = RouteTable::load(&config.routes_file, &upstream_names)?;
    let store = crate::policy::load_checked(&config.policies_dir, &routes)?;
    let shadow = match &config.shadow_policies_dir {
        Some(dir) => Some(crate::policy::load_checked(dir, &routes)?),
        None => None,
    };
    let signer = Signer::new(&ring, &config.identity.audience, config.identity.ttl)
        .ok_or_else(|| StartError::Other("the key ring has no identity key".into()))?;
    let upstreams = config
        .upstreams
        .iter()
        .map(|(name, up)| {
            let mut peer = HttpPeer::new(up.address, false, String::new());
            peer.options.connection_timeout = Some(config.server.upstream_connect_timeout);
            peer.options.read_timeout = Some(config.server.upstream_read_timeout);
            (name.clone(), peer)
        })
        .collect::<HashMap<_, _>>();
    let pool = crate::db::prepare_blocking(&config.database_url, config.database_max_connections)?;
    let mailer = Arc::new(match &config.smtp {
        Some(smtp) => crate::mail::Mailer::smtp(&config.mail_from, smtp)?,
        None => crate::mail::Mailer::outbox(&config.mail_from, config.outbox_dir.clone())?,
    });
    let orgs = Arc::new(crate::orgs::Orgs::new(
        pool.clone(),
        clock.clone(),
        mailer.clone(),
        config.accounts.clone(),
    ));
    let keys = Arc::new(
        crate::apikeys::ApiKeys::new(
            pool.clone(),
            &ring,
            clock.clone(),
            config.accounts.cache_revalidate,
            config.api_key_roll_grace,
        )
        .ok_or_else(|| StartError::Other("the key ring has no pepper key".into()))?,
    );
    let (audit, audit_writer) =
        crate::audit::AuditLog::detached(pool.clone(), clock.clone(), config.audit.queue);
    let accounts = Arc::new(
        crate::accounts::Accounts::new(
            pool.clone(),
            &ring,
            config.bcrypt_cost,
            mailer,
            clock.clone(),
            config.accounts.clone(),
        )
        .map_err(|e| StartError::Other(format!("accounts: {e}")))?,
    );
    accounts.set_audit(audit.clone());
    keys.set_audit(audit.clone());
    let state = GatewayState {
        routes,
        policy: PolicyEngine::with_shadow(store, shadow),
        accounts: accounts.clone(),
        orgs: orgs.clone(),
        keys: keys.clone(),
        signer,
        upstreams,
        trusted_proxies: config.trusted_proxies.clone(),
        public_authority: config.public_authority.clone(),
        security: SecurityHeaders::new(config.tls.hsts_max_age_seconds),
        api: crate::api::router(accounts, orgs, keys, pool.clone()),
        clock,
        max_gateway_body_bytes: config.server.max_gateway_body_bytes,
        request_ids: RequestIds::default(),
        limits: crate::proxy::Limits::new(&config.rate_limits),
        audit,
    };
    Ok(Prepared {
        config,
        state: Arc::new(state),
        certs,
        audit_writer,
        pool,
    })
}

/// Check a config without serving: what `zonegate check-config` runs.
pub fn check(config: Config) -> Result<Prepared, StartError> {
    prepare(config, Arc::new(SystemClock))
}

/// Serve until SIGTERM (graceful: stop accepting, let in-flight requests finish within the
/// grace period) or SIGINT (immediate).
pub fn run(prepared: Prepared) -> Result<(), StartError> {
    let Prepared {
        config,
        state,
        certs,
        audit_writer,
        pool,
    } = prepared;
    let mut conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.shutdown_grace.as_secs()),
        // After the grace period, runtimes get one more second to unwind.
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool,
        ..ServerConf::default()
    };
    // No daemonising or upgrade socket: the process manager owns the process.
    conf.daemon = false;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut tls = TlsSettings::intermediate("", "")
        .map_err(|e| StartError::Other(format!("tls settings: {e}")))?;
    tls.set_cert_resolver(certs);
    let mut public = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        GatewayProxy {
            state: state.clone(),
        },
        "zonegate public https",
    );
    public.add_tls_with_settings(&config.listen.https.to_string(), None, tls);
    server.add_service(public);

    if let Some(http) = config.listen.http {
        let mut redirect = Service::new(
            "zonegate http redirect".into(),
            RedirectToHttps {
                origin: config.public_origin.clone(),
            },
        );
        redirect.add_tcp(&http.to_string());
        server.add_service(redirect);
    }

    server.add_service(pingora::services::background::background_service(
        "policy reload on SIGHUP",
        crate::admin::ReloadOnHangup {
            state: state.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "audit writer, retention and rate-limit maintenance",
        crate::admin::Maintenance::new(
            state.clone(),
            audit_writer,
            pool,
            config.audit.retention_days,
            config.audit.purge_interval,
        ),
    ));
    let mut admin = Service::new("zonegate admin".into(), AdminApp { state });
    admin.add_tcp(&config.listen.admin.to_string());
    server.add_service(admin);

    tracing::info!(
        event = "gateway_started",
        https = %config.listen.https,
        http = ?config.listen.http,
        admin = %config.listen.admin,
        "zonegate serving"
    );
    ignore_hangup_until_served();
    server.run(RunArgs::default());
    tracing::info!(event = "gateway_stopped");
    Ok(())
}

/// SIGHUP's default action ends the process. The reload service installs its handler only once
/// its runtime starts, after the listeners may already answer; registering (and dropping) a
/// tokio listener here replaces the default action for good, so an early SIGHUP is ignored
/// rather than fatal.
fn ignore_hangup_until_served() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    });
}
