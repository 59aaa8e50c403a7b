//! One client connection's HTTP/1.1 requests, read and answered by the gateway itself: the
//! server-side counterpart of [`super::exchange`].
//!
//! This replaces pingora's HTTP/1 server session on the public and platform listeners. That
//! session was built anew for every request on a connection (its buffers, a boxed digest of
//! the connection, a case-preserving second header map beside the request's `HeaderMap`, a
//! boxed response head serialised into a fresh buffer), and handed back to pingora's service
//! loop between requests through a boxed future per request. Here one [`Connection`] holds the
//! stream and its read buffer for the connection's life, a request's head is parsed in place
//! with httparse, its header values are slices of the bytes received, and a response head is
//! written straight from the gateway's `HeaderMap` into the stream's write buffer.
//!
//! What it accepts from a client is no looser than what pingora accepted, and in places
//! stricter:
//! - a head over the configured bytes or fields is [`HeadError::TooLarge`] (431); one httparse
//!   cannot parse (obsolete line folding, a space before a colon, not HTTP at all) is
//!   [`HeadError::Unparsable`] (400); neither is retried with a "fixed" request line;
//! - `Transfer-Encoding` on an HTTP/1.0 request and a `Content-Length` that is not one number
//!   of digits make a head unparsable too: the body cannot be framed;
//! - a head with both `Transfer-Encoding` and `Content-Length`, repeated lengths or any coding
//!   but a single `chunked` parses, and stage 2 (`sanitise`) refuses it and closes, as before;
//! - a request's body is only what its framing says: chunked bodies are decoded (chunk-size
//!   lines up to [`MAX_CHUNK_LINE`], trailers up to the head limit, dropped), a request
//!   without either header has none;
//! - a connection carries a next request only when the client did not ask to close, the
//!   response was written whole, and the request's body was read to its end before the
//!   answer began (an answer to a request whose body is still arriving closes instead, as
//!   pingora did, but in stages: [`Connection::close_lingering`] reads the rest and drops it,
//!   so the client is not reset before it reads the answer); bytes the client sent after a
//!   request are its next request (pipelining).
//!
//! Every read of a body waits at most the body read timeout; the caller times the head. The
//! stream below is the TLS stream wrapped in `server::heads::LimitedHeads`, which limits heads
//! as their bytes arrive, holds writes until a flush, and times writes that make no progress.

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::response::Parts as ResponseHead;
use http::{header, HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora::http::RequestHeader;
use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exchange::decimal;

/// The limits on one request head (and on a chunked body's trailers, read alike). Checked
/// here on what the session parses, and by `server::heads` as the bytes arrive.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes from the request line to the empty line that ends the head, both included.
    pub max_bytes: usize,
    /// Header fields.
    pub max_fields: usize,
}

/// Bytes `server::heads` keeps of each head line: enough for `Content-Length` and
/// `Transfer-Encoding` with any value the gateway accepts. A framing field on a longer line
/// is one it cannot check, so the session refuses it.
pub const LINE_PREFIX: usize = 64;

/// The most header fields httparse is given room for (the configured limit is at most 256).
const MAX_FIELDS: usize = 256;
/// The longest chunk-size line (with any extensions) of a request body.
pub const MAX_CHUNK_LINE: usize = 4096;
/// What each read asks the connection for at least.
const READ_CHUNK: usize = 4096;
/// How long a closing connection goes on reading what its client still sends ([`Connection::
/// close_lingering`]), in all.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// How long it waits for the client's next bytes, or its close, before giving up sooner.
pub const LINGER_GAP: Duration = Duration::from_secs(1);

/// Why no request head could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not a request head the gateway can parse and frame.
    #[error("the request head could not be parsed")]
    Unparsable,
    /// Over the configured size or field count, complete or not.
    #[error("the request head is over the configured size or field limit")]
    TooLarge,
    /// The client closed or failed the connection partway through a head.
    #[error("the connection ended within a request head")]
    Gone,
}

/// Why a request body could not be read. Fixed text only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("timed out")]
    Timeout,
    #[error("the connection ended within the body")]
    Closed,
    #[error("malformed chunked body")]
    Malformed,
}

/// A client connection, from its first request to its close.
pub struct Connection {
    stream: Stream,
    /// Bytes read and not yet consumed: the start of the next head, or body.
    buf: BytesMut,
    /// Each header field's name and where its value lies in the head (kept for reuse).
    fields: Vec<(HeaderName, Range<usize>)>,
    /// A response head being written (kept for reuse: no allocation per response).
    head_out: Vec<u8>,
    limits: HeadLimits,
    body_read_timeout: Duration,
    peer: Option<IpAddr>,
}

/// Shows the connection's state, never the bytes it holds.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.buf.len())
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A request head, parsed.
struct Head {
    req: RequestHeader,
    raw: Bytes,
    read: ReadState,
    keepalive: bool,
    expects_continue: bool,
}

/// Where the reader of a request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// This many bytes of a sized body still to come.
    Length(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// This many bytes of the current chunk still to come.
    ChunkData(u64),
    /// At the line end after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines (this many so far), then an empty line.
    Trailers { lines: usize, bytes: usize },
    /// The body is complete.
    Done,
}

/// Where the writer of a response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteState {
    /// No final response head written yet.
    Head,
    /// This many bytes of a sized body still to go.
    Length(u64),
    /// A chunked body, open.
    Chunked,
    /// A body that ends with the connection.
    UntilClose,
    /// The response is complete.
    Done,
}

