//! One HTTP/1.1 exchange with an upstream, on a connection the gateway keeps: the request goes
//! out in one write (head, and the body with it when small), the response head is parsed in
//! place with httparse and its body read by its framing, chunk by chunk, for the caller to
//! stream on.
//!
//! This replaces pingora's generic HTTP/1 client session on the forwarding path. That session
//! serialised a `RequestHeader` map the gateway had just built, kept a second, case-preserving
//! map beside each response's `HeaderMap`, and boxed a digest of the connection on every
//! request; here the request head is written straight from the gateway's own values and the
//! response's header lines are kept as ranges of the bytes received, which become the
//! client's head once.
//!
//! It is strict in what it accepts from an upstream, because a gateway that guesses at framing
//! is how responses get split:
//! - a response head over [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] lines, more
//!   than [`MAX_INTERIM_HEADS`] 1xx heads before the final one, an unparsable head, a `101`
//!   (the gateway never forwards `Upgrade`), a `Transfer-Encoding`
//!   whose final coding is not `chunked`, or `Content-Length` values that are not one
//!   identical number are all malformed (the caller answers 502);
//! - with both `Transfer-Encoding` and `Content-Length` the body is read as chunked (RFC 9112
//!   §6.3) and the connection is not kept;
//! - a body is none for `HEAD`, 1xx, 204 and 304 whatever the headers say; without either
//!   header it runs to the end of the connection;
//! - a chunk-size line over [`MAX_CHUNK_LINE`] or trailers over [`MAX_TRAILER_BYTES`] are
//!   malformed; trailers are read and dropped;
//! - a connection is kept for the next exchange only when the body ended exactly where its
//!   framing said, with nothing unasked-for behind it, and the upstream did not ask to close.
//!
//! Every read waits at most the upstream's read timeout; a write waits at most as long when
//! it carries a body (a head alone fits in the socket's buffer).

use std::mem::MaybeUninit;
use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most header lines an upstream response may carry.
pub const MAX_HEADERS: usize = 128;
/// The largest upstream response head, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The longest chunk-size line (with any extensions).
pub const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section of a chunked body.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// The most informational (1xx) heads before the final one. Each read is timed, but without a
/// count an upstream sending `103 Early Hints` in a loop would hold the request forever.
pub const MAX_INTERIM_HEADS: usize = 16;
/// A body up to this size goes out in the same write as the head.
const COALESCE_BODY: usize = 16 * 1024;
/// What each read asks the connection for at least.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange failed. Carries no bytes of the exchange, only fixed text: it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// A read, or a write with a body, took longer than the upstream's read timeout.
    #[error("timed out")]
    Timeout,
    /// The upstream closed the connection before the response (or its body) was complete.
    #[error("closed early")]
    Closed,
    /// The connection failed.
    #[error("i/o error: {0}")]
    Io(std::io::ErrorKind),
    /// The upstream's response is not HTTP/1.1 the gateway will pass on.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

impl ExchangeError {
    /// A short, fixed name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeError::Timeout => "timeout",
            ExchangeError::Closed => "closed",
            ExchangeError::Io(_) => "io",
            ExchangeError::Malformed(_) => "malformed",
        }
    }
}

impl From<std::io::Error> for ExchangeError {
    fn from(e: std::io::Error) -> Self {
        ExchangeError::Io(e.kind())
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A final response head, as received.
pub struct ResponseHead {
    pub status: StatusCode,
    pub framing: Framing,
    /// The head's bytes, which the header ranges point into.
    raw: Bytes,
    /// Each header line: its name and the range of its value in `raw`.
    lines: Vec<(HeaderName, Range<usize>)>,
    /// The upstream allows the connection to be kept after this exchange.
    keep_alive: bool,
}

/// Shows the status, framing and header names, never a value (`Set-Cookie` is one).
impl std::fmt::Debug for ResponseHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseHead")
            .field("status", &self.status)
            .field("framing", &self.framing)
            .field(
                "headers",
                &self.lines.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl ResponseHead {
    /// The header lines in the order received. A value is shared with the received bytes,
    /// not copied.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, Option<HeaderValue>)> + '_ {
        self.lines.iter().map(|(name, range)| {
            (
                name,
                HeaderValue::from_maybe_shared(self.raw.slice(range.clone())).ok(),
            )
        })
    }

    /// How many header lines the head has.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// The values of every line with this name, as received.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.lines
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, range)| &self.raw[range.clone()])
    }
}

