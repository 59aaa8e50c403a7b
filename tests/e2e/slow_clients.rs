//! Slow and greedy clients (slowloris): a head sent too slowly or too large, an idle
//! connection, too many connections from one address. Each is cut off or refused while a
//! normal client on another connection is served as usual.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use zonegate_e2e::client::parse_response;
use zonegate_e2e::{Stack, StackOptions};

/// Short limits, so the test waits for the gateway's timers rather than a client's. The
/// keep-alive idle time is longer than the client's 10 s read timeout: a new connection must
/// be cut by the header timeout, not by the idle time.
const SERVER: &str = "header_timeout_ms = 400
body_read_timeout_ms = 400
keepalive_idle_seconds = 30
max_header_bytes = 4096
max_headers = 20
max_connections_per_address = 8";

fn stack() -> Stack {
    stack_with(SERVER)
}

fn stack_with(server: &str) -> Stack {
    Stack::start_with(StackOptions {
        server_config: server.into(),
        ..StackOptions::default()
    })
}

/// Read until the server closes the connection; what it sent, and whether it closed (rather
/// than the client's own read timeout expiring).
fn read_until_closed(tls: &mut impl Read) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // The client's own read timeout: the server kept the connection open.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false)
            }
            // EOF without close_notify, a reset, a broken pipe: closed by the server.
            Err(_) => return (out, true),
        }
    }
}

#[test]
fn a_head_trickled_in_is_cut_off_and_others_are_served() {
    let stack = stack();
    let client = stack.client();
    let mut slow = client.connect().unwrap();
    // Half a head, then a byte every 100 ms for 1.5 s: each read comes well within the
    // per-read timeout, so only the whole-head deadline (400 ms) can end it.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n")
        .unwrap();
    slow.flush().unwrap();
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(b"x").and_then(|()| slow.flush()).is_err() {
            break;
        }
        // A normal client meanwhile is answered.
        assert_eq!(client.get("/healthz").status, 200);
    }
    let (sent, closed) = read_until_closed(&mut slow);
    assert!(closed, "a trickled head kept its connection");
    assert!(sent.is_empty(), "a trickled head got an answer");
}

