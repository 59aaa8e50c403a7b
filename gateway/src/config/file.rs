//! The config file as written: serde structs that mirror the TOML, with its defaults. Nothing
//! here is trusted yet; [`super::Config::parse`] checks it and builds the validated form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) public_origin: String,
    pub(super) listen: RawListen,
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) tls: RawTls,
    pub(super) paths: RawPaths,
    #[serde(default)]
    pub(super) proxy: RawProxy,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) database: RawDatabase,
    #[serde(default)]
    pub(super) mail: RawMail,
    #[serde(default)]
    pub(super) accounts: RawAccounts,
    #[serde(default)]
    pub(super) api_keys: RawApiKeys,
    #[serde(default)]
    pub(super) platform: RawPlatform,
    #[serde(default)]
    pub(super) rate_limits: RawRateLimits,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) decision_log: RawDecisionLog,
    #[serde(default)]
    pub(super) tracing: RawTracing,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    pub(super) security_txt: Option<RawSecurityTxt>,
    /// Rate limits shared by every instance; without it each instance counts alone.
    pub(super) redis: Option<RawRedis>,
}

/// The Redis that holds the rate limits all instances share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    /// `redis://host:port[/db]` or `rediss://` (TLS); never with a password.
    pub(super) url: String,
    /// Name of the environment variable holding the Redis password (AUTH).
    pub(super) password_env: Option<String>,
    /// Or a file holding it.
    pub(super) password_file: Option<PathBuf>,
    /// With `rediss://`: the CA that signed Redis's certificate (else the system's roots).
    pub(super) ca_file: Option<PathBuf>,
    /// How many instances share the limits: while Redis is unreachable, each admits this
    /// share of every API limit on its own.
    pub(super) instances: u32,
    /// The longest a request waits for Redis before falling back.
    #[serde(default = "default_redis_timeout_ms")]
    pub(super) timeout_ms: u64,
    /// Prefix of every key, so one Redis can serve several deployments.
    #[serde(default = "default_redis_key_prefix")]
    pub(super) key_prefix: String,
}

fn default_redis_timeout_ms() -> u64 {
    50
}

fn default_redis_key_prefix() -> String {
    "zonegate".to_owned()
}

/// `/.well-known/security.txt` (RFC 9116); 404 without this section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurityTxt {
    pub(super) contact: Vec<String>,
    /// RFC 3339, in the future.
    pub(super) expires: String,
    pub(super) encryption: Option<String>,
    pub(super) policy: Option<String>,
    #[serde(default)]
    pub(super) preferred_languages: Vec<String>,
}

/// Prometheus metrics on the admin listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub(super) enabled: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics { enabled: true }
    }
}

/// OpenTelemetry traces, off unless `otlp_endpoint` is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTracing {
    /// The OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub(super) otlp_endpoint: Option<String>,
    pub(super) service_name: String,
    pub(super) sample_ratio: f64,
    pub(super) export_interval_ms: u64,
}

impl Default for RawTracing {
    fn default() -> Self {
        RawTracing {
            otlp_endpoint: None,
            service_name: "zonegate".into(),
            sample_ratio: 1.0,
            export_interval_ms: 5000,
        }
    }
}

