//! `zonegate dev`: the whole product on one machine, on embedded defaults.
//!
//! On first run it creates the data directory, the key ring and an ECDSA development
//! certificate; then it starts the bundled zone backend (SQLite under the data directory) on
//! the loopback address the config gives the `zones` upstream, and serves the gateway in front
//! of it. Later runs reuse what exists.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::fail;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::keyring::KeyRing;
use crate::server::{self, telemetry, tls};

/// Name of the upstream the bundled backend serves.
pub const BACKEND_UPSTREAM: &str = "zones";

pub fn run(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    let _guard = telemetry::init(&config.log.level, config.log.json);
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        eprintln!("zonegate: cannot create {}: {e}", config.data_dir.display());
        return ExitCode::from(1);
    }
    if !config.key_dir.exists() {
        match KeyRing::init(&config.key_dir) {
            Ok(ids) => tracing::info!(event = "keys_created", keys = %ids.join(",")),
            Err(e) => return fail(2, &e),
        }
    }
    match tls::ensure_dev_certificate(&config.tls.cert, &config.tls.key) {
        Ok(true) => tracing::info!(
            event = "dev_certificate_created",
            cert = %config.tls.cert.display(),
            "self-signed development certificate for localhost"
        ),
        Ok(false) => {}
        Err(e) => return fail(2, &e),
    }
    let Some(backend) = config.upstreams.get(BACKEND_UPSTREAM) else {
        eprintln!("zonegate: config key `upstreams.{BACKEND_UPSTREAM}` is required by `dev`");
        return ExitCode::from(2);
    };
    if let Err(e) = start_backend(&config, backend.address) {
        eprintln!("zonegate: cannot start the zone backend: {e}");
        return ExitCode::from(1);
    }
    let prepared = match server::prepare(config, Arc::new(SystemClock)) {
        Ok(p) => p,
        Err(e) => return fail(2, &e),
    };
    // stderr: stdout carries the JSON log lines only.
    eprintln!(
        "zonegate dev: https on {} (public origin {}), admin on {}, platform on {} (operators: `zonegate operators add EMAIL`)",
        prepared.config.listen.https,
        prepared.config.public_origin,
        prepared.config.listen.admin,
        prepared.config.listen.platform
    );
    if let Err(e) = server::process::ensure_free(&prepared.config.listen.addresses()) {
        return fail(2, &e);
    }
    // Local development: whoever runs it, root included, is who the product runs as.
    match server::run(prepared, server::process::Sockets::Bind) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

/// Start the bundled backend on its own runtime thread; returns once it is listening (or why
/// it could not start). It runs until the process exits.
fn start_backend(config: &Config, address: std::net::SocketAddr) -> Result<(), String> {
    let backend = zone_backend::BackendConfig {
        listen: address,
        database_url: format!("sqlite://{}", config.data_dir.join("zones.db").display()),
        key_dir: config.key_dir.clone(),
        audience: config.identity.audience.clone(),
        replay_cache_entries: zone_backend::identity::DEFAULT_REPLAY_CACHE_ENTRIES,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("zone-backend".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                match zone_backend::bind(backend, std::future::pending()).await {
                    Ok((addr, serving)) => {
                        tracing::info!(event = "backend_started", address = %addr);
                        let _ = ready_tx.send(Ok(()));
                        if let Err(e) = serving.await {
                            tracing::error!(event = "backend_failed", error = %e);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv()
        .map_err(|_| "the backend thread exited before it was ready".to_owned())?
}
