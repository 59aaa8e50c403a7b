//! End-to-end tests of the HTTP API through `app()`, with a temporary SQLite
//! file, assertions minted here with the gateway's key format, and a clock
//! the tests control.
//!
//! `Harness::send` checks the invariants every response must satisfy
//! (security headers; problem+json for errors), so each test checks them too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt as _;
use zone_backend::{app, AppState, BackendConfig, Clock, IdentityKeys, IdentityVerifier, Store};

const KEY_1: [u8; 32] = [0x11; 32];
const KEY_2: [u8; 32] = [0x22; 32];
const NOT_OUR_KEY: [u8; 32] = [0x99; 32];
const NOW: u64 = 1_700_000_000;
const GENERIC_401: &str = "missing or invalid gateway identity assertion";

#[derive(Debug)]
struct TestClock(AtomicU64);

impl TestClock {
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    fn secs(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.secs())
    }
}

struct Harness {
    app: Router,
    clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn expect(self, status: StatusCode) -> Self {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("zones.db").display());
    harness_on(&url, dir).await
}

/// The database URLs the storage tests run on: SQLite always, PostgreSQL (a scratch database,
/// dropped by the guard) when `ZONEGATE_TEST_POSTGRES_URL` is set.
async fn databases() -> Vec<(String, tempfile::TempDir, Option<ScratchPg>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("zones.db").display());
    let mut out = vec![(sqlite, dir, None)];
    match std::env::var("ZONEGATE_TEST_POSTGRES_URL") {
        Ok(admin) => {
            let pg = ScratchPg::create(&admin).await;
            out.push((pg.url.clone(), tempfile::tempdir().unwrap(), Some(pg)));
        }
        Err(_) => eprintln!(
            "ZONEGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL half of the zone store tests"
        ),
    }
    out
}

/// A database of its own on the test server, dropped afterwards (best effort).
struct ScratchPg {
    admin: String,
    name: String,
    url: String,
}

