//! Background work of a running gateway, each a pingora background service on its own
//! runtime: reloading policies on SIGHUP, and maintenance (the audit writer, the retention
//! purge, the rate limiters' idle-key sweep, the shutdown record).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::Gateway;
use crate::domain::audit::{AuditEvent, AuditWriter, SecurityEvent};

/// Reloads the policy set on SIGHUP, for as long as the server runs.
#[derive(Debug)]
pub struct ReloadOnHangup {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::error!(
                target: "zonegate::server",
                event = "sighup_unavailable",
                "cannot listen for SIGHUP; reload through the admin listener"
            );
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    // A refused set is recorded by reload_policies; the old set stays.
                    let _ = self.gateway.reload_policies("sighup");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How often idle rate-limit keys are dropped.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// The audit writer, the retention purge and the limiter sweep.
pub struct Maintenance {
    gateway: Arc<Gateway>,
    writer: std::sync::Mutex<Option<AuditWriter>>,
    retention_days: u32,
    purge_every: Duration,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

impl Maintenance {
    pub fn new(
        gateway: Arc<Gateway>,
        writer: AuditWriter,
        retention_days: u32,
        purge_every: Duration,
    ) -> Maintenance {
        Maintenance {
            gateway,
            writer: std::sync::Mutex::new(Some(writer)),
            retention_days,
            purge_every,
        }
    }
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let writer = writer.map(|w| tokio::spawn(w.run()));
        let retention = self.gateway.trail.spawn_retention(
            self.gateway.clock.clone(),
            self.retention_days,
            self.purge_every,
        );
        let mut sweep = tokio::time::interval(LIMITER_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.gateway.limits.maintain(),
                _ = shutdown.changed() => break,
            }
        }
        retention.abort();
        self.gateway
            .audit
            .record(AuditEvent::new(SecurityEvent::Shutdown));
        // Write what is queued before the process ends (bounded: a stuck database must not
        // hold up shutdown).
        let flushed =
            tokio::time::timeout(Duration::from_secs(2), self.gateway.audit.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!(target: "zonegate::audit", event = "audit_flush_fail", "audit events queued at shutdown may not be stored");
        }
        if let Some(writer) = writer {
            writer.abort();
        }
    }
}
