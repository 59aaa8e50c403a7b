//! Stage 9, respond: every answer leaves with the security headers and without internal ones,
//! whether the upstream wrote it, the gateway's own API did, or it is a rejection.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;

use crate::web::security::SecurityHeaders;
use crate::web::Rejection;

/// Write a complete response the gateway produced itself; `head_only` for an answer to HEAD
/// (the length is announced, the body not sent).
pub async fn write(
    session: &mut Session,
    security: &SecurityHeaders,
    request_id: &str,
    response: http::Response<Bytes>,
    head_only: bool,
) -> pingora::Result<()> {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    security.apply(&mut parts.headers, Some(request_id));
    // Converted whole: pingora's header setters would re-parse every name.
    session
        .write_response_header(Box::new(ResponseHeader::from(parts)))
        .await?;
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
