//! Load that wrk does not make, for `bench/run.sh`:
//!
//! - `rate`: an open-loop, fixed-rate load (like wrk2): request *i* is due at `start + i/rate`,
//!   and when its connection was still busy at that moment its latency is measured from when it
//!   was due, not from when the connection was free, so a slow server cannot hide its queueing
//!   (no coordinated omission). Its connections are all opened before the first request is
//!   due (as wrk2 does), so the percentiles are the steady state's. Optionally spread over
//!   many source addresses (`--sources 200` binds connections to 127.0.0.2, .3, ...), for
//!   per-address limits.
//! - `idle`: open many TLS connections, make one request on each, then hold them open and idle,
//!   for measuring what an idle keep-alive connection costs the server.
//!
//! HTTPS/1.1 over rustls with one trust anchor (`--ca`), keep-alive, Content-Length or chunked
//! responses. Prints one line of numbers for the script to read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The server, ip:port.
    #[arg(long)]
    addr: SocketAddr,
    /// Request path (and query).
    #[arg(long, default_value = "/")]
    path: String,
    /// PEM file of the certificate to trust.
    #[arg(long)]
    ca: PathBuf,
    /// Extra request headers, `Name: value`, repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body (sent with Content-Type: application/json).
    #[arg(long)]
    body: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Fixed-rate load; prints `sent ok rate_achieved p50_ms p90_ms p99_ms p999_ms max_ms`, the
    /// count of each status, e.g. `200:3000,503:12`, and how long the slowest of the
    /// connections, all opened before the first request is due, took to open (ms).
    Rate {
        #[command(flatten)]
        target: Target,
        /// Requests per second, in total.
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value = "10")]
        seconds: f64,
        #[arg(long, default_value = "50")]
        connections: usize,
        /// Bind connection k to 127.0.0.(2 + k mod sources); 0 leaves it to the kernel.
        #[arg(long, default_value = "0")]
        sources: u32,
        /// Also write one line per request, `due_ms latency_ms` (due from the start), to this
        /// file: where in the run the slow requests fell.
        #[arg(long)]
        series: Option<PathBuf>,
    },
    /// Open connections, one request each, then hold them idle; prints `open`.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value = "10")]
        hold_seconds: u64,
    },
}

type Conn = BufReader<TlsStream<TcpStream>>;

struct Client {
    target: Target,
    tls: TlsConnector,
    request: Vec<u8>,
}

impl Client {
    fn new(target: Target) -> Result<Client, String> {
        let pem = std::fs::read(&target.ca).map_err(|e| format!("{}: {e}", target.ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut request = format!(
            "{} {} HTTP/1.1\r\nhost: localhost\r\n",
            target.method, target.path
        );
        for h in &target.headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        match &target.body {
            Some(body) => request.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => request.push_str("\r\n"),
        }
        Ok(Client {
            target,
            tls: TlsConnector::from(Arc::new(config)),
            request: request.into_bytes(),
        })
    }

    async fn connect(&self, source: Option<IpAddr>) -> std::io::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        Ok(BufReader::new(self.tls.connect(name, tcp).await?))
    }

    /// One exchange; the status code.
    async fn exchange(&self, conn: &mut Conn) -> std::io::Result<u16> {
        conn.get_mut().write_all(&self.request).await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut skip = vec![0u8; size + 2];
                conn.read_exact(&mut skip).await?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut body = vec![0u8; length];
            conn.read_exact(&mut body).await?;
        }
        Ok(status)
    }
}

