//! A deliberately small HTTPS/1.1 client over rustls: one request per connection, raw bytes
//! available, the dev certificate as its only trust anchor.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        crate::header_values(&self.headers, name)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Assert a problem+json error with this status.
    pub fn assert_problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let v = self.json();
        assert_eq!(v["status"], status);
        assert!(v["type"].is_string() && v["title"].is_string());
        v
    }
}

#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
}

impl Client {
    /// A client that trusts only the certificate in `ca_pem`.
    pub fn new(addr: SocketAddr, ca_pem: &Path) -> Client {
        Client::with_versions(addr, ca_pem, rustls::DEFAULT_VERSIONS)
    }

    pub fn with_versions(
        addr: SocketAddr,
        ca_pem: &Path,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Client {
        let mut roots = RootCertStore::empty();
        let pem = std::fs::read(ca_pem).unwrap();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            addr,
            config: Arc::new(config),
        }
    }

    /// Open a TLS connection and complete the handshake.
    pub fn connect(&self) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
        let tcp = TcpStream::connect(self.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn =
            ClientConnection::new(self.config.clone(), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }

    /// Send raw request bytes and read until the server closes the connection.
    pub fn raw(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::ErrorKind;
        let mut tls = self.connect()?;
        match tls.write_all(request).and_then(|()| tls.flush()) {
            Ok(()) => {}
            // A server may answer and close before the whole request is sent (a body over its
            // limit, say): what it answered is still there to read, without writing again.
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                return read_without_writing(&mut tls);
            }
            Err(e) => return Err(e),
        }
        let mut out = Vec::new();
        match tls.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            // A server that closes without close_notify still gave us its answer; one that
            // closed with our unread bytes pending resets, after its answer.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(out),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !out.is_empty() => Ok(out),
            Err(e) => Err(e),
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    pub fn send_json(&self, method: &str, path: &str, body: &serde_json::Value) -> Response {
        let body = serde_json::to_vec(body).unwrap();
        self.request(
            method,
            path,
            &[("content-type", "application/json")],
            Some(&body),
        )
    }

    /// One request with `Connection: close`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = body {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(body);
        }
        parse_response(&self.raw(&bytes).unwrap())
            .unwrap_or_else(|| panic!("no HTTP response to {method} {path}"))
    }
}

/// Read what the server sent until it closed, never writing: the stream's own `read` first
/// flushes pending TLS records, which fails once the server has stopped reading.
fn read_without_writing(
    tls: &mut StreamOwned<ClientConnection, TcpStream>,
) -> std::io::Result<Vec<u8>> {
    use std::io::ErrorKind;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        loop {
            match tls.conn.reader().read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(out),
                Err(e) => return Err(e),
            }
        }
        match tls.conn.read_tls(&mut tls.sock) {
            Ok(0) => return Ok(out),
            Ok(_) => {
                tls.conn
                    .process_new_packets()
                    .map_err(std::io::Error::other)?;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !out.is_empty() => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Parse one HTTP/1.1 response (Content-Length, chunked, or read-to-close body).
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.1.parse().ok()?;
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// One plain-HTTP request (for the admin listener, the redirect listener and the backend).
pub fn plain(addr: SocketAddr, request: &str) -> std::io::Result<Response> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)?;
    parse_response(&out).ok_or_else(|| std::io::Error::other("no HTTP response"))
}

/// `GET path` over plain HTTP with `Connection: close`.
pub fn plain_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    plain(addr, &req)
}
