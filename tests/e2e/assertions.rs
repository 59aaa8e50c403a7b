//! The signed identity assertion: the backend refuses forged, expired, replayed and missing
//! ones, and one carrying another body; key rotation keeps old assertions verifiable; Ed25519
//! assertions verify with the public key alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use zonegate_e2e::client::plain;
use zonegate_e2e::{Stack, StackOptions};

fn key_bytes(stack: &Stack, kid: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(stack.key_dir.join(format!("{kid}.key"))).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// RFC 9530 `Content-Digest` of a body (SHA-256).
pub fn digest(body: &[u8]) -> String {
    use sha2::Digest as _;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
    )
}

/// Verify an assertion the way a backend must, with the stack's key (the shared HMAC key, or
/// the public half of the Ed25519 one); return its claims.
pub fn verify(stack: &Stack, token: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.expect("assertion names its key");
    let key = match header.alg {
        Algorithm::HS256 => DecodingKey::from_secret(&key_bytes(stack, &kid)),
        Algorithm::EdDSA => {
            let text = std::fs::read_to_string(stack.key_dir.join(format!("{kid}.pub"))).unwrap();
            let public = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .unwrap();
            DecodingKey::from_ed_der(&public)
        }
        other => panic!("unexpected algorithm {other:?}"),
    };
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["zone-backend"]);
    validation.set_issuer(&["zonegate"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap();
    let exp = data.claims["exp"].as_u64().unwrap();
    let iat = data.claims["iat"].as_u64().unwrap();
    assert!(exp > iat && exp - iat <= 5, "assertions live a few seconds");
    assert_eq!(
        data.claims["jti"].as_str().unwrap().len(),
        22,
        "a 128-bit id"
    );
    assert!(data.claims["cd"].as_str().unwrap().starts_with("sha-256=:"));
    data.claims
}

fn mint(key: &[u8], kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key)).unwrap()
}

fn claims(method: &str, target: &str, org: &str, iat: u64, exp: u64) -> serde_json::Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    json!({
        "iss": "zonegate", "aud": "zone-backend", "iat": iat, "exp": exp,
        "jti": format!("e2e-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)),
        "rid": "test", "htm": method, "htu": target, "cd": digest(b""),
        "sub": "anonymous", "kind": "anonymous", "org": org,
    })
}

fn backend(stack: &Stack, method: &str, target: &str, token: Option<&str>) -> u16 {
    backend_with_body(stack, method, target, token, b"")
}

fn backend_with_body(
    stack: &Stack,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: &[u8],
) -> u16 {
    let auth = token.map_or(String::new(), |t| format!("zonegate-identity: {t}\r\n"));
    let framing = if body.is_empty() {
        String::new()
    } else {
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        )
    };
    plain(
        stack.backend,
        &format!(
            "{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}{framing}\r\n{}",
            std::str::from_utf8(body).unwrap()
        ),
    )
    .unwrap()
    .status
}

#[test]
fn the_backend_refuses_requests_without_a_valid_assertion() {
    let stack = Stack::start();
    let key = key_bytes(&stack, "identity-1");
    let t = now();
    let target = "/v1/orgs/acme/zones";

    let good = mint(&key, "identity-1", claims("GET", target, "acme", t, t + 5));
    // Refused for another method first: a refusal does not spend the assertion.
    assert_eq!(
        backend(&stack, "DELETE", target, Some(&good)),
        401,
        "replayed to another method"
    );
    assert_eq!(
        backend(&stack, "GET", target, Some(&good)),
        200,
        "a valid assertion passes"
    );
    assert_eq!(
        backend(&stack, "GET", target, Some(&good)),
        401,
        "the same assertion a second time"
    );

    assert_eq!(backend(&stack, "GET", target, None), 401, "no assertion");
    let forged = mint(
        &[7u8; 32],
        "identity-1",
        claims("GET", target, "acme", t, t + 5),
    );
    assert_eq!(
        backend(&stack, "GET", target, Some(&forged)),
        401,
        "forged signature"
    );
    let unknown = mint(&key, "identity-9", claims("GET", target, "acme", t, t + 5));
    assert_eq!(
        backend(&stack, "GET", target, Some(&unknown)),
        401,
        "unknown key id"
    );
    let expired = mint(
        &key,
        "identity-1",
        claims("GET", target, "acme", t - 65, t - 60),
    );
    assert_eq!(
        backend(&stack, "GET", target, Some(&expired)),
        401,
        "expired"
    );
    assert_eq!(
        backend(
            &stack,
            "GET",
            "/v1/orgs/acme/coverage?lat=1&lon=1",
            Some(&good)
        ),
        401,
        "replayed to another path"
    );
    let other_org = mint(
        &key,
        "identity-1",
        claims("GET", "/v1/orgs/globex/zones", "acme", t, t + 5),
    );
    assert_eq!(
        backend(&stack, "GET", "/v1/orgs/globex/zones", Some(&other_org)),
        403,
        "asserted for one org, used on another's path"
    );

    // An assertion the gateway really issued, for another path, is refused too.
    assert_eq!(stack.client().get("/v1/orgs/acme/echo").status, 200);
    let issued = stack.echo.seen()[0].header_values("zonegate-identity")[0].to_owned();
    verify(&stack, &issued);
    assert_eq!(backend(&stack, "GET", target, Some(&issued)), 401);
}