impl ScratchPg {
    async fn create(admin: &str) -> ScratchPg {
        use sqlx::Connection;
        let name = format!("zb_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        ScratchPg {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

async fn harness_on(url: &str, dir: tempfile::TempDir) -> Harness {
    harness_with(Store::open(url).await.unwrap(), dir)
}

/// A backend whose store has a single pooled connection: every query runs where the earlier
/// ones prepared their statements.
async fn harness_on_one_connection(url: &str, dir: tempfile::TempDir) -> Harness {
    harness_with(Store::open_with_connections(url, 1).await.unwrap(), dir)
}

fn harness_with(store: Store, dir: tempfile::TempDir) -> Harness {
    let keys = IdentityKeys::from_keys(vec![
        ("identity-1".to_owned(), KEY_1.to_vec()),
        ("identity-2".to_owned(), KEY_2.to_vec()),
    ])
    .unwrap();
    let clock = Arc::new(TestClock(AtomicU64::new(NOW)));
    let verifier = IdentityVerifier::new(keys, "zone-backend", clock.clone());
    let state = AppState::new(store, verifier, clock.clone());
    Harness {
        app: app(state),
        clock,
        _dir: dir,
    }
}

/// Claims as the gateway would send them for `method target` on behalf of a
/// user of `org`.
fn claims(method: &str, target: &str, org: Option<&str>) -> Value {
    json!({
        "iss": "zonegate",
        "aud": "zone-backend",
        "iat": NOW,
        "exp": NOW + 5,
        "jti": jti(),
        "rid": "req-1",
        "htm": method,
        "htu": target,
        "cd": digest(b""),
        "sub": "user-1",
        "kind": "user",
        "org": org,
        "role": "admin",
        "scopes": ["zones:read", "zones:write"],
    })
}

/// A fresh assertion id, as the gateway makes one per request.
fn jti() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("jti-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// RFC 9530 `Content-Digest` of a body, as the gateway binds it in `cd`.
fn digest(body: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha-256=:{}:", STANDARD.encode(sha2::Sha256::digest(body)))
}

fn mint(claims: &Value, kid: &str, key: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
}

fn request(method: &str, target: &str, token: Option<&str>, body: Option<&Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(target);
    if let Some(token) = token {
        builder = builder.header("zonegate-identity", token);
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let reply = Reply {
            status,
            headers,
            body,
        };
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("content-security-policy", "frame-ancestors 'none'"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(reply.header(name), value, "{status}");
        }
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(reply.header("content-type"), "application/problem+json");
            let problem = reply.json();
            assert_eq!(problem["status"], status.as_u16(), "{problem}");
            assert!(
                problem["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("urn:zone-backend:problem:")),
                "{problem}"
            );
            assert_eq!(problem["title"], status.canonical_reason().unwrap());
            assert!(problem["detail"].is_string(), "{problem}");
        }
        reply
    }

    /// A correctly signed request from a user of `org`.
    async fn call(&self, method: &str, target: &str, org: &str, body: Option<&Value>) -> Reply {
        let sent = body.map(Value::to_string).unwrap_or_default();
        let token = self.token_for_body(method, target, org, sent.as_bytes());
        self.send(request(method, target, Some(&token), body)).await
    }

    /// A JSON Merge Patch of `target` on behalf of `org`, signed as the gateway would.
    fn merge_patch(&self, target: &str, org: &str, body: &str) -> Request<Body> {
        let token = self.token_for_body("PATCH", target, org, body.as_bytes());
        Request::builder()
            .method("PATCH")
            .uri(target)
            .header("zonegate-identity", token)
            .header(header::CONTENT_TYPE, "application/merge-patch+json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    fn token(&self, method: &str, target: &str, org: &str) -> String {
        self.token_for_body(method, target, org, b"")
    }

    fn token_for_body(&self, method: &str, target: &str, org: &str, body: &[u8]) -> String {
        let mut claims = claims(method, target, Some(org));
        claims["iat"] = json!(self.clock.secs());
        claims["exp"] = json!(self.clock.secs() + 5);
        claims["cd"] = json!(digest(body));
        mint(&claims, "identity-1", &KEY_1)
    }

    async fn create(&self, org: &str, name: &str, area: Value) -> Value {
        let path = format!("/v1/orgs/{org}/zones");
        let body = json!({ "name": name, "area": area });
        self.call("POST", &path, org, Some(&body))
            .await
            .expect(StatusCode::CREATED)
            .json()
    }

    async fn list(&self, org: &str) -> Vec<Value> {
        let reply = self
            .call("GET", &format!("/v1/orgs/{org}/zones"), org, None)
            .await
            .expect(StatusCode::OK);
        reply.json()["zones"].as_array().unwrap().clone()
    }

    async fn coverage(&self, org: &str, lat: f64, lon: f64) -> Vec<String> {
        let target = format!("/v1/orgs/{org}/coverage?lat={lat}&lon={lon}");
        let body = self
            .call("GET", &target, org, None)
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(body["lat"], lat);
        assert_eq!(body["lon"], lon);
        let zones = body["zones"].as_array().unwrap();
        zones
            .iter()
            .map(|z| z["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn square(x: f64, y: f64, size: f64) -> Value {
    json!({"type": "Polygon", "coordinates": [[
        [x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]
    ]]})
}

// ---------------------------------------------------------------- identity

#[tokio::test]
async fn healthz_needs_no_identity() {
    let h = harness().await;
    let reply = h.send(request("GET", "/healthz", None, None)).await;
    assert_eq!(reply.expect(StatusCode::OK).json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn valid_assertion_is_accepted_with_either_rotated_key() {
    let h = harness().await;
    assert!(h.list("org-a").await.is_empty());
    let claims = claims("GET", "/v1/orgs/org-a/zones", Some("org-a"));
    let token = mint(&claims, "identity-2", &KEY_2);
    let reply = h
        .send(request("GET", "/v1/orgs/org-a/zones", Some(&token), None))
        .await;
    assert_eq!(reply.expect(StatusCode::OK).json(), json!({"zones": []}));
}

async fn assert_unauthenticated(h: &Harness, request: Request<Body>, token: Option<&str>) {
    let reply = h.send(request).await.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["detail"], GENERIC_401);
    assert_eq!(reply.header("www-authenticate"), "zonegate-identity");
    if let Some(token) = token {
        let body = String::from_utf8_lossy(&reply.body);
        assert!(!body.contains(token), "token echoed");
    }
}

/// Signs `claims` (after `edit`) with identity-1 and expects a 401 for a GET
/// of the org-a zone list.
async fn assert_rejected_claims(h: &Harness, edit: impl FnOnce(&mut Value)) {
    let target = "/v1/orgs/org-a/zones";
    let mut claims = claims("GET", target, Some("org-a"));
    edit(&mut claims);
    let token = mint(&claims, "identity-1", &KEY_1);
    assert_unauthenticated(h, request("GET", target, Some(&token), None), Some(&token)).await;
}

#[tokio::test]
async fn missing_or_garbage_header_is_401() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    assert_unauthenticated(&h, request("GET", target, None, None), None).await;
    for garbage in ["", "not-a-jwt", "a.b.c", "Bearer x.y.z"] {
        assert_unauthenticated(&h, request("GET", target, Some(garbage), None), None).await;
    }
    // Two assertions: ambiguous, rejected even though one is valid.
    let token = h.token("GET", target, "org-a");
    let twice = Request::builder()
        .uri(target)
        .header("zonegate-identity", &token)
        .header("zonegate-identity", &token)
        .body(Body::empty())
        .unwrap();
    assert_unauthenticated(&h, twice, Some(&token)).await;
}

#[tokio::test]
async fn forged_signature_is_401() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    let claims = claims("GET", target, Some("org-a"));
    let forged = mint(&claims, "identity-1", &NOT_OUR_KEY);
    assert_unauthenticated(
        &h,
        request("GET", target, Some(&forged), None),
        Some(&forged),
    )
    .await;
    // A valid token whose payload was swapped for another org's.
    let genuine = mint(&claims, "identity-1", &KEY_1);
    let other = URL_SAFE_NO_PAD.encode(claims_for_org_b(&claims).to_string());
    let parts: Vec<&str> = genuine.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other, parts[2]);
    assert_unauthenticated(
        &h,
        request("GET", target, Some(&spliced), None),
        Some(&spliced),
    )
    .await;
}

fn claims_for_org_b(claims: &Value) -> Value {
    let mut claims = claims.clone();
    claims["org"] = json!("org-b");
    claims
}

#[tokio::test]
async fn unknown_or_missing_kid_is_401() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    let claims = claims("GET", target, Some("org-a"));
    let unknown = mint(&claims, "identity-9", &KEY_1);
    assert_unauthenticated(
        &h,
        request("GET", target, Some(&unknown), None),
        Some(&unknown),
    )
    .await;
    let no_kid = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&KEY_1),
    )
    .unwrap();
    assert_unauthenticated(
        &h,
        request("GET", target, Some(&no_kid), None),
        Some(&no_kid),
    )
    .await;
}

#[tokio::test]
async fn alg_none_and_other_algorithms_are_401() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    let claims = claims("GET", target, Some("org-a"));
    let segment = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    for alg in ["none", "None", "NONE"] {
        let header = segment(json!({"alg": alg, "typ": "JWT", "kid": "identity-1"}));
        let token = format!("{header}.{}.", segment(claims.clone()));
        assert_unauthenticated(&h, request("GET", target, Some(&token), None), Some(&token)).await;
    }
    // Same key, another HMAC algorithm: only HS256 is accepted.
    let mut header = Header::new(Algorithm::HS384);
    header.kid = Some("identity-1".to_owned());
    let hs384 = encode(&header, &claims, &EncodingKey::from_secret(&KEY_1)).unwrap();
    assert_unauthenticated(&h, request("GET", target, Some(&hs384), None), Some(&hs384)).await;
}

#[tokio::test]
async fn expiry_and_issue_time_are_checked_with_one_second_leeway() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    assert_rejected_claims(&h, |c| {
        c["iat"] = json!(NOW - 7);
        c["exp"] = json!(NOW - 2);
    })
    .await;
    assert_rejected_claims(&h, |c| {
        c["iat"] = json!(NOW + 2);
        c["exp"] = json!(NOW + 7);
    })
    .await;
    // Longer-lived than the backend accepts (which bounds what the replay cache must keep).
    assert_rejected_claims(&h, |c| c["exp"] = json!(NOW + 61)).await;

    for (iat, exp) in [(NOW - 6, NOW - 1), (NOW + 1, NOW + 6)] {
        let mut edge = claims("GET", target, Some("org-a"));
        edge["iat"] = json!(iat);
        edge["exp"] = json!(exp);
        let token = mint(&edge, "identity-1", &KEY_1);
        h.send(request("GET", target, Some(&token), None))
            .await
            .expect(StatusCode::OK);
    }

    // The same assertion stops working once the clock moves past exp + leeway.
    let token = h.token("GET", target, "org-a");
    h.send(request("GET", target, Some(&token), None))
        .await
        .expect(StatusCode::OK);
    let unused = h.token("GET", target, "org-a");
    h.clock.advance(7);
    assert_unauthenticated(
        &h,
        request("GET", target, Some(&unused), None),
        Some(&unused),
    )
    .await;
}

#[tokio::test]
async fn a_captured_assertion_is_accepted_once_and_only_with_its_body() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    // What the review did: replay a captured assertion directly to the backend.
    let token = h.token("GET", target, "org-a");
    h.send(request("GET", target, Some(&token), None))
        .await
        .expect(StatusCode::OK);
    assert_unauthenticated(&h, request("GET", target, Some(&token), None), Some(&token)).await;

