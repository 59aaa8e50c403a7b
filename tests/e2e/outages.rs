//! Fail closed, proven: with a dependency down, no request reaches an upstream without an
//! allow decision, nothing answers 500, and readiness reports the fault; when the dependency
//! returns, so does service.

use std::time::{Duration, Instant};

use zonegate_e2e::client::plain_get;
use zonegate_e2e::pg::ScratchDatabase;
use zonegate_e2e::tcp_proxy::TcpProxy;
use zonegate_e2e::{Response, Stack, StackOptions};

use crate::apikeys::{create_key, owner_with_org, with_key};

fn ready(stack: &Stack) -> (u16, serde_json::Value) {
    let r = plain_get(stack.admin, "/readyz", &[]).unwrap();
    (r.status, r.json())
}

/// The access event of the request whose path contains `marker`.
fn access_event(stack: &Stack, marker: &str) -> serde_json::Value {
    assert!(stack.gateway_logged(marker), "no access event for {marker}");
    let log = stack.gateway_log();
    let line = log
        .lines()
        .find(|l| l.contains("\"http_request\"") && l.contains(marker))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

/// Forwarded only with an allow decision, and never a 500.
fn fail_closed(stack: &Stack, marker: &str, resp: &Response) {
    assert_ne!(
        resp.status,
        500,
        "{marker}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let forwarded = stack.echo.seen().iter().any(|r| r.target.contains(marker));
    let event = access_event(stack, marker);
    if forwarded {
        assert_eq!(resp.status, 200, "{marker}");
        assert_eq!(
            event["decision"], "allow",
            "{marker} was forwarded: {event}"
        );
    } else {
        assert!(
            resp.status >= 400,
            "{marker} answered {} unforwarded",
            resp.status
        );
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json"),
            "{marker}"
        );
    }
}

#[test]
fn with_the_database_down_nothing_is_forwarded_without_an_allow_and_readiness_says_so() {
    let Some(db) = ScratchDatabase::create("the database outage test") else {
        return;
    };
    let proxy = TcpProxy::start(db.server());
    let stack = Stack::start_with(StackOptions {
        extra_config: format!("[database]\nurl = \"{}\"\n", db.url_via(proxy.addr)),
        ..StackOptions::default()
    });
    let c = stack.client();
    let (mut ada, org) = owner_with_org(&stack);
    let (_, used) = create_key(&mut ada, &org, &["zones:read"]);
    let path = |marker: &str| format!("/v1/orgs/{org}/echo/{marker}");
    assert_eq!(
        with_key(&c, "GET", &path("before"), &used, None).status,
        200
    );
    // Made while the database is up, presented only while it is down: nothing is cached.
    let (_, fresh) = create_key(&mut ada, &org, &["zones:read"]);
    assert_eq!(ready(&stack).0, 200);

    proxy.cut();
    let (status, body) = ready(&stack);
    assert_eq!(status, 503, "{body}");
    assert!(
        matches!(body["database"].as_str(), Some("unreachable" | "timeout")),
        "{body}"
    );

    let never_seen = with_key(&c, "GET", &path("outage-fresh-key"), &fresh, None);
    fail_closed(&stack, "outage-fresh-key", &never_seen);
    assert_eq!(
        never_seen.status, 503,
        "a key the gateway cannot check is refused"
    );
    assert!(never_seen.header("retry-after").is_some());
    // A key checked moments ago is trusted for the documented revalidation bound only.
    let cached = with_key(&c, "GET", &path("outage-cached-key"), &used, None);
    fail_closed(&stack, "outage-cached-key", &cached);
    let garbage = with_key(&c, "GET", &path("outage-garbage"), "zgk_nope_nope", None);
    fail_closed(&stack, "outage-garbage", &garbage);
    let anonymous = c.get(&path("outage-anonymous"));
    fail_closed(&stack, "outage-anonymous", &anonymous);
    let login = c.send_json(
        "POST",
        "/auth/login",
        &serde_json::json!({"email": "ada@example.com", "password": crate::accounts::PASSWORD}),
    );
    assert_eq!(
        login.status,
        503,
        "{}",
        String::from_utf8_lossy(&login.body)
    );
    assert!(login.header("retry-after").is_some());

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(&stack).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "readiness never recovered: {:?}",
            ready(&stack)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        with_key(&c, "GET", &path("after"), &fresh, None).status,
        200
    );
}

fn admin_post(stack: &Stack, path: &str) -> u16 {
    zonegate_e2e::client::plain(
        stack.admin,
        &format!("POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"),
    )
    .unwrap()
    .status
}

fn fault_components(body: &serde_json::Value) -> Vec<String> {
    body["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["component"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn refused_policy_and_certificate_reloads_keep_the_old_ones_and_readiness_reports_them() {
    let stack = Stack::start();
    let c = stack.client();
    let (status, body) = ready(&stack);
    assert_eq!((status, fault_components(&body)), (200, vec![]));
    let fingerprint = body["tls_certificate_sha256"].clone();

    // A policy set that does not validate, and certificate files that do not load.
    let broken = stack.policies.join("broken.cedar");
    std::fs::write(
        &broken,
        "@id(\"typo\")\npermit (principal, action == Zonegate::Action::\"zones:lisst\", resource);\n",
    )
    .unwrap();
    assert_eq!(admin_post(&stack, "/policies/reload"), 422);
    let cert = std::fs::read(&stack.cert).unwrap();
    std::fs::write(&stack.cert, "not a certificate").unwrap();
    assert_eq!(admin_post(&stack, "/certificates/reload"), 422);

    // Still serving, with the old policies and certificate; readiness names both faults.
    let (status, body) = ready(&stack);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fault_components(&body),
        ["policies", "tls_certificate"],
        "{body}"
    );
    assert!(
        body["faults"][0]["error"]
            .as_str()
            .unwrap()
            .contains("typo"),
        "{body}"
    );
    assert_eq!(body["tls_certificate_sha256"], fingerprint);
    let denied = c.get("/v1/orgs/locked/echo/outage-old-policy");
    fail_closed(&stack, "outage-old-policy", &denied);
    assert_eq!(denied.status, 403);
    assert_eq!(c.get("/v1/orgs/acme/echo/outage-allowed").status, 200);

    // Mended, reloaded: the faults clear.
    std::fs::remove_file(&broken).unwrap();
    std::fs::write(&stack.cert, cert).unwrap();
    assert_eq!(admin_post(&stack, "/policies/reload"), 200);
    assert_eq!(admin_post(&stack, "/certificates/reload"), 200);
    assert_eq!(fault_components(&ready(&stack).1), Vec::<String>::new());
}

#[test]
fn with_the_mail_relay_down_signup_still_answers_and_readiness_reports_the_mail_fault() {
    // A relay address nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let stack = Stack::start_with(StackOptions {
        extra_config: format!("[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\n"),
        ..StackOptions::default()
    });
    assert_eq!(fault_components(&ready(&stack).1), Vec::<String>::new());
    let signup = stack.client().send_json(
        "POST",
        "/auth/signup",
        &serde_json::json!({"email": "ada@example.com", "password": crate::accounts::PASSWORD}),
    );
    // Answered before the mail is sent, alike for every address.
    assert_eq!(signup.status, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(&stack);
        if fault_components(&body) == ["mail"] {
            assert_eq!(status, 200, "mail is sent after answering: still ready");
            break;
        }
        assert!(Instant::now() < deadline, "no mail fault reported: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stack.echo.seen().is_empty());
}
