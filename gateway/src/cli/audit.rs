//! `zonegate audit purge | export`: the trail, from the command line (retention on demand,
//! JSON lines for incident response).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use zonegate_common::time::parse_rfc3339_millis;

use super::{fail, output};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domain::audit::AuditTrail;

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
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

#[derive(Debug, thiserror::Error)]
enum AuditCliError {
    #[error("--{0} must be an RFC 3339 time, like 2027-01-15T00:00:00Z")]
    Time(&'static str),
    #[error("--from must not be after --to")]
    Range,
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

/// Run an audit subcommand.
pub(super) fn run(command: AuditCommand) -> ExitCode {
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
        let trail = match super::connect(&config).await {
            Ok(db) => AuditTrail::new(db),
            Err(code) => return code,
        };
        match command {
            AuditCommand::Purge { .. } => {
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
                let mut sink = match output(out.as_deref()) {
                    Ok(sink) => sink,
                    Err(e) => return fail(1, &e),
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
