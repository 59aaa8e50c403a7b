//! Prometheus metrics. The pipeline counts what it sees per request (requests, latency,
//! decisions, refusals, rate limits, authentication failures, upstream exchanges); the rest
//! is sampled when scraped from counters the domain keeps anyway (caches, queues, shadow
//! disagreements). The admin listener serves both at `/metrics` in the OpenMetrics text format,
//! which Prometheus reads.
//!
//! Label values are bounded: route and upstream names from the config, policy ids from the
//! policy set, status codes, and fixed words; never a path, an id, an address or a header.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::domain::policy::Decision;

/// The Content-Type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

/// The route label of a request refused before it was routed.
static NO_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("none"));

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    upstream: String,
    reused: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EffectLabel {
    effect: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    effect: &'static str,
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabel {
    limiter: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request and upstream latency: 100 µs to ~3.3 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// What the pipeline counts, shared by every thread.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabel>,
    upstream_seconds: Histograms<UpstreamLabel>,
    upstream_connections: Family<ConnectionLabels, Counter>,
    decisions: Family<EffectLabel, Counter>,
    decision_policies: Family<PolicyLabels, Counter>,
    refusals: Family<ReasonLabel, Counter>,
    rate_limited: Family<LimiterLabel, Counter>,
    authentication_failures: Family<KindLabel, Counter>,
    /// Off (`[metrics] enabled = false`): nothing is recorded and `/metrics` is not served.
    enabled: bool,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            enabled: true,
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            upstream_seconds: Family::new_with_constructor(latency),
            upstream_connections: Family::default(),
            decisions: Family::default(),
            decision_policies: Family::default(),
            refusals: Family::default(),
            rate_limited: Family::default(),
            authentication_failures: Family::default(),
        }
    }
}

/// One upstream's series in [`Metrics`], held by the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    seconds: Histogram,
    reused: Counter,
    new: Counter,
}

impl UpstreamMetrics {
    /// One exchange: whether its connection came from the pool, and the time from taking the
    /// connection to the response head.
    pub fn exchange(&self, reused: bool, elapsed: Duration) {
        if reused { &self.reused } else { &self.new }.inc();
        self.seconds.observe(elapsed.as_secs_f64());
    }
}

/// Values read when scraped, from counters kept elsewhere.
#[derive(Debug, Default)]
pub struct Samples {
    pub connections_open: Option<usize>,
    /// (cache, hits, misses)
    pub caches: Vec<(&'static str, u64, u64)>,
    pub audit_queued: usize,
    pub audit_dropped: u64,
    pub decision_log_dropped: u64,
    pub shadow_disagreements: u64,
    pub password_jobs_queued: usize,
    /// With `[redis]`: whether the shared limits are reachable, and how many checks found
    /// them unreachable (and fell back) since start.
    pub shared_limits: Option<(bool, u64)>,
}

/// A method as a label: the standard ones by name, anything else as `other`.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Metrics that record nothing: what the bench compares the default against.
    pub fn off() -> Metrics {
        Metrics {
            enabled: false,
            ..Metrics::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One answered request. `route` is `None` for a request refused before it was routed.
    pub fn request(
        &self,
        route: Option<Arc<str>>,
        method: Option<&http::Method>,
        status: u16,
        elapsed: Duration,
        refusal: Option<&'static str>,
    ) {
        if !self.enabled {
            return;
        }
        let route = route.unwrap_or_else(|| Arc::clone(&NO_ROUTE));
        self.request_seconds
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method.map_or("none", method_label),
                status,
            })
            .inc();
        if let Some(reason) = refusal {
            self.refusals.get_or_create(&ReasonLabel { reason }).inc();
        }
    }

    /// A decision of the one authorise call, and the policies that determined it.
    pub fn decision(&self, decision: &Decision) {
        if !self.enabled {
            return;
        }
        let effect = decision.label();
        self.decisions.get_or_create(&EffectLabel { effect }).inc();
        for policy in &decision.policies {
            self.decision_policies
                .get_or_create(&PolicyLabels {
                    effect,
                    policy: policy.clone(),
                })
                .inc();
        }
    }

    /// A request refused by a rate limiter (`api_key`, `org`, `user`, `auth_strict`, ...).
    pub fn rate_limited(&self, limiter: &'static str) {
        if !self.enabled {
            return;
        }
        self.rate_limited
            .get_or_create(&LimiterLabel { limiter })
            .inc();
    }

