//! TLS versions, the redirect listener, the admin listener, routing answers and headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use zonegate_e2e::client::plain_get;
use zonegate_e2e::{Client, Stack};

/// A TLS 1.1 ClientHello (no supported_versions extension), offering two TLS 1.0-era suites.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x09, 0x00, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_1_2_and_1_3_are_served_and_older_versions_refused() {
    let stack = Stack::start();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = Client::with_versions(stack.https, &stack.cert, &[version]);
        let tls = client.connect().unwrap();
        assert_eq!(tls.conn.protocol_version(), Some(version.version));
        let resp = client.get("/healthz");
        assert_eq!(resp.status, 200, "{:?}", version.version);
    }

    let mut tcp = TcpStream::connect(stack.https).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&tls11_client_hello()).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    // The server must not negotiate: no ServerHello (handshake record 0x16), only an alert
    // record (0x15) or a closed connection.
    assert!(
        answer.first() != Some(&0x16),
        "server negotiated TLS 1.1: {answer:02x?}"
    );
    if let Some(&first) = answer.first() {
        assert_eq!(first, 0x15, "expected an alert record: {answer:02x?}");
    }
}

#[test]
fn http_listener_only_redirects_to_the_configured_https_origin() {
    let stack = Stack::start();
    for (method, target) in [
        ("GET", "/v1/orgs/acme/echo?x=1&y=%2F"),
        ("POST", "/anything"),
    ] {
        let resp = zonegate_e2e::client::plain(
            stack.http,
            &format!(
                "{method} {target} HTTP/1.1\r\nhost: evil.example\r\nx-forwarded-host: evil.example\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ),
        )
        .unwrap();
        assert_eq!(resp.status, 308, "{method} {target}");
        assert_eq!(
            resp.header("location").unwrap(),
            format!("https://localhost:{}{target}", stack.https.port())
        );
    }
    assert!(
        stack.echo.seen().is_empty(),
        "the redirect listener proxied something"
    );
}

#[test]
fn admin_listener_answers_health_and_readiness_and_is_not_on_the_public_listener() {
    let stack = Stack::start();
    let health = plain_get(stack.admin, "/healthz", &[]).unwrap();
    assert_eq!(health.status, 200);
    let ready = plain_get(stack.admin, "/readyz", &[]).unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["database"], "ok");
    assert_eq!(ready.json()["identity_key"], "identity-1");
    assert_eq!(ready.json()["policy_hash"].as_str().unwrap().len(), 64);
    // The public listener has no /readyz route.
    stack.client().get("/readyz").assert_problem(404);
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let stack = Stack::start();
    let client = stack.client();
    let nf = client.get("/nope").assert_problem(404);
    assert_eq!(nf["type"], "urn:zonegate:problem:not-found");
    let resp = client.request("DELETE", "/v1/orgs/acme/zones", &[], None);
    resp.assert_problem(405);
    assert_eq!(resp.header("allow"), Some("GET, POST"));
    let trace = client.request("TRACE", "/v1/orgs/acme/zones", &[], None);
    assert_eq!(trace.status, 405);
    assert!(stack.echo.seen().is_empty());
}

#[test]
fn every_response_carries_the_security_headers() {
    let stack = Stack::start();
    let client = stack.client();
    for resp in [
        client.get("/healthz"),
        client.get("/nope"),
        client.get("/v1/orgs/acme/echo"),
        client.get("/v1/orgs/locked/echo"),
    ] {
        assert!(resp
            .header("strict-transport-security")
            .unwrap()
            .contains("max-age=63072000"));
        assert!(resp
            .header("strict-transport-security")
            .unwrap()
            .contains("includeSubDomains"));
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            resp.header("content-security-policy"),
            Some(zonegate::web::security::CONTENT_SECURITY_POLICY)
        );
        assert_eq!(resp.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(resp.header("cache-control"), Some("no-store"));
        assert_eq!(resp.header("x-request-id").map(str::len), Some(24));
    }
}

#[test]
fn a_policy_deny_is_403_problem_json_and_never_reaches_the_upstream() {
    let stack = Stack::start();
    let resp = stack.client().get("/v1/orgs/locked/echo");
    let body = resp.assert_problem(403);
    assert_eq!(body["type"], "urn:zonegate:problem:forbidden");
    assert!(stack.echo.seen().is_empty());
    assert!(stack.gateway_logged("/v1/orgs/locked/echo"));
    let log = stack.gateway_log();
    let line = log
        .lines()
        .find(|l| l.contains("\"http_request\"") && l.contains("/v1/orgs/locked/echo"))
        .expect("an access event for the denied request");
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["decision"], "deny");
    assert_eq!(event["policies"], "e2e-locked-org");
    assert_eq!(event["status"], 403);
    assert_eq!(event["principal_kind"], "anonymous");
}

