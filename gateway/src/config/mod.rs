//! Configuration: a TOML file read into serde structs that mirror the file, then checked and
//! turned into [`Config`], the validated form the rest of the gateway uses.
//!
//! Every error names the key (or file) that is wrong, so an operator can fix it without reading
//! code. Secrets never live here: keys come from the key directory ([`crate::domain::keyring`]).
//! Relative paths are taken relative to the working directory the gateway is started in.

mod error;
mod file;
pub mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::domain::storage::Dialect;
use crate::pipeline::throttle::LimitsConfig;
use crate::pipeline::ClientLimits;
use error::invalid;
pub use error::ConfigError;
use file::{RawAudit, RawConfig, RawRate, RawRateLimits, RawUpstream};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTPS origin clients use, e.g. `https://zones.example.com`; redirects and links are
    /// built from it, never from a request's Host header.
    pub public_origin: String,
    /// `host[:port]` of the public origin, sent upstream as Host.
    pub public_authority: String,
    pub listen: Listen,
    pub platform: Platform,
    pub server: Server,
    pub tls: Tls,
    pub data_dir: PathBuf,
    pub key_dir: PathBuf,
    pub policies_dir: PathBuf,
    /// Shadow mode: decided beside the enforced set, never enforced.
    pub shadow_policies_dir: Option<PathBuf>,
    pub routes_file: PathBuf,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub identity: Identity,
    pub upstreams: BTreeMap<String, Upstream>,
    pub log: Log,
    /// Never holds a password: that comes from `database_password`
    /// ([`Config::database_connect_url`]).
    pub database_url: String,
    /// Where the database password comes from, if it needs one.
    pub database_password: Option<secrets::SecretSource>,
    pub database_max_connections: u32,
    pub mail_from: String,
    pub outbox_dir: PathBuf,
    pub smtp: Option<crate::domain::mail::SmtpSettings>,
    pub bcrypt_cost: u32,
    pub accounts: crate::domain::accounts::AccountsConfig,
    /// Seconds an API key's previous secret keeps working after a roll.
    pub api_key_roll_grace: i64,
    pub rate_limits: LimitsConfig,
    pub audit: Audit,
    pub decision_log: DecisionLogConfig,
    /// Traces, when an OTLP endpoint is configured.
    pub tracing: Option<crate::pipeline::trace::TracingConfig>,
    /// Prometheus metrics recorded and served at the admin listener's `/metrics` (default on).
    pub metrics_enabled: bool,
    /// `/.well-known/security.txt`, when configured.
    pub security_txt: Option<crate::api::security_txt::SecurityTxt>,
    /// Rate limits shared through Redis, when configured.
    pub redis: Option<Redis>,
}

/// The `[redis]` section, validated. Never holds the password: see
/// [`Config::shared_limits`].
#[derive(Debug, Clone)]
pub struct Redis {
    pub url: String,
    pub password: Option<secrets::SecretSource>,
    pub ca_file: Option<PathBuf>,
    /// How many instances share the limits (each falls back to this share).
    pub instances: std::num::NonZeroU32,
    pub timeout: Duration,
    pub key_prefix: String,
}

/// The `[decision_log]` section, validated.
#[derive(Debug, Clone)]
pub struct DecisionLogConfig {
    pub enabled: bool,
    pub retention_days: u32,
    pub flush: Duration,
    pub max_pending: usize,
}

/// The `[audit]` section, validated.
#[derive(Debug, Clone)]
pub struct Audit {
    pub retention_days: u32,
    pub purge_interval: Duration,
    pub queue: usize,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The file holding the bearer token the admin listener requires for changes; needed when
    /// `admin` is not a loopback address.
    pub admin_token_file: Option<PathBuf>,
    /// The platform listener: `/platform/` for operators, and nothing else.
    pub platform: SocketAddr,
}

impl Listen {
    /// Every address the gateway listens on, as its listeners are named (`ip:port`).
    pub fn addresses(&self) -> Vec<String> {
        std::iter::once(self.https)
            .chain(self.http)
            .chain([self.admin, self.platform])
            .map(|a| a.to_string())
            .collect()
    }
}

/// The platform listener's surface.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The only Origin an operator's browser may send on a change.
    pub origin: String,
    pub operators: crate::domain::operators::OperatorsConfig,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub upstream_keepalive_pool: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    /// Largest request body the gateway reads for the endpoints it answers itself.
    pub max_gateway_body_bytes: usize,
    pub client: ClientLimits,
    /// The Unix socket graceful upgrades hand the listening sockets over (`serve --upgrade`).
    pub upgrade_socket: Option<PathBuf>,
    /// Who the gateway runs as (`[server] user` and `group`); see `server::process`.
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub hsts_max_age_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub audience: String,
    pub ttl: Duration,
    pub algorithm: crate::domain::identity::Algorithm,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub address: SocketAddr,
    /// Request headers it receives beyond the standard end-to-end set, lower case.
    pub forward_headers: Vec<http::HeaderName>,
    pub max_body_bytes: usize,
    pub tls: Option<UpstreamTls>,
}

