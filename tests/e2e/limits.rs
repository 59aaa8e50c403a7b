//! Rate limits, failed-login lockout and the org audit trail end to end: 429s with
//! `Retry-After` and the RateLimit headers on auth routes and per API key, recovery after the
//! wait, and `GET /v1/orgs/{org}/audit-events` for admins only.

use std::time::{Duration, Instant};

use serde_json::json;
use zonegate_e2e::{Response, Stack, StackOptions};

use crate::accounts::{logged_in, Browser};
use crate::apikeys::{create_key, owner_with_org, with_key};

fn limited_stack(auth_strict: &str, api_key: &str) -> Stack {
    Stack::start_with(StackOptions {
        rate_limits: format!(
            "auth_strict = {auth_strict}\nauth = {{ requests = 100000, window_seconds = 60 }}\n\
             api_key = {api_key}\norg = {{ requests = 100000, window_seconds = 60 }}\n"
        ),
        ..StackOptions::default()
    })
}

fn assert_rate_limited(resp: &Response, policy: &str) -> u64 {
    let problem = resp.assert_problem(429);
    assert_eq!(problem["type"], "urn:zonegate:problem:rate-limited");
    assert_eq!(resp.header("ratelimit-policy"), Some(policy));
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    let limit = policy.split(';').next().unwrap();
    assert_eq!(
        resp.header("ratelimit"),
        Some(format!("limit={limit}, remaining=0, reset={retry}").as_str())
    );
    retry
}

#[test]
fn auth_endpoints_answer_429_past_their_limit_and_recover_after_the_wait() {
    // 3 requests per 3 seconds: one request back every second.
    let stack = limited_stack(
        "{ requests = 3, window_seconds = 3 }",
        "{ requests = 100000, window_seconds = 60 }",
    );
    let mut b = Browser::new(&stack);
    let wrong = json!({"email": "nobody@example.com", "password": "not the password"});
    for _ in 0..3 {
        assert_eq!(
            b.send("POST", "/auth/login", Some(wrong.clone())).status,
            401
        );
    }
    let refused = b.send("POST", "/auth/login", Some(wrong.clone()));
    let retry = assert_rate_limited(&refused, "3;w=3");
    // The strict bucket is per address, shared by every credential-guessing route.
    assert_rate_limited(
        &b.send(
            "POST",
            "/auth/password-reset",
            Some(json!({"email": "nobody@example.com"})),
        ),
        "3;w=3",
    );
    // Other auth routes have their own, looser bucket.
    assert_eq!(b.send("POST", "/auth/refresh", None).status, 401);
    // The refusal was a security event.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stack.gateway_logged("excess_rate_limit_exceeded") {
        assert!(Instant::now() < deadline, "no rate-limit event logged");
        std::thread::sleep(Duration::from_millis(50));
    }

    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(b.send("POST", "/auth/login", Some(wrong)).status, 401);
}

#[test]
fn an_api_key_over_its_limit_gets_429_while_another_key_is_unaffected() {
    let stack = limited_stack(
        "{ requests = 100000, window_seconds = 60 }",
        "{ requests = 3, window_seconds = 60 }",
    );
    let (mut ada, org) = owner_with_org(&stack);
    let (_, busy) = create_key(&mut ada, &org, &["zones:read"]);
    let (_, calm) = create_key(&mut ada, &org, &["zones:read"]);
    let c = stack.client();
    let zones = format!("/v1/orgs/{org}/zones");
    for _ in 0..3 {
        assert_eq!(with_key(&c, "GET", &zones, &busy, None).status, 200);
    }
    assert_rate_limited(&with_key(&c, "GET", &zones, &busy, None), "3;w=60");
    assert_eq!(with_key(&c, "GET", &zones, &calm, None).status, 200);
    // Sessions are not API keys: the owner's dashboard is unaffected.
    assert_eq!(ada.send("GET", &zones, None).status, 200);
}

#[test]
fn failed_logins_for_one_account_are_spaced_out() {
    let stack = Stack::start();
    logged_in(&stack, "ada@example.com");
    // A client without Ada's device cookie (her own browser has its own allowance; see
    // accounts::a_strangers_failures_do_not_delay_the_owners_browser).
    let mut stranger = Browser::new(&stack);
    let wrong = json!({"email": "ada@example.com", "password": "not the password"});
    for _ in 0..5 {
        stranger
            .send("POST", "/auth/login", Some(wrong.clone()))
            .assert_problem(401);
    }
    let delayed = stranger.send("POST", "/auth/login", Some(wrong));
    let problem = delayed.assert_problem(429);
    assert_eq!(problem["type"], "urn:zonegate:problem:login-delayed");
    assert!(delayed.header("retry-after").is_some());
}

