//! Prometheus metrics. The pipeline counts what it sees per request (requests, latency,
//! decisions, refusals, rate limits, authentication failures, upstream exchanges); the rest
//! is sampled when scraped from counters the domain keeps anyway (caches, queues, shadow
//! disagreements). The admin listener serves both at `/metrics` in the OpenMetrics text format,
//! which Prometheus reads.
//!
//! Label values are bounded: route and upstream names from the config, policy ids from the
//! policy set, status codes, and fixed words; never a path, an id, an address or a header.

mod latency;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::domain::policy::Decision;
use latency::Latency;

/// The Content-Type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

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

/// What the pipeline counts, shared by every thread.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabel, Latency>,
    upstream_seconds: Family<UpstreamLabel, Latency>,
    upstream_connections: Family<ConnectionLabels, Counter>,
    decisions: Family<EffectLabel, Counter>,
    /// `decisions`' two series, looked up once.
    allowed: Counter,
    denied: Counter,
    /// The series of requests refused before they were routed (route `none`).
    unrouted: RouteMetrics,
    decision_policies: Family<PolicyLabels, Counter>,
    refusals: Family<ReasonLabel, Counter>,
    rate_limited: Family<LimiterLabel, Counter>,
    authentication_failures: Family<KindLabel, Counter>,
    /// Off (`[metrics] enabled = false`): nothing is recorded and `/metrics` is not served.
    enabled: bool,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let decisions = Family::<EffectLabel, Counter>::default();
        let effect = |allowed| {
            let effect = Decision::label_of(allowed);
            decisions.get_or_create_owned(&EffectLabel { effect })
        };
        let (allowed, denied) = (effect(true), effect(false));
        let mut metrics = Metrics {
            enabled: true,
            requests: Family::default(),
            request_seconds: Family::default(),
            upstream_seconds: Family::default(),
            upstream_connections: Family::default(),
            decisions,
            allowed,
            denied,
            unrouted: RouteMetrics::default(),
            decision_policies: Family::default(),
            refusals: Family::default(),
            rate_limited: Family::default(),
            authentication_failures: Family::default(),
        };
        metrics.unrouted = metrics.for_route(&Arc::from("none"));
        metrics
    }
}

/// One route's series, looked up once (when the route table is bound to the metrics) so that
/// a request on the route hashes no label and takes no lock: its latency histogram, and the
/// request counters of the first (method, status) pairs it answers with. Records nothing when
/// metrics are off or the route was never bound.
#[derive(Debug, Clone, Default)]
pub struct RouteMetrics(Option<Arc<RouteSeries>>);

struct RouteSeries {
    route: Arc<str>,
    seconds: Latency,
    /// The shared family, for the pairs past the slots.
    requests: Family<RequestLabels, Counter>,
    slots: [StatusSlot; SLOTS],
}

/// The route's name only: the shared family would print every route's counts.
impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// How many (method, status) pairs a route keeps at hand: a route answers with few.
const SLOTS: usize = 8;

/// A (method, status) pair's counter, claimed by the first request to answer with it.
#[derive(Debug, Default)]
struct StatusSlot {
    /// [`slot_key`] of the pair; 0 while free.
    key: AtomicU32,
    counter: OnceLock<Counter>,
}

/// A method label's index in [`METHODS`] and a status, as one nonzero number.
fn slot_key(method: u8, status: u16) -> u32 {
    (u32::from(method) + 1) << 16 | u32::from(status)
}

impl RouteMetrics {
    fn record(&self, method: u8, status: u16, elapsed: Duration) {
        let Some(series) = &self.0 else {
            return;
        };
        series.seconds.observe(elapsed);
        let labels = || RequestLabels {
            route: Arc::clone(&series.route),
            method: METHODS.get(usize::from(method)).copied().unwrap_or("other"),
            status,
        };
        let key = slot_key(method, status);
        for slot in &series.slots {
            // Claim a free slot, or find the pair's own. Whoever claims it, the counter is
            // the family's one series for the pair, created once by `get_or_init`.
            let claimed = match slot.key.load(Ordering::Acquire) {
                0 => match slot
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => true,
                    Err(other) => other == key,
                },
                other => other == key,
            };
            if claimed {
                slot.counter
                    .get_or_init(|| series.requests.get_or_create_owned(&labels()))
                    .inc();
                return;
            }
        }
        series.requests.get_or_create(&labels()).inc();
    }
}

/// One upstream's series in [`Metrics`], held by the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    seconds: Latency,
    reused: Counter,
    new: Counter,
}