    // A captured create, replayed with an attacker's body: refused, nothing created, and the
    // genuine request still goes through once.
    let genuine = json!({"name": "genuine", "area": square(0.0, 0.0, 1.0)});
    let attacker = json!({"name": "attacker", "area": square(0.0, 0.0, 1.0)});
    let token = h.token_for_body("POST", target, "org-a", genuine.to_string().as_bytes());
    assert_unauthenticated(
        &h,
        request("POST", target, Some(&token), Some(&attacker)),
        Some(&token),
    )
    .await;
    h.send(request("POST", target, Some(&token), Some(&genuine)))
        .await
        .expect(StatusCode::CREATED);
    assert_unauthenticated(
        &h,
        request("POST", target, Some(&token), Some(&genuine)),
        Some(&token),
    )
    .await;
    let zones = h.call("GET", target, "org-a", None).await.json();
    let names: Vec<&str> = zones["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["genuine"]);
}

#[tokio::test]
async fn assertion_is_bound_to_method_and_target() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    // Signed for one request, sent as another.
    let token = h.token("GET", target, "org-a");
    assert_unauthenticated(
        &h,
        request("DELETE", target, Some(&token), None),
        Some(&token),
    )
    .await;
    let other_path = "/v1/orgs/org-a/coverage?lat=1&lon=1";
    assert_unauthenticated(
        &h,
        request("GET", other_path, Some(&token), None),
        Some(&token),
    )
    .await;
    let with_query = "/v1/orgs/org-a/zones?extra=1";
    assert_unauthenticated(
        &h,
        request("GET", with_query, Some(&token), None),
        Some(&token),
    )
    .await;

