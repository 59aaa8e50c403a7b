//! Stage 9, respond: every answer leaves with the security headers and without internal ones,
//! whether the upstream wrote it, the gateway's own API did, or it is a rejection.

use bytes::Bytes;

use super::downstream::{Connection, Session};
use crate::web::security::SecurityHeaders;
use crate::web::Rejection;

/// The head of a complete response the gateway produced itself, with its length and the
/// security headers.
fn head_of(
    response: http::Response<Bytes>,
    security: &SecurityHeaders,
    request_id: &str,
) -> (http::response::Parts, Bytes) {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    security.apply(&mut parts.headers, Some(request_id));
    (parts, body)
}

/// Write a complete response the gateway produced itself; `head_only` for an answer to HEAD
/// (the length is announced, the body not sent).
pub async fn write(
    session: &mut Session<'_>,
    security: &SecurityHeaders,
    request_id: &str,
    response: http::Response<Bytes>,
    head_only: bool,
) -> std::io::Result<()> {
    let (head, body) = head_of(response, security, request_id);
    session.write_response_header(head).await?;
    let body = if head_only { Bytes::new() } else { body };
    session.write_response_body(body, true).await
}

/// Answer a rejection, closing the connection when framing can no longer be trusted.
pub async fn reject(
    session: &mut Session<'_>,
    security: &SecurityHeaders,
    request_id: &str,
    rejection: &Rejection,
    head_only: bool,
) -> std::io::Result<()> {
    if rejection.closes_connection() {
        session.set_keepalive(false);
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

/// Answer a rejection of a request whose head could not be read, and say the connection
/// closes.
pub async fn refuse(
    conn: &mut Connection,
    security: &SecurityHeaders,
    request_id: &str,
    rejection: &Rejection,
) -> std::io::Result<()> {
    let (head, body) = head_of(rejection.response(), security, request_id);
    conn.refuse(head, &body).await
}
