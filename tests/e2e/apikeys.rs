//! API keys end to end: created once, used on the zone API within their org and scopes, never
//! shown again, refused when malformed, misplaced, revoked (at once, even under load), and
//! rolled with both secrets working during the grace period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;
use zonegate_e2e::{Client, Response, Stack};

use crate::accounts::{logged_in, Browser};

pub(crate) fn owner_with_org(stack: &Stack) -> (Browser, String) {
    let mut ada = logged_in(stack, "ada@example.com");
    let org = ada
        .send("POST", "/v1/orgs", Some(json!({"name": "Acme"})))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (ada, org)
}

pub(crate) fn create_key(owner: &mut Browser, org: &str, scopes: &[&str]) -> (String, String) {
    let resp = owner.send(
        "POST",
        &format!("/v1/orgs/{org}/api-keys"),
        Some(json!({"name": "ci", "scopes": scopes})),
    );
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let v = resp.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

pub(crate) fn with_key(
    c: &Client,
    method: &str,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Response {
    let auth = format!("Bearer {key}");
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    c.request(method, path, &headers, body.as_deref())
}

fn square() -> serde_json::Value {
    json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 50.0], [11.0, 51.0], [10.0, 51.0], [10.0, 50.0]]]})
}

#[test]
fn keys_work_within_their_org_and_scopes_and_are_shown_once() {
    let stack = Stack::start();
    let c = stack.client();
    let (mut ada, org) = owner_with_org(&stack);
    let (id, key) = create_key(
        &mut ada,
        &org,
        &["zones:read", "zones:write", "coverage:read"],
    );
    assert!(key.starts_with(&format!("zgk_{id}_")));
    let zones = format!("/v1/orgs/{org}/zones");

    assert_eq!(
        with_key(
            &c,
            "POST",
            &zones,
            &key,
            Some(json!({"name": "Z", "area": square()}))
        )
        .status,
        201
    );
    assert_eq!(
        with_key(&c, "GET", &zones, &key, None).json()["zones"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let cov = with_key(
        &c,
        "GET",
        &format!("/v1/orgs/{org}/coverage?lat=50.5&lon=10.5"),
        &key,
        None,
    );
    assert_eq!(cov.json()["zones"].as_array().unwrap().len(), 1);
    assert!(stack.gateway_logged("\"principal_kind\":\"api_key\""));

    // Listed with a hint, never the secret.
    let listed = ada.send("GET", &format!("/v1/orgs/{org}/api-keys"), None);
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(
        !text.contains(&key) && !text.contains(&key[21..53]),
        "{text}"
    );
    assert_eq!(listed.json()["api_keys"][0]["id"], id.as_str());

    // Scopes: a read-only key cannot write.
    let (_, read_only) = create_key(&mut ada, &org, &["zones:read"]);
    with_key(
        &c,
        "POST",
        &zones,
        &read_only,
        Some(json!({"name": "Y", "area": square()})),
    )
    .assert_problem(403);

    // Another org's path: refused by policy, and logged as a deny.
    let mut bob = logged_in(&stack, "bob@example.com");
    let other = bob
        .send("POST", "/v1/orgs", Some(json!({"name": "Globex"})))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    with_key(&c, "GET", &format!("/v1/orgs/{other}/zones"), &key, None).assert_problem(403);
    // Keys never manage keys or members.
    let keys_page = with_key(&c, "GET", &format!("/v1/orgs/{org}/api-keys"), &key, None);
    keys_page.assert_problem(401);
    // The challenge names what that route takes: a dashboard session only.
    assert_eq!(
        keys_page.header("www-authenticate"),
        Some(r#"Cookie realm="zonegate""#)
    );

    // Malformed, wrong checksum, other schemes: one fixed 401.
    let mut flipped = key.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'a' { 'b' } else { 'a' });
    for bad in ["zgk_nonsense", flipped.as_str()] {
        let refused = with_key(&c, "GET", &zones, bad, None);
        refused.assert_problem(401);
        // The zone routes take an API key or a session.
        assert_eq!(
            refused.header("www-authenticate"),
            Some(r#"Bearer realm="zonegate", Cookie realm="zonegate""#)
        );
    }
    c.request(
        "GET",
        &zones,
        &[("authorization", &format!("Basic {key}"))],
        None,
    )
    .assert_problem(401);
    // In a query string: refused, and flagged as leaked.
    c.get(&format!("{zones}?api_key={key}")).assert_problem(400);
    assert!(stack.gateway_logged("authn_apikey_in_url"));

    // Canary: no key ever reaches a log.
    for log in [
        stack.gateway_log(),
        std::fs::read_to_string(stack.dir.path().join("backend.log")).unwrap(),
    ] {
        assert!(!log.contains(&key) && !log.contains(&read_only) && !log.contains(&key[21..53]));
    }
}

#[test]
fn revoke_is_immediate_even_under_load_and_leaves_other_keys_working() {
    let stack = Stack::start();
    let (mut ada, org) = owner_with_org(&stack);
    let (id, key) = create_key(&mut ada, &org, &["zones:read"]);
    let (_, other) = create_key(&mut ada, &org, &["zones:read"]);
    let zones = format!("/v1/orgs/{org}/zones");
    let c = stack.client();
    assert_eq!(with_key(&c, "GET", &zones, &key, None).status, 200);

    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<(Instant, u16)>> = Mutex::new(Vec::new());
    let revoked_at = std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let status = with_key(&c, "GET", &zones, &key, None).status;
                    results.lock().unwrap().push((started, status));
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let resp = ada.send("DELETE", &format!("/v1/orgs/{org}/api-keys/{id}"), None);
        assert_eq!(resp.status, 204);
        let revoked_at = Instant::now();
        // Until the load has sent a few requests that started after the revoke: on a loaded
        // machine one request can take longer than any fixed pause.
        let deadline = revoked_at + std::time::Duration::from_secs(20);
        while Instant::now() < deadline
            && results
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t > revoked_at)
                .count()
                < 6
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        revoked_at
    });
    let results = results.into_inner().unwrap();
    assert!(
        results.iter().any(|(_, s)| *s == 200),
        "the load ran before the revoke"
    );
    let after: Vec<_> = results.iter().filter(|(t, _)| *t > revoked_at).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|(_, s)| *s == 401),
        "a request after the revoke succeeded: {after:?}"
    );
    assert_eq!(
        with_key(&c, "GET", &zones, &other, None).status,
        200,
        "other keys keep working"
    );
}

