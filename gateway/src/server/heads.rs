//! Request heads limited as their bytes arrive.
//!
//! Written when pingora's HTTP/1 session read the heads: it buffered a head until complete or
//! 1 MiB long, so the gateway's limits (`max_header_bytes`, 32 KiB, and `max_headers`) could
//! only be checked on a complete head. The gateway's own session (`pipeline::downstream`)
//! checks the same limits on what it buffers; this reader stays beneath it as the second,
//! independent count. It sits between the TLS stream and the session, follows HTTP/1.1
//! request framing (RFC 9112) closely enough to know where each head starts and ends, counts a
//! head's bytes and fields as they arrive, and fails the read once a head passes a limit; the
//! gateway answers that with 431 and closes the connection
//! (`pipeline::GatewayApp::refuse_head`).
//!
//! It follows only the framing the gateway accepts: one Content-Length of digits, or a single
//! `chunked` coding. Anything else the gateway refuses and closes (`pipeline::sanitise`); this
//! reader passes such a request's bytes through and, once the gateway has answered, reads the
//! connection as closed. The session above frames requests itself (pipelined ones from what
//! it already holds) and refuses, at the head or in the body, what this reader would not
//! follow, so the two agree on where each request ends.
//!
//! On the way out it holds what the session writes until it flushes, so that a response's
//! head and body leave as one TLS record, and it gives up on a client that stops reading: a
//! write that makes no progress for the write timeout fails, and the connection closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef, ALPN};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use crate::pipeline::downstream::HeadLimits;
use crate::pipeline::downstream::LINE_PREFIX;
use crate::pipeline::HeadTooLarge;

/// A connection's stream with its request heads limited.
pub struct LimitedHeads<S> {
    inner: S,
    framing: Framing,
    /// Written and not yet flushed to `inner` (see the `AsyncWrite` impl); `sent` bytes of it
    /// already went.
    pending: Vec<u8>,
    sent: usize,
    /// How long a write to the client may make no progress.
    write_timeout: Duration,
    /// Armed when a write to the client first waits, disarmed when one makes progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Shows where the stream stands, never the bytes it holds: a head line may be a cookie and the
/// held response a `Set-Cookie`.
impl<S> std::fmt::Debug for LimitedHeads<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedHeads")
            .field("framing", &self.framing)
            .field("pending", &self.pending.len())
            .field("sent", &self.sent)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

impl<S> LimitedHeads<S> {
    pub fn new(inner: S, limits: HeadLimits, write_timeout: Duration) -> LimitedHeads<S> {
        LimitedHeads {
            inner,
            framing: Framing::new(limits),
            pending: Vec::new(),
            sent: 0,
            write_timeout,
            stall: None,
        }
    }

    /// Time a write to the client: a write that waits arms the stall timer (once; the usual
    /// write never waits, so never pays for a timer), one that completes disarms it, and a
    /// wait past the write timeout fails the write. A timeout on the session's body writes
    /// would not do: they are held here, and the flush that sends them would go untimed.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            self.stall = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedHeads<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.framing.state {
            State::Exceeded => return Poll::Ready(Err(std::io::Error::other(HeadTooLarge))),
            // Answered a request this reader cannot follow: the connection ends here.
            State::Unfollowed { answered: true } => return Poll::Ready(Ok(())),
            _ => {}
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.framing.feed(&buf.filled()[before..]);
        // The bytes that went over the limit are handed on: the next read fails, and the session,
        // holding an unfinished head, reports that failure.
        Poll::Ready(Ok(()))
    }
}

/// Most plaintext held before a write goes to the TLS stream: one TLS record's worth.
const WRITE_BUFFER: usize = 16 * 1024;