impl UpstreamMetrics {
    /// One exchange: whether its connection came from the pool, and the time from taking the
    /// connection to the response head.
    pub fn exchange(&self, reused: bool, elapsed: Duration) {
        if reused { &self.reused } else { &self.new }.inc();
        self.seconds.observe(elapsed);
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

/// The method labels, by [`method_index`].
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other", "none",
];

/// A method's label in [`METHODS`]: the standard ones by name, anything else as `other`, and
/// `none` for a request whose head could not be read.
fn method_index(method: Option<&http::Method>) -> u8 {
    let Some(method) = method else {
        return 8;
    };
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::PATCH => 4,
        http::Method::DELETE => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
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

    /// The series of the route `route`, looked up once (when the route table is bound), so
    /// that recording a request hashes no label. Records nothing when metrics are off.
    pub fn for_route(&self, route: &Arc<str>) -> RouteMetrics {
        if !self.enabled {
            return RouteMetrics::default();
        }
        RouteMetrics(Some(Arc::new(RouteSeries {
            route: Arc::clone(route),
            seconds: self.request_seconds.get_or_create_owned(&RouteLabel {
                route: Arc::clone(route),
            }),
            requests: self.requests.clone(),
            slots: Default::default(),
        })))
    }

    /// One answered request. `route` is `None` for a request refused before it was routed.
    pub fn request(
        &self,
        route: Option<&RouteMetrics>,
        method: Option<&http::Method>,
        status: u16,
        elapsed: Duration,
        refusal: Option<&'static str>,
    ) {
        if !self.enabled {
            return;
        }
        route
            .unwrap_or(&self.unrouted)
            .record(method_index(method), status, elapsed);
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
        if decision.allowed {
            &self.allowed
        } else {
            &self.denied
        }
        .inc();
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
            seconds: self.upstream_seconds.get_or_create_owned(&UpstreamLabel {
                upstream: upstream.to_owned(),
            }),
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
        let zones_list = m.for_route(&"zones-list".into());
        let _idle = m.for_route(&"zones-create".into());
        m.request(
            Some(&zones_list),
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
            r#"zonegate_request_duration_seconds_bucket{le="0.0016",route="zones-list"} 0"#,
            r#"zonegate_request_duration_seconds_bucket{le="0.0032",route="zones-list"} 1"#,
            r#"zonegate_request_duration_seconds_bucket{le="+Inf",route="zones-list"} 1"#,
            // A bound route's latency is there from the start, like an upstream's.
            r#"zonegate_request_duration_seconds_count{route="zones-create"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// The count of one `requests` series in `text`.
    fn count(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn pairs_past_the_slots_are_counted_in_the_family() {
        let m = Metrics::default();
        let route = m.for_route(&"r".into());
        let statuses: Vec<u16> = (200..200 + 3 * SLOTS as u16).collect();
        for (i, &status) in statuses.iter().enumerate() {
            for _ in 0..=i {
                m.request(
                    Some(&route),
                    Some(&http::Method::POST),
                    status,
                    Duration::ZERO,
                    None,
                );
            }
        }
        let text = m.render(&Samples::default());
        for (i, status) in statuses.iter().enumerate() {
            let series =
                format!(r#"zonegate_requests_total{{route="r",method="POST",status="{status}"}}"#);
            assert_eq!(count(&text, &series), i as u64 + 1, "{series} in\n{text}");
        }
    }

    #[test]
    fn racing_threads_count_every_request_once() {
        let m = Metrics::default();
        let route = m.for_route(&"r".into());
        let methods = [http::Method::GET, http::Method::HEAD, http::Method::DELETE];
        std::thread::scope(|s| {
            for t in 0..4u16 {
                let (m, route, methods) = (&m, &route, &methods);
                s.spawn(move || {
                    // Every thread answers the same pairs in its own order, more of them than
                    // there are slots, so threads race to claim the same free slots.
                    for n in 0..1000u16 {
                        let status = 200 + (n + t) % 4;
                        let method = &methods[usize::from((n + t) % 3)];
                        m.request(Some(route), Some(method), status, Duration::ZERO, None);
                    }
                });
            }
        });
        let text = m.render(&Samples::default());
        let mut total = 0;
        for method in ["GET", "HEAD", "DELETE"] {
            for status in 200..204 {
                let series = format!(
                    r#"zonegate_requests_total{{route="r",method="{method}",status="{status}"}}"#
                );
                let n = count(&text, &series);
                assert!(n > 0, "{series} in\n{text}");
                total += n;
            }
        }
        assert_eq!(total, 4000, "{text}");
        assert_eq!(
            count(
                &text,
                r#"zonegate_request_duration_seconds_count{route="r"}"#
            ),
            4000
        );
    }

    #[test]
    fn off_records_nothing_and_binds_nothing() {
        let m = Metrics::off();
        let route = m.for_route(&"r".into());
        m.request(
            Some(&route),
            Some(&http::Method::GET),
            200,
            Duration::ZERO,
            None,
        );
        let text = m.render(&Samples::default());
        assert!(!text.contains(r#"route="r""#), "{text}");
    }
}