#[test]
fn a_rolled_key_works_with_both_secrets_during_the_grace_period() {
    let stack = Stack::start();
    let (mut ada, org) = owner_with_org(&stack);
    let (id, old) = create_key(&mut ada, &org, &["zones:read"]);
    let rolled = ada.send("POST", &format!("/v1/orgs/{org}/api-keys/{id}/roll"), None);
    assert_eq!(rolled.status, 201);
    let new = rolled.json()["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rolled.json()["previous_valid_until"].as_i64().is_some());
    let c = stack.client();
    let zones = format!("/v1/orgs/{org}/zones");
    assert_eq!(with_key(&c, "GET", &zones, &old, None).status, 200);
    assert_eq!(with_key(&c, "GET", &zones, &new, None).status, 200);
}

#[test]
fn only_admins_manage_keys() {
    let stack = Stack::start();
    let (mut ada, org) = owner_with_org(&stack);
    ada.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({"email": "dev@example.com", "role": "developer"})),
    );
    let token = stack.mailed_token("dev@example.com");
    let mut dev = logged_in(&stack, "dev@example.com");
    assert_eq!(
        dev.send(
            "POST",
            "/v1/invitations/accept",
            Some(json!({"token": token}))
        )
        .status,
        200
    );
    dev.send(
        "POST",
        &format!("/v1/orgs/{org}/api-keys"),
        Some(json!({"name": "x", "scopes": ["zones:read"]})),
    )
    .assert_problem(403);
    dev.send("GET", &format!("/v1/orgs/{org}/api-keys"), None)
        .assert_problem(403);
    ada.send(
        "POST",
        &format!("/v1/orgs/{org}/api-keys"),
        Some(json!({"name": "x", "scopes": ["admin"]})),
    )
    .assert_problem(422);
}
