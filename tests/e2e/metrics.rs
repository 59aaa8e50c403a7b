//! The admin listener's `/metrics`: Prometheus (OpenMetrics) text that moves as requests are
//! made, with bounded labels: route names and policy ids, never paths or credentials.

use std::collections::HashMap;

use zonegate_e2e::client::plain_get;
use zonegate_e2e::Stack;

/// One scrape, as `series` (name and labels) to value. Every line must be a sample, a comment
/// or the closing `# EOF`.
fn scrape(stack: &Stack) -> (String, HashMap<String, f64>) {
    let resp = plain_get(stack.admin, "/metrics", &[]).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let text = String::from_utf8(resp.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{l}"));
            (series.to_owned(), value)
        })
        .collect();
    (text, samples)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_parse_and_move_as_requests_are_made() {
    let stack = Stack::start();
    let client = stack.client();
    let (_, before) = scrape(&stack);

    // Allowed anonymously (the fixture policy), forwarded to the zone backend.
    assert_eq!(client.get("/v1/orgs/acme/zones").status, 200);
    // Denied by a forbid policy.
    client.get("/v1/orgs/locked/zones").assert_problem(403);
    // A key that does not verify, and a path no route has.
    client
        .request(
            "GET",
            "/v1/orgs/acme/zones",
            &[("authorization", "Bearer zgk_not_a_real_key")],
            None,
        )
        .assert_problem(401);
    client.get("/no/such/route").assert_problem(404);
    // A login the account API refuses: an authentication failure of its own kind.
    let origin = format!("https://localhost:{}", stack.https.port());
    client
        .request(
            "POST",
            "/auth/login",
            &[("content-type", "application/json"), ("origin", &origin)],
            Some(br#"{"email":"nobody@example.com","password":"not the password"}"#),
        )
        .assert_problem(401);

    let (text, after) = scrape(&stack);
    for (series, moved) in [
        (
            r#"zonegate_requests_total{route="zones-list",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"zonegate_requests_total{route="zones-list",method="GET",status="403"}"#,
            1.0,
        ),
        (
            r#"zonegate_requests_total{route="none",method="GET",status="404"}"#,
            1.0,
        ),
        (
            r#"zonegate_decision_policies_total{effect="deny",policy="e2e-locked-org"}"#,
            1.0,
        ),
        (
            r#"zonegate_decision_policies_total{effect="allow",policy="e2e-anonymous-zones"}"#,
            1.0,
        ),
        (r#"zonegate_decisions_total{effect="deny"}"#, 1.0),
        (
            r#"zonegate_authentication_failures_total{kind="api_key"}"#,
            1.0,
        ),
        (
            r#"zonegate_authentication_failures_total{kind="account"}"#,
            1.0,
        ),
        (r#"zonegate_refusals_total{reason="not_found"}"#, 1.0),
        (r#"zonegate_refusals_total{reason="forbidden"}"#, 1.0),
        (
            r#"zonegate_request_duration_seconds_count{route="zones-list"}"#,
            3.0,
        ),
        (
            r#"zonegate_upstream_duration_seconds_count{upstream="zones"}"#,
            1.0,
        ),
    ] {
        assert_eq!(delta(&before, &after, series), moved, "{series}\n{text}");
    }
    let lookups: f64 = after
        .iter()
        .filter(|(s, _)| s.starts_with(r#"zonegate_cache_lookups_total{cache="decisions""#))
        .map(|(_, v)| v)
        .sum();
    assert!(lookups >= 2.0, "{text}");
    assert!(after.contains_key("zonegate_client_connections"), "{text}");
    assert!(after.contains_key("zonegate_audit_queue_events"), "{text}");
    assert!(
        after.contains_key("zonegate_password_jobs_queued"),
        "{text}"
    );
    // Labels are names, never what a client sent.
    for sent in [
        "/v1/orgs",
        "/no/such",
        "zgk_not_a_real_key",
        "acme",
        "nobody@example.com",
        "not the password",
    ] {
        assert!(!text.contains(sent), "{sent} in\n{text}");
    }
}

#[test]
fn with_metrics_off_nothing_is_served_and_requests_are_unaffected() {
    let stack = zonegate_e2e::Stack::start_with(zonegate_e2e::StackOptions {
        extra_config: "[metrics]\nenabled = false\n".into(),
        ..zonegate_e2e::StackOptions::default()
    });
    assert_eq!(stack.client().get("/v1/orgs/acme/zones").status, 200);
    let resp = plain_get(stack.admin, "/metrics", &[]).unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(plain_get(stack.admin, "/readyz", &[]).unwrap().status, 200);
}
