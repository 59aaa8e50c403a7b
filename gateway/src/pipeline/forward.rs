//! Stage 8, forward: send an authorised request to its upstream and stream the answer back,
//! or answer it in process when the route's upstream is the gateway itself.
//!
//! The client side is the gateway's own [`Session`](super::downstream), the upstream side its
//! own [`Exchange`](super::exchange), with no task or channel per request: read the request head
//! (done), write the upstream head and body, read the upstream response head, write ours,
//! stream the body. What a generic
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
//! - a request body is read whole (up to the upstream's `max_body_bytes`, else 413) before
//!   anything goes upstream, because the identity assertion in the head binds its digest; it is
//!   sent with its length and an RFC 9530 `Content-Digest`;
//! - a reused upstream connection that turns out closed is retried once on a new one when the
//!   request has no body (a body might have been half delivered and acted on: not guessed).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use super::downstream::{BodyError, Session};
use super::exchange::{Exchange, ExchangeError, Framing, ResponseHead};
use super::upstream::{ConnectError, Upstream};
use super::{respond, sanitise, Pipeline, RequestCtx};
use crate::api::Caller;
use crate::domain::audit::RequestContext;
use crate::domain::identity::{self, Subject};
use crate::web::Rejection;

/// How a forwarded exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// The response went out whole; the downstream connection may be reused.
    Complete,
    /// The exchange broke after the response head was sent; the connection must close.
    Broken,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), which describe one connection and never cross.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Request headers that never go upstream as the client sent them, whatever the config says:
/// hop-by-hop ones, the credentials the gateway consumed, the framing (set again for the body
/// as sent), the ones the gateway sets itself and every identity header.
pub fn is_reserved(name: &str) -> bool {
    is_hop_by_hop(name)
        || sanitise::is_identity_header(name)
        || matches!(
            name,
            "authorization"
                | "cookie"
                | "x-csrf-token"
                | "content-length"
                | "host"
                | "x-request-id"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-real-ip"
                | "content-digest"
                | identity::HEADER
        )
        || is_trace_context(name)
}

/// W3C trace context: believed (and forwarded) only from a trusted proxy, and replaced by the
/// gateway's own span when tracing is on.
fn is_trace_context(name: &str) -> bool {
    matches!(name, "traceparent" | "tracestate")
}

/// The client's request headers that reach every upstream: the standard end-to-end ones of
/// RFC 9110 and a few well-known extensions (content negotiation, conditionals, ranges, body
/// description and digests, caching, trace context). Anything else (`X-Role`, `X-Tenant-Id`,
/// `X-HTTP-Method-Override`, `Transfer_Encoding`, ...) is dropped unless the upstream names it
/// in `forward_headers`: a backend cannot be misled by a header it never sees.
fn is_standard_end_to_end(name: &str) -> bool {
    matches!(
        name,
        "accept"
            | "accept-charset"
            | "accept-encoding"
            | "accept-language"
            | "cache-control"
            | "content-encoding"
            | "content-language"
            | "content-type"
            | "date"
            | "if-match"
            | "if-modified-since"
            | "if-none-match"
            | "if-range"
            | "if-unmodified-since"
            | "origin"
            | "pragma"
            | "range"
            | "referer"
            | "repr-digest"
            | "user-agent"
            | "want-content-digest"
            | "want-repr-digest"
    )
}

/// The names a message's `Connection` header values list: hop-by-hop too. Empty (and no
/// work) for the usual message without one. For the client's request and the upstream's
/// answer alike.
fn connection_named<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<HeaderName> {
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect()
}

/// A client address as a header value. IPv4 is written by hand: through `Display` it cost
/// more than the rest of the forwarding headers together.
fn address_value(ip: std::net::IpAddr) -> HeaderValue {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[len] = b'0' + d;
                    len += 1;
                }
            }
            HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&buf[..len]))
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        }
        std::net::IpAddr::V6(v6) => {
            HeaderValue::from_str(&v6.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
        }
    }
}

