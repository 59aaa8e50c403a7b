//! Traces: with an OTLP endpoint configured, every request arrives at the collector as a
//! server span with a child per pipeline stage, the decision as attributes and nothing
//! secret; the upstream gets a `traceparent` naming the gateway's `forward` span; a client's
//! own trace context is believed only from a trusted proxy.

use zonegate_e2e::otlp::{OtlpReceiver, ReceivedSpan};
use zonegate_e2e::{Stack, StackOptions};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traced(receiver: &OtlpReceiver, trusted_proxies: Vec<String>) -> Stack {
    Stack::start_with(StackOptions {
        trusted_proxies,
        extra_config: format!(
            "[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"zonegate-e2e\"\nexport_interval_ms = 100\n",
            receiver.endpoint()
        ),
        ..StackOptions::default()
    })
}

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// `GET /v1/orgs/acme/echo` carrying the client trace context `00-CLIENT_TRACE-CLIENT_SPAN-01`
/// and `tracestate`: the answer's request id, and the `traceparent` and `tracestate` values
/// the upstream received.
fn echo_with_trace_context(stack: &Stack, tracestate: &str) -> (String, Vec<String>, Vec<String>) {
    let resp = stack.client().request(
        "GET",
        "/v1/orgs/acme/echo",
        &[
            ("traceparent", &client_traceparent()),
            ("tracestate", tracestate),
        ],
        None,
    );
    assert_eq!(resp.status, 200);
    let request_id = resp.header("x-request-id").unwrap().to_owned();
    let seen = stack.echo.seen();
    let values = |name: &str| -> Vec<String> {
        seen[0]
            .header_values(name)
            .iter()
            .map(|v| v.to_string())
            .collect()
    };
    (request_id, values("traceparent"), values("tracestate"))
}

/// The server span of the request with this id.
fn server_span<'a>(spans: &'a [ReceivedSpan], request_id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.kind == 2
            && s.attributes.get("zonegate.request_id").map(String::as_str) == Some(request_id)
    })
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut c: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect();
    c.sort_by_key(|s| s.start_unix_nano);
    c
}

#[test]
fn a_forwarded_request_is_a_server_span_with_its_stages_and_the_upstream_is_its_child() {
    let receiver = OtlpReceiver::start();
    let stack = traced(&receiver, Vec::new());
    let (request_id, traceparent, tracestate) = echo_with_trace_context(&stack, "evil=1");

    // The upstream got the gateway's trace context, not the client's.
    assert_eq!(traceparent.len(), 1, "{traceparent:?}");
    assert!(!traceparent[0].contains(CLIENT_TRACE), "{traceparent:?}");
    assert!(tracestate.is_empty(), "{tracestate:?}");
    let parts: Vec<&str> = traceparent[0].split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[3]),
        (4, "00", "01"),
        "{traceparent:?}"
    );

    let spans = receiver.wait_for("server span with its stages", |spans| {
        server_span(spans, &request_id).is_some_and(|root| children(spans, root).len() >= 8)
    });
    let root = server_span(&spans, &request_id).unwrap();
    assert_eq!(root.service, "zonegate-e2e");
    assert_eq!(root.name, "GET echo");
    assert_eq!(
        root.trace_id, parts[1],
        "the upstream is in the request's trace"
    );
    assert!(
        root.parent_span_id.is_empty(),
        "an untrusted client's parent is ignored"
    );
    assert_eq!(root.attributes["http.route"], "echo");
    assert_eq!(root.attributes["http.response.status_code"], "200");
    assert_eq!(root.attributes["zonegate.decision"], "allow");
    assert!(!root.attributes["zonegate.policies"].is_empty());
    assert_eq!(root.attributes["url.path"], "/v1/orgs/acme/echo");

    let stages: Vec<&str> = children(&spans, root)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        stages,
        [
            "sanitise",
            "route",
            "throttle.address",
            "authenticate",
            "throttle.principal",
            "authorise",
            "throttle.org",
            "forward"
        ]
    );
    let forward = children(&spans, root).into_iter().last().unwrap();
    assert_eq!(forward.kind, 3, "a client span");
    assert_eq!(
        forward.span_id, parts[2],
        "the upstream's parent is the forward span"
    );
    for stage in children(&spans, root) {
        assert!(stage.start_unix_nano >= root.start_unix_nano);
        assert!(stage.end_unix_nano <= root.end_unix_nano);
        assert!(stage.start_unix_nano <= stage.end_unix_nano);
    }
}

#[test]
fn a_refused_request_ends_in_the_stage_that_refused_it_and_carries_no_credential() {
    let receiver = OtlpReceiver::start();
    let stack = traced(&receiver, Vec::new());
    let c = stack.client();
    let secret = "dz_live_notarealkeyatall_0000000000000000";
    let resp = c.request(
        "GET",
        "/v1/orgs/acme/zones?token=hunter2",
        &[("authorization", &format!("Bearer {secret}"))],
        None,
    );
    assert_eq!(resp.status, 401);
    let request_id = resp.header("x-request-id").unwrap().to_owned();
    let spans = receiver.wait_for("the refused request's spans", |spans| {
        server_span(spans, &request_id).is_some_and(|root| children(spans, root).len() >= 5)
    });
    let root = server_span(&spans, &request_id).unwrap();
    assert_eq!(root.attributes["http.response.status_code"], "401");
    assert_eq!(root.attributes["zonegate.rejection"], "unauthenticated");
    assert_eq!(
        root.attributes["url.path"], "/v1/orgs/acme/zones",
        "never the query"
    );
    let stages: Vec<&str> = children(&spans, root)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        stages,
        [
            "sanitise",
            "route",
            "throttle.address",
            "authenticate",
            "respond"
        ]
    );
    let everything = format!("{spans:?}");
    assert!(!everything.contains(secret) && !everything.contains("hunter2"));
}

#[test]
fn a_trusted_proxys_trace_context_is_continued_and_passed_on() {
    let receiver = OtlpReceiver::start();
    // The test client connects from loopback: here, that is a trusted proxy.
    let stack = traced(&receiver, vec!["127.0.0.1/32".into()]);
    let (request_id, traceparent, tracestate) = echo_with_trace_context(&stack, "vendor=1");
    assert_eq!(traceparent.len(), 1);
    assert!(
        traceparent[0].starts_with(&format!("00-{CLIENT_TRACE}-")),
        "{traceparent:?}"
    );
    assert!(
        !traceparent[0].contains(CLIENT_SPAN),
        "the gateway's span is the parent"
    );
    assert_eq!(tracestate, ["vendor=1"]);

    let spans = receiver.wait_for("the continued trace", |spans| {
        server_span(spans, &request_id).is_some()
    });
    let root = server_span(&spans, &request_id).unwrap();
    assert_eq!(root.trace_id, CLIENT_TRACE);
    assert_eq!(root.parent_span_id, CLIENT_SPAN);
}

#[test]
fn without_tracing_trace_context_reaches_the_upstream_only_from_a_trusted_proxy() {
    let send = |stack: &Stack| {
        let (_, traceparent, tracestate) = echo_with_trace_context(stack, "vendor=1");
        (traceparent, tracestate)
    };
    let untrusted = Stack::start();
    assert_eq!(
        send(&untrusted),
        (vec![], vec![]),
        "a client cannot choose the trace"
    );
    drop(untrusted);
    let trusted = Stack::start_with(StackOptions {
        trusted_proxies: vec!["127.0.0.1/32".into()],
        ..StackOptions::default()
    });
    assert_eq!(
        send(&trusted),
        (vec![client_traceparent()], vec!["vendor=1".to_owned()])
    );
}
