//! Start the real gateway and backend as processes, with a fresh key ring, dev certificate,
//! SQLite file and config in a temporary directory.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::client::{plain_get, Client};
use crate::echo::EchoUpstream;

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Directory of the binaries: the test executable lives in `<target>/<profile>/deps/`.
fn bin_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap().to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            // The whole workspace with its test targets, like `cargo test --workspace`: features
            // unify the same way, so the binaries reuse the test build's artefacts instead of
            // compiling pingora and sqlx a second time with other features.
            cmd.current_dir(workspace_root())
                .args(["build", "--workspace", "--bins", "--tests"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cargo build runs");
            assert!(status.success(), "building the binaries failed");
            dir
        })
        .clone()
}

pub fn zonegate_bin() -> PathBuf {
    bin_dir().join("zonegate")
}

pub fn backend_bin() -> PathBuf {
    bin_dir().join("zone-backend")
}

/// A port for a child process to bind. Ports from `bind(0)` come from the kernel's ephemeral
/// range, where a port released here can be handed to another test's outgoing connection or
/// listener before the child binds it. So ports come from below that range (Linux's starts at
/// 32768), each handed out once per test process, starting at an offset from the pid so two
/// test processes rarely probe the same ports, and checked free before use.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset.wrapping_add(n) % SPAN);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN);
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub shutdown_grace_seconds: u64,
    pub trusted_proxies: Vec<String>,
    /// TOML appended to the generated config: whole sections (e.g. `[platform]`).
    pub extra_config: String,
    /// Lines added to the config's `[server]` section (timeouts, connection caps).
    pub server_config: String,
    /// Lines added to the config's `[listen]` section (e.g. `admin_token_file`).
    pub listen_config: String,
    /// The policy directory to enforce, used as is. Default: a copy of the shipped policies
    /// plus the fixture policies in the stack's temporary directory.
    pub policies: Option<PathBuf>,
    /// The route table. Default: `tests/fixtures/routes.toml`.
    pub routes: Option<PathBuf>,
    /// `[paths] shadow_policies`, when given.
    pub shadow_policies: Option<PathBuf>,
    /// The body of the config's `[rate_limits]` section. Every test talks from 127.0.0.1, so
    /// the default is generous enough that only tests about limits ever meet one.
    pub rate_limits: String,
    /// Lines added to the config's `[accounts]` section (e.g. `cache_revalidate_seconds`).
    pub accounts_config: String,
    /// The zone backend's database URL (default: a SQLite file in the stack's directory).
    pub backend_database: Option<String>,
    /// Lines added to the config's `[identity]` section (e.g. `algorithm = "EdDSA"`).
    pub identity_config: String,
    /// How the echo upstream speaks to the gateway: plain HTTP by default.
    pub echo_tls: EchoTls,
    /// Give the backend a key directory of its own holding only the `signing-*.pub` files, as
    /// a production backend with Ed25519 assertions has.
    pub backend_public_keys_only: bool,
    /// Configure `[server] upgrade_socket` in the stack's directory, for graceful upgrades.
    pub upgrades: bool,
}

/// The echo upstream behind TLS, and what the gateway is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchoTls {
    #[default]
    Off,
    /// TLS, the gateway trusting the upstream's CA.
    Verified,
    /// TLS requiring a client certificate, which the gateway presents.
    Mutual,
    /// TLS, but the gateway is given another CA: the handshake must fail.
    UntrustedCa,
    /// TLS requiring a client certificate, which the gateway does not have.
    MissingClientCert,
}

/// Generous limits: every bucket far above what any test sends.
pub const GENEROUS_RATE_LIMITS: &str = "auth_strict = { requests = 100000, window_seconds = 60 }
auth = { requests = 100000, window_seconds = 60 }
api_key = { requests = 100000, window_seconds = 60 }
org = { requests = 100000, window_seconds = 60 }
user = { requests = 100000, window_seconds = 60 }
org_sessions = { requests = 100000, window_seconds = 60 }
";

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            shutdown_grace_seconds: 1,
            trusted_proxies: Vec::new(),
            extra_config: String::new(),
            server_config: String::new(),
            listen_config: String::new(),
            rate_limits: GENEROUS_RATE_LIMITS.to_owned(),
            accounts_config: String::new(),
            backend_database: None,
            identity_config: String::new(),
            echo_tls: EchoTls::Off,
            backend_public_keys_only: false,
            upgrades: false,
            policies: None,
            routes: None,
            shadow_policies: None,
        }
    }
}

