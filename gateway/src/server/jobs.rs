//! Background work of a running gateway, each a pingora background service on its own
//! runtime: reloading policies on SIGHUP, and maintenance (the audit and decision log writers,
//! their retention purges, the rate limiters' idle-key sweep, re-sealing TOTP seeds after a key
//! rotation, the shutdown record).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::Gateway;
use crate::domain::audit::{AuditEvent, AuditWriter, SecurityEvent};
use crate::domain::decisions::DecisionWriter;

/// Reloads the policy set on SIGHUP, for as long as the server runs.
#[derive(Debug)]
pub struct ReloadOnHangup {
    pub gateway: Arc<Gateway>,
    /// The public listener's certificate, re-read from its files on the same signal.
    pub certs: Arc<super::tls::CertResolver>,
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
                    // A renewed certificate applies to new connections; a broken pair of
                    // files leaves the old certificate in use.
                    let _ = self.certs.reload_logged("sighup");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Listens for what other instances change (PostgreSQL), for as long as the server runs.
#[derive(Debug)]
pub struct ListenForInvalidations {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for ListenForInvalidations {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let g = &self.gateway;
        let Some(listener) = &g.invalidation else {
            return;
        };
        let clock = g.clock.clone();
        let gateway = g.clone();
        let listening = listener.run(
            g.pipeline.services.clone(),
            g.db.clone(),
            move || {
                // Another instance loaded a new policy set from its files; this one loads its
                // own (a refusal is recorded and the old set stays, as for SIGHUP).
                let _ = gateway.reload_policies(super::PEER_TRIGGER);
            },
            move || i64::try_from(clock.unix_seconds()).unwrap_or(i64::MAX),
        );
        tokio::select! {
            () = listening => {}
            _ = shutdown.changed() => {}
        }
        // No longer listening: readiness must not say otherwise.
        listener
            .state
            .mark_down(i64::try_from(g.clock.unix_seconds()).unwrap_or(i64::MAX));
    }
}

/// Keeps the connection to the shared rate limits (Redis): connects, and pings once a second,
/// so an instance notices Redis going and coming back even when no request asks.
#[derive(Debug)]
pub struct KeepSharedLimits {
    pub gateway: Arc<Gateway>,
}

/// How often the shared limits' connection is checked (and re-made while down): the longest
/// API traffic stays on local limits after Redis is back.
const SHARED_LIMITS_KEEP: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for KeepSharedLimits {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(store) = self.gateway.limits.shared_store() else {
            return;
        };
        let mut every = tokio::time::interval(SHARED_LIMITS_KEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => store.keep().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How often idle rate-limit keys are dropped and ended windows of repeated denials summarised.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// How often seeds sealed under an older `totp` key are re-sealed (also once at start), so a
/// rotated key can be retired within the hour.
const RESEAL_EVERY: Duration = Duration::from_secs(60 * 60);

/// The background writers the maintenance service runs.
#[derive(Debug)]
pub struct Writers {
    pub audit: AuditWriter,
    pub decisions: Option<DecisionWriter>,
}

/// How long the audit trail and the decision log are kept, and how often they are purged.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit_days: u32,
    pub decision_days: u32,
    pub every: Duration,
}

/// The writers, the retention purges and the limiter sweep.
pub struct Maintenance {
    gateway: Arc<Gateway>,
    writers: std::sync::Mutex<Option<Writers>>,
    retention: Retention,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Maintenance {
    pub fn new(gateway: Arc<Gateway>, writers: Writers, retention: Retention) -> Maintenance {
        Maintenance {
            gateway,
            writers: std::sync::Mutex::new(Some(writers)),
            retention,
        }
    }

    /// Delete operator sessions nothing can use any more (hourly, with the re-seal).
    async fn purge_operator_sessions(&self) {
        match self
            .gateway
            .pipeline
            .services
            .operators
            .purge_sessions()
            .await
        {
            Ok(deleted) => tracing::info!(
                target: "zonegate::operators",
                event = "operator_sessions_purged",
                deleted
            ),
            Err(e) => tracing::warn!(
                target: "zonegate::operators",
                event = "operator_sessions_purge_fail",
                error = %e
            ),
        }
    }

    /// Purge decisions past their retention; failures are logged and retried next time.
    async fn purge_decisions(&self) {
        let g = &self.gateway;
        let now = i64::try_from(g.clock.unix_millis()).unwrap_or(i64::MAX);
        let days = self.retention.decision_days;
        match g.decision_table.purge(now, days).await {
            Ok(deleted) => tracing::info!(
                target: "zonegate::decisions",
                event = "decision_log_purged",
                deleted,
                retention_days = days
            ),
            Err(e) => tracing::error!(
                target: "zonegate::decisions",
                event = "decision_log_purge_fail",
                error = %e
            ),
        }
    }
}

impl Maintenance {
    /// Record the keys this instance makes new material with (at start and every minute), so
    /// `keys retire` waits until it runs on a rotated ring. A failure is logged; the record
    /// then ages out, which only lets a retirement go ahead later than it could.
    async fn note_keys_in_use(&self) {
        let g = &self.gateway;
        let now = i64::try_from(g.clock.unix_seconds()).unwrap_or(i64::MAX);
        if let Err(e) =
            crate::domain::rotation::note_in_use(&g.db, &g.instance_id, &g.key_ring_active, now)
                .await
        {
            tracing::warn!(target: "zonegate::server", event = "key_use_record_fail", error = %e);
        }
    }

    /// Re-seal TOTP seeds made under an older key (`keys rotate`); the outcome is logged, and
    /// recorded when anything moved or cannot be read.
    async fn reseal_seeds(&self) {
        let g = &self.gateway;
        match g.pipeline.services.accounts.mfa().reseal_all().await {
            Ok(done) => {
                tracing::info!(
                    target: "zonegate::mfa",
                    event = "totp_reseal",
                    resealed = done.resealed,
                    unreadable = done.unreadable,
                    pruned_enrolments = done.pruned
                );
                if done.resealed > 0 || done.unreadable > 0 {
                    g.audit.record(
                        AuditEvent::new(SecurityEvent::TotpSeedsResealed)
                            .detail("resealed", done.resealed)
                            .detail("unreadable", done.unreadable),
                    );
                }
            }
            Err(e) => tracing::error!(
                target: "zonegate::mfa",
                event = "totp_reseal_fail",
                error = %e
            ),
        }
        match g.pipeline.services.operators.reseal_all().await {
            Ok((0, 0)) => {}
            Ok((resealed, unreadable)) => g.audit.record(
                AuditEvent::new(SecurityEvent::TotpSeedsResealed)
                    .detail("resealed", resealed)
                    .detail("unreadable", unreadable)
                    .detail("of", "operators"),
            ),
            Err(e) => tracing::error!(
                target: "zonegate::operators",
                event = "totp_reseal_fail",
                error = %e
            ),
        }
    }
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let writers = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let (audit_writer, decision_writer) = match writers {
            Some(w) => (
                Some(tokio::spawn(w.audit.run())),
                w.decisions.map(|d| tokio::spawn(d.run())),
            ),
            None => (None, None),
        };
        let retention = self.gateway.trail.spawn_retention(
            self.gateway.clock.clone(),
            self.retention.audit_days,
            self.retention.every,
        );
        let mut sweep = tokio::time::interval(LIMITER_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(self.retention.every.max(Duration::from_secs(1)));
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reseal = tokio::time::interval(RESEAL_EVERY);
        reseal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    self.gateway.limits.maintain();
                    self.gateway.audit.sweep_repeats();
                    self.note_keys_in_use().await;
                }
                _ = purge.tick(), if decision_writer.is_some() => self.purge_decisions().await,
                _ = reseal.tick() => {
                    self.reseal_seeds().await;
                    self.purge_operator_sessions().await;
                }
                _ = shutdown.changed() => break,
            }
        }
        retention.abort();
        // Mails and tokens of requests already answered (signup, reset, resend) go out before
        // the process ends (bounded, like the flush below).
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.gateway.pipeline.services.accounts.settle(),
        )
        .await;
        // Counted denials are recorded before the process ends, whatever their window.
        self.gateway.audit.sweep_repeats_all();
        self.gateway
            .audit
            .record(AuditEvent::new(SecurityEvent::Shutdown));
        // Write what is queued before the process ends (bounded: a stuck database must not
        // hold up shutdown).
        let flushed = tokio::time::timeout(Duration::from_secs(2), async {
            // Stopped: it makes nothing with its keys any more.
            let g = &self.gateway;
            let _ = crate::domain::rotation::forget_instance(&g.db, &g.instance_id).await;
            let audit = self.gateway.audit.flush().await.is_ok();
            let decisions = self.gateway.decisions.flush().await.is_ok();
            audit && decisions
        })
        .await;
        if !matches!(flushed, Ok(true)) {
            tracing::warn!(target: "zonegate::audit", event = "audit_flush_fail", "audit events or decisions queued at shutdown may not be stored");
        }
        for writer in [audit_writer, decision_writer].into_iter().flatten() {
            writer.abort();
        }
    }
}
