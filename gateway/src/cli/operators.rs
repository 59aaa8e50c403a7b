//! `zonegate operators add | list | disable | enable`: the platform listener's operator
//! accounts, on the configured database and key ring. A new operator's password (generated,
//! unless given on stdin) and TOTP secret are printed once, here, and nowhere else.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use zeroize::Zeroizing;

use super::fail;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domain::audit::AuditLog;
use crate::domain::keyring::KeyRing;
use crate::domain::operators::{OperatorError, Operators};

#[derive(Debug, Subcommand)]
pub(super) enum OperatorsCommand {
    /// Create an operator: prints a generated password (or takes one with --password-stdin)
    /// and a TOTP secret for an authenticator app, both shown once.
    Add {
        email: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
    /// List operators: email, id, created, last login, disabled.
    List {
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
    /// Disable an operator: their sessions end and logins are refused.
    Disable {
        email: String,
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
    /// Enable a disabled operator again.
    Enable {
        email: String,
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read the password from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("{0}")]
    Operators(#[from] OperatorError),
    #[error("the operator was changed, but its audit event was not stored: {0}")]
    Audit(crate::domain::audit::AuditError),
}

impl CliError {
    /// 2 for input the operator can fix, 1 for a failure while running.
    fn code(&self) -> u8 {
        match self {
            CliError::Operators(
                OperatorError::InvalidEmail
                | OperatorError::Exists
                | OperatorError::NotFound
                | OperatorError::WeakPassword(_),
            ) => 2,
            _ => 1,
        }
    }
}

pub(super) fn run(command: OperatorsCommand) -> ExitCode {
    let config = match &command {
        OperatorsCommand::Add { config, .. }
        | OperatorsCommand::List { config }
        | OperatorsCommand::Disable { config, .. }
        | OperatorsCommand::Enable { config, .. } => config.clone(),
    };
    match with_operators(&config, command) {
        Ok(code) => code,
        Err(e) => fail(e.code(), &e),
    }
}

fn read_password() -> Result<Zeroizing<String>, CliError> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::Stdin)?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

fn with_operators(config_path: &Path, command: OperatorsCommand) -> Result<ExitCode, CliError> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return Ok(fail(2, &e)),
    };
    let ring = match KeyRing::load(&config.key_dir) {
        Ok(ring) => ring,
        Err(e) => return Ok(fail(2, &e)),
    };
    let password = match &command {
        OperatorsCommand::Add {
            password_stdin: true,
            ..
        } => Some(read_password()?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let db = match super::connect(&config).await {
            Ok(db) => db,
            Err(code) => return Ok(code),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (audit, writer) = AuditLog::spawn(db.clone(), clock.clone(), 64);
        let operators = Operators::new(
            db,
            &ring,
            config.bcrypt_cost,
            clock,
            audit.clone(),
            config.platform.operators.clone(),
        )?;
        let code = match command {
            OperatorsCommand::Add { email, .. } => {
                let new = operators
                    .add(&email, password.as_ref().map(|p| p.as_str()))
                    .await?;
                println!("added operator {} ({})", new.id, new.email);
                if let Some(generated) = &new.password {
                    println!("password: {}", generated.as_str());
                }
                println!("totp_secret: {}", new.enrolment.manual_key());
                println!("otpauth_uri: {}", new.enrolment.otpauth_uri());
                println!(
                    "Store the password and add the TOTP secret to an authenticator app now: neither is shown again. Sign in at the platform listener ({}).",
                    config.platform.origin
                );
                ExitCode::SUCCESS
            }
            OperatorsCommand::List { .. } => {
                println!(
                    "{:<32} {:<40} {:<10} {:<10} state",
                    "email", "id", "created", "last login"
                );
                for o in operators.list().await? {
                    let day = |t: Option<i64>| {
                        t.map_or("-".to_owned(), |t| {
                            zonegate_common::time::rfc3339_millis(t.saturating_mul(1000))
                                .chars()
                                .take(10)
                                .collect()
                        })
                    };
                    let state = if o.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<32} {:<40} {:<10} {:<10} {state}",
                        o.email,
                        o.id,
                        day(Some(o.created_at)),
                        day(o.last_login_at)
                    );
                }
                ExitCode::SUCCESS
            }
            OperatorsCommand::Disable { email, .. } => {
                operators.set_disabled(&email, true).await?;
                println!("disabled {email}: their sessions have ended");
                ExitCode::SUCCESS
            }
            OperatorsCommand::Enable { email, .. } => {
                operators.set_disabled(&email, false).await?;
                println!("enabled {email}");
                ExitCode::SUCCESS
            }
        };
        audit.flush().await.map_err(CliError::Audit)?;
        writer.abort();
        Ok(code)
    })
}