impl<S: AsyncWrite + Unpin> LimitedHeads<S> {
    /// Write out what is held, however many writes of the inner stream it takes.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.pending.len() {
            let written = Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]);
            let n = ready!(self.timed(cx, written))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // Freed, not kept: an idle connection should not hold a buffer.
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Hold `bytes` (which fit). The first write of a response sizes the buffer for a head and
    /// a small body, so the body that follows the head does not grow it again.
    fn hold(&mut self, bytes: &[u8]) {
        if self.pending.capacity() == 0 {
            self.pending.reserve(bytes.len().max(4096));
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Whether `len` more bytes fit in the buffer.
    fn fits(&self, len: usize) -> bool {
        self.pending.len() + len <= WRITE_BUFFER
    }
}

/// Writes are held until the session flushes, which it does at the end of each response (and after
/// each chunk of a chunked one), so a response's head and a small body leave in one TLS record
/// rather than one record per write: less sealing, and fewer records for the client to open.
impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedHeads<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if !this.fits(buf.len()) {
            ready!(this.poll_drain(cx))?;
            if !this.fits(buf.len()) {
                // Larger than the buffer: straight through, with nothing held before it.
                let written = Pin::new(&mut this.inner).poll_write(cx, buf);
                let n = ready!(this.timed(cx, written))?;
                this.framing.answered(n);
                return Poll::Ready(Ok(n));
            }
        }
        this.hold(buf);
        this.framing.answered(buf.len());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if !this.fits(len) {
            ready!(this.poll_drain(cx))?;
            if !this.fits(len) {
                let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
                let n = ready!(this.timed(cx, written))?;
                this.framing.answered(n);
                return Poll::Ready(Ok(n));
            }
        }
        for b in bufs {
            this.hold(b);
        }
        this.framing.answered(len);
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // Vectored writes are gathered into the buffer.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        let shut = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.timed(cx, shut)
    }
}

// What pingora asks of a stream besides reading and writing: the inner stream's answers.

#[async_trait]
impl<S: Shutdown + AsyncWrite + Unpin + Send> Shutdown for LimitedHeads<S> {
    async fn shutdown(&mut self) {
        // What is held goes out first; a failure here is the shutdown's too.
        let _ = std::future::poll_fn(|cx| self.poll_drain(cx)).await;
        self.inner.shutdown().await;
    }
}

impl<S: UniqueID> UniqueID for LimitedHeads<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: Ssl> Ssl for LimitedHeads<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl<S: GetTimingDigest> GetTimingDigest for LimitedHeads<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl<S: GetProxyDigest> GetProxyDigest for LimitedHeads<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl<S: GetSocketDigest> GetSocketDigest for LimitedHeads<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl<S: Peek + Send> Peek for LimitedHeads<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Where a connection's byte stream is: in a head, in a body, or past what can be followed.
#[derive(Debug)]
pub struct Framing {
    limits: HeadLimits,
    state: State,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// A request head, or the trailers after a chunked body.
    Block(Block),
    /// A Content-Length body: the bytes still to come.
    Body(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// A request with framing the gateway refuses: its bytes pass until the gateway answers.
    Unfollowed { answered: bool },
    /// A head went over a limit.
    Exceeded,
}

/// Where a chunked body is (RFC 9112 §7.1).
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// The chunk-size line: the size so far, its digits, and the bytes of any extension.
    Size {
        size: u64,
        digits: u8,
        extension: Option<usize>,
    },
    /// Chunk data still to come.
    Data(u64),
    /// The line end after a chunk's data.
    DataEnd,
}

/// Longest chunk extension followed (they carry nothing the gateway uses).
const MAX_CHUNK_EXTENSION: usize = 4096;

/// A head or a trailer block being read: counted, and its framing fields noted.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    trailers: bool,
    bytes: usize,
    fields: usize,
    /// The request line was read (a head's first line; trailers have none).
    request_line: bool,
    line: Line,
    lengths: Vec<Option<u64>>,
    codings: Vec<bool>,
}

/// The current line: its length and its first bytes.
#[derive(PartialEq, Eq)]
struct Line {
    len: usize,
    prefix: [u8; LINE_PREFIX],
}