/// TLS to an upstream: the certificate must chain to `ca_file` and carry `server_name`.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub ca_file: PathBuf,
    pub server_name: String,
    /// Certificate and key files for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: String,
    pub json: bool,
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validate config text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        Config::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let public_authority = parse_https_origin(&raw.public_origin)?;
        let addr = |key: &'static str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse()
                .map_err(|_| invalid(key, format!("`{v}` is not an ip:port socket address")))
        };
        let listen = Listen {
            https: addr("listen.https", &raw.listen.https)?,
            http: raw
                .listen
                .http
                .as_deref()
                .map(|v| addr("listen.http", v))
                .transpose()?,
            admin: addr("listen.admin", &raw.listen.admin)?,
            admin_token_file: raw.listen.admin_token_file.clone(),
            platform: addr("listen.platform", &raw.listen.platform)?,
        };
        let platform = validate_platform(&raw.platform, listen.platform)?;
        // Whoever reaches the admin listener can reload policies: off loopback, only with a
        // token.
        if !listen.admin.ip().is_loopback() && listen.admin_token_file.is_none() {
            return Err(invalid(
                "listen.admin",
                format!(
                    "`{}` is not a loopback address: set listen.admin_token_file so that changes need a bearer token",
                    listen.admin
                ),
            ));
        }
        if raw.server.threads == 0 {
            return Err(invalid("server.threads", "must be at least 1"));
        }
        if raw.server.shutdown_grace_seconds > 3600 {
            return Err(invalid(
                "server.shutdown_grace_seconds",
                "must be at most 3600",
            ));
        }
        if raw.identity.ttl_seconds == 0 || raw.identity.ttl_seconds > 60 {
            return Err(invalid(
                "identity.ttl_seconds",
                "must be between 1 and 60: assertions are meant to be short-lived (default 5)",
            ));
        }
        if raw.identity.audience.trim().is_empty() {
            return Err(invalid("identity.audience", "must not be empty"));
        }
        let trusted_proxies = raw
            .proxy
            .trusted_proxies
            .iter()
            .map(|v| {
                v.parse::<IpNet>()
                    .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "proxy.trusted_proxies",
                            format!("`{v}` is not an IP or CIDR"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut upstreams = BTreeMap::new();
        for (name, up) in raw.upstreams {
            if name == "gateway" {
                return Err(invalid(
                    "upstreams",
                    "`gateway` is reserved for endpoints the gateway answers itself",
                ));
            }
            let address = up.address.parse().map_err(|_| {
                invalid(
                    "upstreams.*.address",
                    format!(
                        "upstream `{name}`: `{}` is not an ip:port address",
                        up.address
                    ),
                )
            })?;
            let forward_headers = up
                .forward_headers
                .iter()
                .map(|h| {
                    http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                        invalid(
                            "upstreams.*.forward_headers",
                            format!("upstream `{name}`: `{h}` is not a header name"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if up.max_body_bytes == 0 || up.max_body_bytes > 64 << 20 {
                return Err(invalid(
                    "upstreams.*.max_body_bytes",
                    format!(
                        "upstream `{name}`: must be between 1 and 67108864 (bodies are held in memory to be signed)"
                    ),
                ));
            }
            let tls = upstream_tls(&name, &up, address)?;
            upstreams.insert(
                name,
                Upstream {
                    address,
                    forward_headers,
                    max_body_bytes: up.max_body_bytes,
                    tls,
                },
            );
        }
        let a = &raw.accounts;
        if !(4..=31).contains(&a.bcrypt_cost) {
            return Err(invalid(
                "accounts.bcrypt_cost",
                "must be between 4 and 31 (12 for production)",
            ));
        }
        let issuer = a.mfa_issuer.trim();
        if issuer.is_empty()
            || issuer.len() > 64
            || issuer.contains(':')
            || issuer.chars().any(char::is_control)
        {
            return Err(invalid(
                "accounts.mfa_issuer",
                "must be 1 to 64 characters without ':' or control characters",
            ));
        }
        if !(8..=64).contains(&a.min_password_chars) {
            return Err(invalid(
                "accounts.min_password_chars",
                "must be between 8 and 64",
            ));
        }
        let positive: [(&'static str, i64); 8] = [
            ("accounts.session_ttl_seconds", a.session_ttl_seconds),
            ("accounts.refresh_idle_seconds", a.refresh_idle_seconds),
            (
                "accounts.refresh_absolute_seconds",
                a.refresh_absolute_seconds,
            ),
            ("accounts.verify_ttl_seconds", a.verify_ttl_seconds),
            ("accounts.reset_ttl_seconds", a.reset_ttl_seconds),
            (
                "accounts.resend_interval_seconds",
                a.resend_interval_seconds,
            ),
            (
                "accounts.cache_revalidate_seconds",
                a.cache_revalidate_seconds,
            ),
            (
                "accounts.refresh_grace_seconds",
                a.refresh_grace_seconds + 1,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(invalid(key, "must be positive"));
        }
        if a.refresh_grace_seconds > 60 {
            return Err(invalid(
                "accounts.refresh_grace_seconds",
                "must be at most 60: the window exists only for concurrent tabs",
            ));
        }
        if a.session_ttl_seconds > a.refresh_absolute_seconds {
            return Err(invalid(
                "accounts.session_ttl_seconds",
                "must not exceed accounts.refresh_absolute_seconds",
            ));
        }
        if a.reset_ttl_seconds > 3600 {
            return Err(invalid(
                "accounts.reset_ttl_seconds",
                "must be at most 3600",
            ));
        }
        if !(0..=30 * 24 * 60 * 60).contains(&raw.api_keys.roll_grace_seconds) {
            return Err(invalid(
                "api_keys.roll_grace_seconds",
                "must be between 0 and 2592000 (30 days)",
            ));
        }
        let database_url = raw.database.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                raw.paths.data_dir.join("zonegate.db").display()
            )
        });
        Dialect::of_url(&database_url)
            .map_err(|_| invalid("database.url", "must start with sqlite:// or postgres://"))?;
        if secrets::url_has_password(&database_url) {
            return Err(invalid(
                "database.url",
                "must not contain a password: name the environment variable that holds it in database.password_env",
            ));
        }
        let mail_from =
            raw.mail.from.clone().unwrap_or_else(|| {
                format!("Delivery Zone <no-reply@{}>", host_of(&public_authority))
            });
        if mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "mail.from",
                format!("`{mail_from}` is not a mail address"),
            ));
        }
        let accounts = crate::domain::accounts::AccountsConfig {
            public_origin: raw.public_origin.trim_end_matches('/').to_owned(),
            min_password_chars: a.min_password_chars,
            session_ttl: a.session_ttl_seconds,
            refresh_idle: a.refresh_idle_seconds,
            refresh_absolute: a.refresh_absolute_seconds,
            refresh_grace: a.refresh_grace_seconds,
            verify_ttl: a.verify_ttl_seconds,
            reset_ttl: a.reset_ttl_seconds,
            resend_interval: a.resend_interval_seconds,
            cache_revalidate: a.cache_revalidate_seconds,
            mfa_issuer: a.mfa_issuer.clone(),
        };
        let rate_limits = validate_rate_limits(&raw.rate_limits)?;
        let audit = validate_audit(&raw.audit)?;
        let decision_log = validate_decision_log(&raw.decision_log)?;
        let tracing = validate_tracing(&raw.tracing)?;
        let security_txt = raw
            .security_txt
            .as_ref()
            .map(|s| validate_security_txt(s, raw.public_origin.trim_end_matches('/')))
            .transpose()?;
        let json = match raw.log.format.as_str() {
            "json" => true,
            "text" => false,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("`{other}`: use json or text"),
                ))
            }
        };
        Ok(Config {
            public_origin: raw.public_origin.trim_end_matches('/').to_owned(),
            public_authority,
            listen,
            platform,
            server: Server {
                threads: raw.server.threads,
                shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_seconds),
                upstream_keepalive_pool: raw.server.upstream_keepalive_pool,
                upstream_connect_timeout: Duration::from_millis(
                    raw.server.upstream_connect_timeout_ms,
                ),
                upstream_read_timeout: Duration::from_millis(raw.server.upstream_read_timeout_ms),
                max_gateway_body_bytes: raw.server.max_gateway_body_bytes,
                client: validate_client_limits(&raw.server)?,
                upgrade_socket: validate_upgrade_socket(raw.server.upgrade_socket)?,
                user: raw.server.user,
                group: raw.server.group,
            },
            tls: Tls {
                cert: raw.tls.cert,
                key: raw.tls.key,
                hsts_max_age_seconds: raw.tls.hsts_max_age_seconds,
            },
            data_dir: raw.paths.data_dir.clone(),
            key_dir: raw.paths.key_dir,
            policies_dir: raw.paths.policies,
            shadow_policies_dir: raw.paths.shadow_policies,
            routes_file: raw.paths.routes,
            trusted_proxies,
            identity: Identity {
                audience: raw.identity.audience,
                ttl: Duration::from_secs(raw.identity.ttl_seconds),
                algorithm: raw.identity.algorithm,
            },
            upstreams,
            log: Log {
                level: raw.log.level,
                json,
            },
            database_url,
            database_password: secrets::SecretSource::either(
                "database.password_file",
                raw.database.password_env.clone(),
                raw.database.password_file.clone(),
            )?,
            database_max_connections: raw.database.max_connections.max(1),
            outbox_dir: raw
                .mail
                .outbox_dir
                .unwrap_or_else(|| raw.paths.data_dir.join("outbox")),
            mail_from,
            smtp: match raw.mail.smtp {
                Some(s) => {
                    secrets::SecretSource::either(
                        "mail.smtp.password_file",
                        s.password_env.clone(),
                        s.password_file.clone(),
                    )?;
                    Some(crate::domain::mail::SmtpSettings {
                        host: s.host,
                        port: s.port,
                        username: s.username,
                        password_env: s.password_env,
                        password_file: s.password_file,
                    })
                }
                None => None,
            },
            bcrypt_cost: raw.accounts.bcrypt_cost,
            accounts,
            api_key_roll_grace: raw.api_keys.roll_grace_seconds,
            rate_limits,
            audit,
            decision_log,
            tracing,
            metrics_enabled: raw.metrics.enabled,
            security_txt,
            redis: raw.redis.map(validate_redis).transpose()?,
        })
    }
}