/// Copy the schema and `*.cedar` files of each source directory into `dest` (created).
pub fn copy_policies(sources: &[PathBuf], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for src in sources {
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|e| e == "cedar" || e == "cedarschema")
            {
                std::fs::copy(&path, dest.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// Another gateway instance of a [`Stack`] ([`Stack::start_peer`]).
pub struct Peer {
    pub https: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    pub log: PathBuf,
}

impl Peer {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `zonegate operators add` printed.
#[derive(Debug, Clone)]
pub struct NewOperator {
    pub id: String,
    pub password: String,
    pub totp_secret: String,
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The platform listener (operators only).
    pub platform: SocketAddr,
    pub backend: SocketAddr,
    pub echo: EchoUpstream,
    pub key_dir: PathBuf,
    /// The key directory the backend reads: `key_dir`, or a copy of the public keys alone.
    pub backend_key_dir: PathBuf,
    pub cert: PathBuf,
    pub config: PathBuf,
    /// The enforced policy directory named in the config.
    pub policies: PathBuf,
    gateway: Option<Child>,
    backend_proc: Option<Child>,
    backend_database: Option<String>,
    /// Tokens [`Stack::mailed_token`] already returned.
    handed_out: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Stack {
    pub fn start() -> Stack {
        Stack::start_with(StackOptions::default())
    }

    pub fn start_with(options: StackOptions) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let key_dir = root.join("keys");
        let out = Command::new(zonegate_bin())
            .args(["keys", "init", "--dir"])
            .arg(&key_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keys init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = root.join("tls/cert.pem");
        let key = root.join("tls/key.pem");
        zonegate::server::tls::ensure_dev_certificate(&cert, &key).unwrap();

        let ws = workspace_root();
        let policies = match &options.policies {
            Some(dir) => dir.clone(),
            None => {
                let policies = root.join("policies");
                copy_policies(
                    &[ws.join("policies"), ws.join("tests/fixtures/policies")],
                    &policies,
                );
                policies
            }
        };
        let routes = options
            .routes
            .clone()
            .unwrap_or_else(|| ws.join("tests/fixtures/routes.toml"));
        let shadow = options
            .shadow_policies
            .as_ref()
            .map(|d| format!("shadow_policies = \"{}\"\n", d.display()))
            .unwrap_or_default();

        let (echo, echo_tls) = match options.echo_tls {
            EchoTls::Off => (EchoUpstream::start(), String::new()),
            mode => {
                let pki = crate::pki::Pki::generate(&root.join("upstream-pki"));
                let mutual = matches!(mode, EchoTls::Mutual | EchoTls::MissingClientCert);
                let ca = if mode == EchoTls::UntrustedCa {
                    &pki.other_ca
                } else {
                    &pki.ca
                };
                let mut lines = format!(
                    "tls = true\nca_file = \"{}\"\nserver_name = \"{}\"\n",
                    ca.display(),
                    crate::pki::UPSTREAM_NAME
                );
                if mode == EchoTls::Mutual {
                    lines += &format!(
                        "client_cert = \"{}\"\nclient_key = \"{}\"\n",
                        pki.client_cert.display(),
                        pki.client_key.display()
                    );
                }
                (EchoUpstream::start_tls(pki.server_config(mutual)), lines)
            }
        };
        let (https, http, admin, backend) = (free_port(), free_port(), free_port(), free_port());
        let platform = free_port();
        let trusted = options
            .trusted_proxies
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = root.join("zonegate.toml");
        std::fs::write(
            &config,
            format!(
                r#"
public_origin = "https://localhost:{https_port}"
[listen]
https = "{https}"
http = "{http}"
admin = "{admin}"
platform = "{platform}"
{listen}
[server]
threads = 2
shutdown_grace_seconds = {grace}
user = "{user}"
{upgrade}
{server}
[tls]
cert = "{cert}"
key = "{key}"
[paths]
data_dir = "{data}"
key_dir = "{keys}"
policies = "{policies}"
routes = "{routes}"
{shadow}[proxy]
trusted_proxies = [{trusted}]
[identity]
audience = "zone-backend"
ttl_seconds = 5
{identity}
[upstreams.zones]
address = "{backend}"
[upstreams.echo]
address = "{echo}"
forward_headers = ["idempotency-key"]
{echo_tls}
[log]
level = "info"
format = "json"
[mail]
outbox_dir = "{outbox}"
[accounts]
# The minimum cost keeps the suite fast; production uses 12.
bcrypt_cost = 4
{accounts}
[decision_log]
# Windows of a second, so tests read what they just did without waiting long.
flush_seconds = 1
[rate_limits]
{rate_limits}
{extra}
"#,
                rate_limits = options.rate_limits,
                accounts = options.accounts_config,
                identity = options.identity_config,
                extra = options.extra_config,
                listen = options.listen_config,
                server = options.server_config,
                user = current_user(),
                upgrade = if options.upgrades {
                    format!("upgrade_socket = \"{}\"", upgrade_socket(root).display())
                } else {
                    String::new()
                },
                outbox = root.join("outbox").display(),
                https_port = https.port(),
                grace = options.shutdown_grace_seconds,
                cert = cert.display(),
                key = key.display(),
                data = root.display(),
                keys = key_dir.display(),
                policies = policies.display(),
                routes = routes.display(),
                echo = echo.addr,
            ),
        )
        .unwrap();

        let backend_key_dir = if options.backend_public_keys_only {
            let dir = root.join("backend-keys");
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(&key_dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "pub") {
                    std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
                }
            }
            dir
        } else {
            key_dir.clone()
        };
        let mut stack = Stack {
            backend_key_dir,
            https,
            http,
            admin,
            platform,
            backend,
            echo,
            key_dir,
            cert,
            config,
            policies,
            gateway: None,
            backend_proc: None,
            backend_database: options.backend_database.clone(),
            handed_out: std::sync::Mutex::default(),
            dir,
        };
        stack.start_backend();
        stack.start_gateway();
        stack
    }

    pub fn client(&self) -> Client {
        Client::new(self.https, &self.cert)
    }

    /// A TLS client of the platform listener.
    pub fn platform_client(&self) -> Client {
        Client::new(self.platform, &self.cert)
    }

    /// `zonegate operators add EMAIL` against this stack's config, as an operator would run
    /// it: the password and TOTP secret it printed once.
    pub fn add_operator(&self, email: &str) -> NewOperator {
        let out = Command::new(zonegate_bin())
            .args(["operators", "add", email, "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "operators add: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no `{name}` in {stdout}"))
                .trim()
                .to_owned()
        };
        NewOperator {
            id: field("added operator ")
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned(),
            password: field("password:"),
            totp_secret: field("totp_secret:"),
        }
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .unwrap()
    }

    pub fn start_backend(&mut self) {
        let database = self
            .backend_database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.dir.path().join("zones.db").display()));
        let child = Command::new(backend_bin())
            .arg("serve")
            .arg("--listen")
            .arg(self.backend.to_string())
            .env("ZONE_BACKEND_DATABASE", database)
            .arg("--key-dir")
            .arg(&self.backend_key_dir)
            .stdout(self.log_file("backend.log"))
            .stderr(self.log_file("backend.log"))
            .spawn()
            .unwrap();
        self.backend_proc = Some(child);
        wait_for(
            self.backend,
            "/healthz",
            "backend",
            self.dir.path().join("backend.log"),
        );
    }

    /// Another gateway instance on this stack's config and database, as a fleet runs them
    /// behind one load balancer: the same public origin, keys, policies and backend, its own
    /// listening ports. Stopped when dropped.
    pub fn start_peer(&self, name: &str) -> Peer {
        let (https, http, admin, platform) = (free_port(), free_port(), free_port(), free_port());
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text
            .replace(
                &format!("https = \"{}\"", self.https),
                &format!("https = \"{https}\""),
            )
            .replace(
                &format!("http = \"{}\"", self.http),
                &format!("http = \"{http}\""),
            )
            .replace(
                &format!("admin = \"{}\"", self.admin),
                &format!("admin = \"{admin}\""),
            )
            .replace(
                &format!("platform = \"{}\"", self.platform),
                &format!("platform = \"{platform}\""),
            );
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new(zonegate_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(self.log_file(&format!("{name}.log")))
            .stderr(self.log_file(&format!("{name}.log")))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let peer = Peer {
            https,
            admin,
            child,
            log: log.clone(),
        };
        wait_for(admin, "/healthz", name, log);
        peer
    }

    /// `zonegate serve` on the stack's config with `extra` arguments, logging to gateway.log.
    fn spawn_gateway(&self, extra: &[&str]) -> Child {
        Command::new(zonegate_bin())
            .arg("serve")
            .args(extra)
            .arg("--config")
            .arg(&self.config)
            .stdout(self.log_file("gateway.log"))
            .stderr(self.log_file("gateway.log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn start_gateway(&mut self) {
        self.gateway = Some(self.spawn_gateway(&[]));
        wait_for(
            self.admin,
            "/readyz",
            "gateway",
            self.dir.path().join("gateway.log"),
        );
        // pingora starts each listener's service on its own thread: the admin listener can
        // answer before the public ones are bound, so wait until they accept too.
        for addr in [self.https, self.http] {
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "gateway listener {addr} never accepted; log:\n{}",
                    self.gateway_log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Replace the running gateway as README says: start `serve --upgrade`, and once it waits
    /// for the sockets, send the old process SIGQUIT. Returns the old process's exit status
    /// once it has drained and exited; the new one is then the stack's gateway.
    pub fn upgrade_gateway(&mut self) -> ExitStatus {
        let mut old = self.gateway.take().expect("gateway running");
        let socket = upgrade_socket(self.dir.path());
        let _ = std::fs::remove_file(&socket);
        self.gateway = Some(self.spawn_gateway(&["--upgrade"]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the new gateway never waited on the upgrade socket; log:\n{}",
                self.gateway_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = Command::new("kill")
            .args(["-QUIT", &old.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = old.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = old.kill();
                panic!("the old gateway did not exit within 60 s of SIGQUIT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway's process id, while it runs (for signals).
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.as_ref().map(Child::id)
    }

    pub fn stop_gateway(&mut self) {
        if let Some(mut c) = self.gateway.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop_backend(&mut self) {
        if let Some(mut c) = self.backend_proc.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send SIGTERM to the gateway and wait for it to exit; returns its status and how long
    /// the exit took.
    pub fn terminate_gateway(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.gateway.take().expect("gateway running");
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("gateway did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway's outbox, read by the gateway's own reader.
    pub fn outbox(&self) -> zonegate::domain::mail::Outbox {
        zonegate::domain::mail::Outbox::new(self.dir.path().join("outbox"))
    }

    /// Every mail the gateway wrote, oldest first, as its decoded body.
    pub fn mails(&self) -> Vec<String> {
        self.outbox().mails().into_iter().map(|m| m.body).collect()
    }

    /// The token in the newest mailed link to `to` that no earlier call returned. The account
    /// routes answer before they mail (so their timing reveals nothing), so this waits, up to
    /// 10 s, for the mail the test's last request caused.
    pub fn mailed_token(&self, to: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let newest = self
                .outbox()
                .newest_link_to(to)
                .and_then(|m| m.link_token().map(str::to_owned));
            if let Some(token) = newest {
                if self.handed_out.lock().unwrap().insert(token.clone()) {
                    return token;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new mail with a link to {to} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the gateway log contains `needle` within a few seconds. Logs are written by a
    /// background thread, so a line can trail the response that caused it.
    pub fn gateway_logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.gateway_log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn gateway_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The stored audit trail, all of it (narrowed by `filters`, e.g. `["--org", id]`), as
    /// `zonegate audit export` writes it: JSON lines, oldest first.
    pub fn audit_export(&self, filters: &[&str]) -> String {
        let out = Command::new(zonegate_bin())
            .args(["audit", "export", "--from", "2000-01-01T00:00:00Z"])
            .args(["--to", "2100-01-01T00:00:00Z"])
            .args(filters)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_gateway();
        self.stop_backend();
    }
}

/// The name of the user running the tests: the gateway runs as it (root on CI machines, where
/// it must be named to be allowed).
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Where a stack with `upgrades` keeps its upgrade socket: a directory of its own, 0700, as
/// the gateway requires.
fn upgrade_socket(root: &Path) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = root.join("run");
    if !dir.exists() {
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    }
    dir.join("upgrade.sock")
}

pub fn wait_for(addr: SocketAddr, path: &str, what: &str, log: PathBuf) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if plain_get(addr, path, &[]).is_ok_and(|r| r.status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not become ready on {addr}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
