//! `zone-backend serve ...`: parse flags, set up JSON logging, run until
//! SIGTERM or Ctrl-C. All logic lives in the library.
//!
//! Exit codes: 0 after a clean shutdown, 2 for bad configuration (clap's own
//! flag errors included), 1 if the server fails while running.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use zone_backend::config::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let Command::Serve(args) = cli.command;
    let config = match zone_backend::BackendConfig::try_from(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("zone-backend: {error}");
            return ExitCode::from(2);
        }
    };
    let private = zone_backend::identity::private_signing_key_files(&config.key_dir);
    if !private.is_empty() {
        tracing::warn!(
            files = ?private,
            "the key directory holds the gateway's Ed25519 private keys (never read here); a backend needs only signing-<n>.pub"
        );
    }
    match zone_backend::serve(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "zone-backend failed");
            eprintln!("zone-backend: {error}");
            if error.is_config_error() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// JSON lines on stdout; level from `RUST_LOG`, default `info`.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Fails only if a subscriber is already installed, which is harmless.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .try_init();
}

/// Completes on Ctrl-C or SIGTERM. If a handler cannot be installed, that
/// signal is simply not awaited (and keeps its default effect).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}
