//! `zonegate keys init | rotate | status | retire`: the key directory, and finishing a rotation
//! (see `crate::domain::rotation`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::fail;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domain::audit::{store as audit_store, AuditEvent, SecurityEvent};
use crate::domain::keyring::KeyRing;
use crate::domain::rotation::{self, KeyUse};

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
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
    /// For each key of the configured key directory: whether it is active, and what stored
    /// passwords, API keys, logins and TOTP seeds still depend on it.
    Status {
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
    /// Delete an old key, refusing the active key of a purpose and any key something stored
    /// still depends on (see `keys status`). Recorded in the audit trail.
    Retire {
        /// The key id, e.g. pepper-1.
        id: String,
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start a runtime: {0}")]
struct RuntimeError(std::io::Error);

/// Run a keys subcommand.
pub(super) fn run(command: KeysCommand) -> ExitCode {
    let (verb, result) = match command {
        KeysCommand::Init { dir } => ("created", KeyRing::init(&dir)),
        KeysCommand::Rotate { dir } => ("added", KeyRing::rotate(&dir)),
        KeysCommand::Status { config } => return with_ring(&config, None),
        KeysCommand::Retire { id, config } => return with_ring(&config, Some(&id)),
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

/// `status` (no id) or `retire id`, on the configured key directory and database.
fn with_ring(config: &std::path::Path, retire: Option<&str>) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    let ring = match KeyRing::load(&config.key_dir) {
        Ok(ring) => ring,
        Err(e) => return fail(2, &e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &RuntimeError(e)),
    };
    let now_ms = i64::try_from(SystemClock.unix_millis()).unwrap_or(i64::MAX);
    let now = now_ms / 1000;
    let idle = config.accounts.refresh_idle;
    runtime.block_on(async {
        let db = match super::connect(&config).await {
            Ok(db) => db,
            Err(code) => return code,
        };
        let Some(id) = retire else {
            return match rotation::dependents(&db, &ring, now, idle).await {
                Ok(uses) => {
                    print_status(&uses);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e),
            };
        };
        let usage = match rotation::check_retire(&db, &ring, id, now, idle).await {
            Ok(usage) => usage,
            Err(e @ rotation::RetireError::Store(_)) => return fail(1, &e),
            Err(e) => return fail(2, &e),
        };
        if let Err(e) = KeyRing::retire(&config.key_dir, &usage.id) {
            return fail(1, &e);
        }
        let event = AuditEvent::new(SecurityEvent::KeyRetired)
            .at(now_ms)
            .detail("via", "cli")
            .detail("key", usage.id.as_str())
            .detail("purpose", usage.purpose.name());
        if let Err(e) = audit_store::insert(&db, &[event]).await {
            // The key is gone already; the operator learns the record is missing.
            eprintln!("zonegate: warning: the retirement was not recorded in the audit trail: {e}");
        }
        println!("retired {}: its file is deleted", usage.id);
        ExitCode::SUCCESS
    })
}

fn print_status(uses: &[KeyUse]) {
    println!(
        "{:<12} {:<9} {:<7} depends on it",
        "key", "purpose", "state"
    );
    for u in uses {
        let state = if u.active { "active" } else { "old" };
        let what = match (u.active, u.dependents()) {
            (true, _) => "(makes new material)".to_owned(),
            (false, 0) => "nothing stored: can be retired".to_owned(),
            (false, _) => u.to_string(),
        };
        println!("{:<12} {:<9} {state:<7} {what}", u.id, u.purpose.name());
    }
}
