//! Stage 8, forward: send an authorised request to its upstream and stream the answer back,
//! or answer it in process when the route's upstream is the gateway itself.
//!
//! The exchange is driven by pingora's HTTP/1 session types on both sides, with no task or
//! channel per request: read the request head (done), write the upstream head, stream the
//! request body, read the upstream response head, write ours, stream the body. What a generic
//! proxy would do for us is done here, explicitly:
//!
//! - the gateway consumed the credentials, so `Authorization`, `Cookie` and `X-CSRF-Token` never
//!   go upstream; the signed identity and the gateway's forwarding headers replace them
//!   (overwritten, never appended to);
//! - hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and what it names, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped in both
//!   directions, and bodies are re-framed: a known length as `Content-Length`, otherwise
//!   chunked; a `Transfer-Encoding` is never passed through;
//! - upstream failures before the response head are 502 (504 on a timeout) problem+json; after
//!   it the connection is closed, which is the only honest signal left;
//! - a reused upstream connection that turns out closed is retried once on a new one when the
//!   request had no body (nothing was consumed that could not be sent again).

use bytes::Bytes;
use http::header::{self, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::ServerSession;
use pingora::ErrorType;

use super::upstream::{ConnectError, Upstream};
use super::{respond, Pipeline, RequestCtx};
use crate::api::Caller;
use crate::domain::audit::RequestContext;
use crate::domain::identity::{self, Subject};
use crate::web::Rejection;

/// Request headers that carry the caller's credentials, consumed by the gateway.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "x-csrf-token"];

/// Hop-by-hop headers, which describe one connection and never cross the gateway.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How a forwarded exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// The response went out whole; the downstream connection may be reused.
    Complete,
    /// The exchange broke after the response head was sent; the connection must close.
    Broken,
}

/// The hop-by-hop headers of one message, including those its `Connection` names.
fn hop_by_hop(headers: &http::HeaderMap) -> Vec<HeaderName> {
    let mut named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    named.extend(HOP_BY_HOP.iter().map(|h| HeaderName::from_static(h)));
    named.retain(|n| headers.contains_key(n));
    named
}

/// The request head for the upstream: credentials and hop-by-hop headers out, forwarding
/// headers and the signed identity in, and the body framed as the gateway will send it.
pub fn upstream_request(
    p: &Pipeline,
    ctx: &RequestCtx,
    downstream: &RequestHeader,
    body_length: Option<usize>,
    chunked: bool,
) -> Result<RequestHeader, Rejection> {
    let mut up = downstream.clone();
    up.set_version(http::Version::HTTP_11);
    for name in hop_by_hop(&downstream.headers) {
        up.remove_header(&name);
    }
    for credential in CREDENTIAL_HEADERS {
        up.remove_header(credential);
    }
    up.remove_header(&header::CONTENT_LENGTH);
    let target =
        std::str::from_utf8(downstream.raw_path()).map_err(|_| Rejection::AmbiguousPath)?;
    let principal = ctx.principal.as_ref().ok_or(Rejection::Internal)?;
    let assertion = p
        .signer
        .sign(
            Subject {
                principal,
                org: ctx.org.as_deref(),
                method: downstream.method.as_str(),
                target,
                request_id: &ctx.id,
            },
            p.clock.unix_seconds(),
        )
        .map_err(|_| Rejection::Internal)?;
    let set = |up: &mut RequestHeader, name: &'static str, value: &str| {
        up.insert_header(name, value)
            .map_err(|_| Rejection::Internal)
    };
    set(&mut up, identity::HEADER, &assertion)?;
    set(&mut up, "x-request-id", &ctx.id)?;
    set(&mut up, "host", &p.public_authority)?;
    set(&mut up, "x-forwarded-proto", "https")?;
    set(&mut up, "x-forwarded-host", &p.public_authority)?;
    if let Some(client) = ctx.admitted.client {
        let client = client.to_string();
        set(&mut up, "x-forwarded-for", &client)?;
        set(&mut up, "x-real-ip", &client)?;
    }
    if chunked {
        set(&mut up, "transfer-encoding", "chunked")?;
    } else if let Some(length) = body_length {
        set(&mut up, "content-length", &length.to_string())?;
    }
    Ok(up)
}