/// A body that stops arriving is answered 408 once a read of it has waited the body read
/// timeout (400 ms here), and its connection is closed: what came of the body is unknown.
/// Nothing reaches the upstream, and a normal client is served meanwhile.
#[test]
fn a_body_that_stops_arriving_is_408_and_its_connection_closed() {
    let stack = stack();
    let client = stack.client();
    let mut slow = client.connect().unwrap();
    slow.write_all(
        b"POST /v1/orgs/acme/echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\nonly a part",
    )
    .unwrap();
    slow.flush().unwrap();
    assert_eq!(client.get("/healthz").status, 200);
    let (sent, closed) = read_until_closed(&mut slow);
    assert!(closed, "a stalled body kept its connection");
    let answer = parse_response(&sent).expect("no answer");
    let problem = answer.assert_problem(408);
    assert_eq!(problem["type"], "urn:zonegate:problem:request-timeout");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(stack.echo.seen().is_empty(), "{:?}", stack.echo.seen());
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_time() {
    let stack = stack();
    let mut idle = stack.client().connect().unwrap();
    // Nothing sent at all: the first head's timeout applies.
    let (sent, closed) = read_until_closed(&mut idle);
    assert!(closed, "an idle new connection stayed open");
    assert!(sent.is_empty(), "an idle connection got an answer");

    // After a request, the keep-alive idle time applies (1 s here).
    let stack = stack_with("header_timeout_ms = 400\nkeepalive_idle_seconds = 1");
    let mut kept = stack.client().connect().unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    kept.flush().unwrap();
    let (sent, closed) = read_until_closed(&mut kept);
    assert!(closed, "an idle kept-alive connection stayed open");
    assert_eq!(parse_response(&sent).unwrap().status, 200);
}

#[test]
fn a_head_over_the_size_or_field_limit_is_431() {
    let stack = stack();
    let client = stack.client();
    let big = format!(
        "GET /v1/orgs/acme/echo HTTP/1.1\r\nhost: localhost\r\nx-pad: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let many: String = (0..30).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let many = format!("GET /v1/orgs/acme/echo HTTP/1.1\r\nhost: localhost\r\n{many}\r\n");
    for raw in [big, many] {
        let answer = client.raw(raw.as_bytes()).unwrap();
        let resp = parse_response(&answer).unwrap();
        let problem = resp.assert_problem(431);
        assert_eq!(
            problem["type"],
            "urn:zonegate:problem:header-fields-too-large"
        );
        assert!(resp.header("strict-transport-security").is_some());
    }
    assert!(stack.echo.seen().is_empty());
    // Within the limits, the same route answers.
    assert_eq!(client.get("/v1/orgs/acme/echo").status, 200);
}

/// Read one response from a kept-alive connection.
fn read_one(tls: &mut impl Read) -> zonegate_e2e::client::Response {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(resp) = parse_response(&raw) {
            return resp;
        }
        let n = tls.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn an_unfinished_head_over_the_limit_is_answered_431_without_waiting_for_the_rest() {
    // A long header timeout: a head that is cut off by it gets no answer at all.
    let stack = stack_with("header_timeout_ms = 3000\nmax_header_bytes = 4096");
    let mut greedy = stack.client().connect().unwrap();
    greedy
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-pad: ")
        .unwrap();
    // Over the limit, and never finished: pingora alone would buffer up to 1 MiB of it.
    greedy.write_all(&[b'a'; 6000]).unwrap();
    greedy.flush().unwrap();
    let (sent, closed) = read_until_closed(&mut greedy);
    assert!(closed);
    let resp = parse_response(&sent).expect("an answer before the header timeout");
    let problem = resp.assert_problem(431);
    assert_eq!(
        problem["type"],
        "urn:zonegate:problem:header-fields-too-large"
    );
    assert!(resp.header("strict-transport-security").is_some());
    assert_eq!(resp.header("connection"), Some("close"));

    // Too many fields, also unfinished.
    let mut many = stack.client().connect().unwrap();
    let fields: String = (0..120).map(|i| format!("x-h{i}: 1\r\n")).collect();
    many.write_all(format!("GET /healthz HTTP/1.1\r\n{fields}").as_bytes())
        .unwrap();
    many.flush().unwrap();
    let (sent, _) = read_until_closed(&mut many);
    parse_response(&sent)
        .expect("an answer to too many fields")
        .assert_problem(431);
}

#[test]
fn bodies_larger_than_the_head_limit_keep_their_connection_and_the_next_head_is_limited() {
    let stack = stack();
    let mut conn = stack.client().connect().unwrap();
    let body = "b".repeat(20_000);
    // A Content-Length body five times the head limit, forwarded.
    conn.write_all(
        format!(
            "POST /v1/orgs/acme/echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_one(&mut conn).status, 200);
    // The same body chunked.
    let mut chunked = String::from(
        "POST /v1/orgs/acme/echo HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for part in body.as_bytes().chunks(3000) {
        chunked.push_str(&format!(
            "{:x};ext=1\r\n{}\r\n",
            part.len(),
            std::str::from_utf8(part).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    conn.write_all(chunked.as_bytes()).unwrap();
    assert_eq!(read_one(&mut conn).status, 200);
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut conn).status, 200);
    let seen = stack.echo.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == body.as_bytes()));
    // The next head is limited like the first.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nx-pad: ").unwrap();
    conn.write_all(&[b'a'; 5000]).unwrap();
    conn.flush().unwrap();
    let (sent, closed) = read_until_closed(&mut conn);
    assert!(closed);
    parse_response(&sent).unwrap().assert_problem(431);
}

#[test]
fn connections_over_the_per_address_cap_are_closed_at_once() {
    // The default header timeout, so the held connections stay for the whole test.
    let stack = Stack::start_with(StackOptions {
        server_config: "max_connections_per_address = 8".into(),
        ..StackOptions::default()
    });
    let client = stack.client();
    // Eight held open (the cap), each with a request in flight so none times out early.
    let held: Vec<_> = (0..8)
        .map(|_| {
            let mut c = client.connect().unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n")
                .unwrap();
            c.flush().unwrap();
            c
        })
        .collect();
    // The ninth is closed without an answer (rustls may see the close during the handshake
    // or on the first read).
    let refused = match client.connect() {
        Err(_) => true,
        Ok(mut ninth) => {
            let _ = ninth.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n");
            let _ = ninth.flush();
            let (sent, closed) = read_until_closed(&mut ninth);
            closed && sent.is_empty()
        }
    };
    assert!(refused, "a ninth connection from one address was served");
    // When the held ones close, their places come back.
    drop(held);
    // The gateway sees each close on its next read; a new connection is served once it has.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer =
            client.raw(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        if answer
            .ok()
            .and_then(|a| parse_response(&a))
            .map(|r| r.status)
            == Some(200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no place came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 16 item 3: a client that opens TCP connections and never finishes the TLS handshake
/// (here: half a ClientHello, then nothing) is cut off at `tls_handshake_timeout_ms`, its
/// connections count toward the per-address cap meanwhile, and normal clients are served.
#[test]
fn an_unfinished_tls_handshake_is_cut_off_and_others_are_served() {
    let stack = stack_with(&format!("{SERVER}\ntls_handshake_timeout_ms = 500"));
    let started = Instant::now();
    let mut stalled: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(stack.https).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // A TLS record header announcing a ClientHello that never comes.
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            tcp
        })
        .collect();
    // Served meanwhile.
    assert_eq!(stack.client().get("/healthz").status, 200);
    for tcp in &mut stalled {
        let (sent, closed) = read_until_closed(tcp);
        assert!(closed, "an unfinished handshake kept its connection");
        assert!(sent.is_empty());
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "cut off after {waited:?}, not at the 500 ms handshake timeout"
    );
    assert_eq!(stack.client().get("/healthz").status, 200);
}

/// A client that asks for a large answer and stops reading it is cut off once a write to it
/// has made no progress for `write_timeout_ms`, rather than holding its connection (and the
/// upstream's) until TCP gives up; other clients are served meanwhile.
#[test]
fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let stack = stack_with(&format!("{SERVER}\nwrite_timeout_ms = 400"));
    let mut stuck = stack.client().connect().unwrap();
    // 32 MB, streamed chunked: far more than the socket buffers between the upstream and this
    // client hold, so the gateway's writes wait on a client that reads nothing.
    const SIZE: usize = 1600 * 20000;
    stuck
        .write_all(
            b"GET /v1/orgs/acme/echo?chunks=1600&size=20000 HTTP/1.1\r\nhost: localhost\r\n\r\n",
        )
        .unwrap();
    // Served meanwhile.
    assert_eq!(stack.client().get("/healthz").status, 200);
    // The request's access event is written when the gateway gives up on it; only then does
    // the client read what reached it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stack
        .gateway_log()
        .lines()
        .any(|l| l.contains("\"http_request\"") && l.contains("/v1/orgs/acme/echo"))
    {
        assert!(Instant::now() < deadline, "the gateway kept writing");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (sent, closed) = read_until_closed(&mut stuck);
    assert!(closed, "the stalled connection was kept open");
    assert!(
        sent.len() < SIZE,
        "{} bytes reached the client: the answer was not cut short",
        sent.len()
    );
    assert!(
        !sent.ends_with(b"\r\n0\r\n\r\n"),
        "the answer ended normally"
    );
    assert_eq!(stack.client().get("/healthz").status, 200);
}