/// Where the body reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// No response head read yet.
    Head,
    /// This many bytes of a sized body (or of the current chunk) still to come.
    Length(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// This many bytes of the current chunk still to come.
    ChunkData(u64),
    /// At the line end after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailers, then an empty line.
    Trailers,
    /// Until the connection closes.
    UntilClose,
    /// The body is complete.
    Done,
}

/// One request and its response on an upstream connection.
pub struct Exchange<S> {
    stream: S,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    read_timeout: Duration,
    body: Body,
    keep_alive: bool,
}

/// Shows where the exchange stands, never the bytes it holds (a response may carry cookies).
impl<S> std::fmt::Debug for Exchange<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("buffered", &self.buf.len())
            .field("body", &self.body)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Exchange<S> {
    pub fn new(stream: S, read_timeout: Duration) -> Self {
        Exchange {
            stream,
            buf: BytesMut::new(),
            read_timeout,
            body: Body::Head,
            keep_alive: false,
        }
    }

    /// Send the request: its head (written by the caller, ending in the empty line) and its
    /// body, in one write when the body is small. Only a write with a body is timed.
    pub async fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), ExchangeError> {
        if body.is_empty() {
            self.stream.write_all(head).await?;
            self.stream.flush().await?;
            return Ok(());
        }
        let write = async {
            if body.len() <= COALESCE_BODY {
                let mut whole = Vec::with_capacity(head.len() + body.len());
                whole.extend_from_slice(head);
                whole.extend_from_slice(body);
                self.stream.write_all(&whole).await?;
            } else {
                self.stream.write_all(head).await?;
                self.stream.write_all(body).await?;
            }
            self.stream.flush().await
        };
        match tokio::time::timeout(self.read_timeout, write).await {
            Ok(written) => Ok(written?),
            Err(_) => Err(ExchangeError::Timeout),
        }
    }

    /// Read the final response head, skipping informational ones (`100 Continue`).
    /// `request_was_head` because a response to `HEAD` has no body whatever it says.
    pub async fn read_head(
        &mut self,
        request_was_head: bool,
    ) -> Result<ResponseHead, ExchangeError> {
        let mut interim = 0;
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = self.parse_head(request_was_head)? {
                    if head.status.is_informational() {
                        interim += 1;
                        if interim > MAX_INTERIM_HEADS {
                            return Err(ExchangeError::Malformed("too many 1xx heads"));
                        }
                        continue;
                    }
                    self.keep_alive = head.keep_alive;
                    self.body = match head.framing {
                        Framing::Empty => Body::Done,
                        Framing::Length(n) => Body::Length(n),
                        Framing::Chunked => Body::ChunkSize,
                        Framing::UntilClose => Body::UntilClose,
                    };
                    return Ok(head);
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(ExchangeError::Malformed("response head too large"));
                }
            }
            if self.read_more().await? == 0 {
                return Err(ExchangeError::Closed);
            }
        }
    }

    /// Parse a complete head at the start of the buffer and take it off, or `None` when more
    /// bytes are needed.
    fn parse_head(
        &mut self,
        request_was_head: bool,
    ) -> Result<Option<ResponseHead>, ExchangeError> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            &self.buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ExchangeError::Malformed("too many header lines"))
            }
            Err(_) => return Err(ExchangeError::Malformed("unparsable response head")),
        };
        let status = response
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or(ExchangeError::Malformed("bad status"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ExchangeError::Malformed("unrequested protocol switch"));
        }
        let http11 = response.version == Some(1);
        let base = self.buf.as_ptr() as usize;
        let mut lines = Vec::with_capacity(response.headers.len());
        let mut length_value: Option<u64> = None;
        let mut length_seen = false;
        // Whether a `Transfer-Encoding` came, whether its last coding is `chunked`, and how
        // many are.
        let (mut codings_seen, mut last_chunked, mut chunked_count) = (false, false, 0usize);
        let (mut asked_close, mut asked_keep_alive) = (false, false);
        for h in response.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| ExchangeError::Malformed("bad header name"))?;
            let start = h.value.as_ptr() as usize - base;
            if name == http::header::CONTENT_LENGTH {
                length_seen = true;
                // Repeated or comma-joined values are accepted only when all are the same
                // number (RFC 9110 §8.6).
                for v in h.value.split(|b| *b == b',') {
                    let n = decimal(v.trim_ascii())
                        .ok_or(ExchangeError::Malformed("bad content-length"))?;
                    if length_value.is_some_and(|seen| seen != n) {
                        return Err(ExchangeError::Malformed("conflicting content-length"));
                    }
                    length_value = Some(n);
                }
            } else if name == http::header::TRANSFER_ENCODING {
                // The codings across every line, in order: `chunked` must be the last, and
                // only once (RFC 9112 §6.1); anything else cannot be framed.
                codings_seen = true;
                for coding in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if !coding.is_empty() {
                        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                        chunked_count += usize::from(last_chunked);
                    }
                }
            } else if name == http::header::CONNECTION {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    asked_close |= token.eq_ignore_ascii_case(b"close");
                    asked_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            lines.push((name, start..start + h.value.len()));
        }
        // HTTP/1.1 keeps the connection unless asked not to; HTTP/1.0 only when asked to.
        let mut close = asked_close || (!http11 && !asked_keep_alive);
        let no_body = request_was_head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if no_body {
            Framing::Empty
        } else if codings_seen {
            if !last_chunked || chunked_count != 1 {
                return Err(ExchangeError::Malformed("transfer coding not chunked"));
            }
            if length_seen {
                // Both framings: read as chunked, then never reuse the connection.
                close = true;
            }
            Framing::Chunked
        } else if let Some(n) = length_value {
            Framing::Length(n)
        } else if length_seen {
            return Err(ExchangeError::Malformed("bad content-length"));
        } else {
            close = true;
            Framing::UntilClose
        };
        let raw = self.buf.split_to(length).freeze();
        Ok(Some(ResponseHead {
            status,
            framing,
            raw,
            lines,
            keep_alive: !close,
        }))
    }

    /// The next piece of the body as it arrives, `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ExchangeError> {
        loop {
            match self.body {
                Body::Head | Body::Done => return Ok(None),
                Body::Length(0) => self.body = Body::Done,
                Body::Length(remaining) => {
                    let piece = self.take(remaining).await?;
                    self.body = Body::Length(remaining - piece.len() as u64);
                    return Ok(Some(piece));
                }
                Body::ChunkData(remaining) => {
                    let piece = self.take(remaining).await?;
                    let left = remaining - piece.len() as u64;
                    self.body = if left == 0 {
                        Body::ChunkEnd
                    } else {
                        Body::ChunkData(left)
                    };
                    return Ok(Some(piece));
                }
                Body::ChunkSize => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        self.body = if size == 0 {
                            Body::Trailers
                        } else {
                            Body::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > MAX_CHUNK_LINE {
                            return Err(ExchangeError::Malformed("chunk-size line too long"));
                        }
                        self.read_or_closed().await?;
                    }
                    Err(_) => return Err(ExchangeError::Malformed("bad chunk size")),
                },
                Body::ChunkEnd => {
                    if self.buf.len() < 2 {
                        self.read_or_closed().await?;
                        continue;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ExchangeError::Malformed("chunk data overruns its size"));
                    }
                    self.buf.advance(2);
                    self.body = Body::ChunkSize;
                }
                Body::Trailers => {
                    // The trailer section ends at the first empty line; trailers are dropped.
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        find(&self.buf, b"\r\n\r\n").map(|at| at + 4)
                    };
                    match end {
                        Some(end) => {
                            self.buf.advance(end);
                            self.body = Body::Done;
                        }
                        None if self.buf.len() > MAX_TRAILER_BYTES => {
                            return Err(ExchangeError::Malformed("trailers too large"))
                        }
                        None => self.read_or_closed().await?,
                    }
                }
                Body::UntilClose => {
                    if self.buf.is_empty() && self.read_more().await? == 0 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
            }
        }
    }

    /// The connection, when it can carry the next exchange: the response was complete, nothing
    /// unasked-for came after it, and the upstream did not ask to close.
    pub fn into_reusable(self) -> Option<S> {
        (self.body == Body::Done && self.keep_alive && self.buf.is_empty()).then_some(self.stream)
    }

    /// Up to `limit` bytes of the body, reading when none are buffered.
    async fn take(&mut self, limit: u64) -> Result<Bytes, ExchangeError> {
        if self.buf.is_empty() {
            self.read_or_closed().await?;
        }
        let n = usize::try_from(limit).map_or(self.buf.len(), |l| l.min(self.buf.len()));
        Ok(self.buf.split_to(n).freeze())
    }

    /// Read more, where the end of the connection means the response was cut short.
    async fn read_or_closed(&mut self) -> Result<(), ExchangeError> {
        match self.read_more().await? {
            0 => Err(ExchangeError::Closed),
            _ => Ok(()),
        }
    }

    /// One read into the buffer, within the read timeout. Returns the bytes read (0 at the
    /// end of the connection).
    async fn read_more(&mut self) -> Result<usize, ExchangeError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match tokio::time::timeout(self.read_timeout, self.stream.read_buf(&mut self.buf)).await {
            Ok(read) => Ok(read?),
            Err(_) => Err(ExchangeError::Timeout),
        }
    }
}