fn validate_redis(r: file::RawRedis) -> Result<Redis, ConfigError> {
    let tls = r.url.starts_with("rediss://");
    if !tls && !r.url.starts_with("redis://") {
        return Err(invalid(
            "redis.url",
            "must start with redis:// or rediss://",
        ));
    }
    // redis-rs reads a fragment as options (`#insecure` skips certificate checks).
    if r.url.contains('#') {
        return Err(invalid(
            "redis.url",
            "must not have a #fragment (it would change how the connection is checked)",
        ));
    }
    if secrets::redis_url_has_password(&r.url) {
        return Err(invalid(
            "redis.url",
            "must not contain a password: name the environment variable that holds it in redis.password_env (or its file in redis.password_file)",
        ));
    }
    if r.ca_file.is_some() && !tls {
        return Err(invalid(
            "redis.ca_file",
            "only applies to a TLS connection: use a rediss:// URL",
        ));
    }
    let instances = std::num::NonZeroU32::new(r.instances).ok_or_else(|| {
        invalid(
            "redis.instances",
            "must be at least 1: the number of gateway instances sharing the limits",
        )
    })?;
    if !(1..=10_000).contains(&r.timeout_ms) {
        return Err(invalid(
            "redis.timeout_ms",
            "must be between 1 and 10000 (every request waits at most this long)",
        ));
    }
    if r.key_prefix.is_empty()
        || r.key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "redis.key_prefix",
            "must be a non-empty word without spaces",
        ));
    }
    Ok(Redis {
        password: secrets::SecretSource::either(
            "redis.password_file",
            r.password_env,
            r.password_file,
        )?,
        url: r.url,
        ca_file: r.ca_file,
        instances,
        timeout: Duration::from_millis(r.timeout_ms),
        key_prefix: r.key_prefix,
    })
}