/// The request head for the upstream, written in one pass as the bytes that go out: the
/// request line, the client's end-to-end headers, then the forwarding headers, the signed
/// identity and the body's framing as the gateway sends it. Header names go lower-case
/// (HTTP/1.1 names are case-insensitive). Written straight from the values, with no header
/// map in between: nothing here needs a lookup, since the client's headers that pass never
/// include one the gateway sets (those are reserved, and `forward_headers` may not name them).
pub fn upstream_request(
    p: &Pipeline,
    ctx: &RequestCtx,
    upstream: &Upstream,
    downstream: &RequestHeader,
    body: &[u8],
) -> Result<Vec<u8>, Rejection> {
    // The sanitise stage admitted only origin-form targets, parsed from the request line
    // (so without spaces or line ends).
    let target =
        std::str::from_utf8(downstream.raw_path()).map_err(|_| Rejection::AmbiguousPath)?;
    let principal = ctx.principal.as_ref().ok_or(Rejection::Internal)?;
    let digest = if body.is_empty() {
        None
    } else {
        Some(identity::content_digest(body))
    };
    let content_digest = digest.as_deref().unwrap_or(identity::EMPTY_CONTENT_DIGEST);
    let assertion = p
        .signer
        .sign(
            Subject {
                principal,
                org: ctx.org.as_deref(),
                method: downstream.method.as_str(),
                target,
                request_id: &ctx.id,
                content_digest,
            },
            p.clock.unix_seconds(),
        )
        .map_err(|_| Rejection::Internal)?;
    let mut head = Vec::with_capacity(768 + assertion.len() + target.len());
    head.extend_from_slice(downstream.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let named = connection_named(
        downstream
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    // With tracing on, the trace context is the gateway's own span's; without it, a trusted
    // proxy's is passed on as it came.
    let own_trace = ctx.trace.as_ref().and_then(|t| t.headers());
    let pass_trace = ctx.peer_trusted && ctx.trace.is_none();
    for (name, v) in &downstream.headers {
        let allowed = is_standard_end_to_end(name.as_str())
            || upstream.forward_headers.iter().any(|h| h == name)
            || (pass_trace && is_trace_context(name.as_str()));
        if allowed && !named.contains(name) {
            line(&mut head, name.as_str(), v.as_bytes());
        }
    }
    line(&mut head, identity::HEADER, field_value(&assertion)?);
    line(&mut head, "x-request-id", field_value(&ctx.id)?);
    if let Some((traceparent, tracestate)) = own_trace {
        line(&mut head, "traceparent", traceparent.as_bytes());
        if let Some(tracestate) = tracestate {
            line(&mut head, "tracestate", tracestate.as_bytes());
        }
    }
    let authority = p.public_authority_value.as_bytes();
    line(&mut head, "host", authority);
    line(&mut head, "x-forwarded-proto", b"https");
    line(&mut head, "x-forwarded-host", authority);
    if let Some(client) = ctx.admitted.client {
        let client = address_value(client);
        line(&mut head, "x-forwarded-for", client.as_bytes());
        line(&mut head, "x-real-ip", client.as_bytes());
    }
    if let Some(digest) = &digest {
        line(
            &mut head,
            "content-length",
            itoa::Buffer::new().format(body.len()).as_bytes(),
        );
        // The digest the assertion binds, for the backend to compare with what it received.
        line(&mut head, "content-digest", field_value(digest)?);
    } else if downstream.headers.contains_key(header::CONTENT_LENGTH)
        || downstream.headers.contains_key(header::TRANSFER_ENCODING)
    {
        // An explicitly empty body (a POST with none) stays explicit.
        line(&mut head, "content-length", b"0");
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// One header line. Names are the gateway's own or `HeaderName`s, values `HeaderValue`s or
/// checked by [`field_value`]: neither can hold a line end.
fn line(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// A value the gateway built as a string, checked to be a valid field value (visible ASCII
/// and spaces) before it is written into a head. Folded rather than short-circuited, so the
/// check runs as a vector loop over long values such as the assertion.
fn field_value(v: &str) -> Result<&[u8], Rejection> {
    let bytes = v.as_bytes();
    let bad = bytes
        .iter()
        .fold(false, |bad, &b| bad | !(0x20..0x7f).contains(&b));
    if bad {
        return Err(Rejection::Internal);
    }
    Ok(bytes)
}

/// The response head for the client, built in one pass from the upstream's header lines: its
/// end-to-end headers but the internal ones and those the gateway sets, then the body's
/// framing (the upstream's length when it gave one, else chunked). The security headers and
/// the request id are not in it: [`forward`] writes them as prepared lines.
fn downstream_response(
    p: &Pipeline,
    upstream: &ResponseHead,
) -> Result<http::response::Parts, Rejection> {
    let chunked_body = matches!(upstream.framing, Framing::Chunked | Framing::UntilClose);
    let (mut resp, ()) = http::Response::new(()).into_parts();
    resp.status = upstream.status;
    // Sized once for the upstream's lines and the gateway's own: a map that grows rehashes.
    resp.headers.reserve(upstream.line_count() + 8);
    let named = connection_named(upstream.values(&header::CONNECTION));
    let headers = &mut resp.headers;
    for (name, v) in upstream.headers() {
        // A length is written below as the exchange settled it (`2, 2` is one length).
        let drop = is_hop_by_hop(name.as_str())
            || named.contains(name)
            || p.security.replaces(name)
            || (name == header::CONTENT_LENGTH && !matches!(upstream.framing, Framing::Empty));
        if !drop {
            headers.append(name.clone(), v.ok_or(Rejection::BadGateway)?);
        }
    }
    if let Framing::Length(n) = upstream.framing {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if chunked_body {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    Ok(resp)
}

/// Forward an authorised request to `upstream` and stream the answer to the client.
pub async fn forward(
    p: &Pipeline,
    session: &mut Session<'_>,
    ctx: &RequestCtx,
    upstream: &Upstream,
) -> Result<Forwarded, Rejection> {
    let body = read_body(session, upstream.max_body_bytes).await?;
    let head = upstream_request(p, ctx, upstream, session.req_header(), &body)?;

    let started = std::time::Instant::now();
    let (stream, reused) = upstream.connection().await.map_err(connect_failed)?;
    let mut up = Exchange::new(stream, upstream.read_timeout);
    if let Err(e) = up.send(&head, &body).await {
        if !reused || !body.is_empty() {
            return Err(exchange_failed(e, upstream));
        }
        // The idle connection was closed under us: once more, on a new connection, with a
        // fresh assertion (the backend accepts each one once, and the first may have arrived).
        // Rare, so the head is simply rebuilt rather than cloned on every request in case.
        let head = upstream_request(p, ctx, upstream, session.req_header(), &body)?;
        let stream = upstream.connect().await.map_err(connect_failed)?;
        up = Exchange::new(stream, upstream.read_timeout);
        up.send(&head, &body)
            .await
            .map_err(|e| exchange_failed(e, upstream))?;
    }

    // Informational answers (100 Continue) are skipped: the client gets the final one.
    let is_head = session.req_header().method == http::Method::HEAD;
    let response = up
        .read_head(is_head)
        .await
        .map_err(|e| exchange_failed(e, upstream))?;
    let head = downstream_response(p, &response)?;
    if let Some(metrics) = &upstream.metrics {
        metrics.exchange(reused, started.elapsed());
    }
    // Copied as prepared lines rather than inserted into the map one hashed name at a time;
    // `downstream_response` dropped any the upstream sent. The id was checked as a field
    // value when the upstream's head was written.
    let lines = [
        p.security.lines(),
        b"x-request-id: ",
        field_value(&ctx.id)?,
        b"\r\n",
    ];
    if session
        .write_response_header_with(head, &lines)
        .await
        .is_err()
    {
        return Ok(Forwarded::Broken);
    }
    loop {
        match up.next_chunk().await {
            Ok(Some(chunk)) => {
                if session.write_response_body(chunk, false).await.is_err() {
                    return Ok(Forwarded::Broken);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(target: "zonegate::upstream", event = "upstream_body_failed", upstream = %upstream.name, error = e.kind(), detail = %e);
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
    if let Some(stream) = up.into_reusable() {
        upstream.release(stream);
    }
    Ok(Forwarded::Complete)
}

fn connect_failed(e: ConnectError) -> Rejection {
    tracing::warn!(target: "zonegate::upstream", event = "upstream_connect_failed", error = %e);
    match e {
        ConnectError::Timeout(_) => Rejection::GatewayTimeout,
        ConnectError::Io(..) | ConnectError::Tls(..) => Rejection::BadGateway,
    }
}

fn exchange_failed(e: ExchangeError, upstream: &Upstream) -> Rejection {
    tracing::warn!(target: "zonegate::upstream", event = "upstream_exchange_failed", upstream = %upstream.name, error = e.kind(), detail = %e);
    match e {
        ExchangeError::Timeout => Rejection::GatewayTimeout,
        ExchangeError::Closed | ExchangeError::Io(_) | ExchangeError::Malformed(_) => {
            Rejection::BadGateway
        }
    }
}

/// Answer an authorised request with the gateway's own API, in process. Returns the code of
/// the API's refusal, when it answered with one.
pub async fn answer_in_process(
    p: &Pipeline,
    session: &mut Session<'_>,
    ctx: &RequestCtx,
) -> Result<Option<&'static str>, Rejection> {
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
        route: p.route_of(ctx).map_or("", |r| &r.name).to_owned(),
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
    let refused = response
        .extensions()
        .get::<crate::web::rejection::Refused>()
        .map(|r| r.0);
    respond::write(session, &p.security, &ctx.id, response, head_only)
        .await
        .map_err(|_| Rejection::Internal)?;
    Ok(refused)
}

/// Read a whole request body, refusing more than `limit` bytes (a declared length over it
/// before reading any).
async fn read_body(session: &mut Session<'_>, limit: usize) -> Result<Bytes, Rejection> {
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Rejection::PayloadTooLarge);
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = session.read_request_body().await.map_err(|e| match e {
        BodyError::Timeout => Rejection::RequestTimeout,
        BodyError::Closed | BodyError::Malformed => {
            Rejection::BadRequest("The request body could not be read.")
        }
    })? {
        if buf.len() + chunk.len() > limit {
            return Err(Rejection::PayloadTooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_found() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("content-type", "application/json"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let named: Vec<String> = connection_named(
            h.get_all(header::CONNECTION)
                .iter()
                .map(HeaderValue::as_bytes),
        )
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
        assert_eq!(named, ["keep-alive", "x-secret-hop"]);
        for hop in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop(hop), "{hop}");
            assert!(is_reserved(hop), "{hop}");
        }
        for credential in [
            "authorization",
            "cookie",
            "x-csrf-token",
            "zonegate-identity",
        ] {
            assert!(is_reserved(credential), "{credential}");
            assert!(!is_standard_end_to_end(credential), "{credential}");
        }
        assert!(!is_reserved("content-type") && !is_reserved("accept"));
    }

    #[test]
    fn only_standard_end_to_end_headers_pass_by_default() {
        for standard in ["accept", "content-type", "if-match", "range"] {
            assert!(is_standard_end_to_end(standard), "{standard}");
            assert!(!is_reserved(standard), "{standard}");
        }
        // Trace context only from a trusted proxy: never by default, never by configuration.
        for trace in ["traceparent", "tracestate"] {
            assert!(!is_standard_end_to_end(trace), "{trace}");
            assert!(is_reserved(trace), "{trace}");
        }
        // What the review got through to the backend.
        for smuggled in [
            "x-forwarded-email",
            "x-remote-addr",
            "x-role",
            "x-tenant-id",
            "x-http-method-override",
            "transfer_encoding",
            "content_length",
        ] {
            assert!(!is_standard_end_to_end(smuggled), "{smuggled}");
        }
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.99.100",
            "255.255.255.255",
            "192.168.1.10",
            "::1",
            "2001:db8::7",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|_| unreachable!());
            assert_eq!(
                address_value(ip).to_str().ok(),
                Some(ip.to_string().as_str())
            );
        }
    }
}
