//! Logging: JSON lines through `tracing`, written by a background thread so a slow terminal or
//! pipe never stalls a proxy thread. Values are JSON-escaped by the formatter, so CR, LF and
//! control characters from requests cannot forge log lines.
//!
//! Never log a credential: events take ids and kinds, not header values.

use std::net::IpAddr;
use std::time::Duration;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::policy::Decision;

/// Start logging to stdout. Keep the guard alive until exit so buffered lines are flushed.
/// `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, json: bool) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    // A second init (tests that start several gateways in one process) keeps the first.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    guard
}

/// The one access event per request.
#[derive(Debug)]
pub struct AccessEvent<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    pub client: Option<IpAddr>,
    pub principal_kind: Option<&'a str>,
    pub principal_id: Option<&'a str>,
    pub decision: Option<&'a Decision>,
    pub rejection: Option<&'static str>,
}

impl AccessEvent<'_> {
    pub fn emit(&self) {
        let policies = self.decision.map(|d| d.policies.join(","));
        let errors = self
            .decision
            .filter(|d| !d.errors.is_empty())
            .map(|d| d.errors.join("; "));
        tracing::info!(
            target: "zonegate::access",
            event = "http_request",
            request_id = self.request_id,
            method = self.method,
            path = self.path,
            route = self.route,
            status = self.status,
            duration_us = u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX),
            client = self.client.map(tracing::field::display),
            principal_kind = self.principal_kind,
            principal_id = self.principal_id,
            decision = self.decision.map(Decision::label),
            policies = policies.as_deref(),
            policy_errors = errors.as_deref(),
            rejection = self.rejection,
        );
    }
}