/// A `Content-Length` value: ASCII digits only, no sign, no overflow.
pub(super) fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// An exchange whose upstream has already sent `response`, and closed when `close`;
    /// otherwise its end is returned, to hold the connection open.
    async fn answered(
        response: &[u8],
        close: bool,
    ) -> (Exchange<DuplexStream>, Option<DuplexStream>) {
        let (ours, mut theirs) = duplex(1 << 20);
        theirs.write_all(response).await.unwrap();
        (Exchange::new(ours, TIMEOUT), (!close).then_some(theirs))
    }

    async fn body(ex: &mut Exchange<DuplexStream>) -> Result<Vec<u8>, ExchangeError> {
        let mut all = Vec::new();
        while let Some(piece) = ex.next_chunk().await? {
            all.extend_from_slice(&piece);
        }
        Ok(all)
    }

    fn header(head: &ResponseHead, name: &str) -> Option<String> {
        head.headers()
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, v)| v.map(|v| v.to_str().unwrap().to_owned()))
    }

    #[tokio::test]
    async fn a_sized_response_is_read_exactly_and_the_connection_kept() {
        let (mut ex, _upstream) = answered(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
            false,
        )
        .await;
        let head = ex.read_head(false).await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(header(&head, "content-type").as_deref(), Some("text/plain"));
        let repeated: Vec<_> = head
            .headers()
            .filter(|(n, _)| n.as_str() == "x-a")
            .map(|(_, v)| v.unwrap())
            .collect();
        assert_eq!(repeated, ["1", "2"]);
        assert_eq!(body(&mut ex).await.unwrap(), b"hello");
        assert!(ex.into_reusable().is_some());
    }

    #[tokio::test]
    async fn a_chunked_response_is_decoded_with_extensions_and_trailers() {
        let (mut ex, _upstream) = answered(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;name=v\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        )
        .await;
        let head = ex.read_head(false).await.unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(body(&mut ex).await.unwrap(), b"hello 0123456789");
        assert!(ex.into_reusable().is_some());
    }

    #[tokio::test]
    async fn a_chunked_response_split_at_every_byte_decodes_the_same() {
        let wire: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (ours, mut theirs) = duplex(1);
        let writer = tokio::spawn(async move {
            for b in wire {
                theirs.write_all(&[*b]).await.unwrap();
            }
            theirs
        });
        let mut ex = Exchange::new(ours, TIMEOUT);
        ex.read_head(false).await.unwrap();
        assert_eq!(body(&mut ex).await.unwrap(), b"abcde");
        let _theirs = writer.await.unwrap();
        assert!(ex.into_reusable().is_some());
    }

    #[tokio::test]
    async fn informational_heads_are_skipped() {
        let (mut ex, _upstream) = answered(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            false,
        )
        .await;
        let head = ex.read_head(false).await.unwrap();
        assert_eq!(head.status, 201);
        assert!(header(&head, "link").is_none());
        assert_eq!(body(&mut ex).await.unwrap(), b"ok");
    }

    /// Up to the bound of 1xx heads is an answer; one more is malformed.
    #[tokio::test]
    async fn informational_heads_are_bounded() {
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        let last = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for (count, ok) in [(MAX_INTERIM_HEADS, true), (MAX_INTERIM_HEADS + 1, false)] {
            let mut wire = hints.repeat(count);
            wire.extend_from_slice(last);
            let (mut ex, _upstream) = answered(&wire, false).await;
            let read = ex.read_head(false).await;
            if ok {
                assert_eq!(read.unwrap().status, 200);
            } else {
                assert_eq!(
                    read.unwrap_err(),
                    ExchangeError::Malformed("too many 1xx heads")
                );
            }
        }
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body_whatever_the_headers_say() {
        for (wire, was_head) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..], true),
            (
                b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false,
            ),
        ] {
            let (mut ex, _upstream) = answered(wire, false).await;
            let head = ex.read_head(was_head).await.unwrap();
            assert_eq!(head.framing, Framing::Empty);
            assert_eq!(ex.next_chunk().await.unwrap(), None);
            assert!(ex.into_reusable().is_some());
        }
    }

    #[tokio::test]
    async fn without_framing_the_body_runs_to_the_close_and_the_connection_is_not_kept() {
        let (mut ex, _upstream) = answered(b"HTTP/1.0 200 OK\r\n\r\nall of it", true).await;
        let head = ex.read_head(false).await.unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert_eq!(body(&mut ex).await.unwrap(), b"all of it");
        assert!(ex.into_reusable().is_none());
    }

    #[tokio::test]
    async fn the_upstream_asking_to_close_or_sending_more_than_framed_is_not_kept() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ] {
            let (mut ex, _upstream) = answered(wire, false).await;
            ex.read_head(false).await.unwrap();
            assert_eq!(body(&mut ex).await.unwrap(), b"ok");
            assert!(ex.into_reusable().is_none(), "{}", wire.escape_ascii());
        }
        // HTTP/1.0 with keep-alive asked for is kept.
        let (mut ex, _upstream) = answered(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            false,
        )
        .await;
        ex.read_head(false).await.unwrap();
        assert_eq!(body(&mut ex).await.unwrap(), b"ok");
        assert!(ex.into_reusable().is_some());
    }

    #[tokio::test]
    async fn repeated_identical_lengths_are_one_and_conflicting_ones_malformed() {
        let (mut ex, _upstream) = answered(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
            false,
        )
        .await;
        assert_eq!(
            ex.read_head(false).await.unwrap().framing,
            Framing::Length(2)
        );
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\nok",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let (mut ex, _upstream) = answered(wire, false).await;
            assert!(
                matches!(ex.read_head(false).await, Err(ExchangeError::Malformed(_))),
                "{}",
                wire.escape_ascii()
            );
        }
    }

    #[tokio::test]
    async fn bad_chunk_framing_is_malformed_and_a_cut_body_closed() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
        ] {
            let (mut ex, _upstream) = answered(wire, false).await;
            ex.read_head(false).await.unwrap();
            assert!(
                matches!(body(&mut ex).await, Err(ExchangeError::Malformed(_))),
                "{}",
                wire.escape_ascii()
            );
        }
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            let (mut ex, _upstream) = answered(wire, true).await;
            ex.read_head(false).await.unwrap();
            assert_eq!(body(&mut ex).await, Err(ExchangeError::Closed));
            assert!(ex.into_reusable().is_none());
        }
        let (mut ex, _upstream) = answered(b"HTTP/1.1 200 OK\r\n", true).await;
        assert_eq!(ex.read_head(false).await.err(), Some(ExchangeError::Closed));
    }

    #[tokio::test]
    async fn endless_heads_chunk_lines_and_trailers_are_refused() {
        let mut big = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 1));
        let (mut ex, _upstream) = answered(&big, false).await;
        assert!(matches!(
            ex.read_head(false).await,
            Err(ExchangeError::Malformed(_))
        ));

        let mut line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE + 1));
        let (mut ex, _upstream) = answered(&line, false).await;
        ex.read_head(false).await.unwrap();
        assert!(matches!(
            body(&mut ex).await,
            Err(ExchangeError::Malformed(_))
        ));

        let mut trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        while trailers.len() <= 2 * MAX_TRAILER_BYTES {
            trailers.extend_from_slice(b"X-T: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let (mut ex, _upstream) = answered(&trailers, false).await;
        ex.read_head(false).await.unwrap();
        assert!(matches!(
            body(&mut ex).await,
            Err(ExchangeError::Malformed(_))
        ));

        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (mut ex, _upstream) = answered(&many, false).await;
        assert!(matches!(
            ex.read_head(false).await,
            Err(ExchangeError::Malformed(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_times_out() {
        let (ours, theirs) = duplex(1024);
        let mut ex = Exchange::new(ours, Duration::from_secs(5));
        ex.send(b"GET / HTTP/1.1\r\n\r\n", b"").await.unwrap();
        assert_eq!(
            ex.read_head(false).await.err(),
            Some(ExchangeError::Timeout)
        );
        drop(theirs);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_stalled_midway_times_out() {
        let (ours, mut theirs) = duplex(1024);
        theirs
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            .await
            .unwrap();
        let mut ex = Exchange::new(ours, Duration::from_secs(5));
        ex.read_head(false).await.unwrap();
        assert_eq!(
            ex.next_chunk().await.unwrap().as_deref(),
            Some(&b"half"[..])
        );
        assert_eq!(ex.next_chunk().await.err(), Some(ExchangeError::Timeout));
        drop(theirs);
    }

    #[tokio::test]
    async fn the_request_goes_out_whole_small_bodies_with_the_head() {
        for size in [0, 5, COALESCE_BODY + 1] {
            let (ours, mut theirs) = duplex(1 << 20);
            let mut ex = Exchange::new(ours, TIMEOUT);
            let head = format!("POST /x HTTP/1.1\r\ncontent-length: {size}\r\n\r\n");
            let body = vec![b'b'; size];
            ex.send(head.as_bytes(), &body).await.unwrap();
            drop(ex);
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            let mut want = head.into_bytes();
            want.extend_from_slice(&body);
            assert_eq!(got, want);
        }
    }

    #[tokio::test]
    async fn debug_output_holds_no_header_value_or_body_byte() {
        let (mut ex, _upstream) = answered(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: s=cookie-secret-1\r\nContent-Length: 11\r\n\r\nbody-secret",
            false,
        )
        .await;
        let head = ex.read_head(false).await.unwrap();
        let shown = format!("{head:?} {ex:?}");
        assert!(shown.contains("set-cookie"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn content_length_digits_only() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), None); // 20 digits: refused by length
        assert_eq!(
            decimal(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [&b""[..], b"-1", b"+1", b"1 2", b"1a", b"\xff"] {
            assert_eq!(decimal(bad), None, "{}", bad.escape_ascii());
        }
    }
}
