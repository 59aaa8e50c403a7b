//! A test upstream that answers every request with a JSON description of what it received
//! (method, target, headers) and remembers every request, so tests can assert what reached the
//! backend side of the gateway, and what never did.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        crate::header_values(&self.headers, name)
    }
}

#[derive(Clone)]
pub struct EchoUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        Self::serve(None)
    }

    /// The same upstream behind TLS: every connection is a rustls server session with `config`
    /// (which may require a client certificate).
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> EchoUpstream {
        Self::serve(Some(config))
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => answer(stream, &log),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        answer(rustls::StreamOwned::new(session, stream), &log);
                    }
                });
            }
        });
        EchoUpstream { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Serve one connection's requests until the peer closes it (keep-alive).
fn answer(stream: impl Read + Write, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader) {
        let body = serde_json::to_vec(&serde_json::json!({
            "method": req.method,
            "target": req.target,
            "headers": req.headers,
        }))
        .unwrap();
        // `?chunks=N&size=S`: answer N chunks of S bytes each (chunk i all the letter
        // `a + i % 26`), chunked, one write per chunk, as a streaming upstream would.
        let chunks = query_number(&req.target, "chunks");
        let size = query_number(&req.target, "size").unwrap_or(1);
        // `?cut=1` with `?chunks=N`: stop after the first chunk and close the connection, as an
        // upstream that fails mid-answer would.
        let cut = query_number(&req.target, "cut").is_some();
        // `?close=N`: answer N bytes (all `z`) with neither length nor chunks, and close the
        // connection to end them, as an HTTP/1.0-style upstream would.
        let close = query_number(&req.target, "close");
        // `?hop=1`: the answer carries hop-by-hop headers, one of them named by `Connection`.
        let hop = query_number(&req.target, "hop").is_some();
        log.lock().unwrap().push(req);
        if let Some(n) = close {
            let stream = reader.get_mut();
            let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n".to_vec();
            answer.extend(std::iter::repeat_n(b'z', n));
            let _ = stream.write_all(&answer).and_then(|()| stream.flush());
            break;
        }
        if let Some(chunks) = chunks {
            let stream = reader.get_mut();
            let mut ok = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\ncache-control: public\r\nx-request-id: from-the-upstream\r\n\r\n")
                .is_ok();
            for i in 0..chunks {
                let mut chunk = format!("{size:x}\r\n").into_bytes();
                chunk.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, size));
                chunk.extend_from_slice(b"\r\n");
                ok = ok
                    && stream
                        .write_all(&chunk)
                        .and_then(|()| stream.flush())
                        .is_ok();
                if cut {
                    break;
                }
            }
            if cut {
                break;
            }
            if !(ok
                && stream
                    .write_all(b"0\r\n\r\n")
                    .and_then(|()| stream.flush())
                    .is_ok())
            {
                break;
            }
            continue;
        }
        let hops = if hop {
            "connection: X-Upstream-Hop\r\nx-upstream-hop: 1\r\nkeep-alive: timeout=5\r\n"
        } else {
            ""
        };
        let head = format!(
            // With its own values for headers the gateway sets on every answer: the client
            // must get the gateway's, once.
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nserver: echo\r\nx-powered-by: test\r\ncache-control: public, max-age=60\r\nx-request-id: from-the-upstream\r\nstrict-transport-security: max-age=0\r\n{hops}\r\n",
            body.len()
        );
        let stream = reader.get_mut();
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(&body).is_err()
            || stream.flush().is_err()
        {
            break;
        }
    }
}

/// The number after `name=` in a request target's query, if any.
fn query_number(target: &str, name: &str) -> Option<usize> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Seen {
        method,
        target,
        headers,
        body,
    })
}