    /// A credential that did not authenticate: `api_key`, `session`, `missing`, `csrf` (the
    /// pipeline's own check), or one the account API refused ([`account_failure_kind`]).
    pub fn authentication_failed(&self, kind: &'static str) {
        if !self.enabled {
            return;
        }
        self.authentication_failures
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// The exchange metrics of the upstream `upstream`, looked up once (when the upstreams
    /// are built) so that recording an exchange hashes no label and allocates nothing. `None`
    /// when metrics are off.
    pub fn for_upstream(&self, upstream: &str) -> Option<UpstreamMetrics> {
        if !self.enabled {
            return None;
        }
        let connections = |reused| {
            self.upstream_connections
                .get_or_create(&ConnectionLabels {
                    upstream: upstream.to_owned(),
                    reused,
                })
                .clone()
        };
        Some(UpstreamMetrics {
            seconds: self
                .upstream_seconds
                .get_or_create(&UpstreamLabel {
                    upstream: upstream.to_owned(),
                })
                .clone(),
            reused: connections(true),
            new: connections(false),
        })
    }

    /// Everything, in the OpenMetrics text format.
    pub fn render(&self, samples: &Samples) -> String {
        let mut r = Registry::with_prefix("zonegate");
        r.register(
            "requests",
            "Requests answered, by route, method and status",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from reading a request head to the end of its answer, by route",
            self.request_seconds.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time from taking an upstream connection to its response head, by upstream",
            self.upstream_seconds.clone(),
        );
        r.register(
            "upstream_connections",
            "Upstream exchanges, by whether the connection came from the keep-alive pool",
            self.upstream_connections.clone(),
        );
        r.register(
            "decisions",
            "Decisions of the authorise stage, by effect",
            self.decisions.clone(),
        );
        r.register(
            "decision_policies",
            "Policies that determined a decision, by effect and policy id",
            self.decision_policies.clone(),
        );
        r.register(
            "refusals",
            "Requests refused by the gateway, by reason",
            self.refusals.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a rate limiter, by limiter",
            self.rate_limited.clone(),
        );
        r.register(
            "authentication_failures",
            "Credentials that did not authenticate, by kind",
            self.authentication_failures.clone(),
        );
        r.register(
            "shadow_disagreements",
            "Decisions where the shadow policy set disagreed with the enforced one",
            ConstCounter::new(samples.shadow_disagreements),
        );
        let caches = Family::<CacheLabels, Counter>::default();
        for (cache, hits, misses) in &samples.caches {
            for (result, n) in [("hit", hits), ("miss", misses)] {
                caches
                    .get_or_create(&CacheLabels { cache, result })
                    .inc_by(*n);
            }
        }
        r.register(
            "cache_lookups",
            "Cache lookups, by cache and whether they were answered from it",
            caches,
        );
        r.register(
            "audit_queue_events",
            "Security events waiting for the audit writer",
            gauge(samples.audit_queued),
        );
        r.register(
            "audit_dropped_events",
            "Security events logged but not stored (queue full or writer stopped)",
            ConstCounter::new(samples.audit_dropped),
        );
        r.register(
            "decision_log_dropped",
            "Decisions not written to the decision log (too many distinct in a window)",
            ConstCounter::new(samples.decision_log_dropped),
        );
        r.register(
            "password_jobs_queued",
            "Password hashes and checks waiting for a bcrypt thread",
            gauge(samples.password_jobs_queued),
        );
        if let Some((up, unreachable)) = samples.shared_limits {
            r.register(
                "shared_limits_up",
                "1 while the rate limits shared through Redis are reachable, else 0 (local shares apply)",
                gauge(usize::from(up)),
            );
            r.register(
                "shared_limits_unreachable",
                "Rate-limit checks that found Redis unreachable and fell back",
                ConstCounter::new(unreachable),
            );
        }
        if let Some(open) = samples.connections_open {
            r.register(
                "client_connections",
                "Client connections open on the public listener",
                gauge(open),
            );
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

fn gauge(n: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The kind of authentication failure an account API refusal (by its code) is, if it is one:
/// `account` (a password, refresh token or pending login presented to `/auth/*` did not
/// authenticate), `password` (a wrong current password on re-authentication), `totp` (a wrong
/// code) and `locked` (an account locked out).
pub fn account_failure_kind(code: &str) -> Option<&'static str> {
    match code {
        "unauthenticated" => Some("account"),
        "wrong_password" => Some("password"),
        "invalid_code" => Some("totp"),
        "account_locked" => Some("locked"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_render_with_bounded_labels() {
        let m = Metrics::default();
        m.request(
            Some("zones-list".into()),
            Some(&http::Method::GET),
            200,
            Duration::from_millis(3),
            None,
        );
        m.request(
            None,
            Some(&http::Method::from_bytes(b"BREW").unwrap()),
            404,
            Duration::from_micros(50),
            Some("not_found"),
        );
        m.rate_limited("api_key");
        let zones = m.for_upstream("zones").unwrap();
        zones.exchange(true, Duration::from_millis(1));
        let text = m.render(&Samples {
            caches: vec![("sessions", 5, 2)],
            connections_open: Some(3),
            shared_limits: Some((true, 4)),
            ..Samples::default()
        });
        for line in [
            r#"zonegate_requests_total{route="zones-list",method="GET",status="200"} 1"#,
            r#"zonegate_requests_total{route="none",method="other",status="404"} 1"#,
            r#"zonegate_refusals_total{reason="not_found"} 1"#,
            r#"zonegate_rate_limited_total{limiter="api_key"} 1"#,
            "zonegate_shared_limits_up 1",
            "zonegate_shared_limits_unreachable_total 4",
            r#"zonegate_upstream_connections_total{upstream="zones",reused="true"} 1"#,
            // Present from the start, at zero, like every upstream's series.
            r#"zonegate_upstream_connections_total{upstream="zones",reused="false"} 0"#,
            r#"zonegate_cache_lookups_total{cache="sessions",result="hit"} 5"#,
            r#"zonegate_cache_lookups_total{cache="sessions",result="miss"} 2"#,
            "zonegate_client_connections 3",
            r#"zonegate_request_duration_seconds_count{route="zones-list"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