/// One request on a connection and the answer to it.
pub struct Session<'c> {
    conn: &'c mut Connection,
    req: RequestHeader,
    /// The head as received, request line to the empty line.
    raw_head: Bytes,
    read: ReadState,
    write: WriteState,
    /// Whether the connection may carry another request after this one.
    keepalive: bool,
    /// The status of the final response, once its head is written.
    status: Option<StatusCode>,
    /// The client sent `Expect: 100-continue` and waits for a `100` before its body; sent
    /// when the body is first read, so a refused request's body is never asked for.
    expects_continue: bool,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("method", &self.req.method)
            .field("read", &self.read)
            .field("write", &self.write)
            .field("keepalive", &self.keepalive)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(stream: Stream, limits: HeadLimits, body_read_timeout: Duration) -> Connection {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        Connection {
            stream,
            buf: BytesMut::new(),
            fields: Vec::new(),
            head_out: Vec::new(),
            limits,
            body_read_timeout,
            peer,
        }
    }

    /// The client's address (the socket's peer).
    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// Read the next request head. `Ok(None)` when the client closed the connection (or it
    /// failed) before sending a byte of one: the normal end of a kept-alive connection. While
    /// no byte of it has arrived, `stop` (when given) completing ends the wait the same way:
    /// given a graceful shutdown, an idle kept-alive connection closes at once rather than
    /// at the end of the grace period; a head already arriving is read and answered. The
    /// caller gives none for a new connection's first head: that client has just connected
    /// to send a request, and closing under it would reset it mid-send. `stop` is one future
    /// for the connection's life, registered with the shutdown signal once rather than per
    /// request.
    pub async fn read_request<F: std::future::Future + ?Sized>(
        &mut self,
        mut stop: Option<std::pin::Pin<&mut F>>,
    ) -> Result<Option<Session<'_>>, HeadError> {
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = self.parse_head()? {
                    return Ok(Some(Session {
                        conn: self,
                        req: head.req,
                        raw_head: head.raw,
                        read: head.read,
                        write: WriteState::Head,
                        keepalive: head.keepalive,
                        status: None,
                        expects_continue: head.expects_continue && head.read != ReadState::Done,
                    }));
                }
                if self.buf.len() > self.limits.max_bytes {
                    return Err(HeadError::TooLarge);
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let read = match stop.as_mut() {
                Some(stop) if self.buf.is_empty() => {
                    tokio::select! {
                        biased;
                        read = self.stream.read_buf(&mut self.buf) => read,
                        _ = stop.as_mut() => return Ok(None),
                    }
                }
                _ => self.stream.read_buf(&mut self.buf).await,
            };
            match read {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(HeadError::Gone),
                Ok(_) => {}
                Err(e) if is_head_too_large(&e) => return Err(HeadError::TooLarge),
                Err(_) if self.buf.is_empty() => return Ok(None),
                Err(_) => return Err(HeadError::Gone),
            }
        }
    }

    /// Parse a complete head at the start of the buffer and take it off, or `None` when more
    /// bytes are needed.
    fn parse_head(&mut self) -> Result<Option<Head>, HeadError> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut request = httparse::Request::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            &self.buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Unparsable),
        };
        if length > self.limits.max_bytes || request.headers.len() > self.limits.max_fields {
            return Err(HeadError::TooLarge);
        }
        let version = match request.version {
            Some(1) => Version::HTTP_11,
            Some(0) => Version::HTTP_10,
            _ => return Err(HeadError::Unparsable),
        };
        let (Some(method), Some(path)) = (request.method, request.path) else {
            return Err(HeadError::Unparsable);
        };
        let mut req = RequestHeader::build_no_case(
            Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Unparsable)?,
            path.as_bytes(),
            Some(request.headers.len()),
        )
        .map_err(|_| HeadError::Unparsable)?;
        req.set_version(version);

        let base = self.buf.as_ptr() as usize;
        let mut length_value: Option<u64> = None;
        let mut length_bad = false;
        let mut codings = false;
        let (mut asked_close, mut asked_keep_alive) = (false, false);
        let mut expects_continue = false;
        self.fields.clear();
        for h in request.headers.iter() {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Unparsable)?;
            if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
                // `server::heads` reads a framing field only when its whole line fits its
                // prefix (a value padded past it it cannot check), and would then not follow
                // the body this session reads: refused, so the two never disagree.
                let line_start = h.name.as_ptr() as usize - base;
                let value_end = h.value.as_ptr() as usize - base + h.value.len();
                let line_end = self.buf[value_end..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(usize::MAX, |at| value_end + at);
                if line_end - line_start > LINE_PREFIX {
                    return Err(HeadError::Unparsable);
                }
            }
            if name == header::CONTENT_LENGTH {
                // Repeats are kept for `sanitise` to refuse; here only the body's end matters.
                match decimal(h.value) {
                    Some(n) if length_value.is_none_or(|seen| seen == n) => {
                        length_value = Some(n);
                    }
                    _ => length_bad = true,
                }
            } else if name == header::TRANSFER_ENCODING {
                codings = true;
            } else if name == header::EXPECT {
                expects_continue = h.value.eq_ignore_ascii_case(b"100-continue");
            } else if name == header::CONNECTION {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    asked_close |= token.eq_ignore_ascii_case(b"close");
                    asked_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            let start = h.value.as_ptr() as usize - base;
            self.fields.push((name, start..start + h.value.len()));
        }
        // RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 is faulty framing.
        if codings && version == Version::HTTP_10 {
            return Err(HeadError::Unparsable);
        }
        // A chunked body (RFC 9112 §6.3: the coding wins over a length; `sanitise` refuses the
        // pair and any coding but `chunked`, closing the connection), a sized one, or none.
        let read = if codings {
            ReadState::ChunkSize
        } else if length_bad {
            return Err(HeadError::Unparsable);
        } else {
            match length_value {
                Some(0) | None => ReadState::Done,
                Some(n) => ReadState::Length(n),
            }
        };
        let keepalive = !asked_close && (version == Version::HTTP_11 || asked_keep_alive);

        let raw_head = self.buf.split_to(length).freeze();
        for (name, range) in self.fields.drain(..) {
            let value = HeaderValue::from_maybe_shared(raw_head.slice(range))
                .map_err(|_| HeadError::Unparsable)?;
            req.append_header(name, value)
                .map_err(|_| HeadError::Unparsable)?;
        }
        Ok(Some(Head {
            req,
            raw: raw_head,
            read,
            keepalive,
            expects_continue: expects_continue && version == Version::HTTP_11,
        }))
    }

    /// Answer without a request to answer (a head that could not be read), then close: the
    /// response's head says so.
    pub async fn refuse(&mut self, mut head: ResponseHead, body: &[u8]) -> std::io::Result<()> {
        head.headers.insert(header::DATE, date());
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        let mut out = Vec::with_capacity(256 + body.len());
        serialise(&head, &[], &mut out);
        out.extend_from_slice(body);
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Close the connection, telling a TLS client so (`close_notify`).
    pub async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.stream).await;
    }

    /// Close the connection while its client may still be sending: a request body the answer
    /// did not wait for (a refusal before the body), or the rest of a head refused unread.
    /// A socket closed with bytes unread, or that receives bytes after its close, is reset by
    /// the kernel, and a client still writing its body then often loses the answer before it
    /// reads it: an integrator's upload refused with 401 or 413 would show as a connection
    /// reset. So the close is staged (RFC 9112 §9.6): the write side first (`close_notify`
    /// and a FIN, within `write_timeout`), then whatever arrives is read and dropped until the
    /// client closes, a read fails, [`LINGER_GAP`] passes without a byte, or [`LINGER_TIME`]
    /// in all. The connection keeps its place under the connection caps meanwhile, so a
    /// client cannot use this to hold more than it could anyway.
    ///
    /// What is read still passes `server::heads`, which ends the reading at once for a
    /// connection whose head went over the limits or whose framing it cannot follow: those
    /// close without lingering.
    pub async fn close_lingering(&mut self, write_timeout: Duration) {
        if tokio::time::timeout(write_timeout, self.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let until = tokio::time::Instant::now() + LINGER_TIME;
        loop {
            // Checked here, not left to the read's timeout alone: a timeout polls its read
            // first, so a client whose bytes are always ready would never see it expire.
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            // Read into the connection's own buffer (a stack one would grow every connection's
            // future), dropping each read.
            self.buf.clear();
            self.buf.reserve(READ_CHUNK);
            let gap = (now + LINGER_GAP).min(until);
            match tokio::time::timeout_at(gap, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // The client closed, the read failed, or the time is up.
                _ => break,
            }
        }
    }

    /// One read into the buffer within the body read timeout; the end of the connection is
    /// an error here (a body cut short).
    async fn read_body_bytes(&mut self) -> Result<(), BodyError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match tokio::time::timeout(self.body_read_timeout, self.stream.read_buf(&mut self.buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => Err(BodyError::Closed),
            Ok(Ok(_)) => Ok(()),
            Err(_) => Err(BodyError::Timeout),
        }
    }
}

