//! The signed identity assertion: the backend refuses forged, expired, replayed and missing
//! ones; key rotation keeps old assertions verifiable.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use zonegate_e2e::client::plain;
use zonegate_e2e::Stack;

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

/// Verify an assertion the way a backend must, with the stack's key; return its claims.
pub fn verify(stack: &Stack, token: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    let kid = header.kid.expect("assertion names its key");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["zone-backend"]);
    validation.set_issuer(&["zonegate"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(&key_bytes(stack, &kid)),
        &validation,
    )
    .unwrap();
    let exp = data.claims["exp"].as_u64().unwrap();
    let iat = data.claims["iat"].as_u64().unwrap();
    assert!(exp > iat && exp - iat <= 30, "assertions are short-lived");
    data.claims
}

fn mint(key: &[u8], kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key)).unwrap()
}

fn claims(method: &str, target: &str, org: &str, iat: u64, exp: u64) -> serde_json::Value {
    json!({
        "iss": "zonegate", "aud": "zone-backend", "iat": iat, "exp": exp,
        "rid": "test", "htm": method, "htu": target,
        "sub": "anonymous", "kind": "anonymous", "org": org,
    })
}

fn backend(stack: &Stack, method: &str, target: &str, token: Option<&str>) -> u16 {
    let auth = token.map_or(String::new(), |t| format!("zonegate-identity: {t}\r\n"));
    plain(
        stack.backend,
        &format!("{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}\r\n"),
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

    let good = mint(&key, "identity-1", claims("GET", target, "acme", t, t + 30));
    assert_eq!(
        backend(&stack, "GET", target, Some(&good)),
        200,
        "a valid assertion passes"
    );

    assert_eq!(backend(&stack, "GET", target, None), 401, "no assertion");
    let forged = mint(
        &[7u8; 32],
        "identity-1",
        claims("GET", target, "acme", t, t + 30),
    );
    assert_eq!(
        backend(&stack, "GET", target, Some(&forged)),
        401,
        "forged signature"
    );
    let unknown = mint(&key, "identity-9", claims("GET", target, "acme", t, t + 30));
    assert_eq!(
        backend(&stack, "GET", target, Some(&unknown)),
        401,
        "unknown key id"
    );
    let expired = mint(
        &key,
        "identity-1",
        claims("GET", target, "acme", t - 120, t - 60),
    );
    assert_eq!(
        backend(&stack, "GET", target, Some(&expired)),
        401,
        "expired"
    );
    assert_eq!(
        backend(&stack, "DELETE", target, Some(&good)),
        401,
        "replayed to another method"
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
        claims("GET", "/v1/orgs/globex/zones", "acme", t, t + 30),
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
    let t = now();
    let target = "/v1/orgs/acme/zones";
    let old = mint(
        &key_bytes(&stack, "identity-1"),
        "identity-1",
        claims("GET", target, "acme", t, t + 30),
    );

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
    assert_eq!(
        backend(&stack, "GET", target, Some(&old)),
        200,
        "identity-1 still verifies"
    );
    // And the zone API works end to end with the new key.
    assert_eq!(stack.client().get(target).status, 200);
}
