//! Stage 9, respond: every answer leaves with the security headers and without internal ones,
//! whether the upstream wrote it, the gateway's own API did, or it is a rejection.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;

use crate::web::security::{SecurityHeaders, INTERNAL_RESPONSE_HEADERS};
use crate::web::Rejection;

/// Apply the security headers to a response head pingora is about to send (the upstream's, or
/// one the gateway built), replacing values an upstream set.
pub fn secure(
    resp: &mut ResponseHeader,
    security: &SecurityHeaders,
    request_id: &str,
) -> pingora::Result<()> {
    for name in INTERNAL_RESPONSE_HEADERS {
        resp.remove_header(*name);
    }
    for (name, value) in security.headers() {
        resp.insert_header(name.clone(), value.clone())?;
    }
    resp.insert_header("x-request-id", request_id)?;
    Ok(())
}

/// Write a complete response the gateway produced itself; `head_only` for an answer to HEAD
/// (the length is announced, the body not sent).
pub async fn write(
    session: &mut Session,
    security: &SecurityHeaders,
    request_id: &str,
    response: http::Response<Bytes>,
    head_only: bool,
) -> pingora::Result<()> {
    let (parts, body) = response.into_parts();
    let mut resp = ResponseHeader::build(parts.status, Some(parts.headers.len() + 8))?;
    for (name, value) in &parts.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    secure(&mut resp, security, request_id)?;
    session.write_response_header(Box::new(resp)).await?;
    let body = if head_only { Bytes::new() } else { body };
    session.write_response_body(body, true).await
}

/// Answer a rejection, closing the connection when framing can no longer be trusted. Usable
/// before a request head was read (the refusal of an unparseable head: `head_only` false).
pub async fn reject(
    session: &mut Session,
    security: &SecurityHeaders,
    request_id: &str,
    rejection: &Rejection,
    head_only: bool,
) -> pingora::Result<()> {
    if rejection.closes_connection() {
        session.set_keepalive(None);
    }
    write(
        session,
        security,
        request_id,
        rejection.response(),
        head_only,
    )
    .await
}