impl Session<'_> {
    pub fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req
    }

    /// The head as the client sent it (shared, not copied).
    pub fn raw_head_bytes(&self) -> Bytes {
        self.raw_head.clone()
    }

    /// The client's address (the socket's peer).
    pub fn client_addr(&self) -> Option<IpAddr> {
        self.conn.peer
    }

    /// Whether the connection may carry another request after this one: `false` closes it
    /// after the answer (which says so).
    pub fn set_keepalive(&mut self, keepalive: bool) {
        self.keepalive &= keepalive;
    }

    /// The status of the final response, once its head is written.
    pub fn response_written(&self) -> Option<StatusCode> {
        self.status
    }

    /// The next piece of the request body as it arrives, `None` at its end.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>, BodyError> {
        if std::mem::take(&mut self.expects_continue) && self.write == WriteState::Head {
            let stream = &mut self.conn.stream;
            let sent = async {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                stream.flush().await
            };
            sent.await.map_err(|_| BodyError::Closed)?;
        }
        loop {
            let buf = &mut self.conn.buf;
            match self.read {
                ReadState::Done => return Ok(None),
                ReadState::Length(0) => self.read = ReadState::Done,
                ReadState::Length(remaining) => {
                    let piece = self.take(remaining).await?;
                    self.read = ReadState::Length(remaining - piece.len() as u64);
                    return Ok(Some(piece));
                }
                ReadState::ChunkData(remaining) => {
                    let piece = self.take(remaining).await?;
                    let left = remaining - piece.len() as u64;
                    self.read = if left == 0 {
                        ReadState::ChunkEnd
                    } else {
                        ReadState::ChunkData(left)
                    };
                    return Ok(Some(piece));
                }
                ReadState::ChunkSize => match chunk_size_line_of(buf) {
                    Ok(Some((used, size))) => {
                        buf.advance(used);
                        self.read = if size == 0 {
                            ReadState::Trailers { lines: 0, bytes: 0 }
                        } else {
                            ReadState::ChunkData(size)
                        };
                    }
                    Ok(None) => self.conn.read_body_bytes().await?,
                    Err(e) => return Err(e),
                },
                ReadState::ChunkEnd => {
                    if buf.len() < 2 {
                        self.conn.read_body_bytes().await?;
                        continue;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Malformed);
                    }
                    buf.advance(2);
                    self.read = ReadState::ChunkSize;
                }
                ReadState::Trailers { lines, bytes } => {
                    // Trailer lines, each ending in CRLF, up to an empty one; dropped. Counted
                    // against the head limits, as `server::heads` counts them.
                    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                        if bytes + buf.len() > self.conn.limits.max_bytes {
                            return Err(BodyError::Malformed);
                        }
                        self.conn.read_body_bytes().await?;
                        continue;
                    };
                    if lf == 0 || buf[lf - 1] != b'\r' {
                        return Err(BodyError::Malformed);
                    }
                    let (lines, bytes) = (lines + 1, bytes + lf + 1);
                    buf.advance(lf + 1);
                    if lf == 1 {
                        self.read = ReadState::Done;
                    } else if lines > self.conn.limits.max_fields
                        || bytes > self.conn.limits.max_bytes
                    {
                        return Err(BodyError::Malformed);
                    } else {
                        self.read = ReadState::Trailers { lines, bytes };
                    }
                }
            }
        }
    }

    /// Up to `limit` bytes of the body, reading when none are buffered.
    async fn take(&mut self, limit: u64) -> Result<Bytes, BodyError> {
        if self.conn.buf.is_empty() {
            self.conn.read_body_bytes().await?;
        }
        let buf = &mut self.conn.buf;
        let n = usize::try_from(limit).map_or(buf.len(), |l| l.min(buf.len()));
        Ok(buf.split_to(n).freeze())
    }

    /// Write the final response head; the body's framing follows from it (its length, or
    /// chunked; none for `HEAD`, 204 and 304), and `Date` and `Connection` are set here.
    pub async fn write_response_header(&mut self, head: ResponseHead) -> std::io::Result<()> {
        self.write_response_header_with(head, &[]).await
    }

    /// [`Self::write_response_header`], with `lines` (whole `name: value\r\n` header lines,
    /// in order) written after the map's. The caller vouches for them: they are its own
    /// constants or values it checked as field values, none is a framing header (the framing
    /// is read from `head` alone), and `head` holds none of their names.
    pub async fn write_response_header_with(
        &mut self,
        mut head: ResponseHead,
        lines: &[&[u8]],
    ) -> std::io::Result<()> {
        debug_assert!(
            are_prepared_lines(&head, lines),
            "not whole header lines, or framing or already in the head: {lines:?}"
        );
        if self.write != WriteState::Head {
            return Err(std::io::Error::other("a response head was already written"));
        }
        // An answer that begins while the request's body is still arriving: the connection
        // cannot be trusted to carry another request (the rest of the body would be read as
        // one), so it closes after this answer.
        if self.read != ReadState::Done {
            self.keepalive = false;
        }
        let status = head.status;
        let no_body = self.req.method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let chunked = head
            .headers
            .get(header::TRANSFER_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
        let length = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| decimal(v.as_bytes()));
        // RFC 9112 §6.1: no Transfer-Encoding in an answer to an HTTP/1.0 request (it would
        // not be decoded); such a body runs to the connection's end instead.
        let http10 = self.req.version == Version::HTTP_10;
        if chunked && http10 {
            head.headers.remove(header::TRANSFER_ENCODING);
        }
        self.write = if no_body {
            WriteState::Length(0)
        } else if chunked && !http10 {
            WriteState::Chunked
        } else if let (Some(n), false) = (length, chunked) {
            WriteState::Length(n)
        } else {
            self.keepalive = false;
            WriteState::UntilClose
        };
        if matches!(self.write, WriteState::Chunked | WriteState::UntilClose) {
            // One framing in a head: a length beside chunks, or one this writer could not
            // read, is not sent.
            head.headers.remove(header::CONTENT_LENGTH);
        }
        head.headers.insert(header::DATE, date());
        head.headers.insert(
            header::CONNECTION,
            HeaderValue::from_static(if self.keepalive {
                "keep-alive"
            } else {
                "close"
            }),
        );
        let out = &mut self.conn.head_out;
        out.clear();
        serialise(&head, lines, out);
        self.conn.stream.write_all(out).await?;
        // An unusually large head's buffer is not kept through the connection's idle time.
        if self.conn.head_out.capacity() > 16 * 1024 {
            self.conn.head_out = Vec::new();
        }
        self.status = Some(status);
        if self.write == WriteState::Length(0) {
            self.write = WriteState::Done;
            self.conn.stream.flush().await?;
        }
        Ok(())
    }

    /// Write a piece of the response body, `end` with the last. Bytes past a declared length
    /// are not sent; a body that ends short of it fails (the client would wait for the rest).
    pub async fn write_response_body(&mut self, data: Bytes, end: bool) -> std::io::Result<()> {
        let stream = &mut self.conn.stream;
        match self.write {
            WriteState::Head => return Err(std::io::Error::other("no response head written")),
            WriteState::Done => {}
            WriteState::Length(remaining) => {
                let n = usize::try_from(remaining).map_or(data.len(), |r| r.min(data.len()));
                stream.write_all(&data[..n]).await?;
                let left = remaining - n as u64;
                self.write = WriteState::Length(left);
                if left == 0 {
                    self.write = WriteState::Done;
                    stream.flush().await?;
                } else if end {
                    return Err(std::io::Error::other(
                        "response body shorter than its length",
                    ));
                }
            }
            WriteState::Chunked => {
                if !data.is_empty() {
                    let mut size = [0u8; 18];
                    stream
                        .write_all(chunk_size_line(data.len(), &mut size))
                        .await?;
                    stream.write_all(&data).await?;
                    stream.write_all(b"\r\n").await?;
                }
                if end {
                    stream.write_all(b"0\r\n\r\n").await?;
                    self.write = WriteState::Done;
                }
                stream.flush().await?;
            }
            WriteState::UntilClose => {
                stream.write_all(&data).await?;
                if end {
                    self.write = WriteState::Done;
                }
                stream.flush().await?;
            }
        }
        Ok(())
    }

    /// After the answer: whether the connection carries another request. It does when both
    /// sides asked for nothing else, the answer is complete and the request's body was read
    /// to its end.
    pub fn reusable(&self) -> bool {
        self.keepalive && self.write == WriteState::Done && self.read == ReadState::Done
    }

    /// Whether the client may still be sending this request's body: part of it was left
    /// unread and has not all arrived (a sized body already buffered whole has nothing in
    /// flight). Such a connection closes with [`Connection::close_lingering`].
    pub fn body_in_flight(&self) -> bool {
        match self.read {
            ReadState::Done => false,
            ReadState::Length(remaining) => remaining > self.conn.buf.len() as u64,
            // A chunked body's end is not known until it is read.
            _ => true,
        }
    }
}