/// The line's length only: its bytes may be a credential (`Authorization`, `Cookie`).
impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Line {
    fn new() -> Line {
        Line {
            len: 0,
            prefix: [0; LINE_PREFIX],
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len < LINE_PREFIX {
            let n = bytes.len().min(LINE_PREFIX - self.len);
            self.prefix[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        }
        self.len += bytes.len();
    }

    /// The line without its CR, if it is short enough to have been kept whole.
    fn whole(&self) -> Option<&[u8]> {
        let kept = &self.prefix[..self.len.min(LINE_PREFIX)];
        let kept = kept.strip_suffix(b"\r").unwrap_or(kept);
        (self.len <= LINE_PREFIX).then_some(kept)
    }

    /// Whether the line is empty (a CR at most): the end of a block.
    fn is_empty(&self) -> bool {
        self.len == 0 || (self.len == 1 && self.prefix[0] == b'\r')
    }
}

/// What a finished line means for its block.
enum LineEnd {
    More,
    Done,
    Exceeded,
}

impl Block {
    fn head() -> Block {
        Block {
            trailers: false,
            bytes: 0,
            fields: 0,
            request_line: false,
            line: Line::new(),
            lengths: Vec::new(),
            codings: Vec::new(),
        }
    }

    fn trailers() -> Block {
        Block {
            trailers: true,
            request_line: true,
            ..Block::head()
        }
    }

    fn end_line(&mut self, limits: &HeadLimits) -> LineEnd {
        let line = std::mem::replace(&mut self.line, Line::new());
        if line.is_empty() {
            // Empty lines before a request line are skipped, as HTTP parsers do (RFC 9112
            // §2.2); they still count toward the size.
            return if self.request_line {
                LineEnd::Done
            } else {
                LineEnd::More
            };
        }
        if !self.request_line {
            self.request_line = true;
            return LineEnd::More;
        }
        self.fields += 1;
        if self.fields > limits.max_fields {
            return LineEnd::Exceeded;
        }
        if !self.trailers {
            self.note_framing(&line);
        }
        LineEnd::More
    }

    /// Note a Content-Length or Transfer-Encoding field. One too long to keep whole, or
    /// spelt oddly, is noted as unreadable: the request is then not followed.
    fn note_framing(&mut self, line: &Line) {
        let kept = &line.prefix[..line.len.min(LINE_PREFIX)];
        let Some(colon) = kept.iter().position(|&b| b == b':') else {
            return;
        };
        let name = &kept[..colon];
        let is_length = name.trim_ascii().eq_ignore_ascii_case(b"content-length");
        let is_coding = name.trim_ascii().eq_ignore_ascii_case(b"transfer-encoding");
        if !is_length && !is_coding {
            return;
        }
        let value = line
            .whole()
            .filter(|_| name.len() == name.trim_ascii().len())
            .map(|l| l[colon + 1..].trim_ascii());
        if is_length {
            self.lengths.push(value.and_then(parse_length));
        } else {
            self.codings
                .push(value.is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")));
        }
    }

    /// The body that follows a finished head, as the gateway frames it (`sanitise`).
    fn body(&self) -> State {
        match (self.lengths.as_slice(), self.codings.as_slice()) {
            ([], []) | ([Some(0)], []) => State::Block(Block::head()),
            ([Some(n)], []) => State::Body(*n),
            ([], [true]) => State::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                extension: None,
            }),
            _ => State::Unfollowed { answered: false },
        }
    }
}

/// A Content-Length value the gateway accepts: 1 to 19 ASCII digits.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Framing {
    pub fn new(limits: HeadLimits) -> Framing {
        Framing {
            limits,
            state: State::Block(Block::head()),
        }
    }

    /// Whether a head went over a limit.
    pub fn exceeded(&self) -> bool {
        self.state == State::Exceeded
    }

    /// The gateway wrote `n` bytes of an answer.
    fn answered(&mut self, n: usize) {
        if n > 0 {
            if let State::Unfollowed { answered } = &mut self.state {
                *answered = true;
            }
        }
    }

    /// Follow `bytes`, the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (state, used) = self.step(bytes);
            if let Some(state) = state {
                self.state = state;
            }
            bytes = &bytes[used..];
        }
    }

    /// Consume a prefix of `bytes` (at least one byte); the new state if it changes.
    fn step(&mut self, bytes: &[u8]) -> (Option<State>, usize) {
        let limits = self.limits;
        match &mut self.state {
            State::Block(block) => {
                // memchr: a head is scanned a word or a vector at a time, not byte by byte.
                let end = memchr::memchr(b'\n', bytes);
                let used = end.map_or(bytes.len(), |i| i + 1);
                block.bytes += used;
                if block.bytes > limits.max_bytes {
                    return (Some(State::Exceeded), bytes.len());
                }
                block.line.push(&bytes[..end.unwrap_or(bytes.len())]);
                if end.is_none() {
                    return (None, used);
                }
                match block.end_line(&limits) {
                    LineEnd::More => (None, used),
                    LineEnd::Exceeded => (Some(State::Exceeded), bytes.len()),
                    LineEnd::Done if block.trailers => (Some(State::Block(Block::head())), used),
                    LineEnd::Done => (Some(block.body()), used),
                }
            }
            State::Body(remaining) => {
                let used = usize::try_from(*remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                *remaining -= used as u64;
                let next = (*remaining == 0).then(|| State::Block(Block::head()));
                (next, used)
            }
            State::Chunked(chunk) => {
                let (next, used) = step_chunk(chunk, bytes);
                (next, used)
            }
            // Nothing more to follow: the rest passes (until an answer) or fails.
            State::Unfollowed { .. } | State::Exceeded => (None, bytes.len()),
        }
    }
}

