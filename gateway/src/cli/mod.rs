//! The `zonegate` command line. Each subcommand is a short function; errors are printed once,
//! naming what is wrong, and turned into an exit code (2 for bad configuration or input, 1 for
//! a failure while running). Nothing here panics on bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

pub mod dev;
mod exit;
pub mod policy;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::audit::AuditTrail;
use crate::domain::keyring::KeyRing;
use crate::domain::storage::Db;
use crate::server::{self, telemetry};
pub(crate) use exit::fail;
use zonegate_common::time::parse_rfc3339_millis;

#[derive(Debug, Parser)]
#[command(
    name = "zonegate",
    version,
    about = "Authentication and authorisation gateway for Delivery Zone"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway with a config file.
    Serve {
        #[arg(long, env = "ZONEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config, the key ring, TLS files, the route table and the policies, then exit.
    CheckConfig {
        #[arg(long, env = "ZONEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run the whole product locally: gateway plus the bundled zone backend on loopback, with
    /// keys, a development certificate and SQLite created under the data directory on first run.
    Dev {
        #[arg(long, default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
    /// Manage the key directory.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The security team's tools: validate, test and explain a policy set.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit trail: purge old events, export events for incident response.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Delete events older than [audit] retention_days now; prints how many.
    Purge {
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
    /// Write events in a time range as JSON lines, oldest first.
    Export {
        /// Start, inclusive, RFC 3339 (e.g. 2027-01-15T00:00:00Z).
        #[arg(long)]
        from: String,
        /// End, inclusive, RFC 3339.
        #[arg(long)]
        to: String,
        /// Only this org's events.
        #[arg(long)]
        org: Option<String>,
        /// Only events whose principal is this user (or API key) id.
        #[arg(long)]
        user: Option<String>,
        /// Output file (created, or truncated); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
}

/// Where the policy commands find the policies and the route table.
#[derive(Debug, clap::Args)]
struct PolicyArgs {
    /// Policy directory (schema.cedarschema, *.cedar, tests/); defaults to the configured one.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Route table; defaults to the configured one.
    #[arg(long)]
    routes: Option<PathBuf>,
    /// The gateway config that names the defaults.
    #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Parse and strictly validate the set against the schema and the route table.
    Validate {
        #[command(flatten)]
        args: PolicyArgs,
    },
    /// Run the decision tables under <policies>/tests/ (or --tables DIR); exit 1 on a mismatch.
    Test {
        #[command(flatten)]
        args: PolicyArgs,
        #[arg(long)]
        tables: Option<PathBuf>,
    },
    /// Show the decision for one request, the policies that determined it, and why.
    ///
    /// Example: zonegate policy explain --principal '{ user = "alice", role = "viewer" }'
    ///          --request 'DELETE /v1/orgs/acme/zones/z1'
    Explain {
        #[command(flatten)]
        args: PolicyArgs,
        /// Who asks, as in a decision table: '{ user = "u", role = "viewer", mfa = true }',
        /// '{ api_key = "k", org = "acme", scopes = ["zones:read"] }' or '{ anonymous = true }'.
        #[arg(long)]
        principal: String,
        /// A request line, 'METHOD /path': the route table gives the action and resource.
        #[arg(long, conflicts_with_all = ["action", "resource"])]
        request: Option<String>,
        /// The action, e.g. zones:read (with --resource, instead of --request).
        #[arg(long, requires = "resource")]
        action: Option<String>,
        /// The resource, as in a decision table: '{ zone = "z1", org = "acme" }'.
        #[arg(long, requires = "action")]
        resource: Option<String>,
        /// With --request: the org is suspended.
        #[arg(long)]
        suspended: bool,
        /// With --request: the org requires MFA.
        #[arg(long)]
        require_mfa: bool,
        /// Request context as a TOML inline table.
        #[arg(long)]
        context: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create the key directory (0700) with a first key of every purpose.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Add a new key of every purpose; new material uses it, old keys keep verifying.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Parse the command line and run the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Dev { config } => dev::run(&config),
        Command::Keys { command } => keys(command),
        Command::Policy { command } => policy(command),
        Command::Audit { command } => audit(command),
    }
}

#[derive(Debug, thiserror::Error)]
enum AuditCliError {
    #[error("--{0} must be an RFC 3339 time, like 2027-01-15T00:00:00Z")]
    Time(&'static str),
    #[error("--from must not be after --to")]
    Range,
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

fn audit(command: AuditCommand) -> ExitCode {
    let config_path = match &command {
        AuditCommand::Purge { config } | AuditCommand::Export { config, .. } => config.clone(),
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &AuditCliError::Runtime(e)),
    };
    runtime.block_on(async {
        // connect() also brings the schema up to date, so a purge or export never meets an
        // older table layout.
        let trail = match Db::connect(&config.database_url, 2).await {
            Ok(db) => AuditTrail::new(db),
            Err(e) => return fail(1, &e),
        };
        match command {
            AuditCommand::Purge { .. } => {
                use crate::clock::Clock;
                let now = i64::try_from(SystemClock.unix_millis()).unwrap_or(i64::MAX);
                match trail.purge(now, config.audit.retention_days).await {
                    Ok(n) => {
                        println!(
                            "purged {n} audit events older than {} days",
                            config.audit.retention_days
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(1, &e),
                }
            }
            AuditCommand::Export {
                from,
                to,
                org,
                user,
                out,
                ..
            } => {
                let Some(from) = parse_rfc3339_millis(&from) else {
                    return fail(2, &AuditCliError::Time("from"));
                };
                let Some(to) = parse_rfc3339_millis(&to) else {
                    return fail(2, &AuditCliError::Time("to"));
                };
                if from > to {
                    return fail(2, &AuditCliError::Range);
                }
                let mut sink: Box<dyn std::io::Write> = match &out {
                    Some(path) => match std::fs::File::create(path) {
                        Ok(f) => Box::new(std::io::BufWriter::new(f)),
                        Err(source) => {
                            return fail(
                                1,
                                &AuditCliError::Create {
                                    path: path.clone(),
                                    source,
                                },
                            )
                        }
                    },
                    None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                };
                match trail
                    .export(from, to, org.as_deref(), user.as_deref(), &mut sink)
                    .await
                {
                    Ok(n) => {
                        // The count goes to stderr so stdout stays pure JSON lines.
                        eprintln!("exported {n} audit events");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(1, &e),
                }
            }
        }
    })
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    let _guard = telemetry::init(&config.log.level, config.log.json);
    let prepared = match server::prepare(config, Arc::new(SystemClock)) {
        Ok(p) => p,
        Err(e) => return fail(2, &e),
    };
    match server::run(prepared) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    match server::check(config) {
        Ok(p) => {
            println!(
                "config OK: {} routes, policy set {}",
                p.gateway.routes.routes().len(),
                p.gateway.policy.active_hash()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, &e),
    }
}

fn policy(command: PolicyCommand) -> ExitCode {
    use policy::{self as pc, Sources};
    let sources = |a: PolicyArgs| Sources {
        policies: a.policies,
        routes: a.routes,
        config: a.config,
    };
    match command {
        PolicyCommand::Validate { args } => pc::validate(&sources(args)),
        PolicyCommand::Test { args, tables } => pc::test(&sources(args), tables.as_deref()),
        PolicyCommand::Explain {
            args,
            principal,
            request,
            action,
            resource,
            suspended,
            require_mfa,
            context,
        } => pc::explain(
            &sources(args),
            &pc::ExplainArgs {
                principal,
                request,
                action,
                resource,
                suspended,
                require_mfa,
                context,
            },
        ),
    }
}

fn keys(command: KeysCommand) -> ExitCode {
    let (verb, result) = match command {
        KeysCommand::Init { dir } => ("created", KeyRing::init(&dir)),
        KeysCommand::Rotate { dir } => ("added", KeyRing::rotate(&dir)),
    };
    match result {
        Ok(ids) => {
            // Only ids are printed, never key material.
            println!("{verb} keys: {}", ids.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, &e),
    }
}