    assert_rejected_claims(&h, |c| c["htm"] = json!("get")).await;
    assert_rejected_claims(&h, |c| c["htm"] = json!("POST")).await;
    assert_rejected_claims(&h, |c| c["htu"] = json!("/v1/orgs/org-a/zones/")).await;
    assert_rejected_claims(&h, |c| {
        c["htu"] = json!("http://backend/v1/orgs/org-a/zones")
    })
    .await;

    // The query string is part of the binding, byte for byte.
    let coverage = "/v1/orgs/org-a/coverage?lat=1&lon=2";
    let token = h.token("GET", coverage, "org-a");
    h.send(request("GET", coverage, Some(&token), None))
        .await
        .expect(StatusCode::OK);
    let reordered = "/v1/orgs/org-a/coverage?lon=2&lat=1";
    assert_unauthenticated(
        &h,
        request("GET", reordered, Some(&token), None),
        Some(&token),
    )
    .await;
}

#[tokio::test]
async fn wrong_audience_issuer_or_claims_are_401() {
    let h = harness().await;
    assert_rejected_claims(&h, |c| c["aud"] = json!("zonegate")).await;
    assert_rejected_claims(&h, |c| c["aud"] = json!(["zone-backend"])).await;
    assert_rejected_claims(&h, |c| c["iss"] = json!("someone-else")).await;
    assert_rejected_claims(&h, |c| c["kind"] = json!("superuser")).await;
    assert_rejected_claims(&h, |c| c["exp"] = json!("tomorrow")).await;
    for required in [
        "iss", "aud", "iat", "exp", "jti", "rid", "htm", "htu", "cd", "sub", "kind",
    ] {
        assert_rejected_claims(&h, |c| {
            c.as_object_mut().unwrap().remove(required);
        })
        .await;
    }
    // Optional claims may be absent.
    let target = "/v1/orgs/org-a/zones";
    let mut minimal = claims("GET", target, Some("org-a"));
    for optional in ["role", "scopes"] {
        minimal.as_object_mut().unwrap().remove(optional);
    }
    let token = mint(&minimal, "identity-1", &KEY_1);
    h.send(request("GET", target, Some(&token), None))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn org_mismatch_is_403() {
    let h = harness().await;
    let target = "/v1/orgs/org-a/zones";
    let reply = h.call("GET", target, "org-b", None).await;
    reply.expect(StatusCode::FORBIDDEN);
    // No org claim at all (e.g. an anonymous principal).
    let mut no_org = claims("GET", target, None);
    no_org["kind"] = json!("anonymous");
    let token = mint(&no_org, "identity-1", &KEY_1);
    h.send(request("GET", target, Some(&token), None))
        .await
        .expect(StatusCode::FORBIDDEN);
    // Org ids are compared exactly.
    h.call("GET", target, "ORG-A", None)
        .await
        .expect(StatusCode::FORBIDDEN);
    // The org check comes before body validation.
    let bad = json!({"nonsense": true});
    h.call("POST", target, "org-b", Some(&bad))
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(h.list("org-a").await.is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let h = harness().await;
    // Unauthenticated callers cannot probe which routes exist.
    assert_unauthenticated(&h, request("GET", "/nope", None, None), None).await;
    assert_unauthenticated(
        &h,
        request("PATCH", "/v1/orgs/org-a/zones", None, None),
        None,
    )
    .await;

    h.call("GET", "/nope", "org-a", None)
        .await
        .expect(StatusCode::NOT_FOUND);
    h.call("GET", "/v1/orgs/org-a", "org-a", None)
        .await
        .expect(StatusCode::NOT_FOUND);
    h.call("GET", "/v1/orgs/org-a/zones/", "org-a", None)
        .await
        .expect(StatusCode::NOT_FOUND);

    let reply = h
        .call("PATCH", "/v1/orgs/org-a/zones", "org-a", None)
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
    let allow = reply.header("allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    h.call("POST", "/v1/orgs/org-a/coverage", "org-a", None)
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
    h.send(request("POST", "/healthz", None, None))
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
}

// ---------------------------------------------------------------- zones

fn assert_timestamp(value: &Value) {
    let text = value.as_str().unwrap();
    // e.g. 2023-11-14T22:13:20.000000Z
    assert_eq!(text.len(), 27, "{text}");
    assert!(text.ends_with('Z') && text.as_bytes()[10] == b'T', "{text}");
}

#[tokio::test]
async fn crud_round_trip() {
    for (url, dir, _pg) in databases().await {
        let h = harness_on(&url, dir).await;
        let area = square(10.0, 50.0, 1.0);
        let body = json!({"name": "Centre", "area": area});
        let reply = h
            .call("POST", "/v1/orgs/org-a/zones", "org-a", Some(&body))
            .await
            .expect(StatusCode::CREATED);
        let created = reply.json();
        let id = created["id"].as_str().unwrap().to_owned();
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(
            reply.header("location"),
            format!("/v1/orgs/org-a/zones/{id}")
        );
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(created["org"], "org-a");
        assert_eq!(created["name"], "Centre");
        assert_eq!(created["area"], area);
        assert_eq!(created["created_at"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(created["updated_at"], created["created_at"]);
        let keys: Vec<&String> = created.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{keys:?}");

        let zone_path = format!("/v1/orgs/org-a/zones/{id}");
        let fetched = h
            .call("GET", &zone_path, "org-a", None)
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(fetched, created);
        assert_eq!(h.list("org-a").await, vec![created.clone()]);

        h.clock.advance(60);
        let new_area = json!({"type": "MultiPolygon", "coordinates": [
            [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]],
            [[[5.0, 5.0], [6.0, 5.0], [6.0, 6.0], [5.0, 5.0]]]
        ]});
        let replacement = json!({"name": "Two islands", "area": new_area});
        let updated = h
            .call("PUT", &zone_path, "org-a", Some(&replacement))
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(updated["id"], id.as_str());
        assert_eq!(updated["name"], "Two islands");
        assert_eq!(updated["area"], new_area);
        assert_eq!(updated["created_at"], created["created_at"]);
        assert_timestamp(&updated["updated_at"]);
        assert_ne!(updated["updated_at"], created["updated_at"]);
        let fetched = h
            .call("GET", &zone_path, "org-a", None)
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(fetched, updated);

        let reply = h
            .call("DELETE", &zone_path, "org-a", None)
            .await
            .expect(StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty());
        h.call("GET", &zone_path, "org-a", None)
            .await
            .expect(StatusCode::NOT_FOUND);
        h.call("DELETE", &zone_path, "org-a", None)
            .await
            .expect(StatusCode::NOT_FOUND);
        h.call("PUT", &zone_path, "org-a", Some(&replacement))
            .await
            .expect(StatusCode::NOT_FOUND);
        assert!(h.list("org-a").await.is_empty());
    }
}

/// A patch of the name alone, then one of the area, on the same pooled connection. Binding the
/// absent area's bounds as NULL once made PostgreSQL keep that statement prepared with 4-byte
/// floats (sqlx's `Any` driver sends a NULL `f64` so), and the next patch's 8-byte bounds were
/// refused: a 500 that came and went with which connection the pool handed out.
#[tokio::test]
async fn a_name_patch_then_an_area_patch_on_one_connection() {
    for (url, dir, _pg) in databases().await {
        let h = harness_on_one_connection(&url, dir).await;
        let created = h.create("org-a", "Centre", square(0.0, 0.0, 1.0)).await;
        let path = format!("/v1/orgs/org-a/zones/{}", created["id"].as_str().unwrap());
        for (round, body) in [
            json!({"name": "Old town"}),
            json!({"area": square(20.0, 20.0, 1.0)}),
            json!({"name": "Harbour"}),
            json!({"name": "Docks", "area": square(5.0, 5.0, 2.0)}),
            json!({"area": square(7.0, 7.0, 1.0)}),
        ]
        .iter()
        .enumerate()
        {
            let reply = h
                .send(h.merge_patch(&path, "org-a", &body.to_string()))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{url}, patch {round}: {body}");
            let patched = reply.json();
            if let Some(name) = body.get("name") {
                assert_eq!(&patched["name"], name, "{url}, patch {round}");
            }
            if let Some(area) = body.get("area") {
                assert_eq!(&patched["area"], area, "{url}, patch {round}");
            }
        }
        let covered = h
            .call(
                "GET",
                "/v1/orgs/org-a/coverage?lat=7.5&lon=7.5",
                "org-a",
                None,
            )
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(covered["zones"][0]["name"], "Docks", "{url}");
    }
}

#[tokio::test]
async fn patch_changes_only_the_members_given() {
    for (url, dir, _pg) in databases().await {
        let h = harness_on(&url, dir).await;
        let created = h.create("org-a", "Centre", square(0.0, 0.0, 1.0)).await;
        let path = format!("/v1/orgs/org-a/zones/{}", created["id"].as_str().unwrap());
        let patch = |body: &str| h.merge_patch(&path, "org-a", body);

        h.clock.advance(60);
        let renamed = h
            .send(patch(r#"{"name":"Old town"}"#))
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(renamed["name"], "Old town");
        assert_eq!(renamed["area"], created["area"]);
        assert_eq!(renamed["created_at"], created["created_at"]);
        assert_ne!(renamed["updated_at"], created["updated_at"]);

        // The area alone, and the bounds move with it: coverage finds the new place.
        let moved = h
            .send(patch(&json!({"area": square(20.0, 20.0, 1.0)}).to_string()))
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(moved["name"], "Old town");
        assert_eq!(moved["area"], square(20.0, 20.0, 1.0));
        let covered = h
            .call(
                "GET",
                "/v1/orgs/org-a/coverage?lat=20.5&lon=20.5",
                "org-a",
                None,
            )
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(covered["zones"].as_array().unwrap().len(), 1);

        // An empty patch changes nothing, not even the time.
        h.clock.advance(60);
        let same = h.send(patch("{}")).await.expect(StatusCode::OK).json();
        assert_eq!(same, moved);

        // Removing a member, an unknown member, a bad value: refused, nothing changed.
        for (body, status) in [
            (r#"{"name":null}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (r#"{"area":null}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (r#"{"colour":"red"}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (r#"{"name":""}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (
                r#"{"area":{"type":"Point","coordinates":[1,2]}}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            ("{", StatusCode::BAD_REQUEST),
        ] {
            let reply = h.send(patch(body)).await;
            assert_eq!(reply.status, status, "{body}");
            assert!(reply.json()["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:zone-backend:problem:"));
        }
        assert_eq!(h.list("org-a").await, vec![moved]);

        // Another org's zone, or none: 404.
        let other = format!("/v1/orgs/org-b/zones/{}", created["id"].as_str().unwrap());
        let token = h.token_for_body("PATCH", &other, "org-b", br#"{"name":"x"}"#);
        let reply = h
            .send(
                Request::builder()
                    .method("PATCH")
                    .uri(&other)
                    .header("zonegate-identity", token)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(r#"{"name":"x"}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn list_is_ordered_by_creation_time_then_id() {
    for (url, dir, _pg) in databases().await {
        let h = harness_on(&url, dir).await;
        let first = h.create("org-a", "first", square(0.0, 0.0, 1.0)).await;
        h.clock.advance(1);
        let second = h.create("org-a", "second", square(2.0, 0.0, 1.0)).await;
        let third = h.create("org-a", "third", square(4.0, 0.0, 1.0)).await;
        let mut same_second = [second, third];
        same_second.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let listed = h.list("org-a").await;
        let expected = [first, same_second[0].clone(), same_second[1].clone()];
        assert_eq!(listed, expected);
    }
}

#[tokio::test]
async fn percent_encoded_org_round_trips() {
    let h = harness().await;
    let body = json!({"name": "Spaced", "area": square(0.0, 0.0, 1.0)});
    let reply = h
        .call("POST", "/v1/orgs/org%20a/zones", "org a", Some(&body))
        .await
        .expect(StatusCode::CREATED);
    let zone = reply.json();
    assert_eq!(zone["org"], "org a");
    let location = reply.header("location").to_owned();
    assert_eq!(
        location,
        format!("/v1/orgs/org%20a/zones/{}", zone["id"].as_str().unwrap())
    );
    h.call("GET", &location, "org a", None)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn orgs_cannot_see_or_touch_each_others_zones() {
    for (url, dir, _pg) in databases().await {
        let h = harness_on(&url, dir).await;
        let zone = h.create("org-a", "A's zone", square(0.0, 0.0, 10.0)).await;
        let id = zone["id"].as_str().unwrap();
        let b_path = format!("/v1/orgs/org-b/zones/{id}");

        assert!(h.list("org-b").await.is_empty());
        h.call("GET", &b_path, "org-b", None)
            .await
            .expect(StatusCode::NOT_FOUND);
        let takeover = json!({"name": "mine now", "area": square(20.0, 20.0, 1.0)});
        h.call("PUT", &b_path, "org-b", Some(&takeover))
            .await
            .expect(StatusCode::NOT_FOUND);
        h.call("DELETE", &b_path, "org-b", None)
            .await
            .expect(StatusCode::NOT_FOUND);
        assert!(h.coverage("org-b", 5.0, 5.0).await.is_empty());
        // Using org-a's path with org-b's identity is forbidden outright.
        let a_path = format!("/v1/orgs/org-a/zones/{id}");
        h.call("GET", &a_path, "org-b", None)
            .await
            .expect(StatusCode::FORBIDDEN);
        h.call("DELETE", &a_path, "org-b", None)
            .await
            .expect(StatusCode::FORBIDDEN);

        // org-a's zone is untouched, and org-b's own zones stay separate.
        assert_eq!(h.list("org-a").await, vec![zone.clone()]);
        let b_zone = h.create("org-b", "B's zone", square(0.0, 0.0, 10.0)).await;
        assert_eq!(h.list("org-b").await, vec![b_zone]);
        assert_eq!(h.list("org-a").await, vec![zone]);
        assert_eq!(h.coverage("org-a", 5.0, 5.0).await, ["A's zone"]);
        assert_eq!(h.coverage("org-b", 5.0, 5.0).await, ["B's zone"]);
    }
}

#[tokio::test]
async fn coverage_uses_exact_containment_with_boundary_included() {
    for (url, dir, _pg) in databases().await {
        let h = harness_on(&url, dir).await;
        h.create("org-a", "square", square(0.0, 0.0, 10.0)).await;
        h.clock.advance(1);
        let triangle = json!({"type": "Polygon", "coordinates": [[[20.0, 0.0], [30.0, 0.0], [20.0, 10.0], [20.0, 0.0]]]});
        h.create("org-a", "triangle", triangle).await;
        h.clock.advance(1);
        h.create("org-a", "overlapping", square(5.0, 5.0, 10.0))
            .await;
        h.create("org-b", "elsewhere", square(0.0, 0.0, 10.0)).await;

        assert_eq!(h.coverage("org-a", 1.0, 1.0).await, ["square"]);
        assert_eq!(
            h.coverage("org-a", 7.0, 7.0).await,
            ["square", "overlapping"]
        );
        assert_eq!(
            h.coverage("org-a", 5.0, 10.0).await,
            ["square", "overlapping"],
            "edges count"
        );
        assert_eq!(h.coverage("org-a", 1.0, 21.0).await, ["triangle"]);
        // Inside the triangle's bounding box but outside the triangle.
        assert!(h.coverage("org-a", 9.0, 29.0).await.is_empty());
        assert!(h.coverage("org-a", -1.0, -1.0).await.is_empty());
        assert!(h.coverage("org-a", 89.0, 179.0).await.is_empty());
    }
}

#[tokio::test]
async fn bad_coverage_queries_are_400() {
    let h = harness().await;
    for query in [
        "",
        "?lat=1",
        "?lon=1",
        "?lat=abc&lon=1",
        "?lat=1&lon=",
        "?lat=91&lon=0",
        "?lat=-90.5&lon=0",
        "?lat=0&lon=180.1",
        "?lat=NaN&lon=0",
        "?lat=0&lon=inf",
        "?lat=1&lon=1&lat=2",
        "?lat=1&lon=1&radius=5",
    ] {
        let target = format!("/v1/orgs/org-a/coverage{query}");
        let reply = h.call("GET", &target, "org-a", None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        // Fixed text: no parser message ("missing field `lon`", "invalid float literal") and
        // nothing of the query reaches the body.
        let detail = reply.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for leak in ["missing field", "`", "literal", "abc", "radius"] {
            assert!(!detail.contains(leak), "{query}: {detail}");
        }
    }
    // Range limits are inclusive.
    h.call(
        "GET",
        "/v1/orgs/org-a/coverage?lat=-90&lon=180",
        "org-a",
        None,
    )
    .await
    .expect(StatusCode::OK);
}

/// Sends `body` (raw bytes, given content type) to create and to replace an
/// existing zone; both must fail with `status` and change nothing.
async fn assert_rejected_body(
    h: &Harness,
    content_type: Option<&str>,
    body: &str,
    status: StatusCode,
) {
    let before = h.list("org-a").await;
    let existing = before[0]["id"].as_str().unwrap();
    for (method, target) in [
        ("POST", "/v1/orgs/org-a/zones".to_owned()),
        ("PUT", format!("/v1/orgs/org-a/zones/{existing}")),
    ] {
        let token = h.token_for_body(method, &target, "org-a", body.as_bytes());
        let mut builder = Request::builder()
            .method(method)
            .uri(&target)
            .header("zonegate-identity", token);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        let reply = h
            .send(builder.body(Body::from(body.to_owned())).unwrap())
            .await;
        let shown: String = body.chars().take(120).collect();
        assert_eq!(
            reply.status,
            status,
            "{method} {shown}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        // The detail is one of ours, never serde's echo of the input.
        let detail = reply.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !detail.contains("line ") && !detail.contains("column ") && !detail.contains('`'),
            "{method} {shown}: {detail}"
        );
    }
    assert_eq!(h.list("org-a").await, before, "nothing stored or changed");
}

fn zone_json(name: &str, area: Value) -> String {
    json!({"name": name, "area": area}).to_string()
}

#[tokio::test]
async fn bad_bodies_are_rejected_and_nothing_is_stored() {
    let h = harness().await;
    h.create("org-a", "existing", square(0.0, 0.0, 1.0)).await;
    let json_type = Some("application/json");
    let ok_area = square(0.0, 0.0, 1.0);

    // Unparseable: 400.
    for body in [
        "",
        "{",
        "{\"name\": \"x\",}",
        "not json",
        "{\"name\": \"x\", \"area\": 1e999}",
    ] {
        assert_rejected_body(&h, json_type, body, StatusCode::BAD_REQUEST).await;
    }
    // Wrong or missing content type: 415.
    let valid = zone_json("ok", ok_area.clone());
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        assert_rejected_body(&h, content_type, &valid, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    // Too large: 413 (a syntactically valid body, so size is the only problem).
    let huge = zone_json(&"x".repeat(256 * 1024), ok_area.clone());
    assert_rejected_body(&h, json_type, &huge, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Well-formed JSON that breaks the schema or the rules: 422. The circle
    // has 10,001 positions, rounded so the body stays under the size limit.
    let round = |v: f64| (v * 1e4).round() / 1e4;
    let mut circle: Vec<[f64; 2]> = (0..10_000)
        .map(|i| {
            let t = f64::from(i) / 10_000.0 * std::f64::consts::TAU;
            [round(t.cos()), round(t.sin())]
        })
        .collect();
    circle.push(circle[0]);
    let too_many = json!({"type": "Polygon", "coordinates": [circle]});
    let unprocessable = [
        json!({"name": "x", "area": ok_area, "colour": "red"}).to_string(),
        json!({"name": "x"}).to_string(),
        json!({"area": ok_area}).to_string(),
        json!({"name": 5, "area": ok_area}).to_string(),
        json!([1, 2]).to_string(),
        zone_json("", ok_area.clone()),
        zone_json(&"n".repeat(201), ok_area.clone()),
        zone_json("tab\there", ok_area.clone()),
        zone_json("x", json!({"type": "Point", "coordinates": [1.0, 2.0]})),
        zone_json("x", json!({"type": "Polygon"})),
        zone_json("x", json!({"type": "Polygon", "coordinates": []})),
        zone_json(
            "x",
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]}),
        ),
        zone_json(
            "x",
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]]}),
        ),
        zone_json(
            "x",
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [2.0, 2.0], [2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]]}),
        ),
        zone_json(
            "x",
            json!({"type": "Polygon", "coordinates": [[[179.0, 0.0], [181.0, 0.0], [180.0, 1.0], [179.0, 0.0]]]}),
        ),
        zone_json(
            "x",
            json!({"type": "Polygon", "coordinates": [[[0.0, 89.0], [1.0, 91.0], [1.0, 89.0], [0.0, 89.0]]]}),
        ),
        zone_json(
            "x",
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], ["1", 0.0], [1.0, 1.0], [0.0, 0.0]]]}),
        ),
        zone_json("x", too_many),
    ];
    for body in unprocessable {
        assert_rejected_body(&h, json_type, &body, StatusCode::UNPROCESSABLE_ENTITY).await;
    }

    // The limits themselves are accepted.
    h.create("org-a", &"n".repeat(200), ok_area.clone()).await;
    h.create("org-a", "ünïcödé 🚚", ok_area.clone()).await;
    let body = zone_json("charset", ok_area);
    let token = h.token_for_body("POST", "/v1/orgs/org-a/zones", "org-a", body.as_bytes());
    let with_charset = Request::builder()
        .method("POST")
        .uri("/v1/orgs/org-a/zones")
        .header("zonegate-identity", token)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body))
        .unwrap();
    h.send(with_charset).await.expect(StatusCode::CREATED);
}