/// One step through a chunked body. Anything off the grammar leaves the body unfollowed.
fn step_chunk(chunk: &mut Chunk, bytes: &[u8]) -> (Option<State>, usize) {
    let unfollowed = Some(State::Unfollowed { answered: false });
    match chunk {
        Chunk::Data(remaining) => {
            let used = usize::try_from(*remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
            *remaining -= used as u64;
            if *remaining == 0 {
                *chunk = Chunk::DataEnd;
            }
            (None, used)
        }
        Chunk::DataEnd => match bytes[0] {
            b'\r' if bytes.get(1).is_none_or(|&b| b == b'\n') => (None, 1),
            b'\n' => {
                *chunk = Chunk::Size {
                    size: 0,
                    digits: 0,
                    extension: None,
                };
                (None, 1)
            }
            _ => (unfollowed, bytes.len()),
        },
        Chunk::Size {
            size,
            digits,
            extension,
        } => {
            let b = bytes[0];
            match (b, extension.as_mut()) {
                (b'\n', _) if *digits == 0 => (unfollowed, bytes.len()),
                (b'\n', _) if *size == 0 => (Some(State::Block(Block::trailers())), 1),
                (b'\n', _) => {
                    *chunk = Chunk::Data(*size);
                    (None, 1)
                }
                (_, Some(n)) => {
                    *n += 1;
                    if *n > MAX_CHUNK_EXTENSION {
                        return (unfollowed, bytes.len());
                    }
                    (None, 1)
                }
                (b';' | b' ' | b'\t' | b'\r', None) if *digits > 0 => {
                    *extension = Some(0);
                    (None, 1)
                }
                (_, None) => match (b as char).to_digit(16) {
                    // 15 hex digits (2^60 bytes) are more than any body the gateway reads,
                    // and cannot overflow.
                    Some(d) if *digits < 15 => {
                        *size = *size * 16 + u64::from(d);
                        *digits += 1;
                        (None, 1)
                    }
                    _ => (unfollowed, bytes.len()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 256,
        max_fields: 4,
    };

    fn fed(parts: &[&[u8]]) -> Framing {
        let mut f = Framing::new(LIMITS);
        for part in parts {
            f.feed(part);
        }
        f
    }

    fn at_new_head(f: &Framing) -> bool {
        f.state == State::Block(Block::head())
    }

    #[test]
    fn a_head_without_body_ends_at_its_empty_line() {
        let f = fed(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]);
        assert!(at_new_head(&f));
        // Bare LF line ends, as httparse accepts them, and leading empty lines.
        let f = fed(&[b"\r\n\nGET / HTTP/1.1\nHost: a\n\n"]);
        assert!(at_new_head(&f));
    }

    #[test]
    fn a_length_body_is_skipped_whole_in_any_split() {
        let body = vec![b'x'; 1000];
        let request = [
            b"POST / HTTP/1.1\r\ncontent-length: 1000\r\n\r\n".as_slice(),
            &body,
            b"GET / HTTP/1.1\r\n\r\n",
        ]
        .concat();
        for split in [1, 7, 100, request.len()] {
            let mut f = Framing::new(LIMITS);
            for part in request.chunks(split) {
                f.feed(part);
            }
            assert!(at_new_head(&f), "split {split}");
        }
    }

    #[test]
    fn a_chunked_body_with_extensions_and_trailers_is_followed() {
        let request: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n\
            5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in [1, 3, request.len()] {
            let mut f = Framing::new(LIMITS);
            for part in request.chunks(split) {
                f.feed(part);
            }
            assert!(at_new_head(&f), "split {split}");
        }
    }

    #[test]
    fn a_head_over_the_size_is_exceeded_before_it_ends() {
        let mut f = fed(&[b"GET / HTTP/1.1\r\nx-pad: "]);
        f.feed(&[b'a'; 200]);
        assert!(!f.exceeded());
        f.feed(&[b'a'; 100]);
        assert!(f.exceeded());
        // Leading empty lines count too: a client cannot stream them forever.
        let mut f = Framing::new(LIMITS);
        for _ in 0..200 {
            f.feed(b"\r\n");
        }
        assert!(f.exceeded());
    }

    #[test]
    fn too_many_fields_are_exceeded() {
        let f = fed(&[b"GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n\r\n"]);
        assert!(at_new_head(&f));
        let f = fed(&[b"GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n"]);
        assert!(f.exceeded());
    }

    #[test]
    fn trailers_are_limited_like_heads() {
        let mut f = fed(&[b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n"]);
        f.feed(&[b'x'; 300]);
        assert!(f.exceeded());
    }

    #[test]
    fn a_body_after_the_head_is_not_counted_as_head() {
        let mut f = fed(&[b"POST / HTTP/1.1\r\ncontent-length: 100000\r\n\r\n"]);
        for _ in 0..100 {
            f.feed(&[b'x'; 1000]);
        }
        assert!(at_new_head(&f));
    }

    #[test]
    fn framing_the_gateway_refuses_is_not_followed() {
        for head in [
            "content-length: 5\r\ncontent-length: 5",
            "content-length: 5, 5",
            "content-length: +5",
            "content-length: 5\r\ntransfer-encoding: chunked",
            "transfer-encoding: gzip, chunked",
            "transfer-encoding: chunked\r\ntransfer-encoding: chunked",
            "content-length : 5",
            "transfer-encoding: chunked              and then some more bytes to overflow",
        ] {
            let f = fed(&[format!("POST / HTTP/1.1\r\n{head}\r\n\r\n").as_bytes()]);
            assert_eq!(f.state, State::Unfollowed { answered: false }, "{head:?}");
        }
        for body in ["x\r\n", "5\r\nhelloXX", "10000000000000000\r\n", "\r\n"] {
            let f = fed(&[
                b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
                body.as_bytes(),
            ]);
            assert_eq!(f.state, State::Unfollowed { answered: false }, "{body:?}");
        }
    }

    #[test]
    fn an_unfollowed_request_reads_as_closed_once_answered() {
        let mut f = fed(&[b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\nmore"]);
        f.answered(0);
        assert_eq!(f.state, State::Unfollowed { answered: false });
        f.answered(10);
        assert_eq!(f.state, State::Unfollowed { answered: true });
    }

    proptest::proptest! {
        /// However the bytes of a request sequence are split into reads, the reader ends in
        /// the same place: at the start of the next head.
        #[test]
        fn splits_do_not_change_where_a_request_ends(
            bodies in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 1..4),
            chunk_sizes in proptest::collection::vec(1usize..40, 1..8),
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let mut stream = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                if i % 2 == 0 {
                    stream.extend(format!("PUT /z HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).bytes());
                    stream.extend(body);
                } else {
                    stream.extend(b"PUT /z HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
                    let mut rest = body.as_slice();
                    let mut sizes = chunk_sizes.iter().cycle();
                    while !rest.is_empty() {
                        let n = (*sizes.next().unwrap()).min(rest.len());
                        stream.extend(format!("{n:x}\r\n").bytes());
                        stream.extend(&rest[..n]);
                        stream.extend(b"\r\n");
                        rest = &rest[n..];
                    }
                    stream.extend(b"0\r\n\r\n");
                }
            }
            let mut f = Framing::new(LIMITS);
            let mut rest = stream.as_slice();
            let mut cuts = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cuts.next().unwrap()).min(rest.len());
                f.feed(&rest[..n]);
                rest = &rest[n..];
            }
            proptest::prop_assert!(at_new_head(&f), "{:?}", f.state);
        }

        /// Arbitrary bytes never panic, and a head never passes the size limit unnoticed.
        #[test]
        fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let mut f = Framing::new(LIMITS);
            f.feed(&bytes);
            if let State::Block(block) = &f.state {
                proptest::prop_assert!(block.bytes <= LIMITS.max_bytes);
            }
        }
    }

    /// A stream that records each write it is handed, taking at most `max` bytes of each.
    #[derive(Debug, Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        max: usize,
        /// Whether writes wait (a client that stopped reading).
        stalled: bool,
        flushes: usize,
        shut: bool,
    }

    impl Recorder {
        fn taking(max: usize) -> Recorder {
            Recorder {
                max,
                ..Recorder::default()
            }
        }

        fn received(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.stalled {
                return Poll::Pending;
            }
            let n = buf.len().min(self.max);
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[async_trait]
    impl Shutdown for Recorder {
        async fn shutdown(&mut self) {
            self.shut = true;
        }
    }

    use tokio::io::AsyncWriteExt;

    const WAIT: Duration = Duration::from_secs(30);

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_client_that_stops_reading_fails_the_write_after_the_timeout() {
        let mut s = LimitedHeads::new(Recorder::taking(usize::MAX), LIMITS, WAIT);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        s.inner.stalled = true;
        let started = tokio::time::Instant::now();
        let e = s.flush().await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= WAIT && started.elapsed() < WAIT * 2);
        // A write over the buffer, sent straight through, is timed alike.
        let e = s.write(&vec![0; 2 * WRITE_BUFFER]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        // Once the client reads again, what was held goes out, and no timer stays armed.
        s.inner.stalled = false;
        s.flush().await.unwrap();
        assert_eq!(s.inner.received().len(), 40);
        assert!(s.stall.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_head_and_its_body_leave_in_one_write_at_the_flush() {
        let mut s = LimitedHeads::new(Recorder::taking(usize::MAX), LIMITS, WAIT);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
            .await
            .unwrap();
        s.write_all(b"{}").await.unwrap();
        assert!(s.inner.writes.is_empty(), "nothing leaves before the flush");
        s.flush().await.unwrap();
        assert_eq!(
            s.inner.writes,
            [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec()]
        );
        assert_eq!(s.inner.flushes, 1);
        // Nothing is held between responses.
        assert_eq!(s.pending.capacity(), 0);
        // Vectored writes (pingora's chunks) are gathered alike.
        let parts = [
            std::io::IoSlice::new(b"2\r\n"),
            std::io::IoSlice::new(b"{}"),
            std::io::IoSlice::new(b"\r\n"),
        ];
        assert_eq!(s.write_vectored(&parts).await.unwrap(), 7);
        s.flush().await.unwrap();
        assert_eq!(s.inner.writes.len(), 2);
        assert_eq!(s.inner.writes[1], b"2\r\n{}\r\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn debug_shows_neither_the_head_line_nor_the_held_response() {
        let mut s = LimitedHeads::new(Recorder::taking(usize::MAX), LIMITS, WAIT);
        s.framing.feed(b"GET / HTTP/1.1\r\ncookie: s3cr3t-session");
        s.write_all(b"HTTP/1.1 200 OK\r\nset-cookie: s3cr3t-token\r\n\r\n")
            .await
            .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        // Nor as the bytes' numbers, as a derived Debug of the line's prefix printed them.
        assert!(!shown.contains("115, 51, 99"), "{shown}");
        assert!(shown.contains("pending"), "{shown}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn large_and_partial_writes_arrive_whole_and_in_order() {
        // An inner stream that takes 1000 bytes a write, as a full socket might.
        let mut s = LimitedHeads::new(Recorder::taking(1000), LIMITS, WAIT);
        let head = vec![b'h'; 100];
        let body: Vec<u8> = (0..3 * WRITE_BUFFER).map(|i| (i % 251) as u8).collect();
        s.write_all(&head).await.unwrap();
        s.write_all(&body).await.unwrap();
        s.write_all(b"end").await.unwrap();
        s.flush().await.unwrap();
        let mut expected = head.clone();
        expected.extend_from_slice(&body);
        expected.extend_from_slice(b"end");
        assert_eq!(s.inner.received(), expected);
        assert!(s.inner.writes.iter().all(|w| w.len() <= 1000));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_sends_what_is_held_first() {
        let mut s = LimitedHeads::new(Recorder::taking(usize::MAX), LIMITS, WAIT);
        s.write_all(b"HTTP/1.1 431 \r\n\r\n").await.unwrap();
        Shutdown::shutdown(&mut s).await;
        assert_eq!(s.inner.received(), b"HTTP/1.1 431 \r\n\r\n");
        assert!(s.inner.shut);
    }
}
