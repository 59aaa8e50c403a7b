//! `zonegate keys init | rotate`: the key directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::fail;
use crate::domain::keyring::KeyRing;

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
}

/// Run a keys subcommand.
pub(super) fn run(command: KeysCommand) -> ExitCode {
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