#[test]
fn sighup_serves_a_renewed_certificate_to_new_connections() {
    let stack = Stack::start();
    let old_ca = stack.cert.with_file_name("old-cert.pem");
    std::fs::copy(&stack.cert, &old_ca).unwrap();
    let old = Client::new(stack.https, &old_ca);
    assert_eq!(old.get("/healthz").status, 200);
    let served = || {
        let ready = plain_get(stack.admin, "/readyz", &[]).unwrap();
        ready.json()["tls_certificate_sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old_fingerprint = served();
    assert_eq!(old_fingerprint.len(), 64);

    // Renewed on disk: another self-signed certificate in the same files.
    let key = stack.cert.with_file_name("key.pem");
    std::fs::remove_file(&stack.cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    zonegate::server::tls::ensure_dev_certificate(&stack.cert, &key).unwrap();
    let renewed = Client::new(stack.https, &stack.cert);
    // Not yet: the files are read on SIGHUP, not watched.
    assert!(renewed.connect().is_err());

    let pid = stack.gateway_pid().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while renewed.connect().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not load the renewed certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(renewed.get("/healthz").status, 200);
    // A new client that trusts only the old certificate (the first client could resume its
    // TLS session, which presents no certificate).
    assert!(
        Client::new(stack.https, &old_ca).connect().is_err(),
        "the old certificate is still served"
    );
    assert!(stack.gateway_logged("tls_certificate_reloaded"));
    // Readiness names the certificate now served.
    let new_fingerprint = served();
    assert_ne!(new_fingerprint, old_fingerprint);

    // A broken pair of files: the renewed certificate stays in use.
    std::fs::write(&stack.cert, "not a certificate").unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !stack.gateway_logged("tls_certificate_reload_failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload failure logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(renewed.get("/healthz").status, 200);
    assert_eq!(served(), new_fingerprint);
}

#[test]
fn security_txt_is_served_from_config_and_404_without_it() {
    let stack = Stack::start();
    stack
        .client()
        .get("/.well-known/security.txt")
        .assert_problem(404);
    drop(stack);

    let stack = Stack::start_with(zonegate_e2e::StackOptions {
        extra_config: r#"[security_txt]
contact = ["mailto:security@zones.example.com"]
expires = "2099-01-01T00:00:00Z"
policy = "https://zones.example.com/security-policy"
preferred_languages = ["en"]
"#
        .into(),
        ..zonegate_e2e::StackOptions::default()
    });
    let resp = stack.client().get("/.well-known/security.txt");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let text = String::from_utf8(resp.body.clone()).unwrap();
    let origin = format!("https://localhost:{}", stack.https.port());
    assert_eq!(
        text,
        format!(
            "Contact: mailto:security@zones.example.com\nExpires: 2099-01-01T00:00:00Z\n\
             Policy: https://zones.example.com/security-policy\nPreferred-Languages: en\n\
             Canonical: {origin}/.well-known/security.txt\n"
        )
    );
    // Exactly one Expires, as RFC 9116 requires.
    assert_eq!(text.matches("Expires:").count(), 1);
}

#[test]
fn the_admin_listener_reloads_the_certificate_and_refuses_a_broken_one() {
    let stack = Stack::start();
    let reload = || {
        zonegate_e2e::client::plain(
            stack.admin,
            "POST /certificates/reload HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap()
    };
    let before = plain_get(stack.admin, "/readyz", &[]).unwrap().json()["tls_certificate_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = stack.cert.with_file_name("key.pem");
    std::fs::remove_file(&stack.cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    zonegate::server::tls::ensure_dev_certificate(&stack.cert, &key).unwrap();

    let resp = reload();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let renewed = resp.json()["tls_certificate_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(renewed, before);
    assert_eq!(
        Client::new(stack.https, &stack.cert).get("/healthz").status,
        200
    );

    std::fs::write(&stack.cert, "not a certificate").unwrap();
    let refused = reload();
    let problem = refused.assert_problem(422);
    assert_eq!(problem["type"], "urn:zonegate:problem:invalid-certificate");
    assert_eq!(
        plain_get(stack.admin, "/readyz", &[]).unwrap().json()["tls_certificate_sha256"],
        renewed.as_str(),
        "the renewed certificate stays"
    );
    assert!(stack.gateway_logged("tls_certificate_reload_failed"));
}