fn source(k: usize, sources: u32) -> Option<IpAddr> {
    (sources > 0).then(|| {
        let n = 2 + (k as u32 % sources);
        IpAddr::V4(Ipv4Addr::new(127, 0, (n >> 8) as u8, (n & 0xff) as u8))
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn rate(
    client: Arc<Client>,
    rate: f64,
    seconds: f64,
    connections: usize,
    sources: u32,
    series: Option<PathBuf>,
) -> Result<String, String> {
    let total = (rate * seconds).round() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let statuses: Arc<Mutex<std::collections::BTreeMap<u16, u64>>> = Arc::default();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    // Every connection is opened (TLS handshake and all) before the first request is due, so
    // the percentiles are the steady state's: opening 50 connections at once is a burst of
    // its own, reported apart (the slowest open), and not 1% of a 10-second run's latencies.
    let mut opening = Vec::with_capacity(connections);
    for k in 0..connections {
        let client = client.clone();
        opening.push(tokio::spawn(async move {
            let began = Instant::now();
            let conn = client.connect(source(k, sources)).await;
            (conn, began.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut opened = Vec::with_capacity(connections);
    let mut slowest_open = 0.0f64;
    for o in opening {
        let (conn, ms) = o.await.map_err(|e| e.to_string())?;
        slowest_open = slowest_open.max(ms);
        opened.push(conn.map_err(|e| format!("connect: {e}"))?);
    }
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for (k, first) in opened.into_iter().enumerate() {
        let (client, next, ok, latencies, first_error, statuses) = (
            client.clone(),
            next.clone(),
            ok.clone(),
            latencies.clone(),
            first_error.clone(),
            statuses.clone(),
        );
        let note = move |e: std::io::Error| {
            if let Ok(mut first) = first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        };
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = Some(first);
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                // Latency counts from when the request was due if this connection was still
                // busy then (the server's queueing shows), else from when it was sent (the
                // timer's millisecond granularity is the generator's delay, not the server's).
                let busy_past_due = Instant::now() > due;
                tokio::time::sleep_until(due.into()).await;
                let counted_from = if busy_past_due { due } else { Instant::now() };
                if conn.is_none() {
                    conn = client.connect(source(k, sources)).await.map_err(&note).ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                match client.exchange(c).await {
                    Ok(status) => {
                        let latency = counted_from.elapsed().as_secs_f64() * 1000.0;
                        mine.push((i as f64 * 1000.0 / rate, latency));
                        if status < 400 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Ok(mut tally) = statuses.lock() {
                            *tally.entry(status).or_default() += 1;
                        }
                    }
                    Err(e) => {
                        note(e);
                        conn = None;
                    }
                }
            }
            if let Ok(mut all) = latencies.lock() {
                all.extend(mine);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(e) = first_error.lock().map_err(|e| e.to_string())?.as_ref() {
        eprintln!("loadgen: first error: {e}");
    }
    let timed = latencies.lock().map_err(|e| e.to_string())?.clone();
    if let Some(path) = series {
        let mut lines = timed.clone();
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        let text: String = lines
            .iter()
            .map(|(due, latency)| format!("{due:.3} {latency:.3}\n"))
            .collect();
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut all: Vec<f64> = timed.into_iter().map(|(_, latency)| latency).collect();
    all.sort_by(f64::total_cmp);
    let tally = statuses
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|(status, n)| format!("{status}:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(format!(
        "{} {} {:.0} {:.3} {:.3} {:.3} {:.3} {:.3} {tally} {slowest_open:.3}",
        all.len(),
        ok.load(Ordering::Relaxed),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(0.0)
    ))
}

async fn idle(client: Arc<Client>, connections: usize, hold: u64) -> Result<String, String> {
    let mut open = Vec::with_capacity(connections);
    // A few at a time, so the server's accept queue is not what is measured.
    for batch in (0..connections).collect::<Vec<_>>().chunks(200) {
        let mut tasks = Vec::new();
        for _ in batch {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = client.connect(None).await.ok()?;
                client.exchange(&mut conn).await.ok()?;
                Some(conn)
            }));
        }
        for t in tasks {
            if let Ok(Some(conn)) = t.await {
                open.push(conn);
            }
        }
    }
    println!("{}", open.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(open);
    Ok(String::new())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.mode {
            Mode::Rate {
                target,
                rate: r,
                seconds,
                connections,
                sources,
                series,
            } => {
                rate(
                    Arc::new(Client::new(target)?),
                    r,
                    seconds,
                    connections,
                    sources,
                    series,
                )
                .await
            }
            Mode::Idle {
                target,
                connections,
                hold_seconds,
            } => idle(Arc::new(Client::new(target)?), connections, hold_seconds).await,
        }
    });
    match result {
        Ok(line) => {
            if !line.is_empty() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
