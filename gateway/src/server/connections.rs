//! Caps on client connections: over all addresses and per address (an IPv6 client counted by
//! its prefix, as the rate limits count it). A connection over a cap is closed at once, before
//! any request is read, so a client that opens connections and sits on them (slowloris) holds
//! at most its share of the gateway's memory and sockets.
//!
//! The count covers connections from the TCP accept to their close, the TLS handshake included:
//! the listener is plain TCP and the handshake runs here, within `tls_handshake_timeout_ms`
//! (pingora's own TLS listener allows 60 s, not configurable), so a client that opens
//! connections and never finishes the handshake is cut off after a few seconds and counts
//! toward the caps meanwhile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;

use super::heads::{HeadLimits, LimitedHeads};
use super::placement::{Place, Placement};
use crate::pipeline::throttle::counted_address;

/// The caps, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_address: usize,
    pub ipv6_prefix: u8,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Connection counts, shared by every thread of a listener.
#[derive(Debug)]
pub struct ConnectionCounter {
    caps: Caps,
    open: Mutex<Open>,
    /// Unix second of the last "refused" warning: at most one a second in the log.
    last_warned: AtomicU64,
}

/// A counted connection; dropping it (the connection closed) gives its place back.
#[derive(Debug)]
pub struct Slot<'a> {
    counter: &'a ConnectionCounter,
    address: Option<IpAddr>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = self.counter.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(address) = self.address {
            if let Some(n) = open.by_address.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    open.by_address.remove(&address);
                }
            }
        }
    }
}

impl ConnectionCounter {
    pub fn new(caps: Caps) -> ConnectionCounter {
        ConnectionCounter {
            caps,
            open: Mutex::new(Open::default()),
            last_warned: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `peer`, or `None` when a cap is reached.
    pub fn admit(&self, peer: Option<IpAddr>) -> Option<Slot<'_>> {
        let address = peer.map(|ip| counted_address(ip, self.caps.ipv6_prefix));
        let mut open = self.lock();
        if open.total >= self.caps.total {
            return None;
        }
        if let Some(address) = address {
            let n = open.by_address.entry(address).or_insert(0);
            if *n >= self.caps.per_address {
                return None;
            }
            *n += 1;
        }
        open.total += 1;
        Some(Slot {
            counter: self,
            address,
        })
    }

    /// Connections open now.
    pub fn open_total(&self) -> usize {
        self.lock().total
    }

    /// Connections open now: in total, and from `peer`'s counted address.
    #[cfg(test)]
    fn open(&self, peer: IpAddr) -> (usize, usize) {
        let open = self.lock();
        let address = counted_address(peer, self.caps.ipv6_prefix);
        (
            open.total,
            open.by_address.get(&address).copied().unwrap_or(0),
        )
    }

    fn warn_refused(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_warned.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                target: "zonegate::server",
                event = "connection_refused",
                max_connections = self.caps.total,
                max_connections_per_address = self.caps.per_address,
                "a client connection was closed at a connection cap"
            );
        }
    }
}