/// The response head for the client: hop-by-hop and internal headers out, security headers
/// in, the body re-framed (its length when the upstream gave one, else chunked).
fn downstream_response(
    p: &Pipeline,
    ctx: &RequestCtx,
    upstream: &ResponseHeader,
    chunked_body: bool,
) -> pingora::Result<ResponseHeader> {
    let mut resp = upstream.clone();
    resp.set_version(http::Version::HTTP_11);
    for name in hop_by_hop(&upstream.headers) {
        resp.remove_header(&name);
    }
    if chunked_body {
        resp.remove_header(&header::CONTENT_LENGTH);
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    respond::secure(&mut resp, &p.security, &ctx.id)?;
    Ok(resp)
}

/// Forward an authorised request to `upstream` and stream the answer to the client.
pub async fn forward(
    p: &Pipeline,
    session: &mut ServerSession,
    ctx: &RequestCtx,
    upstream: &Upstream,
) -> Result<Forwarded, Rejection> {
    let req = session.req_header();
    let chunked = req
        .headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let has_body = chunked || length.is_some_and(|l| l > 0);
    let head = upstream_request(p, ctx, req, length, chunked)?;

    let (stream, reused) = upstream.connection().await.map_err(connect_failed)?;
    let mut up = UpstreamSession::new(stream);
    up.read_timeout = Some(upstream.read_timeout);
    up.write_timeout = Some(upstream.read_timeout);
    let mut sent = send_request(&mut up, session, head.clone(), has_body).await;
    if sent.is_err() && reused && !has_body {
        // The idle connection was closed under us: once more, on a new one.
        let stream = upstream.connect().await.map_err(connect_failed)?;
        up = UpstreamSession::new(stream);
        up.read_timeout = Some(upstream.read_timeout);
        up.write_timeout = Some(upstream.read_timeout);
        sent = send_request(&mut up, session, head, has_body).await;
    }
    sent?;

    // Skip informational answers (100 Continue): the client gets the final one.
    let response = loop {
        up.read_response().await.map_err(|e| exchange_failed(&e))?;
        let head = up.resp_header().ok_or(Rejection::BadGateway)?;
        if !head.status.is_informational() {
            break head.clone();
        }
    };
    up.respect_keepalive();
    let chunked_body = response.headers.get(header::CONTENT_LENGTH).is_none()
        && !matches!(response.status.as_u16(), 204 | 304)
        && session.req_header().method != http::Method::HEAD;
    let head =
        downstream_response(p, ctx, &response, chunked_body).map_err(|_| Rejection::BadGateway)?;
    if session.write_response_header(Box::new(head)).await.is_err() {
        return Ok(Forwarded::Broken);
    }
    loop {
        match up.read_body_bytes().await {
            Ok(Some(chunk)) => {
                if session.write_response_body(chunk, false).await.is_err() {
                    return Ok(Forwarded::Broken);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(target: "zonegate::upstream", event = "upstream_body_failed", upstream = %upstream.name, error = e.etype().as_str());
                return Ok(Forwarded::Broken);
            }
        }
    }
    if session
        .write_response_body(Bytes::new(), true)
        .await
        .is_err()
    {
        return Ok(Forwarded::Broken);
    }
    if let Some(stream) = up.reuse().await {
        upstream.release(stream);
    }
    Ok(Forwarded::Complete)
}

/// Write the request head and stream the client's body after it.
async fn send_request(
    up: &mut UpstreamSession,
    session: &mut ServerSession,
    head: RequestHeader,
    has_body: bool,
) -> Result<(), Rejection> {
    up.write_request_header(Box::new(head))
        .await
        .map_err(|e| exchange_failed(&e))?;
    if has_body {
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|_| Rejection::BadRequest("The request body could not be read."))?
        {
            up.write_body(&chunk)
                .await
                .map_err(|e| exchange_failed(&e))?;
        }
    }
    up.finish_body().await.map_err(|e| exchange_failed(&e))?;
    Ok(())
}

fn connect_failed(e: ConnectError) -> Rejection {
    tracing::warn!(target: "zonegate::upstream", event = "upstream_connect_failed", error = %e);
    match e {
        ConnectError::Timeout(_) => Rejection::GatewayTimeout,
        ConnectError::Io(..) => Rejection::BadGateway,
    }
}

fn exchange_failed(e: &pingora::Error) -> Rejection {
    tracing::warn!(target: "zonegate::upstream", event = "upstream_exchange_failed", error = e.etype().as_str());
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout => {
            Rejection::GatewayTimeout
        }
        _ => Rejection::BadGateway,
    }
}

/// Answer an authorised request with the gateway's own API, in process.
pub async fn answer_in_process(
    p: &Pipeline,
    session: &mut ServerSession,
    ctx: &RequestCtx,
) -> Result<(), Rejection> {
    let body = read_body(session, p.max_gateway_body_bytes).await?;
    let req = session.req_header();
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(req.uri.clone());
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    let request = builder.body(body).map_err(|_| Rejection::Internal)?;
    let caller = Caller {
        principal: ctx.principal.clone().ok_or(Rejection::Internal)?,
        request_id: ctx.id.clone(),
        client: ctx.admitted.client,
    };
    // Events recorded inside the services (logins, keys) get this request's context.
    let context = RequestContext {
        client: ctx.admitted.client,
        request_id: Some(ctx.id.clone()),
        user_agent: ctx.admitted.user_agent.clone(),
    };
    let head_only = req.method == http::Method::HEAD;
    let response = context
        .scope(p.api.dispatch(request, caller, 1 << 20))
        .await?;
    respond::write(session, &p.security, &ctx.id, response, head_only)
        .await
        .map_err(|_| Rejection::Internal)
}

/// Read a whole request body, refusing more than `limit` bytes.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Bytes, Rejection> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| Rejection::BadRequest("The request body could not be read."))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(Rejection::PayloadTooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_found() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
        ] {
            h.append(
                HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        let mut found: Vec<String> = hop_by_hop(&h)
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        found.sort();
        found.dedup();
        assert_eq!(
            found,
            [
                "connection",
                "keep-alive",
                "transfer-encoding",
                "x-secret-hop"
            ]
        );
    }
}