#[test]
fn after_rotation_new_assertions_use_the_new_key_and_old_ones_still_verify() {
    let mut stack = Stack::start();
    let target = "/v1/orgs/acme/zones";

    let out = std::process::Command::new(zonegate_e2e::stack::zonegate_bin())
        .args(["keys", "rotate", "--dir"])
        .arg(&stack.key_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("identity-2"));

    stack.stop_gateway();
    stack.stop_backend();
    stack.start_backend();
    stack.start_gateway();

    assert_eq!(stack.client().get("/v1/orgs/acme/echo").status, 200);
    let issued = stack.echo.seen()[0].header_values("zonegate-identity")[0].to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&issued).unwrap().kid.as_deref(),
        Some("identity-2")
    );
    verify(&stack, &issued);
    // Made with the old key after the restart: assertions live seconds, so only the key's
    // survival is in question.
    let t = now();
    let old = mint(
        &key_bytes(&stack, "identity-1"),
        "identity-1",
        claims("GET", target, "acme", t, t + 5),
    );
    assert_eq!(
        backend(&stack, "GET", target, Some(&old)),
        200,
        "identity-1 still verifies"
    );
    // And the zone API works end to end with the new key.
    assert_eq!(stack.client().get(target).status, 200);
}

#[test]
fn a_captured_create_replayed_with_another_body_is_refused_and_creates_nothing() {
    let stack = Stack::start();
    let key = key_bytes(&stack, "identity-1");
    let target = "/v1/orgs/acme/zones";
    let area = json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]});
    let genuine = json!({"name": "genuine", "area": area}).to_string();
    let attacker = json!({"name": "attacker", "area": area}).to_string();
    let t = now();
    let mut c = claims("POST", target, "acme", t, t + 5);
    c["cd"] = json!(digest(genuine.as_bytes()));
    let captured = mint(&key, "identity-1", c);

    // What the review did: the captured assertion with the attacker's body, three times.
    for _ in 0..3 {
        assert_eq!(
            backend_with_body(&stack, "POST", target, Some(&captured), attacker.as_bytes()),
            401
        );
    }
    assert_eq!(
        backend_with_body(&stack, "POST", target, Some(&captured), genuine.as_bytes()),
        201,
        "the genuine request, once"
    );
    assert_eq!(
        backend_with_body(&stack, "POST", target, Some(&captured), genuine.as_bytes()),
        401,
        "and never again"
    );
    let listed = stack.client().get(target).json();
    let names: Vec<&str> = listed["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["genuine"]);
}

#[test]
fn the_gateway_binds_the_body_it_forwards_and_never_reuses_an_id() {
    let stack = Stack::start();
    let body = br#"{"name":"depot"}"#;
    for _ in 0..2 {
        let resp = stack.client().request(
            "POST",
            "/v1/orgs/acme/echo",
            &[
                ("content-type", "application/json"),
                // A client's own digest is not what the backend gets.
                ("content-digest", "sha-256=:AAAA:"),
            ],
            Some(body),
        );
        assert_eq!(resp.status, 200);
    }
    let seen = stack.echo.seen();
    let mut ids = Vec::new();
    for got in &seen {
        assert_eq!(got.body, body);
        let claims = verify(&stack, got.header_values("zonegate-identity")[0]);
        assert_eq!(claims["cd"], digest(body).as_str());
        assert_eq!(got.header_values("content-digest"), [digest(body).as_str()]);
        assert_eq!(
            got.header_values("content-length"),
            [body.len().to_string().as_str()]
        );
        ids.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);

    // A GET binds the empty body.
    stack.echo.clear();
    assert_eq!(stack.client().get("/v1/orgs/acme/echo").status, 200);
    let claims = verify(
        &stack,
        stack.echo.seen()[0].header_values("zonegate-identity")[0],
    );
    assert_eq!(claims["cd"], digest(b"").as_str());
}

#[test]
fn eddsa_assertions_carry_the_zone_api_with_only_a_public_key_on_the_backend() {
    let stack = Stack::start_with(StackOptions {
        identity_config: "algorithm = \"EdDSA\"".to_owned(),
        backend_public_keys_only: true,
        ..StackOptions::default()
    });
    // The zone API works end to end: the backend verifies with signing-1.pub alone.
    let target = "/v1/orgs/acme/zones";
    assert_eq!(stack.client().get(target).status, 200);
    assert_eq!(stack.client().get("/v1/orgs/acme/echo").status, 200);
    let issued = stack.echo.seen()[0].header_values("zonegate-identity")[0].to_owned();
    let header = jsonwebtoken::decode_header(&issued).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some("signing-1"));
    verify(&stack, &issued);
    // The backend holds no HMAC key, so a shared-key assertion (whoever holds identity-1)
    // gets nowhere.
    let t = now();
    let hs256 = mint(
        &key_bytes(&stack, "identity-1"),
        "identity-1",
        claims("GET", target, "acme", t, t + 5),
    );
    assert_eq!(backend(&stack, "GET", target, Some(&hs256)), 401);
    let files: Vec<String> = std::fs::read_dir(&stack.backend_key_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["signing-1.pub"]);
}