#[tokio::test]
async fn zone_ids_that_are_not_uuids_are_404() {
    let h = harness().await;
    let zone = h.create("org-a", "z", square(0.0, 0.0, 1.0)).await;
    let id = zone["id"].as_str().unwrap();
    let simple = id.replace('-', "");
    let body = json!({"name": "y", "area": square(0.0, 0.0, 1.0)});
    for bad in [
        "nope",
        "1",
        simple.as_str(),
        "00000000-0000-0000-0000-00000000000g",
    ] {
        let target = format!("/v1/orgs/org-a/zones/{bad}");
        h.call("GET", &target, "org-a", None)
            .await
            .expect(StatusCode::NOT_FOUND);
        h.call("PUT", &target, "org-a", Some(&body))
            .await
            .expect(StatusCode::NOT_FOUND);
        h.call("DELETE", &target, "org-a", None)
            .await
            .expect(StatusCode::NOT_FOUND);
    }
    // Upper case is the same UUID.
    let upper = format!("/v1/orgs/org-a/zones/{}", id.to_uppercase());
    h.call("GET", &upper, "org-a", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(h.list("org-a").await, vec![zone]);
}

// ---------------------------------------------------------------- library API

#[tokio::test]
async fn bind_serves_on_a_free_port_until_shutdown() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(keys.join("identity-1.key"), STANDARD.encode(KEY_1) + "\n").unwrap();
    std::fs::write(keys.join("pepper-1.key"), "ignored").unwrap();
    let config = BackendConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.path().join("new.db").display()),
        key_dir: keys,
        audience: "zone-backend".to_owned(),
        replay_cache_entries: 1000,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = zone_backend::bind(config, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    assert_ne!(addr.port(), 0);
    let server = tokio::spawn(server);

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");
    assert!(dir.path().join("new.db").exists(), "database created");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bad_configuration_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = BackendConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.path().join("z.db").display()),
        key_dir: dir.path().join("missing"),
        audience: "zone-backend".to_owned(),
        replay_cache_entries: 1000,
    };
    let err = zone_backend::serve(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.is_config_error());
    assert!(err.to_string().starts_with("--key-dir"), "{err}");

    std::fs::write(dir.path().join("identity-1.key"), STANDARD.encode(KEY_1)).unwrap();
    let bad_db = BackendConfig {
        key_dir: dir.path().to_owned(),
        database_url: "mysql://nope".to_owned(),
        ..config.clone()
    };
    let err = zone_backend::serve(bad_db, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.is_config_error());
    assert!(err.to_string().starts_with("--database"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = BackendConfig {
        key_dir: dir.path().to_owned(),
        listen: taken.local_addr().unwrap(),
        ..config
    };
    let err = zone_backend::serve(busy, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.is_config_error());
    assert!(err.to_string().starts_with("--listen"), "{err}");
}
