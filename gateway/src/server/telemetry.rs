//! Logging: JSON lines through `tracing`, written by a background thread so a slow terminal or
//! pipe never stalls a proxy thread. Values are JSON-escaped by the formatter, so CR, LF and
//! control characters from requests cannot forge log lines.
//!
//! Targets: `zonegate::security` carries the security events (one name each, see
//! `domain::audit`), `zonegate::access` one line per request, and the others (`zonegate::audit`,
//! `zonegate::mail`, `zonegate::storage`, ...) the gateway's own operation. Never a credential:
//! events take ids and kinds, not header values.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

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