fn rate(
    key: &'static str,
    r: RawRate,
) -> Result<crate::domain::ratelimit::RatePolicy, ConfigError> {
    use crate::domain::ratelimit::{PolicyError, RatePolicy};
    RatePolicy::new(r.requests, r.window_seconds).map_err(|e| match e {
        PolicyError::ZeroLimit => invalid(
            key,
            "`requests` must be at least 1 (a zero limit refuses everything)",
        ),
        PolicyError::ZeroWindow => invalid(key, "`window_seconds` must be at least 1"),
        PolicyError::TooFine { .. } | PolicyError::WindowTooLong => invalid(key, e.to_string()),
    })
}

/// A Unix socket path must fit `sockaddr_un` (108 bytes with its NUL); pingora would panic on
/// a longer one mid-upgrade, so it is refused here.
fn validate_upgrade_socket(path: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    match path {
        Some(p) if p.as_os_str().len() > 100 || p.file_name().is_none() => Err(invalid(
            "server.upgrade_socket",
            format!(
                "`{}` must name a file, in at most 100 bytes (a Unix socket path)",
                p.display()
            ),
        )),
        other => Ok(other),
    }
}

fn validate_client_limits(s: &file::RawServer) -> Result<ClientLimits, ConfigError> {
    let positive = |key: &'static str, v: u64| {
        if v == 0 {
            Err(invalid(key, "must be at least 1"))
        } else {
            Ok(v)
        }
    };
    positive(
        "server.tls_handshake_timeout_ms",
        s.tls_handshake_timeout_ms,
    )?;
    positive("server.header_timeout_ms", s.header_timeout_ms)?;
    positive("server.body_read_timeout_ms", s.body_read_timeout_ms)?;
    positive("server.write_timeout_ms", s.write_timeout_ms)?;
    positive("server.keepalive_idle_seconds", s.keepalive_idle_seconds)?;
    positive("server.max_headers", s.max_headers as u64)?;
    positive("server.max_connections", s.max_connections as u64)?;
    positive(
        "server.max_connections_per_address",
        s.max_connections_per_address as u64,
    )?;
    // pingora refuses a head over 1 MiB or with more than 256 fields on its own.
    if !(1024..=1024 * 1024).contains(&s.max_header_bytes) {
        return Err(invalid(
            "server.max_header_bytes",
            "must be between 1024 and 1048576 (32768 is common)",
        ));
    }
    if s.max_headers > 256 {
        return Err(invalid("server.max_headers", "must be at most 256"));
    }
    Ok(ClientLimits {
        tls_handshake_timeout: Duration::from_millis(s.tls_handshake_timeout_ms),
        header_timeout: Duration::from_millis(s.header_timeout_ms),
        body_read_timeout: Duration::from_millis(s.body_read_timeout_ms),
        write_timeout: Duration::from_millis(s.write_timeout_ms),
        keepalive_idle: Duration::from_secs(s.keepalive_idle_seconds),
        max_header_bytes: s.max_header_bytes,
        max_headers: s.max_headers,
        max_connections: s.max_connections,
        max_connections_per_address: s.max_connections_per_address,
    })
}

fn validate_rate_limits(r: &RawRateLimits) -> Result<LimitsConfig, ConfigError> {
    if r.max_tracked_keys == 0 {
        return Err(invalid(
            "rate_limits.max_tracked_keys",
            "must be at least 1",
        ));
    }
    // Shorter than a /32 would lump a whole provider's customers into one bucket.
    if !(32..=128).contains(&r.ipv6_prefix) {
        return Err(invalid(
            "rate_limits.ipv6_prefix",
            "must be between 32 and 128 (64: one site)",
        ));
    }
    Ok(LimitsConfig {
        auth_strict: rate("rate_limits.auth_strict", r.auth_strict)?,
        auth: rate("rate_limits.auth", r.auth)?,
        api_key: rate("rate_limits.api_key", r.api_key)?,
        org: rate("rate_limits.org", r.org)?,
        user: rate("rate_limits.user", r.user)?,
        org_sessions: rate("rate_limits.org_sessions", r.org_sessions)?,
        max_tracked_keys: r.max_tracked_keys,
        ipv6_prefix: r.ipv6_prefix,
    })
}

fn validate_decision_log(d: &file::RawDecisionLog) -> Result<DecisionLogConfig, ConfigError> {
    if !(1..=3650).contains(&d.retention_days) {
        return Err(invalid(
            "decision_log.retention_days",
            "must be between 1 and 3650",
        ));
    }
    if !(1..=300).contains(&d.flush_seconds) {
        return Err(invalid(
            "decision_log.flush_seconds",
            "must be between 1 and 300",
        ));
    }
    if d.max_pending == 0 {
        return Err(invalid("decision_log.max_pending", "must be at least 1"));
    }
    Ok(DecisionLogConfig {
        enabled: d.enabled,
        retention_days: d.retention_days,
        flush: Duration::from_secs(d.flush_seconds),
        max_pending: d.max_pending,
    })
}

