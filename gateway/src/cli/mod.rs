//! The `zonegate` command line. Each subcommand is a short function; errors are printed once,
//! naming what is wrong, and turned into an exit code (2 for bad configuration or input, 1 for
//! a failure while running). Nothing here panics on bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod audit;
mod decisions;
pub mod dev;
mod exit;
mod keys;
mod operators;
pub mod policy;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::server::{self, telemetry};
use audit::AuditCommand;
use decisions::DecisionsCommand;
pub(crate) use exit::{fail, output};
use keys::KeysCommand;
use operators::OperatorsCommand;

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
        /// Take the listening sockets over from the running gateway instead of binding them:
        /// start this, then send the old process SIGQUIT (needs [server] upgrade_socket).
        #[arg(long)]
        upgrade: bool,
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
    /// Platform operators: the accounts of the platform listener (password and TOTP).
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// The security team's tools: validate, test, explain and diff a policy set.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit trail: purge old events, export events for incident response.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The decision log: export logged decisions for `policy diff --input`.
    Decisions {
        #[command(subcommand)]
        command: DecisionsCommand,
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
        #[command(flatten)]
        explain: policy::ExplainArgs,
    },
    /// Replay logged decisions against a candidate set: which requests would change, grouped
    /// by route, principal kind and policy. Exit 1 when the candidate allows something the
    /// current set denies, unless --allow-widening.
    ///
    /// Example: zonegate policy diff --candidate ../pr/policies --from 7d
    Diff {
        #[command(flatten)]
        args: PolicyArgs,
        #[command(flatten)]
        diff: policy::DiffArgs,
    },
}

/// Parse the command line and run the chosen command.
pub fn main() -> ExitCode {
    // Everything the gateway writes (database, exports, outbox, keys, certificates) is for its
    // own user only, whatever umask it was started with.
    zonegate_sys::files::owner_only();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, upgrade } => serve(&config, upgrade),
        Command::CheckConfig { config } => check_config(&config),
        Command::Dev { config } => dev::run(&config),
        Command::Keys { command } => keys::run(command),
        Command::Operators { command } => operators::run(command),
        Command::Policy { command } => policy(command),
        Command::Audit { command } => audit::run(command),
        Command::Decisions { command } => decisions::run(command),
    }
}

/// The configured database, for a command that works on it. Connecting also brings the schema
/// up to date, so a command never meets an older table layout. A failure is printed, and its
/// exit code returned.
async fn connect(config: &Config) -> Result<crate::domain::storage::Db, ExitCode> {
    let url = config
        .database_connect_url(&crate::config::secrets::process_env)
        .map_err(|e| fail(2, &e))?;
    crate::domain::storage::Db::connect(url.expose(), 2)
        .await
        .map_err(|e| fail(1, &e))
}

fn serve(path: &std::path::Path, upgrade: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    if upgrade && config.server.upgrade_socket.is_none() {
        return fail(2, &server::process::UpgradeError::NotConfigured);
    }
    let _guard = telemetry::init(&config.log.level, config.log.json);
    // Before anything is opened or created: what the gateway makes belongs to its own user.
    let sockets = match server::process::become_configured_user(
        &config.server,
        &config.listen.addresses(),
        upgrade,
    ) {
        Ok(sockets) => sockets,
        Err(e) => return fail(2, &e),
    };
    let prepared = match server::prepare(config, Arc::new(SystemClock)) {
        Ok(p) => p,
        Err(e) => return fail(2, &e),
    };
    match server::run(prepared, sockets) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    // Who `serve` would run as: unknown names are errors; root without a user is what `serve`
    // refuses, though the config may be meant for another account.
    let root_warning =
        match server::process::plan(&config.server, zonegate_sys::users::effective_uid()) {
            Ok(_) | Err(server::process::IdentityError::CannotSwitch { .. }) => None,
            Err(e @ server::process::IdentityError::Root) => Some(e.to_string()),
            Err(e) => return fail(2, &e),
        };
    match server::check(config) {
        Ok(p) => {
            for warning in p.warnings.iter().chain(&root_warning) {
                eprintln!("zonegate: warning: {warning}");
            }
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
        PolicyCommand::Explain { args, explain } => pc::explain(&sources(args), &explain),
        PolicyCommand::Diff { args, diff } => pc::diff(&sources(args), &diff),
    }
}
