//! Assembling the gateway from a validated config, and running it.
//!
//! [`prepare`] does every check that can fail (keys, TLS files, routes, policies, handlers)
//! before a single socket is bound, so a bad deployment fails at start with a message naming
//! the file or route, never halfway through serving. [`run`] then builds the pingora server
//! with its listeners and background jobs and blocks until shutdown.

pub mod admin;
pub mod connections;
pub mod heads;
pub mod jobs;
pub mod placement;
pub mod process;
pub mod redirect;
pub mod telemetry;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::api::{Api, ApiRouteError};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domain::accounts::Accounts;
use crate::domain::apikeys::ApiKeys;
use crate::domain::audit::{AuditEvent, AuditLog, AuditTrail, AuditWriter, SecurityEvent};
use crate::domain::decisions::{DecisionLog, DecisionTable, DecisionWriter};
use crate::domain::identity::Signer;
use crate::domain::keyring::{KeyRing, KeyRingError};
use crate::domain::mail::{MailError, Mailer};
use crate::domain::operators::Operators;
use crate::domain::orgs::Orgs;
use crate::domain::policy::{PolicyEngine, PolicyError, PolicyStore};
use crate::domain::storage::{Db, DbError};
use crate::domain::Services;
use crate::pipeline::admit::RequestIds;
use crate::pipeline::metrics::Metrics;
use crate::pipeline::route::{RouteError, RouteTable, Surface, Target};
use crate::pipeline::throttle::Limits;
use crate::pipeline::upstream::{UpstreamConfig, UpstreamTls, Upstreams};
use crate::pipeline::{GatewayApp, Pipeline};
use crate::web::security::SecurityHeaders;
use admin::AdminApp;
use redirect::RedirectToHttps;
use tls::{CertResolver, TlsError};

