//! Stage 8, forward: pick the route's upstream and send the request on with the gateway's own
//! forwarding headers and the signed identity assertion, or answer it in process when the
//! route's upstream is the gateway itself.
//!
//! The gateway consumed the credentials: the backend gets the signed identity instead, never a
//! live key, session cookie or CSRF token it could leak or replay. Forwarding headers are
//! overwritten, never appended to, so nothing a client sent survives under those names.

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;

use super::{respond, Pipeline, RequestCtx};
use crate::api::Caller;
use crate::domain::audit::RequestContext;
use crate::domain::identity::{self, Subject};
use crate::web::Rejection;

/// Request headers that carry the caller's credentials, consumed by the gateway.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "x-csrf-token"];

/// The upstream peer of a route, by name.
pub fn upstream<'p>(p: &'p Pipeline, name: &str) -> Result<&'p HttpPeer, Rejection> {
    p.upstreams.get(name).ok_or(Rejection::Internal)
}

/// Rewrite the request head for the upstream: credentials out, forwarding headers and the
/// signed identity in. `target` is the raw request target the assertion binds.
pub fn upstream_request(
    p: &Pipeline,
    ctx: &RequestCtx,
    target: &str,
    upstream: &mut RequestHeader,
) -> pingora::Result<()> {
    let internal =
        || pingora::Error::explain(pingora::ErrorType::InternalError, "cannot sign identity");
    let principal = ctx.principal.as_ref().ok_or_else(internal)?;
    let assertion = p
        .signer
        .sign(
            Subject {
                principal,
                org: ctx.org.as_deref(),
                method: upstream.method.as_str(),
                target,
                request_id: &ctx.id,
            },
            p.clock.unix_seconds(),
        )
        .map_err(|_| internal())?;
    for credential in CREDENTIAL_HEADERS {
        upstream.remove_header(credential);
    }
    upstream.insert_header(identity::HEADER, assertion)?;
    upstream.insert_header("x-request-id", ctx.id.as_str())?;
    upstream.insert_header(http::header::HOST, p.public_authority.as_str())?;
    upstream.insert_header("x-forwarded-proto", "https")?;
    upstream.insert_header("x-forwarded-host", p.public_authority.as_str())?;
    if let Some(client) = ctx.admitted.client {
        let client = client.to_string();
        upstream.insert_header("x-forwarded-for", client.as_str())?;
        upstream.insert_header("x-real-ip", client)?;
    }
    Ok(())
}

/// Answer an authorised request with the gateway's own API, in process.
pub async fn answer_in_process(
    p: &Pipeline,
    session: &mut Session,
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
    let response = context
        .scope(p.api.dispatch(request, caller, 1 << 20))
        .await?;
    respond::write(session, &p.security, &ctx.id, response)
        .await
        .map_err(|_| Rejection::Internal)
}

/// Read a whole request body, refusing more than `limit` bytes.
async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, Rejection> {
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