/// TLS on an accepted connection: the acceptor (certificates, versions, ALPN), how long the
/// client has to finish the handshake, and the limits on the request heads that follow.
pub struct Tls {
    pub acceptor: pingora::listeners::tls::Acceptor,
    pub handshake_timeout: std::time::Duration,
    pub heads: HeadLimits,
    /// How long a write to the client may make no progress before the connection closes.
    pub write_timeout: std::time::Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("heads", &self.heads)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

/// A server application with its connections counted and capped, each served on the least
/// loaded runtime thread, and TLS terminated here (with request heads limited as they arrive)
/// when `tls` is set.
#[derive(Debug)]
pub struct Capped<A> {
    app: Arc<A>,
    counter: Arc<ConnectionCounter>,
    tls: Option<Tls>,
    placement: Arc<Placement>,
}

impl<A> Capped<A> {
    /// For a listener whose runtime has `threads` threads.
    pub fn new(
        app: Arc<A>,
        counter: Arc<ConnectionCounter>,
        tls: Option<Tls>,
        threads: usize,
    ) -> Capped<A> {
        Capped {
            app,
            counter,
            tls,
            placement: Arc::new(Placement::new(threads)),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        match self.placement.place(pingora_runtime::current_handle) {
            Place::Here(_serving) => {
                // pingora accepts every connection on its listener's one accept loop, whose
                // runtime registers the socket, and then spawns it onto a random thread: this
                // one. Served as it came, its readiness would keep arriving through the
                // accepting thread's reactor, one cross-thread wake per event (and the
                // scheduler, seeing one thread wake the other, stacks both on one core).
                let stream = attach(detach(stream))?;
                self.serve(stream, shutdown).await
            }
            Place::There(thread, serving) => {
                let this = self.clone();
                let shutdown = shutdown.clone();
                let moving = detach(stream);
                // Served to its close over there; pingora's task for it ends here. (The
                // application serves every keep-alive request itself and returns no stream.)
                thread.spawn(async move {
                    let _serving = serving;
                    let stream = attach(moving)?;
                    this.serve(stream, &shutdown).await
                });
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// A connection on its way to another runtime thread.
enum Moving {
    /// Its TCP socket, to be registered with the other thread's reactor.
    Socket(std::net::TcpStream),
    /// A stream that is not a TCP socket (none of the gateway's listeners makes one): moved as
    /// it is, still registered here.
    Stream(Stream),
}

/// Take a connection's socket off the reactor it is registered with. A tokio socket stays
/// registered with the reactor of the thread that accepted it: served elsewhere as it is,
/// every readiness event for it would be taken there and passed on with a cross-thread wake
/// (an eventfd write, and the accepting thread woken for another's connection), which
/// measured 3–4% of the gateway's CPU under load. So a second handle on the socket goes to
/// the serving thread, and the first is dropped, deregistering it. Nothing has been read from
/// it yet: placement comes first.
fn detach(stream: Stream) -> Moving {
    let duplicate = stream
        .as_any()
        .downcast_ref::<pingora::protocols::l4::stream::Stream>()
        .map(zonegate_sys::sockets::duplicate_tcp);
    match duplicate {
        // `stream` is dropped here, and with it its registration with the accepting reactor.
        Some(Ok(socket)) => Moving::Socket(socket),
        Some(Err(e)) => {
            tracing::debug!(target: "zonegate::server", event = "socket_not_moved", error = %e);
            Moving::Stream(stream)
        }
        None => Moving::Stream(stream),
    }
}

/// On the thread the connection moved to: register its socket with this thread's reactor, as
/// pingora's listener would have (the socket digest the caps read the peer from).
fn attach(moving: Moving) -> Option<Stream> {
    let socket = match moving {
        Moving::Stream(stream) => return Some(stream),
        Moving::Socket(socket) => socket,
    };
    // Non-blocking already (the mode belongs to the socket), said again for tokio's sake.
    socket.set_nonblocking(true).ok()?;
    let socket = tokio::net::TcpStream::from_std(socket).ok()?;
    let mut stream = pingora::protocols::l4::stream::Stream::from(socket);
    let digest = pingora::protocols::SocketDigest::from_raw_fd(stream.as_raw_fd());
    stream.set_socket_digest(digest);
    Some(Box::new(stream))
}

impl<A: ServerApp + Send + Sync + 'static> Capped<A> {
    /// Count, cap, terminate TLS and hand the connection to the application.
    async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let Some(_slot) = self.counter.admit(peer) else {
            self.counter.warn_refused();
            // Dropping the stream closes the connection.
            return None;
        };
        let stream = match &self.tls {
            None => stream,
            Some(tls) => {
                // The listener is plain TCP, so the stream is its TCP stream.
                let tcp = stream
                    .into_any()
                    .downcast::<pingora::protocols::l4::stream::Stream>()
                    .ok()?;
                // Boxed: awaited inline, the handshake's state (the rustls acceptor) would size
                // this future, which lives as long as the connection; on the heap it is freed
                // when the handshake ends.
                let handshake = Box::pin(tokio::time::timeout(
                    tls.handshake_timeout,
                    pingora::protocols::tls::server::handshake(&tls.acceptor, *tcp),
                ))
                .await;
                match handshake {
                    Ok(Ok(stream)) => {
                        Box::new(LimitedHeads::new(stream, tls.heads, tls.write_timeout))
                    }
                    // A failed or unfinished handshake: closed, at debug level (scanners make
                    // many; none of it is the client's request).
                    Ok(Err(e)) => {
                        tracing::debug!(target: "zonegate::tls", event = "tls_handshake_failed", error = e.etype().as_str());
                        return None;
                    }
                    Err(_) => {
                        tracing::debug!(target: "zonegate::tls", event = "tls_handshake_timeout");
                        return None;
                    }
                }
            }
        };
        self.app.process_new(stream, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A client connection accepted on a runtime that is then dropped, as pingora's accept
    /// loop hands one over: the client's end, and what `then` made of the accepted stream
    /// while that runtime was still there.
    fn accepted_on_a_gone_runtime<T>(then: impl FnOnce(Stream) -> T) -> (std::net::TcpStream, T) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let accepting = runtime();
        let made = accepting.block_on(async {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            then(Box::new(pingora::protocols::l4::stream::Stream::from(tcp)))
        });
        drop(accepting);
        (client, made)
    }

    /// A connection accepted on one runtime and moved to another is served by the second
    /// alone: here the first runtime is gone entirely before the second does any I/O, which a
    /// socket still registered with the first runtime's reactor could not survive.
    #[test]
    fn a_moved_connection_is_driven_by_its_new_thread_alone() {
        use std::io::{Read, Write};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, moving) = accepted_on_a_gone_runtime(detach);
        assert!(matches!(moving, Moving::Socket(_)));
        client.write_all(b"ping").unwrap();
        let served = runtime();
        served.block_on(async {
            let mut stream = attach(moving).unwrap();
            let peer = stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().cloned());
            assert_eq!(
                peer.and_then(|p| p.as_inet().copied()),
                Some(client.local_addr().unwrap())
            );
            let mut buf = [0u8; 4];
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                stream.read_exact(&mut buf),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(&buf, b"ping");
            stream.write_all(b"pong").await.unwrap();
            stream.flush().await.unwrap();
        });
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    /// Answers "pong" to a "ping", then closes.
    #[derive(Debug)]
    struct Pong;

    #[async_trait]
    impl ServerApp for Pong {
        async fn process_new(
            self: &Arc<Self>,
            mut stream: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.ok()?;
            assert_eq!(&buf, b"ping");
            stream.write_all(b"pong").await.ok()?;
            stream.flush().await.ok()?;
            None
        }
    }

    /// pingora accepts on one runtime and spawns the connection onto another, which placement
    /// may keep: the connection is then served by that runtime's reactor alone. Here the
    /// accepting runtime is gone before any I/O, which a socket still registered with it could
    /// not survive.
    #[test]
    fn a_connection_kept_where_pingora_put_it_is_served_by_that_thread_alone() {
        use std::io::{Read, Write};
        let (mut client, stream) = accepted_on_a_gone_runtime(|stream| stream);
        client.write_all(b"ping").unwrap();
        let counter = Arc::new(ConnectionCounter::new(Caps {
            total: 10,
            per_address: 10,
            ipv6_prefix: 64,
        }));
        // One thread: placement keeps every connection where it arrived.
        let capped = Arc::new(Capped::new(Arc::new(Pong), counter, None, 1));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        runtime().block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                capped.process_new(stream, &shutdown),
            )
            .await
            .unwrap();
        });
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[test]
    fn caps_per_address_and_in_total_and_places_come_back() {
        let counter = ConnectionCounter::new(Caps {
            total: 3,
            per_address: 2,
            ipv6_prefix: 64,
        });
        let a1 = counter.admit(ip("192.0.2.1")).unwrap();
        let a2 = counter.admit(ip("192.0.2.1")).unwrap();
        assert!(counter.admit(ip("192.0.2.1")).is_none(), "per address");
        // Another address of the same /64 is the same client.
        let v6 = counter.admit(ip("2001:db8::1")).unwrap();
        assert!(counter.admit(ip("2001:db8::2")).is_none(), "in total");
        drop(v6);
        let _v6b = counter.admit(ip("2001:db8::ffff")).unwrap();
        assert!(counter.admit(ip("2001:db8::3")).is_none());
        drop(a1);
        drop(a2);
        assert_eq!(counter.open("192.0.2.1".parse().unwrap()), (1, 0));
        let _b = counter.admit(ip("192.0.2.9")).unwrap();
        assert_eq!(counter.open("2001:db8::7".parse().unwrap()), (2, 1));
    }
}