/// Whether a read failed because `server::heads` found a head over its limits.
fn is_head_too_large(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<super::HeadTooLarge>())
}

/// What [`Session::write_response_header_with`]'s caller vouches for, checked in debug builds:
/// `lines` join into whole `name: value\r\n` lines of visible ASCII, none of them framing the
/// body or named in `head` too.
fn are_prepared_lines(head: &ResponseHead, lines: &[&[u8]]) -> bool {
    let joined = lines.concat();
    let mut pieces: Vec<&[u8]> = joined.split(|&b| b == b'\n').collect();
    // Whole lines: after the last line end, nothing.
    if pieces.pop() != Some(&[][..]) {
        return false;
    }
    pieces.into_iter().all(|line| {
        let Some(line) = line.strip_suffix(b"\r") else {
            return false;
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let (name, value) = line.split_at(colon);
        let Ok(name) = HeaderName::from_bytes(name) else {
            return false;
        };
        let framing = [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
            header::DATE,
        ];
        value.iter().all(|&b| (0x20..0x7f).contains(&b))
            && !framing.contains(&name)
            && !head.headers.contains_key(&name)
    })
}

/// The status line and header fields of `head`, then `lines`, ending in the empty line.
fn serialise(head: &ResponseHead, lines: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    if let Some(reason) = head.status.canonical_reason() {
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for line in lines {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"\r\n");
}

/// `{size:X}\r\n` into `buf`, without an allocation.
fn chunk_size_line(size: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut at = 16;
    let mut n = size;
    loop {
        at -= 1;
        buf[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[at..]
}

/// The `Date` header's value, formatted at most once a second per thread.
fn date() -> HeaderValue {
    pingora::protocols::http::date::get_cached_date()
}

/// A chunk-size line at the start of `buf` (RFC 9112 §7.1): its length with the CRLF and the
/// size, or `None` when more bytes are needed. As strict as `server::heads` follows it, so the
/// two never disagree on where a chunk ends: 1 to 15 hex digits, then the CRLF, or an
/// extension begun by `;`, space or tab with no control character but tab, then the CRLF; the
/// whole line at most [`MAX_CHUNK_LINE`] bytes.
fn chunk_size_line_of(buf: &[u8]) -> Result<Option<(usize, u64)>, BodyError> {
    let Some(lf) = buf.iter().take(MAX_CHUNK_LINE).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_CHUNK_LINE {
            Err(BodyError::Malformed)
        } else {
            Ok(None)
        };
    };
    let line = buf[..lf].strip_suffix(b"\r").ok_or(BodyError::Malformed)?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(BodyError::Malformed);
    }
    let (size, extension) = line.split_at(digits);
    let extension_ok = match extension.first() {
        None => true,
        Some(b';' | b' ' | b'\t') => extension
            .iter()
            .all(|&b| b == b'\t' || !(b.is_ascii_control())),
        Some(_) => false,
    };
    if !extension_ok {
        return Err(BodyError::Malformed);
    }
    let size = size.iter().try_fold(0u64, |n, &d| {
        let d = (d as char).to_digit(16)?;
        Some(n * 16 + u64::from(d))
    });
    size.map(|size| Some((lf + 1, size)))
        .ok_or(BodyError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_fields: 10,
    };

    /// A shutdown that never comes.
    fn idle() -> std::pin::Pin<Box<std::future::Pending<()>>> {
        Box::pin(std::future::pending())
    }

    /// The next request on `conn`, with no shutdown to watch.
    async fn next(conn: &mut Connection) -> Session<'_> {
        conn.read_request(Some(idle().as_mut()))
            .await
            .unwrap()
            .unwrap()
    }

    /// A connection whose client end is returned, with `sent` already written by the client.
    async fn connection(sent: &[u8]) -> (Connection, DuplexStream) {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        client.write_all(sent).await.unwrap();
        let conn = Connection::new(Box::new(server), LIMITS, Duration::from_secs(5));
        (conn, client)
    }

    fn ok_head() -> ResponseHead {
        http::Response::new(()).into_parts().0
    }

    async fn answer(session: &mut Session<'_>, body: &'static [u8]) {
        let mut head = ok_head();
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        session.write_response_header(head).await.unwrap();
        session
            .write_response_body(Bytes::from_static(body), true)
            .await
            .unwrap();
    }

    /// What the client has received so far (the server side must have flushed it).
    async fn received(client: &mut DuplexStream) -> String {
        let mut out = vec![0u8; 64 * 1024];
        let n = client.read(&mut out).await.unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    async fn head_error(sent: &[u8]) -> HeadError {
        let (mut conn, client) = connection(sent).await;
        drop(client);
        match conn.read_request(Some(idle().as_mut())).await {
            Err(e) => e,
            Ok(Some(s)) => panic!("parsed {s:?}"),
            Ok(None) => panic!("no request"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pipelined_requests_are_read_in_turn_with_their_bodies() {
        let (mut conn, mut client) = connection(
            b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Two: 2\r\n\r\nhello\
              GET /b HTTP/1.1\r\nhost: h\r\n\r\n",
        )
        .await;
        let mut first = next(&mut conn).await;
        assert_eq!(first.req_header().method, Method::POST);
        assert_eq!(first.req_header().raw_path(), b"/a?x=1");
        assert_eq!(first.req_header().headers["x-two"], "2");
        assert!(first.raw_head_bytes().ends_with(b"X-Two: 2\r\n\r\n"));
        assert_eq!(
            first.read_request_body().await.unwrap().unwrap(),
            &b"hello"[..]
        );
        assert_eq!(first.read_request_body().await.unwrap(), None);
        answer(&mut first, b"one").await;
        assert!(first.reusable());
        let text = received(&mut client).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
        assert!(text.ends_with("\r\n\r\none"), "{text}");

        let mut second = next(&mut conn).await;
        assert_eq!(second.req_header().raw_path(), b"/b");
        assert_eq!(second.read_request_body().await.unwrap(), None);
        answer(&mut second, b"").await;
        assert!(second.reusable());
        drop(client);
        assert!(conn
            .read_request(Some(idle().as_mut()))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_chunked_body_is_decoded_across_reads_and_its_trailers_dropped() {
        let (mut conn, mut client) =
            connection(b"PUT /z HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab").await;
        let mut session = next(&mut conn).await;
        let reader = async {
            let mut body = Vec::new();
            while let Some(piece) = session.read_request_body().await.unwrap() {
                body.extend_from_slice(&piece);
            }
            (body, session)
        };
        let writer = async {
            client.write_all(b"c\r\n5;ext=1\r\nde").await.unwrap();
            client
                .write_all(b"fgh\r\n0\r\nx-trailer: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
        };
        let ((body, mut session), ()) = tokio::join!(reader, writer);
        assert_eq!(body, b"abcdefgh");
        answer(&mut session, b"").await;
        assert!(session.reusable());
        let next = next(&mut conn).await;
        assert_eq!(next.req_header().raw_path(), b"/");
    }

    /// Read a request's body to its end or its first error, within a bound (a reader that
    /// missed the malformation would wait for bytes that never come).
    async fn body_result(sent: &[u8], close: bool) -> Result<Vec<u8>, BodyError> {
        let (mut conn, client) = connection(sent).await;
        let _open = if close {
            drop(client);
            None
        } else {
            Some(client)
        };
        let mut session = next(&mut conn).await;
        let read = async {
            let mut body = Vec::new();
            while let Some(piece) = session.read_request_body().await? {
                body.extend_from_slice(&piece);
            }
            Ok(body)
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn malformed_chunks_are_malformed_and_cut_bodies_closed() {
        let head = "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
        for chunks in [
            "zz\r\n",
            "3\r\nabcd\r\n",
            // No digits: httparse would read these as the last chunk.
            "\r\n",
            ";x\r\n",
            // 16 digits; a bare LF; a control byte or an LF in an extension; junk after the size.
            "0000000000000001\r\na\r\n0\r\n\r\n",
            "1\na\r\n0\r\n\r\n",
            "1;a\x01b\r\na\r\n0\r\n\r\n",
            "1;a\nb\r\na\r\n0\r\n\r\n",
            "1x\r\na\r\n0\r\n\r\n",
            // A trailer line ending in a bare LF.
            "1\r\na\r\n0\r\nx-t: 1\n\r\n",
        ] {
            let sent = format!("{head}{chunks}");
            assert_eq!(
                body_result(sent.as_bytes(), false).await,
                Err(BodyError::Malformed),
                "{chunks:?}"
            );
        }
        assert_eq!(
            body_result(b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc", true).await,
            Err(BodyError::Closed)
        );
        // What the grammar allows: an extension, 15 digits, trailers.
        let sent =
            format!("{head}1;name=value\r\na\r\n000000000000002\r\nbc\r\n0\r\nx-t: 1\r\n\r\n");
        assert_eq!(body_result(sent.as_bytes(), false).await.unwrap(), b"abc");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn heads_that_cannot_be_framed_or_parsed_are_refused() {
        for sent in [
            // Obsolete line folding, a space before the colon, not HTTP.
            &b"GET / HTTP/1.1\r\nx-folded: a\r\n b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nx-bad : 1\r\n\r\n",
            b"HELLO\r\n\r\n",
            // Transfer-Encoding on HTTP/1.0; lengths that are not one number.
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            b"POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\nhello",
        ] {
            assert_eq!(
                head_error(sent).await,
                HeadError::Unparsable,
                "{}",
                String::from_utf8_lossy(sent)
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn heads_over_the_limits_are_too_large_complete_or_not() {
        let long = format!("GET / HTTP/1.1\r\nx-long: {}\r\n", "a".repeat(2000));
        assert_eq!(head_error(long.as_bytes()).await, HeadError::TooLarge);
        let many: String = (0..11).map(|i| format!("x-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(head_error(many.as_bytes()).await, HeadError::TooLarge);
        let at_limit: String = (0..10).map(|i| format!("x-{i}: 1\r\n")).collect();
        let (mut conn, _client) =
            connection(format!("GET / HTTP/1.1\r\n{at_limit}\r\n").as_bytes()).await;
        assert!(conn
            .read_request(Some(idle().as_mut()))
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_ending_within_a_head_is_gone_and_before_one_is_closed() {
        assert_eq!(head_error(b"GET / HTT").await, HeadError::Gone);
        let (mut conn, client) = connection(b"").await;
        drop(client);
        assert!(conn
            .read_request(Some(idle().as_mut()))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn repeated_lengths_and_both_framings_parse_for_sanitise_to_refuse() {
        for sent in [
            &b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ] {
            let (mut conn, _client) = connection(sent).await;
            let mut session = next(&mut conn).await;
            let raw = session.raw_head_bytes();
            assert_eq!(
                crate::pipeline::sanitise::sanitise(session.req_header_mut(), Some(&raw)),
                Err(crate::web::Rejection::AmbiguousFraming),
                "{}",
                String::from_utf8_lossy(sent)
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_framing_field_longer_than_the_head_reader_follows_is_unparsable() {
        let padded = format!(
            "POST / HTTP/1.1\r\ncontent-length:{}5\r\n\r\nhello",
            " ".repeat(60)
        );
        assert_eq!(head_error(padded.as_bytes()).await, HeadError::Unparsable);
        let fits = format!(
            "POST / HTTP/1.1\r\ncontent-length:{}5\r\n\r\nhello",
            " ".repeat(40)
        );
        let (mut conn, _client) = connection(fits.as_bytes()).await;
        assert!(conn
            .read_request(Some(idle().as_mut()))
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_client_or_an_unread_body_closes_the_connection_and_the_answer_says_so() {
        for (sent, read_body) in [
            (&b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n"[..], true),
            (b"GET / HTTP/1.0\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\nbody", false),
        ] {
            let (mut conn, mut client) = connection(sent).await;
            let mut session = next(&mut conn).await;
            if read_body {
                while session.read_request_body().await.unwrap().is_some() {}
            }
            answer(&mut session, b"ok").await;
            assert!(!session.reusable(), "{}", String::from_utf8_lossy(sent));
            // The unread body arrived whole with its head: nothing is in flight, so the
            // connection closes without lingering.
            assert!(
                !session.body_in_flight(),
                "{}",
                String::from_utf8_lossy(sent)
            );
            let text = received(&mut client).await;
            assert!(text.contains("connection: close\r\n"), "{text}");
        }
        // HTTP/1.0 that asks to be kept is.
        let (mut conn, _client) =
            connection(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
        let mut session = next(&mut conn).await;
        answer(&mut session, b"").await;
        assert!(session.reusable());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn chunked_answers_are_framed_and_answers_to_head_have_no_body() {
        let (mut conn, mut client) = connection(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut session = next(&mut conn).await;
        let mut head = ok_head();
        head.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        session.write_response_header(head).await.unwrap();
        session
            .write_response_body(Bytes::from(vec![b'x'; 300]), false)
            .await
            .unwrap();
        session
            .write_response_body(Bytes::new(), true)
            .await
            .unwrap();
        assert!(session.reusable());
        let text = received(&mut client).await;
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body, format!("12C\r\n{}\r\n0\r\n\r\n", "x".repeat(300)));

        let (mut conn, mut client) = connection(b"HEAD / HTTP/1.1\r\n\r\n").await;
        let mut session = next(&mut conn).await;
        let mut head = ok_head();
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(42));
        session.write_response_header(head).await.unwrap();
        session
            .write_response_body(Bytes::from(vec![b'x'; 42]), true)
            .await
            .unwrap();
        let mut head = ok_head();
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(42));
        assert!(session.write_response_header(head).await.is_err());
        assert!(session.reusable());
        let text = received(&mut client).await;
        assert!(text.contains("content-length: 42\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn only_whole_field_lines_pass_as_prepared_lines() {
        let mut head = ok_head();
        head.headers.insert("x-mine", HeaderValue::from_static("1"));
        assert!(are_prepared_lines(&head, &[]));
        assert!(are_prepared_lines(
            &head,
            &[b"a: 1\r\n", b"b: ", b"2", b"\r\n"]
        ));
        for bad in [
            &b"a: 1"[..],
            b"a: 1\n",
            b"a: 1\r\nb\r\n",
            b"a: 1\r\r\n",
            b"a b: 1\r\n",
            b"a: \x7f\r\n",
            b"content-length: 1\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"x-mine: 2\r\n",
        ] {
            assert!(
                !are_prepared_lines(&head, &[bad]),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn prepared_lines_follow_the_maps_headers_and_leave_the_framing_alone() {
        let (mut conn, mut client) = connection(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut session = next(&mut conn).await;
        let mut head = ok_head();
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(2));
        let lines: [&[u8]; 2] = [b"a: 1\r\nb: 2\r\n", b"x-request-id: r1\r\n"];
        session
            .write_response_header_with(head, &lines)
            .await
            .unwrap();
        session
            .write_response_body(Bytes::from_static(b"ok"), true)
            .await
            .unwrap();
        assert!(session.reusable());
        let text = received(&mut client).await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.ends_with("\r\na: 1\r\nb: 2\r\nx-request-id: r1"),
            "{head}"
        );
        assert!(head.contains("\r\ncontent-length: 2\r\n"), "{head}");
        assert_eq!(body, "ok");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_http10_client_gets_a_chunked_answer_unchunked_to_the_close() {
        let (mut conn, mut client) =
            connection(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
        let mut session = next(&mut conn).await;
        let mut head = ok_head();
        head.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        session.write_response_header(head).await.unwrap();
        session
            .write_response_body(Bytes::from_static(b"abc"), false)
            .await
            .unwrap();
        session
            .write_response_body(Bytes::new(), true)
            .await
            .unwrap();
        assert!(!session.reusable());
        let text = received(&mut client).await;
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nabc"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_expects_100_continue_gets_it_when_its_body_is_read_and_not_before() {
        let (mut conn, mut client) =
            connection(b"PUT /z HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
                .await;
        let mut session = next(&mut conn).await;
        let reader = async {
            let body = session.read_request_body().await.unwrap().unwrap();
            (body, session)
        };
        let writer = async {
            // Bounded: without the `100` the client would wait for ever.
            let text = tokio::time::timeout(Duration::from_secs(5), received(&mut client))
                .await
                .unwrap();
            assert_eq!(text, "HTTP/1.1 100 Continue\r\n\r\n");
            client.write_all(b"ok").await.unwrap();
            client
        };
        let ((body, mut session), mut client) = tokio::join!(reader, writer);
        assert_eq!(body, &b"ok"[..]);
        assert_eq!(session.read_request_body().await.unwrap(), None);
        answer(&mut session, b"").await;
        assert!(session.reusable());
        assert!(received(&mut client)
            .await
            .starts_with("HTTP/1.1 200 OK\r\n"));

        // Refused before its body is read: no 100, and the connection closes.
        let (mut conn, mut client) =
            connection(b"PUT /z HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
                .await;
        let mut session = next(&mut conn).await;
        answer(&mut session, b"").await;
        assert!(!session.reusable());
        let text = received(&mut client).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(!text.contains("100 Continue"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_short_of_its_length_fails_and_the_connection_is_not_reused() {
        let (mut conn, _client) = connection(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut session = next(&mut conn).await;
        let mut head = ok_head();
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(10));
        session.write_response_header(head).await.unwrap();
        assert!(session
            .write_response_body(Bytes::from_static(b"short"), true)
            .await
            .is_err());
        assert!(!session.reusable());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_graceful_shutdown_closes_an_idle_connection_but_reads_a_head_under_way() {
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let mut stopped = std::pin::pin!(stop.changed());
        let (mut conn, _client) = connection(b"").await;
        let waiting = conn.read_request(Some(stopped.as_mut()));
        let flip = async {
            tokio::task::yield_now().await;
            stop_tx.send(true).unwrap();
        };
        let (read, ()) = tokio::join!(waiting, flip);
        assert!(read.unwrap().is_none());

        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let mut stopped = std::pin::pin!(stop.changed());
        let (mut conn, mut client) = connection(b"GET / HT").await;
        let reading = conn.read_request(Some(stopped.as_mut()));
        let rest = async {
            tokio::task::yield_now().await;
            stop_tx.send(true).unwrap();
            tokio::task::yield_now().await;
            client.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
            client
        };
        let (read, _client) = tokio::join!(reading, rest);
        assert_eq!(read.unwrap().unwrap().req_header().raw_path(), b"/");
    }

    #[test]
    fn chunk_size_lines_are_upper_hex() {
        let mut buf = [0u8; 18];
        for (n, line) in [
            (1usize, "1\r\n"),
            (15, "F\r\n"),
            (16, "10\r\n"),
            (300, "12C\r\n"),
            (usize::MAX, "FFFFFFFFFFFFFFFF\r\n"),
        ] {
            assert_eq!(chunk_size_line(n, &mut buf), line.as_bytes());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn debug_shows_no_header_value() {
        let (mut conn, _client) =
            connection(b"GET / HTTP/1.1\r\ncookie: __Host-session=s3cr3t-cookie\r\n\r\n").await;
        let session = next(&mut conn).await;
        let shown = format!("{session:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        drop(session);
        assert!(!format!("{conn:?}").contains("s3cr3t"));
    }

    /// A request answered before its body (a refusal): closing, the connection reads the rest
    /// of the body and drops it until the client closes. A client still writing is neither
    /// stalled nor reset, and reads the whole answer. Without the lingering read, the client's
    /// write (three times the pipe's capacity) would never finish.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn closing_with_the_body_unread_reads_it_until_the_client_closes() {
        const BODY: usize = 192 * 1024;
        let (mut conn, mut client) = connection(
            format!("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {BODY}\r\n\r\nfirst")
                .as_bytes(),
        )
        .await;
        let mut session = next(&mut conn).await;
        answer(&mut session, b"no").await;
        assert!(session.body_in_flight());
        assert!(!session.reusable());
        drop(session);
        let started = tokio::time::Instant::now();
        let closing =
            tokio::spawn(async move { conn.close_lingering(Duration::from_secs(5)).await });
        let client_side = async {
            client.write_all(&vec![b'x'; BODY - 5]).await.unwrap();
            // (A test stream's shutdown sends no end: the answer is read by its length.)
            let mut answer = Vec::new();
            while !answer.ends_with(b"\r\n\r\nno") {
                let mut piece = [0u8; 256];
                let n = client.read(&mut piece).await.unwrap();
                assert!(n > 0, "closed early");
                answer.extend_from_slice(&piece[..n]);
            }
            drop(client);
            answer
        };
        let answer = tokio::time::timeout(Duration::from_millis(100), client_side)
            .await
            .expect("the body was not read");
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nno"), "{answer}");
        closing.await.unwrap();
        // Ended by the client's close, not by a timer (time here only moves when all wait).
        assert!(started.elapsed() < LINGER_GAP, "{:?}", started.elapsed());
    }

    /// The lingering read is bounded: a silent client is left after [`LINGER_GAP`], and one
    /// that keeps sending after [`LINGER_TIME`] in all.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn lingering_gives_up_on_a_silent_client_and_on_an_endless_one() {
        let (mut conn, _silent) = connection(b"").await;
        let started = tokio::time::Instant::now();
        conn.close_lingering(Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(
            took >= LINGER_GAP && took < LINGER_GAP + Duration::from_millis(10),
            "{took:?}"
        );

        let (mut conn, mut endless) = connection(b"").await;
        let sending = tokio::spawn(async move {
            while endless.write_all(b"x").await.is_ok() {
                tokio::time::sleep(LINGER_GAP / 2).await;
            }
        });
        let started = tokio::time::Instant::now();
        conn.close_lingering(Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(
            took >= LINGER_TIME && took < LINGER_TIME + LINGER_GAP,
            "{took:?}"
        );
        drop(conn);
        sending.await.unwrap();
    }
}
