//! Traces: with `[tracing] otlp_endpoint` set, each request is an OpenTelemetry server span
//! with a child span per pipeline stage, exported over OTLP/HTTP by the SDK's batch thread
//! (never on a proxy thread). Off by default, and then nothing here runs per request.
//!
//! - The server span carries the route, method, status, principal kind and id, the decision and
//!   its determining policies, and the refusal code: ids and names, never a credential, header
//!   value or query string.
//! - Stage spans are opened as a stage begins and closed as the next one begins, so a refused
//!   request's last stage is the one that refused it, followed by `respond`.
//! - W3C trace context: a `traceparent` (and `tracestate`) is believed only from a configured
//!   trusted proxy; from anyone else it is ignored and never forwarded, so a client cannot pick
//!   the trace its requests land in. The upstream gets the `forward` span as its parent.
//! - Sampling follows a trusted parent's decision, else `sample_ratio` of the trace ids. A
//!   request that is not sampled still tells the upstream its trace (flags `00`).

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};
use opentelemetry_sdk::Resource;

/// Where and how traces are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: String,
    pub service_name: String,
    /// The share of traces recorded when no trusted parent decided: 0.0 to 1.0.
    pub sample_ratio: f64,
    /// How often the batch thread sends what it holds.
    pub export_interval: Duration,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("tracing: the OTLP exporter could not be built: {0}")]
pub struct TracingError(String);

/// The pipeline's tracer, and the provider that owns the export thread.
#[derive(Clone)]
pub struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    propagator: std::sync::Arc<TraceContextPropagator>,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

/// Spans a batch holds at most before the oldest are dropped: tracing must never hold a
/// request up or grow without bound when the collector is slow or gone.
const MAX_QUEUED_SPANS: usize = 8192;

impl Tracing {
    pub fn new(config: &TracingConfig) -> Result<Tracing, TracingError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TracingError(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUED_SPANS)
                    .with_scheduled_delay(config.export_interval)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Tracing {
            tracer: provider.tracer("zonegate"),
            provider,
            propagator: std::sync::Arc::new(TraceContextPropagator::new()),
        })
    }

    /// Begin a request's server span. `headers` are the request's when the peer is a trusted
    /// proxy (its trace context is then the parent), else `None`.
    pub fn start(&self, trusted_headers: Option<&HeaderMap>) -> RequestTrace {
        let parent = match trusted_headers {
            Some(headers) => self.propagator.extract(&HeaderExtractor(headers)),
            None => Context::new(),
        };
        // Named `HTTP` until a route is known (then `METHOD route`): never a client's string.
        let root = self
            .tracer
            .span_builder("HTTP")
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            tracer: self.tracer.clone(),
            root: parent.with_span(root),
            stage: None,
        }
    }

    /// Export what is queued and stop the export thread: once the server has drained.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(target: "zonegate::trace", event = "trace_export_shutdown_failed", error = %e);
        }
    }
}

/// Reads a request's trace context headers for the propagator.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One request's spans while it runs.
pub struct RequestTrace {
    tracer: SdkTracer,
    /// The context holding the server span: every stage span's parent.
    root: Context,
    /// The stage span now open.
    stage: Option<Span>,
}

impl fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTrace").finish_non_exhaustive()
    }
}

/// What the server span records when the request ends.
#[derive(Debug)]
pub struct Finished<'a> {
    pub method: &'a str,
    pub route: Option<&'a str>,
    pub path: &'a str,
    pub status: u16,
    pub request_id: &'a str,
    pub principal_kind: Option<&'a str>,
    pub principal_id: Option<&'a str>,
    pub decision: Option<&'a crate::domain::policy::Decision>,
    pub rejection: Option<&'static str>,
}

impl RequestTrace {
    /// Close the open stage span, if any, and open `name`'s.
    pub fn stage(&mut self, name: &'static str, kind: SpanKind) {
        let now = SystemTime::now();
        if let Some(mut open) = self.stage.take() {
            open.end_with_timestamp(now);
        }
        self.stage = Some(
            self.tracer
                .span_builder(name)
                .with_kind(kind)
                .with_start_time(now)
                .start_with_context(&self.tracer, &self.root),
        );
    }

    /// The `traceparent` naming the open stage span (the `forward` span, when the request goes
    /// upstream), and the `tracestate` of its trace (a trusted parent's, when there was one).
    pub fn headers(&self) -> Option<(HeaderValue, Option<HeaderValue>)> {
        let root = self.root.span();
        let cx = match &self.stage {
            Some(stage) => stage.span_context(),
            None => root.span_context(),
        };
        if !cx.is_valid() {
            return None;
        }
        let traceparent = HeaderValue::from_str(&format!(
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8()
        ))
        .ok()?;
        let state = cx.trace_state().header();
        let tracestate = (!state.is_empty())
            .then(|| HeaderValue::from_str(&state).ok())
            .flatten();
        Some((traceparent, tracestate))
    }

    /// End the open stage and the server span, with what the request came to.
    pub fn finish(mut self, done: &Finished<'_>) {
        let now = SystemTime::now();
        if let Some(mut open) = self.stage.take() {
            open.end_with_timestamp(now);
        }
        let root = self.root.span();
        if !root.is_recording() {
            return;
        }
        // `{method} {http.route}`, as the semantic conventions name a server span.
        if let Some(route) = done.route {
            root.update_name(format!("{} {route}", done.method));
            root.set_attribute(KeyValue::new("http.route", route.to_owned()));
        }
        let mut attributes = vec![
            KeyValue::new("http.request.method", known_method(done.method)),
            KeyValue::new("url.path", done.path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(done.status)),
            KeyValue::new("zonegate.request_id", done.request_id.to_owned()),
        ];
        if let Some(kind) = done.principal_kind {
            attributes.push(KeyValue::new("zonegate.principal.kind", kind.to_owned()));
        }
        if let Some(id) = done.principal_id {
            attributes.push(KeyValue::new("zonegate.principal.id", id.to_owned()));
        }
        if let Some(decision) = done.decision {
            attributes.push(KeyValue::new("zonegate.decision", decision.label()));
            attributes.push(KeyValue::new(
                "zonegate.policies",
                decision.policies.join(","),
            ));
        }
        if let Some(code) = done.rejection {
            attributes.push(KeyValue::new("zonegate.rejection", code));
        }
        for kv in attributes {
            root.set_attribute(kv);
        }
        if done.status >= 500 {
            root.set_status(Status::error(done.rejection.unwrap_or("server error")));
        }
        root.end_with_timestamp(now);
    }
}

/// The method as the semantic conventions record it: a known one, else `_OTHER` (a client's
/// made-up method never becomes an attribute value).
fn known_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    }
}