/// How long an idle upstream connection is kept for reuse (well under the common 60 s
/// keep-alive of upstream servers, so the gateway lets go first).
const UPSTREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Why the gateway would not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("secrets the config names are missing:\n  {0}")]
    Secrets(String),
    #[error("{0}")]
    Tracing(#[from] crate::pipeline::trace::TracingError),
    #[error("key ring: {0}")]
    KeyRing(#[from] KeyRingError),
    #[error("routes: {0}")]
    Routes(#[from] RouteError),
    #[error("policies: {0}")]
    Policy(#[from] PolicyError),
    #[error("routes: {0}")]
    Handlers(#[from] ApiRouteError),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("mail: {0}")]
    Mail(#[from] MailError),
    #[error("{0}")]
    Upgrade(#[from] process::UpgradeError),
    #[error("{0}")]
    Other(String),
}

/// The running gateway's shared state: the pipeline and what the admin listener and the
/// background jobs reach.
#[derive(Debug)]
pub struct Gateway {
    pub pipeline: Arc<Pipeline>,
    pub routes: Arc<RouteTable>,
    pub policy: Arc<PolicyEngine>,
    pub limits: Arc<Limits>,
    pub audit: AuditLog,
    pub trail: AuditTrail,
    pub decisions: DecisionLog,
    /// The stored decision log, for its retention purge.
    pub decision_table: DecisionTable,
    pub clock: Arc<dyn Clock>,
    /// The gateway's database, for readiness.
    pub db: Db,
    /// The mail transport, whose failing deliveries readiness reports.
    pub mailer: Arc<Mailer>,
    /// Why the last policy reload was refused, until one succeeds (readiness reports it).
    pub policy_reload_fault: std::sync::Mutex<Option<String>>,
    /// This process among the fleet (`host/pid/random`), and the active key ids it makes new
    /// material with: recorded in the database so `keys retire` waits for its restart.
    pub instance_id: String,
    pub key_ring_active: Vec<String>,
    /// On PostgreSQL, the listener for other instances' changes
    /// ([`crate::domain::invalidation`]); `None` on SQLite (one machine).
    pub invalidation: Option<crate::domain::invalidation::Listener>,
}

/// The trigger of a policy reload another instance announced.
pub const PEER_TRIGGER: &str = "peer";

/// A name for this process that is unique across the fleet and tells an operator where it
/// runs.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{}/{}", std::process::id(), &random[..8])
}

impl Gateway {
    /// Reload the policy set (checked against the route table), recording the outcome as a
    /// security event; the old set stays in force on refusal.
    pub fn reload_policies(
        &self,
        trigger: &str,
    ) -> Result<crate::domain::policy::Reloaded, PolicyError> {
        self.reload_policies_by(trigger, None, None)
    }

    /// [`Self::reload_policies`], asked for by `principal` (an operator on the platform
    /// surface), who is recorded as the actor, and from `client` (the admin listener's peer).
    pub fn reload_policies_by(
        &self,
        trigger: &str,
        principal: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<crate::domain::policy::Reloaded, PolicyError> {
        let routes = self.routes.clone();
        let outcome = self
            .policy
            .reload(&move |store: &PolicyStore| routes.check(store));
        let event = match &outcome {
            Ok(r) => AuditEvent::new(SecurityEvent::PolicyReloaded)
                .detail("policy_hash", r.hash.as_str())
                .detail("previous_hash", r.previous_hash.as_str()),
            // The error names files and policy ids, never secrets: what the operator needs
            // to see in the trail.
            Err(e) => AuditEvent::new(SecurityEvent::PolicyReloadFail)
                .detail("policy_hash", self.policy.active_hash())
                .detail("error", e.to_string()),
        };
        let mut event = event.detail("trigger", trigger);
        if let Some(id) = principal {
            event = event.principal(id);
        }
        event.client = client;
        self.audit.record(event);
        if let Ok(mut fault) = self.policy_reload_fault.lock() {
            *fault = outcome.as_ref().err().map(ToString::to_string);
        }
        // The other instances reload theirs too (never in answer to theirs: no echo).
        if outcome.is_ok() && trigger != PEER_TRIGGER && self.invalidation.is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (db, instance) = (self.db.clone(), self.instance_id.clone());
                runtime.spawn(async move {
                    if let Err(e) =
                        crate::domain::invalidation::announce_policies(&db, &instance).await
                    {
                        tracing::warn!(target: "zonegate::invalidation", event = "policy_announce_fail", error = %e);
                    }
                });
            }
        }
        outcome
    }
}

/// Everything validated and loaded, ready to serve.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    pub gateway: Arc<Gateway>,
    /// The platform listener's pipeline: the platform routes, operators' credentials, the
    /// platform origin and the platform API.
    pub platform: Arc<Pipeline>,
    pub certs: Arc<CertResolver>,
    /// The audit writer, started by [`run`] on the maintenance service's runtime (there is no
    /// runtime yet when the gateway is prepared; events recorded before it runs wait queued).
    pub audit_writer: AuditWriter,
    /// The decision log's writer, when the log is on; started like the audit writer.
    pub decision_writer: Option<DecisionWriter>,
    /// The bearer token the admin listener requires for changes, when configured.
    pub admin_token: Option<crate::config::secrets::Secret>,
    /// What an operator should act on soon, though the gateway can run (check-config prints
    /// them, serve logs them).
    pub warnings: Vec<String>,
    /// The active key of each purpose as loaded (readiness shows them).
    pub key_ring_active: Vec<String>,
}

/// Load a policy directory and hold it against the route table.
fn load_policies(dir: &std::path::Path, routes: &RouteTable) -> Result<PolicyStore, PolicyError> {
    let store = PolicyStore::load(dir)?;
    routes.check(&store)?;
    Ok(store)
}

/// Load and check everything the config points at.
pub fn prepare(config: Config, clock: Arc<dyn Clock>) -> Result<Prepared, StartError> {
    let ring = KeyRing::load(&config.key_dir)?;
    if let Some(socket) = &config.server.upgrade_socket {
        process::check_upgrade_socket(socket)?;
    }
    let certs = Arc::new(CertResolver::load(&config.tls.cert, &config.tls.key)?);
    let upstream_names: BTreeSet<String> = config.upstreams.keys().cloned().collect();
    let metrics = Arc::new(if config.metrics_enabled {
        Metrics::default()
    } else {
        Metrics::off()
    });
    // The whole table is what policies are checked against; each listener serves its share.
    let mut routes = RouteTable::load(&config.routes_file, &upstream_names)?;
    routes.bind_metrics(&metrics);
    let routes = Arc::new(routes);
    let public_routes = Arc::new(routes.surface(Surface::Public));
    let platform_routes = Arc::new(routes.surface(Surface::Platform));
    let store = load_policies(&config.policies_dir, &routes)?;
    let shadow = match &config.shadow_policies_dir {
        Some(dir) => Some(load_policies(dir, &routes)?),
        None => None,
    };
    let policy = Arc::new(PolicyEngine::with_shadow(store, shadow));
    let signer = || {
        Signer::new(
            &ring,
            config.identity.algorithm,
            &config.identity.audience,
            config.identity.ttl,
        )
        .map_err(|e| StartError::Other(e.to_string()))
    };
    for (name, up) in &config.upstreams {
        if let Some(h) = up
            .forward_headers
            .iter()
            .find(|h| crate::pipeline::forward::is_reserved(h.as_str()))
        {
            return Err(StartError::Other(format!(
                "upstream `{name}`: `{h}` is hop-by-hop, a credential, trace context (believed only from trusted proxies) or set by the gateway itself; it cannot be forwarded from the client"
            )));
        }
    }
    // Each thread keeps its share of the idle connections.
    let threads = config.server.threads.max(1);
    let mut upstream_tls = BTreeMap::new();
    for (name, up) in &config.upstreams {
        if let Some(tls) = &up.tls {
            let client = tls.client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let client_config = tls::upstream_client_config(&tls.ca_file, client)
                .map_err(|e| StartError::Other(format!("upstream `{name}`: {e}")))?;
            upstream_tls.insert(
                name.clone(),
                UpstreamTls {
                    connector: pingora::tls::TlsConnector::from(client_config),
                    server_name: tls.server_name.clone(),
                },
            );
        }
    }
    let upstreams = Upstreams::new(
        config.upstreams.iter().map(|(name, up)| {
            (
                name,
                UpstreamConfig {
                    address: up.address,
                    connect_timeout: config.server.upstream_connect_timeout,
                    read_timeout: config.server.upstream_read_timeout,
                    max_idle: config
                        .server
                        .upstream_keepalive_pool
                        .div_ceil(threads)
                        .max(1),
                    idle_timeout: UPSTREAM_IDLE,
                    forward_headers: up.forward_headers.clone(),
                    max_body_bytes: up.max_body_bytes,
                    tls: upstream_tls.get(name).cloned(),
                },
            )
        }),
        &metrics,
    );
    // Secrets named by the config, read now so that missing ones stop the start, all named
    // at once (an operator fixing them one start at a time is slow).
    let env = crate::config::secrets::process_env;
    let (database_url, smtp_password, admin_token, shared_limits) = match (
        config.database_connect_url(&env),
        config.smtp_password(&env),
        config.admin_token(),
        config.shared_limits(&env),
    ) {
        (Ok(db), Ok(smtp), Ok(admin), Ok(shared)) => (db, smtp, admin, shared),
        (db, smtp, admin, shared) => {
            let missing: Vec<String> = [db.err(), smtp.err(), admin.err(), shared.err()]
                .into_iter()
                .flatten()
                .map(|e| e.to_string())
                .collect();
            return Err(StartError::Secrets(missing.join("\n  ")));
        }
    };
    let db = Db::prepare_blocking(database_url.expose(), config.database_max_connections)?;
    let mailer = Arc::new(match &config.smtp {
        Some(smtp) => Mailer::smtp(
            &config.mail_from,
            smtp,
            smtp_password.as_ref().map(|p| p.expose()),
        )?,
        None => Mailer::outbox(&config.mail_from, config.outbox_dir.clone())?,
    });
    let (audit, audit_writer) = AuditLog::detached(db.clone(), clock.clone(), config.audit.queue);
    let (decisions, decision_writer) = if config.decision_log.enabled {
        let (log, writer) = DecisionLog::new(
            DecisionTable::new(db.clone()),
            clock.clone(),
            config.decision_log.max_pending,
            config.decision_log.flush,
        );
        (log, Some(writer))
    } else {
        (DecisionLog::off(), None)
    };
    let decision_table = DecisionTable::new(db.clone());
    let services = Services {
        accounts: Arc::new(
            Accounts::new(
                db.clone(),
                &ring,
                config.bcrypt_cost,
                mailer.clone(),
                clock.clone(),
                audit.clone(),
                config.accounts.clone(),
            )
            .map_err(|e| StartError::Other(format!("accounts: {e}")))?,
        ),
        orgs: Arc::new(Orgs::new(
            db.clone(),
            clock.clone(),
            mailer.clone(),
            audit.clone(),
            config.accounts.clone(),
        )),
        keys: Arc::new(
            ApiKeys::new(
                db.clone(),
                &ring,
                clock.clone(),
                audit.clone(),
                config.accounts.cache_revalidate,
                config.api_key_roll_grace,
            )
            .ok_or_else(|| StartError::Other("the key ring has no pepper key".into()))?,
        ),
        operators: Arc::new(
            Operators::new(
                db.clone(),
                &ring,
                config.bcrypt_cost,
                clock.clone(),
                audit.clone(),
                config.platform.operators.clone(),
            )
            .map_err(|e| StartError::Other(format!("operators: {e}")))?,
        ),
        audit: audit.clone(),
        trail: AuditTrail::new(db.clone()),
        decisions: decisions.clone(),
    };
    let mut warnings = Vec::new();
    let security_txt = match &config.security_txt {
        Some(txt) => {
            use crate::api::security_txt::Expiry;
            match txt.expiry(i64::try_from(clock.unix_seconds()).unwrap_or(i64::MAX)) {
                Expiry::Past => {
                    return Err(StartError::Other(
                        "config key `security_txt.expires`: is in the past; a security.txt must not be served expired (RFC 9116)".into(),
                    ))
                }
                Expiry::Soon { days } => warnings.push(format!(
                    "security_txt.expires is in {days} days: renew it (RFC 9116 suggests less than a year ahead)"
                )),
                Expiry::Fine => {}
            }
            Some(Arc::from(txt.render()))
        }
        None => None,
    };
    if !config.listen.platform.ip().is_loopback() {
        warnings.push(format!(
            "listen.platform `{}` is not a loopback address: the platform surface should be reachable only from Delivery Zone's own network",
            config.listen.platform
        ));
    }
    let api = Api::new(&services, policy.clone(), security_txt);
    api.check(gateway_routes(&public_routes))?;
    let limits = Arc::new(match (shared_limits, &config.redis) {
        (Some(store), Some(redis)) => Limits::shared(
            &config.rate_limits,
            crate::domain::ratelimit::shared::SharedLimiter::new(store),
            redis.instances,
        ),
        _ => Limits::new(&config.rate_limits),
    });
    let tracing = config
        .tracing
        .as_ref()
        .map(crate::pipeline::trace::Tracing::new)
        .transpose()?;
    let pipeline = Pipeline {
        routes: public_routes,
        surface: Surface::Public,
        policy: policy.clone(),
        services: services.clone(),
        signer: signer()?,
        upstreams,
        trusted_proxies: config.trusted_proxies.clone(),
        public_origin: config.public_origin.clone(),
        public_authority: config.public_authority.clone(),
        public_authority_value: http::HeaderValue::from_str(&config.public_authority)
            .map_err(|_| StartError::Other("public_origin is not a header value".into()))?,
        security: SecurityHeaders::new(config.tls.hsts_max_age_seconds),
        api,
        clock: clock.clone(),
        max_gateway_body_bytes: config.server.max_gateway_body_bytes,
        request_ids: RequestIds::default(),
        limits: limits.clone(),
        audit: audit.clone(),
        client: config.server.client.clone(),
        metrics: metrics.clone(),
        tracing: tracing.clone(),
    };
    let instance = instance_id();
    let invalidation = (db.dialect() == crate::domain::storage::Dialect::Postgres).then(|| {
        crate::domain::invalidation::Listener::new(
            crate::domain::invalidation::ListenUrl::new(database_url.expose()),
            &instance,
            i64::try_from(clock.unix_seconds()).unwrap_or(i64::MAX),
        )
    });
    let gateway = Gateway {
        pipeline: Arc::new(pipeline),
        routes,
        policy,
        limits,
        audit: audit.clone(),
        trail: services.trail.clone(),
        decisions,
        decision_table,
        clock,
        db,
        mailer,
        policy_reload_fault: std::sync::Mutex::new(None),
        invalidation,
        instance_id: instance,
        key_ring_active: ring.active_ids(),
    };
    let gateway = Arc::new(gateway);
    // The platform surface: its own routes, credentials and origin, the same policies,
    // services, limits and security headers.
    let platform_api = Api::platform(crate::api::platform::PlatformState {
        operators: services.operators.clone(),
        accounts: services.accounts.clone(),
        orgs: services.orgs.clone(),
        keys: services.keys.clone(),
        trail: services.trail.clone(),
        audit: audit.clone(),
        reload: Arc::new(ReloadBoth {
            gateway: gateway.clone(),
            certs: certs.clone(),
        }),
        clock: gateway.clock.clone(),
        retention_days: config.audit.retention_days,
    });
    platform_api.check(gateway_routes(&platform_routes))?;
    let platform_authority = config
        .platform
        .origin
        .trim_start_matches("https://")
        .to_owned();
    let platform = Pipeline {
        routes: platform_routes,
        surface: Surface::Platform,
        policy: gateway.policy.clone(),
        services,
        signer: signer()?,
        upstreams: Upstreams::default(),
        // Operators connect to it directly (loopback, a tunnel): no forwarded address or
        // trace context is believed from anyone, so the login's per-address limit and the
        // audit trail see the real peer.
        trusted_proxies: Vec::new(),
        public_origin: config.platform.origin.clone(),
        public_authority_value: http::HeaderValue::from_str(&platform_authority)
            .map_err(|_| StartError::Other("platform.origin is not a header value".into()))?,
        public_authority: platform_authority,
        security: SecurityHeaders::new(config.tls.hsts_max_age_seconds),
        api: platform_api,
        clock: gateway.clock.clone(),
        max_gateway_body_bytes: config.server.max_gateway_body_bytes,
        request_ids: RequestIds::default(),
        limits: gateway.limits.clone(),
        audit: gateway.audit.clone(),
        client: config.server.client.clone(),
        metrics,
        tracing,
    };
    Ok(Prepared {
        config,
        gateway,
        platform: Arc::new(platform),
        certs,
        audit_writer,
        decision_writer,
        admin_token,
        warnings,
        key_ring_active: ring.active_ids(),
    })
}

/// The routes of a table the gateway answers itself, as [`Api::check`] takes them.
fn gateway_routes(table: &RouteTable) -> impl Iterator<Item = (&str, &http::Method, &str)> {
    table.routes().iter().flat_map(|r| {
        let gateway = r.target == Target::Gateway;
        r.methods
            .iter()
            .filter(move |_| gateway)
            .map(move |m| (&*r.name, m, r.pattern.as_str()))
    })
}

/// What the platform surface's reload does: policies, then the certificate, each validated
/// before it replaces what serves (as SIGHUP does).
#[derive(Debug)]
struct ReloadBoth {
    gateway: Arc<Gateway>,
    certs: Arc<CertResolver>,
}

impl crate::api::platform::Reload for ReloadBoth {
    fn reload(&self, operator: &str) -> crate::api::platform::Reloaded {
        let trigger = "platform";
        crate::api::platform::Reloaded {
            policies: self
                .gateway
                .reload_policies_by(trigger, Some(operator), None)
                .map(|r| r.hash)
                .map_err(|e| e.to_string()),
            certificate: self
                .certs
                .reload_logged(trigger)
                .map(|()| self.certs.fingerprint())
                .map_err(|e| e.to_string()),
        }
    }
}

/// Check a config without serving: what `zonegate check-config` runs.
pub fn check(config: Config) -> Result<Prepared, StartError> {
    prepare(config, Arc::new(SystemClock))
}

/// Serve until a signal stops the process (see [`process::Signals`]: SIGTERM drains within the
/// grace period, SIGINT stops at once, SIGQUIT hands over to a new process when upgrades are
/// configured), with the listening sockets as [`process::become_configured_user`] arranged:
/// bound by pingora, taken over from a running gateway, or handed over after dropping root.
pub fn run(prepared: Prepared, sockets: process::Sockets) -> Result<(), StartError> {
    let Prepared {
        config,
        gateway,
        platform,
        certs,
        audit_writer,
        decision_writer,
        admin_token,
        warnings,
        key_ring_active,
    } = prepared;
    for warning in &warnings {
        tracing::warn!(target: "zonegate::server", event = "config_warning", warning = %warning);
    }
    let upgrades = config.server.upgrade_socket.is_some();
    if matches!(sockets, process::Sockets::Upgrade) && !upgrades {
        return Err(process::UpgradeError::NotConfigured.into());
    }
    let server_conf = |upgrade_sock: Option<&std::path::Path>| {
        let mut conf = ServerConf {
            threads: config.server.threads,
            grace_period_seconds: Some(config.server.shutdown_grace.as_secs()),
            // After the grace period, runtimes get one more second to unwind.
            graceful_shutdown_timeout_seconds: Some(1),
            upstream_keepalive_pool_size: config.server.upstream_keepalive_pool,
            ..ServerConf::default()
        };
        // No daemonising: the process manager owns the process.
        conf.daemon = false;
        if let Some(socket) = upgrade_sock {
            conf.upgrade_sock = socket.display().to_string();
        }
        // One single-threaded runtime per thread: a connection's requests run start to end on
        // the thread that accepted it (no cross-thread wake-ups), and the per-thread upstream
        // connection pools stay local to it.
        conf.work_stealing = false;
        conf
    };
    let configured = config.server.upgrade_socket.as_deref();
    // Sockets bound before dropping root arrive the way an upgrade's do, on a private socket;
    // afterwards the configured socket is the one SIGQUIT sends to.
    let receive_from = match &sockets {
        process::Sockets::Handover(h) => Some(h.socket()),
        _ => configured.map(std::path::Path::to_owned),
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: !matches!(sockets, process::Sockets::Bind),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(receive_from.as_deref()));
    if let process::Sockets::Handover(handover) = sockets {
        server.configuration = Arc::new(server_conf(configured));
        let dir = handover.dir().to_owned();
        let sender = std::thread::spawn(move || handover.send());
        // Blocks until the sender has handed the listeners over (or exits the process, as
        // pingora does when an upgrade finds no sockets).
        server.bootstrap();
        let sent = sender.join();
        process::Handover::clean_up(&dir);
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::Other(format!("listener hand-over: {e}"))),
            Err(_) => return Err(StartError::Other("listener hand-over failed".into())),
        }
    } else {
        server.bootstrap();
    }

    // One acceptor per listener, both serving the one reloadable certificate.
    let acceptor = || -> Result<_, StartError> {
        let mut tls = TlsSettings::intermediate("", "")
            .map_err(|e| StartError::Other(format!("tls settings: {e}")))?;
        tls.set_cert_resolver(certs.clone());
        Ok(tls.build())
    };
    let client = &config.server.client;
    let connections = Arc::new(connections::ConnectionCounter::new(connections::Caps {
        total: client.max_connections,
        per_address: client.max_connections_per_address,
        ipv6_prefix: config.rate_limits.ipv6_prefix,
    }));
    let mut public = Service::new(
        "zonegate public https".into(),
        connections::Capped::new(
            Arc::new(GatewayApp {
                pipeline: gateway.pipeline.clone(),
            }),
            connections.clone(),
            Some(connections::Tls {
                acceptor: acceptor()?,
                handshake_timeout: client.tls_handshake_timeout,
                heads: heads::HeadLimits {
                    max_bytes: client.max_header_bytes,
                    max_fields: client.max_headers,
                },
                write_timeout: client.write_timeout,
            }),
            config.server.threads,
        ),
    );
    // Plain TCP: the TLS handshake runs in `Capped`, within its own timeout.
    public.add_listener(client_listener(&config.listen.https.to_string()));
    server.add_service(public);

    // The platform listener: the same certificate and client limits, its own connection
    // counts (a flood on the public listener does not lock operators out).
    let platform_connections = Arc::new(connections::ConnectionCounter::new(connections::Caps {
        total: client.max_connections,
        per_address: client.max_connections_per_address,
        ipv6_prefix: config.rate_limits.ipv6_prefix,
    }));
    let mut platform_service = Service::new(
        "zonegate platform https".into(),
        connections::Capped::new(
            Arc::new(GatewayApp { pipeline: platform }),
            platform_connections,
            Some(connections::Tls {
                acceptor: acceptor()?,
                handshake_timeout: client.tls_handshake_timeout,
                heads: heads::HeadLimits {
                    max_bytes: client.max_header_bytes,
                    max_fields: client.max_headers,
                },
                write_timeout: client.write_timeout,
            }),
            config.server.threads,
        ),
    );
    platform_service.add_listener(client_listener(&config.listen.platform.to_string()));
    server.add_service(platform_service);

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

    if gateway.invalidation.is_some() {
        server.add_service(pingora::services::background::background_service(
            "invalidation listener (PostgreSQL LISTEN)",
            jobs::ListenForInvalidations {
                gateway: gateway.clone(),
            },
        ));
    }
    if gateway.limits.shared_store().is_some() {
        server.add_service(pingora::services::background::background_service(
            "shared rate limits (Redis)",
            jobs::KeepSharedLimits {
                gateway: gateway.clone(),
            },
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "policy and certificate reload on SIGHUP",
        jobs::ReloadOnHangup {
            gateway: gateway.clone(),
            certs: certs.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "audit and decision log writers, retention and rate-limit maintenance",
        jobs::Maintenance::new(
            gateway.clone(),
            jobs::Writers {
                audit: audit_writer,
                decisions: decision_writer,
            },
            jobs::Retention {
                audit_days: config.audit.retention_days,
                decision_days: config.decision_log.retention_days,
                every: config.audit.purge_interval,
            },
        ),
    ));
    let security = SecurityHeaders::new(config.tls.hsts_max_age_seconds);
    let mut admin = Service::new(
        "zonegate admin".into(),
        AdminApp {
            gateway: gateway.clone(),
            security,
            identity_key: Some(gateway.pipeline.signer.key_id().to_owned()),
            connections: Some(connections),
            certs: Some(certs),
            token: admin_token,
            key_ring: Some(admin::KeyRingInUse {
                dir: config.key_dir.clone(),
                active: key_ring_active,
            }),
        },
    );
    admin.add_tcp(&config.listen.admin.to_string());
    server.add_service(admin);

    gateway.audit.record(
        AuditEvent::new(SecurityEvent::Startup)
            .detail("https", config.listen.https.to_string())
            .detail("admin", config.listen.admin.to_string())
            .detail("platform", config.listen.platform.to_string())
            .detail("policy_hash", gateway.policy.active_hash()),
    );
    ignore_hangup_until_served();
    server.run(RunArgs {
        shutdown_signal: Box::new(process::Signals { upgrades }),
    });
    // Served and drained: the last requests' spans go to the collector before the exit.
    if let Some(tracing) = &gateway.pipeline.tracing {
        tracing.shutdown();
    }
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

/// A client-facing TLS listener, plain TCP with pingora's socket buffers off. pingora would put
/// a 64 KiB read buffer and a 1460-byte write buffer under each connection: the TLS layer reads
/// records straight from the socket as well (API requests are small), `LimitedHeads` already
/// holds a response's writes until its flush, and a connection moved to another thread
/// (`connections::attach`) has none either. Without them an idle connection holds 38 KiB
/// instead of 103 KiB (the read buffer is zeroed, so all of it was resident; BENCHMARKS.md),
/// and no byte is copied through a buffer on its way in or out.
fn client_listener(address: &str) -> pingora::listeners::ListenerConfig {
    pingora::listeners::ListenerConfig::tcp(address)
        .l4_buffer(pingora::listeners::L4BufferSettings::unbuffered())
}