/// One bucket as written: `{ requests = 10, window_seconds = 60 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    pub(super) requests: u32,
    pub(super) window_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRateLimits {
    /// Per client address on credential-guessing routes (login, signup, password reset,
    /// verification resend, TOTP/MFA): the routes an attacker hammers.
    pub(super) auth_strict: RawRate,
    /// Per client address on every other `/auth/*` route.
    pub(super) auth: RawRate,
    /// Per API key.
    pub(super) api_key: RawRate,
    /// Per org, over all of its API keys together.
    pub(super) org: RawRate,
    /// Per signed-in user (dashboard sessions).
    pub(super) user: RawRate,
    /// Per org, over all of its members' authorised session requests.
    pub(super) org_sessions: RawRate,
    /// Most keys (addresses, key ids, org ids) each limiter tracks; see ratelimit.rs.
    pub(super) max_tracked_keys: usize,
    /// IPv6 clients are counted by this prefix: one customer usually holds a whole /64.
    pub(super) ipv6_prefix: u8,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        RawRateLimits {
            auth_strict: RawRate {
                requests: 10,
                window_seconds: 60,
            },
            auth: RawRate {
                requests: 60,
                window_seconds: 60,
            },
            api_key: RawRate {
                requests: 600,
                window_seconds: 60,
            },
            org: RawRate {
                requests: 3000,
                window_seconds: 60,
            },
            user: RawRate {
                requests: 300,
                window_seconds: 60,
            },
            org_sessions: RawRate {
                requests: 1200,
                window_seconds: 60,
            },
            max_tracked_keys: 100_000,
            ipv6_prefix: 64,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAudit {
    /// Days an audit event is kept before the purge job deletes it.
    pub(super) retention_days: u32,
    /// How often the purge job runs.
    pub(super) purge_interval_seconds: u64,
    /// Events waiting to be written; past it they are logged but not stored.
    pub(super) queue: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            retention_days: 365,
            purge_interval_seconds: 6 * 60 * 60,
            queue: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDecisionLog {
    /// Log every authorisation decision's inputs, for `zonegate policy diff`.
    pub(super) enabled: bool,
    /// Days a decision is kept.
    pub(super) retention_days: u32,
    /// How often a window of decisions is stored (identical decisions within one are stored
    /// once, with a count).
    pub(super) flush_seconds: u64,
    /// Distinct decisions held per window; past it they are dropped and counted.
    pub(super) max_pending: usize,
}

impl Default for RawDecisionLog {
    fn default() -> Self {
        RawDecisionLog {
            enabled: true,
            retention_days: 30,
            flush_seconds: 10,
            max_pending: 50_000,
        }
    }
}

/// The platform surface (`listen.platform`): operators' sessions and the origin their
/// browsers send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPlatform {
    /// Replaced by operator accounts; present only to say so.
    pub(super) admins: Option<Vec<String>>,
    /// The https origin operators reach the platform listener at (default
    /// `https://localhost:<platform port>`).
    pub(super) origin: Option<String>,
    pub(super) session_idle_seconds: i64,
    pub(super) session_absolute_seconds: i64,
}

impl Default for RawPlatform {
    fn default() -> Self {
        let d = crate::domain::operators::OperatorsConfig::default();
        RawPlatform {
            admins: None,
            origin: None,
            session_idle_seconds: d.idle,
            session_absolute_seconds: d.absolute,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApiKeys {
    /// How long the old secret keeps working after a roll.
    pub(super) roll_grace_seconds: i64,
}

impl Default for RawApiKeys {
    fn default() -> Self {
        RawApiKeys {
            roll_grace_seconds: 24 * 60 * 60,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    /// Defaults to a SQLite file in the data directory.
    pub(super) url: Option<String>,
    /// Name of the environment variable holding the database password.
    pub(super) password_env: Option<String>,
    /// Or a file holding it (a container secret, e.g. `/run/secrets/db-password`).
    pub(super) password_file: Option<PathBuf>,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: u32,
}

fn default_max_connections() -> u32 {
    8
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMail {
    pub(super) from: Option<String>,
    /// Defaults to `outbox` in the data directory; used when no SMTP relay is configured.
    pub(super) outbox_dir: Option<PathBuf>,
    pub(super) smtp: Option<RawSmtp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) host: String,
    #[serde(default = "default_smtp_port")]
    pub(super) port: u16,
    pub(super) username: Option<String>,
    /// Name of the environment variable holding the SMTP password.
    pub(super) password_env: Option<String>,
    /// Or a file holding it.
    pub(super) password_file: Option<PathBuf>,
}

fn default_smtp_port() -> u16 {
    587
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAccounts {
    pub(super) bcrypt_cost: u32,
    pub(super) min_password_chars: usize,
    pub(super) session_ttl_seconds: i64,
    pub(super) refresh_idle_seconds: i64,
    pub(super) refresh_absolute_seconds: i64,
    pub(super) refresh_grace_seconds: i64,
    pub(super) verify_ttl_seconds: i64,
    pub(super) reset_ttl_seconds: i64,
    pub(super) resend_interval_seconds: i64,
    pub(super) cache_revalidate_seconds: i64,
    /// Shown in authenticator apps beside the account's email.
    pub(super) mfa_issuer: String,
}

impl Default for RawAccounts {
    fn default() -> Self {
        let d = crate::domain::accounts::AccountsConfig::default();
        RawAccounts {
            bcrypt_cost: 12,
            min_password_chars: d.min_password_chars,
            session_ttl_seconds: d.session_ttl,
            refresh_idle_seconds: d.refresh_idle,
            refresh_absolute_seconds: d.refresh_absolute,
            refresh_grace_seconds: d.refresh_grace,
            verify_ttl_seconds: d.verify_ttl,
            reset_ttl_seconds: d.reset_ttl,
            resend_interval_seconds: d.resend_interval,
            cache_revalidate_seconds: d.cache_revalidate,
            mfa_issuer: d.mfa_issuer,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) https: String,
    pub(super) http: Option<String>,
    pub(super) admin: String,
    pub(super) admin_token_file: Option<PathBuf>,
    /// The platform listener (operators only); loopback by default.
    #[serde(default = "default_platform_listener")]
    pub(super) platform: String,
}

fn default_platform_listener() -> String {
    "127.0.0.1:8445".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) threads: usize,
    pub(super) shutdown_grace_seconds: u64,
    pub(super) upstream_keepalive_pool: usize,
    pub(super) upstream_connect_timeout_ms: u64,
    pub(super) upstream_read_timeout_ms: u64,
    pub(super) max_gateway_body_bytes: usize,
    /// Time a client has to complete the TLS handshake.
    pub(super) tls_handshake_timeout_ms: u64,
    /// Time a client has to send a whole request head.
    pub(super) header_timeout_ms: u64,
    /// Longest wait for each read of a request body.
    pub(super) body_read_timeout_ms: u64,
    /// Longest a write to a client may wait for the client to read.
    pub(super) write_timeout_ms: u64,
    /// Time an idle keep-alive client connection waits for its next request.
    pub(super) keepalive_idle_seconds: u64,
    /// Largest request head (request line and headers) answered rather than refused with 431.
    pub(super) max_header_bytes: usize,
    /// Most header fields in a request head.
    pub(super) max_headers: usize,
    /// Client connections open at once, over all addresses.
    pub(super) max_connections: usize,
    /// Client connections open at once from one address (an IPv6 client by its prefix).
    pub(super) max_connections_per_address: usize,
    /// Where a new process started with `serve --upgrade` receives the listening sockets of
    /// the running one; unset, there are no graceful upgrades.
    pub(super) upgrade_socket: Option<PathBuf>,
    /// The user the gateway runs as. Started as root, it binds its listeners and then becomes
    /// this user; as root without it, it refuses to start.
    pub(super) user: Option<String>,
    /// The group it then runs as; default the user's primary group.
    pub(super) group: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            threads: 2,
            shutdown_grace_seconds: 10,
            upstream_keepalive_pool: 1024,
            upstream_connect_timeout_ms: 2_000,
            upstream_read_timeout_ms: 30_000,
            max_gateway_body_bytes: 64 * 1024,
            tls_handshake_timeout_ms: 10_000,
            header_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            keepalive_idle_seconds: 60,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_connections: 20_000,
            max_connections_per_address: 256,
            upgrade_socket: None,
            user: None,
            group: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    #[serde(default = "default_hsts")]
    pub(super) hsts_max_age_seconds: u64,
}

fn default_hsts() -> u64 {
    63_072_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPaths {
    pub(super) data_dir: PathBuf,
    pub(super) key_dir: PathBuf,
    pub(super) policies: PathBuf,
    pub(super) routes: PathBuf,
    /// A second policy directory evaluated beside the enforced one; differences are logged.
    #[serde(default)]
    pub(super) shadow_policies: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdentity {
    pub(super) audience: String,
    pub(super) ttl_seconds: u64,
    /// `HS256` (a key shared with the backend) or `EdDSA` (the backend holds a public key).
    pub(super) algorithm: crate::domain::identity::Algorithm,
}

impl Default for RawIdentity {
    fn default() -> Self {
        Self {
            audience: "zone-backend".into(),
            // Long enough for the hop to the backend and a little clock skew; short enough that
            // a captured assertion is useless soon (the backend also accepts each one once).
            ttl_seconds: 5,
            algorithm: crate::domain::identity::Algorithm::Hs256,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) address: String,
    /// Request headers beyond the standard end-to-end ones that this upstream receives.
    #[serde(default)]
    pub(super) forward_headers: Vec<String>,
    /// The largest request body forwarded to it; larger ones are answered 413.
    #[serde(default = "default_upstream_body")]
    pub(super) max_body_bytes: usize,
    /// Speak TLS to it, verified against `ca_file` for `server_name`.
    #[serde(default)]
    pub(super) tls: bool,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) server_name: Option<String>,
    /// A client certificate and key (PEM) for mutual TLS.
    pub(super) client_cert: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
}

fn default_upstream_body() -> usize {
    1 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) level: String,
    pub(super) format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "json".into(),
        }
    }
}