fn validate_security_txt(
    s: &file::RawSecurityTxt,
    origin: &str,
) -> Result<crate::api::security_txt::SecurityTxt, ConfigError> {
    use time::format_description::well_known::Rfc3339;
    let https_url = |key: &'static str, v: &str| -> Result<String, ConfigError> {
        let ok = v.strip_prefix("https://").is_some_and(|rest| {
            !rest.is_empty() && !rest.contains(char::is_whitespace) && !rest.contains('\n')
        });
        if ok {
            Ok(v.to_owned())
        } else {
            Err(invalid(key, format!("`{v}` is not an https:// URL")))
        }
    };
    if s.contact.is_empty() {
        return Err(invalid(
            "security_txt.contact",
            "name at least one (mailto:, https:// or tel:)",
        ));
    }
    let contact = s
        .contact
        .iter()
        .map(|c| {
            let scheme_ok = ["mailto:", "https://", "tel:"]
                .iter()
                .any(|p| c.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
            if scheme_ok && !c.contains(char::is_whitespace) {
                Ok(c.clone())
            } else {
                Err(invalid(
                    "security_txt.contact",
                    format!("`{c}` is not a mailto:, https:// or tel: URI"),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let expires = time::OffsetDateTime::parse(&s.expires, &Rfc3339).map_err(|_| {
        invalid(
            "security_txt.expires",
            format!(
                "`{}` is not an RFC 3339 time, e.g. 2027-06-01T00:00:00Z",
                s.expires
            ),
        )
    })?;
    let preferred_languages = s
        .preferred_languages
        .iter()
        .map(|l| {
            if !l.is_empty()
                && l.len() <= 35
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                Ok(l.clone())
            } else {
                Err(invalid(
                    "security_txt.preferred_languages",
                    format!("`{l}` is not a language tag"),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::api::security_txt::SecurityTxt {
        contact,
        expires,
        encryption: s
            .encryption
            .as_deref()
            .map(|v| https_url("security_txt.encryption", v))
            .transpose()?,
        policy: s
            .policy
            .as_deref()
            .map(|v| https_url("security_txt.policy", v))
            .transpose()?,
        preferred_languages,
        canonical: format!("{origin}/.well-known/security.txt"),
    })
}

fn validate_tracing(
    t: &file::RawTracing,
) -> Result<Option<crate::pipeline::trace::TracingConfig>, ConfigError> {
    let Some(endpoint) = &t.otlp_endpoint else {
        return Ok(None);
    };
    // Plain HTTP, so only to a collector on this host (a sidecar or node agent that carries
    // spans on over TLS): spans hold no credential, but user ids and paths.
    let rest = endpoint.strip_prefix("http://").unwrap_or_default();
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => authority,
    };
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback || authority.contains('@') {
        return Err(invalid(
            "tracing.otlp_endpoint",
            "must be an http:// URL of an OTLP/HTTP collector on this host (loopback), e.g. http://127.0.0.1:4318/v1/traces",
        ));
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        return Err(invalid(
            "tracing.sample_ratio",
            "must be between 0.0 and 1.0",
        ));
    }
    if t.service_name.trim().is_empty() {
        return Err(invalid("tracing.service_name", "must not be empty"));
    }
    if !(100..=60_000).contains(&t.export_interval_ms) {
        return Err(invalid(
            "tracing.export_interval_ms",
            "must be between 100 and 60000",
        ));
    }
    Ok(Some(crate::pipeline::trace::TracingConfig {
        otlp_endpoint: endpoint.clone(),
        service_name: t.service_name.clone(),
        sample_ratio: t.sample_ratio,
        export_interval: Duration::from_millis(t.export_interval_ms),
    }))
}

fn validate_audit(a: &RawAudit) -> Result<Audit, ConfigError> {
    // Under 30 days an incident is often found after its trail is gone.
    if !(30..=3650).contains(&a.retention_days) {
        return Err(invalid(
            "audit.retention_days",
            "must be between 30 and 3650 (365 is 12 months)",
        ));
    }
    if !(60..=7 * 24 * 60 * 60).contains(&a.purge_interval_seconds) {
        return Err(invalid(
            "audit.purge_interval_seconds",
            "must be between 60 and 604800 (a week)",
        ));
    }
    if a.queue == 0 {
        return Err(invalid("audit.queue", "must be at least 1"));
    }
    Ok(Audit {
        retention_days: a.retention_days,
        purge_interval: Duration::from_secs(a.purge_interval_seconds),
        queue: a.queue,
    })
}

/// The host part of `host[:port]` (IPv6 literals keep their brackets).
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !authority.ends_with(']') =>
        {
            host
        }
        _ => authority,
    }
}

/// Accept only `https://host[:port]` with nothing after it; return `host[:port]`.
/// `[platform]`: the origin operators' browsers send, and session lifetimes within sane bounds.
fn validate_platform(
    raw: &file::RawPlatform,
    listener: SocketAddr,
) -> Result<Platform, ConfigError> {
    if raw.admins.is_some() {
        return Err(invalid(
            "platform.admins",
            "is gone: operators have accounts of their own on the platform listener (listen.platform); create them with `zonegate operators add EMAIL` and remove this key",
        ));
    }
    let origin = match &raw.origin {
        Some(origin) => {
            parse_https_origin(origin).map_err(|_| {
                invalid(
                    "platform.origin",
                    "must be an https origin (scheme and host only), like https://platform.internal:8445",
                )
            })?;
            origin.trim_end_matches('/').to_owned()
        }
        None => format!("https://localhost:{}", listener.port()),
    };
    let idle = raw.session_idle_seconds;
    let absolute = raw.session_absolute_seconds;
    if !(60..=3600).contains(&idle) {
        return Err(invalid(
            "platform.session_idle_seconds",
            "must be between 60 and 3600 (15 minutes is the default)",
        ));
    }
    if !(idle..=24 * 3600).contains(&absolute) {
        return Err(invalid(
            "platform.session_absolute_seconds",
            "must be at least the idle time and at most 86400 (12 hours is the default)",
        ));
    }
    Ok(Platform {
        origin,
        operators: crate::domain::operators::OperatorsConfig {
            idle,
            absolute,
            ..Default::default()
        },
    })
}

fn parse_https_origin(origin: &str) -> Result<String, ConfigError> {
    let origin = origin.trim_end_matches('/');
    let rest = origin.strip_prefix("https://").ok_or_else(|| {
        invalid(
            "public_origin",
            "must start with https:// (the gateway serves HTTPS only)",
        )
    })?;
    let ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok {
        return Err(invalid(
            "public_origin",
            "must be scheme and host only, like https://zones.example.com",
        ));
    }
    Ok(rest.to_owned())
}

/// An upstream's TLS settings, checked: `tls = true` needs a CA file (upstreams are internal
/// services, so the public web's roots are never trusted for them); the name to verify defaults
/// to the address's IP; a client certificate comes with its key. A TLS setting without
/// `tls = true` is refused rather than ignored, so nobody believes a hop is encrypted when it is
/// not.
fn upstream_tls(
    name: &str,
    up: &RawUpstream,
    address: SocketAddr,
) -> Result<Option<UpstreamTls>, ConfigError> {
    let client = match (&up.client_cert, &up.client_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "upstreams.*.client_cert",
                format!("upstream `{name}`: client_cert and client_key go together"),
            ))
        }
    };
    if !up.tls {
        if up.ca_file.is_some() || up.server_name.is_some() || client.is_some() {
            return Err(invalid(
                "upstreams.*.tls",
                format!(
                    "upstream `{name}`: ca_file, server_name and client_cert need `tls = true`"
                ),
            ));
        }
        return Ok(None);
    }
    let ca_file = up.ca_file.clone().ok_or_else(|| {
        invalid(
            "upstreams.*.ca_file",
            format!("upstream `{name}`: `tls = true` needs the CA file its certificate chains to"),
        )
    })?;
    let server_name = up
        .server_name
        .clone()
        .unwrap_or_else(|| address.ip().to_string());
    if server_name.trim().is_empty() {
        return Err(invalid(
            "upstreams.*.server_name",
            format!("upstream `{name}`: must not be empty"),
        ));
    }
    Ok(Some(UpstreamTls {
        ca_file,
        server_name,
        client,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const MINIMAL: &str = r#"
public_origin = "https://localhost:8443"
[listen]
https = "127.0.0.1:8443"
admin = "127.0.0.1:9090"
[tls]
cert = "c.pem"
key = "k.pem"
[paths]
data_dir = "data"
key_dir = "data/keys"
policies = "policies"
routes = "policies/routes.toml"
[upstreams.zones]
address = "127.0.0.1:8081"
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(c.public_authority, "localhost:8443");
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.identity.ttl, Duration::from_secs(5));
        assert_eq!(
            c.identity.algorithm,
            crate::domain::identity::Algorithm::Hs256
        );
        assert!(c.listen.http.is_none());
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn errors_name_the_bad_key() {
        assert!(err(&MINIMAL.replace("127.0.0.1:8443\"", "nope\"")).contains("listen.https"));
        assert!(
            err(&MINIMAL.replace("https://localhost", "http://localhost"))
                .contains("public_origin")
        );
        assert!(err(&MINIMAL.replace("127.0.0.1:8081", "x")).contains("upstreams"));
        assert!(
            err(&format!("{MINIMAL}\n[proxy]\ntrusted_proxies=[\"bad\"]"))
                .contains("proxy.trusted_proxies")
        );
        assert!(err(&format!("{MINIMAL}\n[identity]\nttl_seconds=0")).contains("identity.ttl"));
        assert!(err(&format!("{MINIMAL}\n[identity]\nttl_seconds=61")).contains("identity.ttl"));
        assert!(err(&format!("{MINIMAL}\n[identity]\nalgorithm=\"none\"")).contains("algorithm"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = err(&MINIMAL.replace("[tls]", "[tls]\ncertt = \"x\""));
        assert!(e.contains("certt"), "{e}");
    }

    #[test]
    fn rate_limits_and_audit_default_when_absent() {
        let c = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(c.rate_limits.auth_strict.header_value(), "10;w=60");
        assert_eq!(c.rate_limits.auth.header_value(), "60;w=60");
        assert_eq!(c.rate_limits.api_key.header_value(), "600;w=60");
        assert_eq!(c.rate_limits.org.header_value(), "3000;w=60");
        assert_eq!(c.audit.retention_days, 365);
        assert_eq!(c.audit.purge_interval, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn rate_limits_and_audit_are_read_and_checked() {
        let c = Config::parse(
            &format!(
                "{MINIMAL}\n[rate_limits]\nauth_strict = {{ requests = 3, window_seconds = 5 }}\n\
                 [audit]\nretention_days = 400\npurge_interval_seconds = 120\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.rate_limits.auth_strict.header_value(), "3;w=5");
        // Keys not written keep their defaults.
        assert_eq!(c.rate_limits.api_key.header_value(), "600;w=60");
        assert_eq!(c.audit.retention_days, 400);
        let e = err(&format!(
            "{MINIMAL}\n[rate_limits]\napi_key = {{ requests = 0, window_seconds = 60 }}\n"
        ));
        assert!(
            e.contains("rate_limits.api_key") && e.contains("at least 1"),
            "{e}"
        );
        let e = err(&format!(
            "{MINIMAL}\n[rate_limits]\norg = {{ requests = 5, window_seconds = 0 }}\n"
        ));
        assert!(e.contains("rate_limits.org"), "{e}");
        assert!(err(&format!("{MINIMAL}\n[audit]\nretention_days = 0\n"))
            .contains("audit.retention_days"));
        assert!(err(&format!("{MINIMAL}\n[rate_limits]\nlogin = 1\n")).contains("login"));
    }

    #[test]
    fn shipped_configs_parse_with_their_rate_limits_and_retention() {
        for (name, text) in [
            (
                "zonegate.toml",
                include_str!("../../../config/zonegate.toml"),
            ),
            (
                "production.example.toml",
                include_str!("../../../config/production.example.toml"),
            ),
        ] {
            let c = Config::parse(text, Path::new(name)).unwrap();
            assert_eq!(
                c.rate_limits.auth_strict.header_value(),
                "10;w=60",
                "{name}"
            );
            assert_eq!(c.audit.retention_days, 365, "{name}");
        }
    }

    #[test]
    fn upstream_tls_needs_a_ca_and_is_never_half_configured() {
        let with = |lines: &str| {
            MINIMAL.replace("[upstreams.zones]", &format!("[upstreams.zones]\n{lines}"))
        };
        let c = Config::parse(
            &with(
                "tls = true\nca_file = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"",
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        let tls = c.upstreams["zones"].tls.clone().unwrap();
        assert_eq!(tls.server_name, "127.0.0.1", "the address's IP by default");
        assert_eq!(tls.client, Some(("c.pem".into(), "k.pem".into())));
        assert!(err(&with("tls = true")).contains("ca_file"));
        assert!(err(&with("ca_file = \"ca.pem\"")).contains("upstreams.*.tls"));
        assert!(err(&with(
            "tls = true\nca_file = \"ca.pem\"\nclient_cert = \"c.pem\""
        ))
        .contains("client_cert"));
        assert!(err(&with("max_body_bytes = 0")).contains("max_body_bytes"));
        let prod = Config::parse(
            include_str!("../../../config/production.example.toml"),
            Path::new("production.example.toml"),
        )
        .unwrap();
        assert_eq!(
            prod.upstreams["zones"]
                .tls
                .as_ref()
                .map(|t| t.server_name.as_str()),
            Some("zones.internal"),
            "the example's non-loopback upstream is reached over TLS"
        );
        assert_eq!(
            prod.identity.algorithm,
            crate::domain::identity::Algorithm::EdDsa
        );
    }

    #[test]
    fn origin_with_a_path_is_refused() {
        assert!(
            err(&MINIMAL.replace("https://localhost:8443", "https://a/b"))
                .contains("public_origin")
        );
    }

    #[test]
    fn tracing_is_off_by_default_and_exports_only_to_this_host() {
        assert!(Config::parse(MINIMAL, Path::new("t.toml"))
            .unwrap()
            .tracing
            .is_none());
        let with = |t: &str| format!("{MINIMAL}[tracing]\n{t}\n");
        for ok in [
            "http://127.0.0.1:4318/v1/traces",
            "http://localhost:4318/v1/traces",
            "http://[::1]:4318/v1/traces",
        ] {
            let c = Config::parse(
                &with(&format!("otlp_endpoint = \"{ok}\"")),
                Path::new("t.toml"),
            )
            .unwrap();
            let t = c.tracing.unwrap();
            assert_eq!((t.otlp_endpoint.as_str(), t.sample_ratio), (ok, 1.0));
        }
        for bad in [
            "https://127.0.0.1:4318/v1/traces",
            "http://collector.internal:4318/v1/traces",
            "http://10.0.0.5:4318/v1/traces",
            "http://u:p@127.0.0.1:4318/v1/traces",
            "http://127.0.0.1.evil.example/v1/traces",
            "http:///v1/traces",
        ] {
            assert!(
                err(&with(&format!("otlp_endpoint = \"{bad}\""))).contains("tracing.otlp_endpoint"),
                "{bad}"
            );
        }
        let local = "otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"";
        assert!(
            err(&with(&format!("{local}\nsample_ratio = 1.5"))).contains("tracing.sample_ratio")
        );
        assert!(
            err(&with(&format!("{local}\nexport_interval_ms = 1"))).contains("export_interval_ms")
        );
    }

    #[test]
    fn the_platform_listener_defaults_to_loopback_and_platform_admins_are_gone() {
        let c = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(c.listen.platform.to_string(), "127.0.0.1:8445");
        assert_eq!(c.platform.origin, "https://localhost:8445");
        assert_eq!(
            (c.platform.operators.idle, c.platform.operators.absolute),
            (900, 43200)
        );
        assert!(c.listen.addresses().contains(&"127.0.0.1:8445".to_owned()));
        let moved = Config::parse(
            &MINIMAL.replace("[listen]", "[listen]\nplatform = \"127.0.0.1:9445\""),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(moved.platform.origin, "https://localhost:9445");
        let old = err(&format!(
            "{MINIMAL}\n[platform]\nadmins = [\"ops@example.com\"]\n"
        ));
        assert!(
            old.contains("platform.admins") && old.contains("operators add"),
            "{old}"
        );
        for (key, bad) in [
            ("platform.origin", "origin = \"http://ops.example\""),
            ("platform.session_idle_seconds", "session_idle_seconds = 10"),
            (
                "platform.session_absolute_seconds",
                "session_absolute_seconds = 100",
            ),
        ] {
            let e = err(&format!("{MINIMAL}\n[platform]\n{bad}\n"));
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn shared_limits_are_off_by_default_and_their_password_never_in_the_file() {
        let c = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert!(c.redis.is_none());
        assert!(c.shared_limits(&|_| None).unwrap().is_none());

        let with = |redis: &str| format!("{MINIMAL}\n[redis]\n{redis}\n");
        for (key, bad) in [
            ("`instances`", "url = \"redis://127.0.0.1:6379\""),
            ("redis.url", "url = \"http://127.0.0.1:6379\"\ninstances = 3"),
            ("redis.url", "url = \"rediss://r:6380/#insecure\"\ninstances = 3"),
            ("redis.url", "url = \"redis://:hunter2@127.0.0.1:6379\"\ninstances = 3"),
            ("redis.url", "url = \"redis://u:hunter2@127.0.0.1:6379\"\ninstances = 3"),
            ("redis.instances", "url = \"redis://127.0.0.1:6379\"\ninstances = 0"),
            (
                "redis.timeout_ms",
                "url = \"redis://127.0.0.1:6379\"\ninstances = 3\ntimeout_ms = 0",
            ),
            (
                "redis.ca_file",
                "url = \"redis://127.0.0.1:6379\"\ninstances = 3\nca_file = \"/ca.pem\"",
            ),
            (
                "redis.password_file",
                "url = \"redis://127.0.0.1:6379\"\ninstances = 3\npassword_env = \"A\"\npassword_file = \"/b\"",
            ),
        ] {
            let e = err(&with(bad));
            assert!(e.contains(key), "{key}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }

        let c = Config::parse(
            &with("url = \"redis://127.0.0.1:6379/2\"\ninstances = 3\npassword_env = \"REDIS_PW\""),
            Path::new("t.toml"),
        )
        .unwrap();
        let r = c.redis.as_ref().unwrap();
        assert_eq!(
            (r.instances.get(), r.timeout, r.key_prefix.as_str()),
            (3, Duration::from_millis(50), "zonegate")
        );
        let e = c.shared_limits(&|_| None).unwrap_err().to_string();
        assert!(
            e.contains("redis.password_env") && e.contains("`REDIS_PW` is not set"),
            "{e}"
        );
        let set = |name: &str| (name == "REDIS_PW").then(|| "hunter2".to_owned());
        let shared = c.shared_limits(&set).unwrap().unwrap();
        assert!(!format!("{shared:?}").contains("hunter2"));
    }

    #[test]
    fn the_admin_listener_leaves_loopback_only_with_a_token() {
        let wide = MINIMAL.replace("admin = \"127.0.0.1:9090\"", "admin = \"0.0.0.0:9090\"");
        assert!(err(&wide).contains("listen.admin_token_file"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        let with_file = wide.replace(
            "admin = \"0.0.0.0:9090\"",
            &format!(
                "admin = \"0.0.0.0:9090\"\nadmin_token_file = {:?}",
                file.display().to_string()
            ),
        );
        let c = Config::parse(&with_file, Path::new("t.toml")).unwrap();
        // Named but unreadable, then too short: both stop the start, naming the key.
        assert!(c
            .admin_token()
            .unwrap_err()
            .to_string()
            .contains("listen.admin_token_file"));
        use std::os::unix::fs::PermissionsExt;
        let owner_only = || {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        std::fs::write(&file, "short\n").unwrap();
        owner_only();
        assert!(c
            .admin_token()
            .unwrap_err()
            .to_string()
            .contains("at least 32"));
        std::fs::write(&file, format!("{}\n", "a1".repeat(32))).unwrap();
        assert_eq!(c.admin_token().unwrap().unwrap().expose(), "a1".repeat(32));
        // Readable by others: no credential, refused with the fix.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = c.admin_token().unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // Loopback needs none.
        let c = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert!(c.admin_token().unwrap().is_none());
    }

    #[test]
    fn secrets_come_from_the_environment_never_the_file() {
        let with_db = |db: &str| format!("{MINIMAL}[database]\n{db}\n");
        let e = err(&with_db("url = \"postgres://z:hunter2@db/z\""));
        assert!(
            e.contains("database.url") && e.contains("password_env"),
            "{e}"
        );
        assert!(
            !e.contains("hunter2"),
            "the error must not repeat the password"
        );
        assert!(
            err(&with_db("url = \"postgres://z@db/z?password=hunter2\"")).contains("database.url")
        );

        let c = Config::parse(
            &with_db("url = \"postgres://z@db/z?sslmode=verify-full\"\npassword_env = \"DB_PW\""),
            Path::new("t.toml"),
        )
        .unwrap();
        let none = |_: &str| None;
        let e = c.database_connect_url(&none).unwrap_err().to_string();
        assert!(
            e.contains("database.password_env") && e.contains("`DB_PW` is not set"),
            "{e}"
        );
        let set = |name: &str| (name == "DB_PW").then(|| "s3cret".to_owned());
        assert_eq!(
            c.database_connect_url(&set).unwrap().expose(),
            "postgres://z:s3cret@db/z?sslmode=verify-full"
        );

        let prod = Config::parse(
            include_str!("../../../config/production.example.toml"),
            Path::new("production.example.toml"),
        )
        .unwrap();
        let e = prod.smtp_password(&none).unwrap_err().to_string();
        assert!(e.contains("ZONEGATE_SMTP_PASSWORD"), "{e}");
        let smtp = |name: &str| (name == "ZONEGATE_SMTP_PASSWORD").then(|| "pw".to_owned());
        assert_eq!(prod.smtp_password(&smtp).unwrap().unwrap().expose(), "pw");
        let e = prod.database_connect_url(&none).unwrap_err().to_string();
        assert!(e.contains("ZONEGATE_DATABASE_PASSWORD"), "{e}");
    }

    #[test]
    fn passwords_come_from_a_file_as_containers_mount_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("db-password");
        let with_file = |extra: &str| {
            format!(
                "{MINIMAL}\n[database]\nurl = \"postgres://z@db/z?sslmode=verify-full\"\npassword_file = \"{}\"\n{extra}",
                file.display()
            )
        };
        let c = Config::parse(&with_file(""), Path::new("t.toml")).unwrap();
        let none = |_: &str| None;
        let e = c.database_connect_url(&none).unwrap_err().to_string();
        assert!(
            e.contains("database.password_file") && e.contains("db-password"),
            "{e}"
        );
        std::fs::write(&file, "\n").unwrap();
        let e = c.database_connect_url(&none).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            c.database_connect_url(&none).unwrap().expose(),
            "postgres://z:s3cret@db/z?sslmode=verify-full"
        );
        let both = Config::parse(&with_file("password_env = \"DB_PW\""), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(both.contains("not both"), "{both}");
    }
}