#[test]
fn the_org_audit_trail_is_readable_by_admins_only() {
    let stack = Stack::start();
    let (mut ada, org) = owner_with_org(&stack);
    // Bob joins as a viewer, then tries something a viewer may not: an authz_fail event of
    // this org.
    let invite = ada.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({"email": "bob@example.com", "role": "viewer"})),
    );
    assert_eq!(invite.status, 202);
    let token = stack.mailed_token("bob@example.com");
    let mut bob = logged_in(&stack, "bob@example.com");
    assert_eq!(
        bob.send(
            "POST",
            "/v1/invitations/accept",
            Some(json!({"token": token}))
        )
        .status,
        200
    );
    let (_, key) = create_key(&mut ada, &org, &["zones:read"]);
    with_key(
        &stack.client(),
        "POST",
        &format!("/v1/orgs/{org}/zones"),
        &key,
        Some(json!({"name": "Z"})),
    )
    .assert_problem(403);

    // The viewer may not read the trail (and trying is itself an event).
    let audit = format!("/v1/orgs/{org}/audit-events");
    bob.send("GET", &audit, None).assert_problem(403);

    // The owner reads the org's events, newest first; written in the background, so poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let resp = ada.send("GET", &format!("{audit}?event=authz_fail&limit=50"), None);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let events = resp.json()["events"].as_array().unwrap().clone();
        if events.len() >= 2 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(events.len() >= 2, "{events:?}");
    for e in &events {
        assert_eq!(e["event"], "authz_fail");
        assert_eq!(e["org_id"], org.as_str());
        assert_eq!(e["client"], "127.0.0.1");
        assert!(e["request_id"].is_string());
    }
    // No secret in the trail.
    let all = ada.send("GET", &audit, None);
    assert!(!String::from_utf8_lossy(&all.body).contains(&key));

    // Malformed filters are 400s, never silently ignored.
    for bad in ["?from=yesterday", "?limit=0", "?event=nope", "?colour=red"] {
        ada.send("GET", &format!("{audit}{bad}"), None)
            .assert_problem(400);
    }
}

#[test]
fn session_traffic_is_limited_per_user_and_per_org_and_outsiders_cannot_spend_the_org() {
    let stack = Stack::start_with(StackOptions {
        rate_limits: "auth_strict = { requests = 100000, window_seconds = 60 }\n\
                      auth = { requests = 100000, window_seconds = 60 }\n\
                      user = { requests = 8, window_seconds = 60 }\n\
                      org_sessions = { requests = 5, window_seconds = 60 }\n"
            .into(),
        ..StackOptions::default()
    });
    // Creating the org spends 1 of ada's 8 and none of the org's (login is not a session
    // request).
    let (mut ada, org) = owner_with_org(&stack);
    let zones = format!("/v1/orgs/{org}/zones");
    // A stranger's denied requests spend only the stranger's own allowance.
    let mut mallory = logged_in(&stack, "mallory@example.com");
    for _ in 0..8 {
        assert_eq!(mallory.send("GET", &zones, None).status, 403);
    }
    assert_rate_limited(&mallory.send("GET", &zones, None), "8;w=60");
    // The org's members get its whole session allowance...
    for _ in 0..5 {
        assert_eq!(ada.send("GET", &zones, None).status, 200);
    }
    // ...and no more.
    assert_rate_limited(&ada.send("GET", &zones, None), "5;w=60");
    // A route outside the org still answers from ada's own allowance (7 of 8 spent: the org
    // creation and six zone requests)...
    assert_eq!(ada.send("GET", "/auth/session", None).status, 200);
    // ...which is then spent too.
    assert_rate_limited(&ada.send("GET", "/auth/session", None), "8;w=60");
}

#[test]
fn a_flood_of_one_denial_is_one_audit_row_and_a_counted_summary() {
    let mut stack = Stack::start();
    let (_ada, org) = owner_with_org(&stack);
    let mut mallory = logged_in(&stack, "mallory@example.com");
    let mallory_id = mallory.send("GET", "/auth/session", None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let zones = format!("/v1/orgs/{org}/zones");
    for _ in 0..60 {
        mallory.send("GET", &zones, None).assert_problem(403);
    }
    // Stopping records the open window's summary, then writes what is queued.
    let (status, _) = stack.terminate_gateway();
    assert!(status.success());
    let denials: Vec<serde_json::Value> = stack
        .audit_export(&["--org", &org])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "authz_fail" && e["principal_id"] == mallory_id.as_str())
        .collect();
    assert_eq!(
        denials.len(),
        2,
        "the first denial and one summary: {denials:#?}"
    );
    assert!(denials[0]["details"].get("repeated").is_none());
    assert_eq!(denials[1]["details"]["repeated"], 59);
    assert_eq!(denials[1]["details"]["route"], "zones-list");
}
