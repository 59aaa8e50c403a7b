//! TLS to upstreams: verified against the configured CA and name, with a client certificate
//! for mutual TLS; a certificate the gateway cannot verify, or an upstream refusing the
//! gateway's, is a 502 and the request never reaches it.

use zonegate_e2e::{EchoTls, Stack, StackOptions};

fn stack(echo_tls: EchoTls) -> Stack {
    Stack::start_with(StackOptions {
        echo_tls,
        ..StackOptions::default()
    })
}

#[test]
fn requests_reach_a_tls_upstream_verified_by_its_ca() {
    let stack = stack(EchoTls::Verified);
    for _ in 0..3 {
        let resp = stack.client().get("/v1/orgs/acme/echo");
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    }
    assert_eq!(stack.echo.seen().len(), 3);
    let claims = crate::assertions::verify(
        &stack,
        stack.echo.seen()[0].header_values("zonegate-identity")[0],
    );
    assert_eq!(claims["htu"], "/v1/orgs/acme/echo");
}

#[test]
fn mutual_tls_presents_the_configured_client_certificate() {
    let stack = stack(EchoTls::Mutual);
    let resp = stack.client().get("/v1/orgs/acme/echo");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(stack.echo.seen().len(), 1);
}

#[test]
fn an_upstream_certificate_from_another_ca_is_a_502_and_nothing_is_sent() {
    let stack = stack(EchoTls::UntrustedCa);
    let resp = stack.client().get("/v1/orgs/acme/echo");
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    assert!(stack.echo.seen().is_empty(), "nothing reached the upstream");
}

#[test]
fn an_upstream_requiring_a_client_certificate_refuses_a_gateway_without_one() {
    let stack = stack(EchoTls::MissingClientCert);
    let resp = stack.client().get("/v1/orgs/acme/echo");
    assert_eq!(resp.status, 502);
    assert!(stack.echo.seen().is_empty(), "nothing reached the upstream");
}
