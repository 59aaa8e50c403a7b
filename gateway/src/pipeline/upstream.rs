//! Upstream connections: opened with a timeout, over TLS when configured (verified against the
//! upstream's CA, with a client certificate for mTLS), kept alive and reused per thread.
//!
//! Each runtime thread keeps its own idle connections to each upstream (no lock, no channel,
//! no cross-thread hand-off on the hot path), newest first, up to a bound, and for at most the
//! idle timeout. A connection is checked before reuse: one the upstream has closed (or that has
//! bytes nobody asked for) reads as ready and is dropped, never used.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, ReadBuf};

use super::metrics::{Metrics, UpstreamMetrics};

/// Why an upstream could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    /// The TLS handshake failed: an unverifiable certificate, a wrong name, a refused client
    /// certificate. Never retried in the clear.
    #[error("TLS to {0}: {1}")]
    Tls(SocketAddr, String),
}

/// How the gateway speaks TLS to an upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: pingora::tls::TlsConnector,
    /// The name the upstream's certificate must carry (and the SNI sent).
    pub server_name: String,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// One configured upstream.
#[derive(Debug)]
pub struct Upstream {
    /// Its name in the config, which routes refer to.
    pub name: String,
    /// Its slot in each thread's pool.
    slot: usize,
    pub address: SocketAddr,
    pub connect_timeout: Duration,
    /// Per read of the response (header or body).
    pub read_timeout: Duration,
    /// Idle connections kept per thread.
    max_idle: usize,
    /// How long an idle connection is kept.
    idle_timeout: Duration,
    /// Request headers it receives beyond the standard end-to-end set.
    pub forward_headers: Vec<http::HeaderName>,
    /// The largest request body forwarded to it (read whole, so the assertion can bind it).
    pub max_body_bytes: usize,
    /// TLS to it, when configured; plain TCP otherwise.
    tls: Option<UpstreamTls>,
    /// Its exchange metrics (`None` with metrics off).
    pub metrics: Option<UpstreamMetrics>,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

thread_local! {
    /// Idle connections of this thread, by upstream slot, newest last.
    static IDLE: RefCell<Vec<Vec<Idle>>> = const { RefCell::new(Vec::new()) };
}

/// The configured upstreams by name. Looked up on every forwarded request, so with foldhash:
/// the names come from the config, not from clients, so SipHash's flood resistance buys
/// nothing here.
#[derive(Debug, Default)]
pub struct Upstreams(HashMap<String, Upstream, foldhash::fast::RandomState>);

/// How an upstream is reached and kept, from config.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub address: SocketAddr,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// Request headers it receives beyond the standard end-to-end set.
    pub forward_headers: Vec<http::HeaderName>,
    pub max_body_bytes: usize,
    pub tls: Option<UpstreamTls>,
}

impl Upstreams {
    pub fn new<'a>(
        configs: impl IntoIterator<Item = (&'a String, UpstreamConfig)>,
        metrics: &Metrics,
    ) -> Upstreams {
        Upstreams(
            configs
                .into_iter()
                .enumerate()
                .map(|(slot, (name, c))| {
                    (
                        name.clone(),
                        Upstream {
                            name: name.clone(),
                            slot,
                            address: c.address,
                            connect_timeout: c.connect_timeout,
                            read_timeout: c.read_timeout,
                            max_idle: c.max_idle,
                            idle_timeout: c.idle_timeout,
                            forward_headers: c.forward_headers,
                            max_body_bytes: c.max_body_bytes,
                            tls: c.tls,
                            metrics: metrics.for_upstream(name),
                        },
                    )
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.0.get(name)
    }
}

impl Upstream {
    /// A connection: an idle one of this thread if there is a live one, else a new one.
    /// Returns whether it was reused (a reused one may have been closed in flight, so a failed
    /// exchange on it can be retried once on a new one).
    pub async fn connection(&self) -> Result<(Stream, bool), ConnectError> {
        if let Some(stream) = self.take_idle() {
            return Ok((stream, true));
        }
        Ok((self.connect().await?, false))
    }

    /// A new connection, TCP and any TLS handshake together within the connect timeout.
    pub async fn connect(&self) -> Result<Stream, ConnectError> {
        tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| ConnectError::Timeout(self.address))?
    }

    async fn open(&self) -> Result<Stream, ConnectError> {
        let tcp = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| ConnectError::Io(self.address, e))?;
        // Requests are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let tcp = TcpStream::from(tcp);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let stream =
            pingora::protocols::tls::client::handshake(&tls.connector, &tls.server_name, tcp)
                .await
                .map_err(|e| ConnectError::Tls(self.address, e.to_string()))?;
        Ok(Box::new(stream))
    }

    /// Keep a connection whose exchange ended cleanly for the next request on this thread.
    pub fn release(&self, stream: Stream) {
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.len() <= self.slot {
                idle.resize_with(self.slot + 1, Vec::new);
            }
            let pool = &mut idle[self.slot];
            if pool.len() >= self.max_idle {
                // Full: the oldest goes (it is the likeliest to be closed by the upstream).
                pool.remove(0);
            }
            pool.push(Idle {
                stream,
                since: Instant::now(),
            });
        });
    }

    fn take_idle(&self) -> Option<Stream> {
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let pool = idle.get_mut(self.slot)?;
            while let Some(mut candidate) = pool.pop() {
                if candidate.since.elapsed() < self.idle_timeout && is_open(&mut candidate.stream) {
                    return Some(candidate.stream);
                }
            }
            None
        })
    }
}

/// Whether an idle connection can carry a request: nothing to read right now. A closed
/// connection reads as end of file, a broken one as an error, and one with unsolicited bytes
/// is out of step with HTTP; all three are dropped.
fn is_open(stream: &mut Stream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn config(address: SocketAddr) -> UpstreamConfig {
        UpstreamConfig {
            address,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_idle: 2,
            idle_timeout: Duration::from_secs(60),
            forward_headers: Vec::new(),
            max_body_bytes: 1024,
            tls: None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_connections_are_reused_unless_the_upstream_closed_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            let mut kept = Vec::new();
            for _ in 0..2 {
                kept.push(listener.accept().await.unwrap().0);
            }
            kept
        });
        let name = "zones".to_owned();
        let upstreams = Upstreams::new([(&name, config(addr))], &Metrics::off());
        let up = upstreams.get("zones").unwrap();
        let (first, reused) = up.connection().await.unwrap();
        assert!(!reused);
        let (second, _) = up.connection().await.unwrap();
        up.release(first);
        up.release(second);
        let mut server_side = accepted.await.unwrap();
        // The upstream closes the newest idle connection: it is skipped, the other is reused.
        let mut closed = server_side.pop().unwrap();
        closed.shutdown().await.unwrap();
        drop(closed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, reused) = up.connection().await.unwrap();
        assert!(reused, "the live idle connection is reused");
        // Nothing idle is left: the next is a new connection (the listener is gone: refused).
        assert!(matches!(up.connection().await, Err(ConnectError::Io(..))));
    }
}
