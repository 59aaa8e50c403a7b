//! Starting, checking and stopping: config errors name the bad key, loose key permissions are
//! refused, SIGTERM drains within the grace period.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use zonegate_e2e::stack::{workspace_root, zonegate_bin};
use zonegate_e2e::{Stack, StackOptions};

#[test]
fn sigterm_stops_the_gateway_gracefully_within_the_grace_period() {
    let mut stack = Stack::start_with(StackOptions {
        shutdown_grace_seconds: 1,
        ..StackOptions::default()
    });
    assert_eq!(stack.client().get("/healthz").status, 200);
    let (status, took) = stack.terminate_gateway();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        stack.client().connect().is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn check_config_accepts_the_stack_config_and_names_bad_keys() {
    let stack = Stack::start();
    let ok = Command::new(zonegate_bin())
        .args(["check-config", "--config"])
        .arg(&stack.config)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let text = std::fs::read_to_string(&stack.config).unwrap();
    let cases = [
        (text.replace("threads = 2", "threads = 0"), "server.threads"),
        (
            text.replace("[listen]\nhttps = \"", "[listen]\nhttps = \"x"),
            "listen.https",
        ),
        (
            text.replace("ttl_seconds = 5", "ttl_seconds = 3000"),
            "identity.ttl_seconds",
        ),
        (text.replace("[log]", "[log]\nbogus = 1"), "bogus"),
        (
            text.replace("tests/fixtures/routes.toml", "tests/fixtures/missing.toml"),
            "missing.toml",
        ),
        // The admin listener off loopback without a token, a password written into the
        // database URL, a secret's variable that is not set: each refused by name.
        (
            text.replace("admin = \"127.0.0.1:", "admin = \"0.0.0.0:"),
            "listen.admin_token_file",
        ),
        (
            text.replace("[mail]", "[database]\nurl = \"postgres://z:pw@127.0.0.1/z\"\n[mail]"),
            "database.password_env",
        ),
        (
            format!(
                "{text}\n[mail.smtp]\nhost = \"127.0.0.1\"\nusername = \"z\"\npassword_env = \"ZONEGATE_E2E_UNSET_SMTP_PASSWORD\"\n"
            ),
            "`ZONEGATE_E2E_UNSET_SMTP_PASSWORD` is not set",
        ),
        // Every missing secret is named at once.
        (
            format!(
                "{}\n[mail.smtp]\nhost = \"127.0.0.1\"\nusername = \"z\"\npassword_env = \"ZONEGATE_E2E_UNSET_SMTP_PASSWORD\"\n",
                text.replace(
                    "[mail]",
                    "[database]\nurl = \"postgres://z@127.0.0.1/z\"\npassword_env = \"ZONEGATE_E2E_UNSET_DB_PASSWORD\"\n[mail]"
                )
            ),
            "`ZONEGATE_E2E_UNSET_DB_PASSWORD` is not set\n  config key `mail.smtp.password_env`",
        ),
        // An expired security.txt is never served.
        (
            format!(
                "{text}\n[security_txt]\ncontact = [\"mailto:s@example.com\"]\nexpires = \"2020-01-01T00:00:00Z\"\n"
            ),
            "security_txt.expires",
        ),
    ];
    for (bad, needle) in cases {
        let path = stack.dir.path().join("bad.toml");
        std::fs::write(&path, bad).unwrap();
        let out = Command::new(zonegate_bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "{needle} not named in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_invalid_policy_set_refuses_to_start_naming_the_policy() {
    let stack = Stack::start();
    let policies = stack.dir.path().join("policies");
    std::fs::write(
        policies.join("broken.cedar"),
        "@id(\"typo-action\")\npermit (principal, action == Zonegate::Action::\"zones:lisst\", resource);\n",
    )
    .unwrap();
    let out = Command::new(zonegate_bin())
        .args(["check-config", "--config"])
        .arg(&stack.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("typo-action"), "{stderr}");
}

/// A second gateway on the same config finds its addresses taken: it stops at once, naming
/// the address, instead of serving on some listeners and aborting on another; the first one
/// keeps serving.
#[test]
fn a_second_gateway_on_taken_addresses_stops_naming_the_address() {
    let stack = Stack::start();
    let out = Command::new(zonegate_bin())
        .args(["serve", "--config"])
        .arg(&stack.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&stack.https.to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stack.client().get("/healthz").status, 200);
}

#[test]
fn keys_readable_by_others_are_refused_naming_the_path() {
    let mut stack = Stack::start();
    stack.stop_gateway();
    let key = stack.key_dir.join("identity-1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(zonegate_bin())
        .args(["serve", "--config"])
        .arg(&stack.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(key.to_str().unwrap()), "{stderr}");
}

#[test]
fn the_shipped_policies_and_routes_validate() {
    let stack = Stack::start();
    let text = std::fs::read_to_string(&stack.config)
        .unwrap()
        .replace(
            &stack.dir.path().join("policies").display().to_string(),
            &workspace_root().join("policies").display().to_string(),
        )
        .replace(
            &workspace_root()
                .join("tests/fixtures/routes.toml")
                .display()
                .to_string(),
            &workspace_root()
                .join("policies/routes.toml")
                .display()
                .to_string(),
        )
        .replace("[upstreams.echo]", "[upstreams.unused]");
    let path = stack.dir.path().join("shipped.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(zonegate_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_gateway_route_without_a_handler_refuses_to_start_naming_the_route() {
    let stack = Stack::start();
    let fixture = workspace_root().join("tests/fixtures/routes.toml");
    // An overlay on the test routes that adds a route the gateway would have to answer itself,
    // though no handler does.
    let overlay = stack.dir.path().join("ghost-routes.toml");
    std::fs::write(
        &overlay,
        format!(
            "extends = \"{}\"\n\n[[route]]\nname = \"ghost\"\nmethods = [\"GET\"]\npath = \"/v1/ghost\"\n\
             upstream = \"gateway\"\naction = \"health\"\nresource = {{ type = \"Gateway\", id = \"public\" }}\n\
             credentials = [\"anonymous\"]\n",
            fixture.display()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&stack.config).unwrap().replace(
        &fixture.display().to_string(),
        &overlay.display().to_string(),
    );
    let path = stack.dir.path().join("ghost.toml");
    std::fs::write(&path, text).unwrap();
    let refused = || {
        let out = Command::new(zonegate_bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused();
    assert!(
        stderr.contains("route `ghost`") && stderr.contains("no handler"),
        "{stderr}"
    );

    // And the other way: a handler whose route is gone (the overlay points the audit route
    // at an upstream, so nothing leads to the gateway's handler).
    std::fs::write(
        &overlay,
        format!(
            "extends = \"{}\"\n\n[[override]]\nname = \"audit-events\"\nupstream = \"echo\"\n",
            fixture.display()
        ),
    )
    .unwrap();
    let stderr = refused();
    assert!(
        stderr.contains("/v1/orgs/{org}/audit-events") && stderr.contains("no route"),
        "{stderr}"
    );
}

#[test]
fn what_the_gateway_writes_is_readable_by_its_own_user_only() {
    // Whatever umask the gateway was started with (the test runner's is usually 022).
    let stack = Stack::start();
    assert_eq!(stack.client().get("/healthz").status, 200);
    let data = stack.dir.path();
    let written: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("zonegate.db"))
        })
        .collect();
    assert!(!written.is_empty(), "no database in {}", data.display());
    for file in written {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", file.display());
    }
}

#[test]
fn a_graceful_upgrade_replaces_the_process_without_failing_a_request() {
    let mut stack = Stack::start_with(StackOptions {
        upgrades: true,
        ..StackOptions::default()
    });
    let old_pid = stack.gateway_pid().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let client = stack.client();
    let outcomes = std::thread::scope(|s| {
        let load: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    // A new connection per request: what the upgrade must never refuse.
                    let c = &client;
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let answer = c.raw(
                            b"GET /v1/orgs/acme/echo HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
                        );
                        seen.push(match answer {
                            Ok(raw) => zonegate_e2e::client::parse_response(&raw)
                                .map_or_else(|| "no answer".to_owned(), |r| r.status.to_string()),
                            Err(e) => format!("{:?}", e.kind()),
                        });
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let status = stack.upgrade_gateway();
        // The new process serves alone now; keep the load on it a little longer.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(status.success(), "the old gateway exited with {status:?}");
        load.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let failed: Vec<&String> = outcomes.iter().filter(|o| *o != "200").collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(outcomes.len() > 50, "only {} requests ran", outcomes.len());
    assert_ne!(stack.gateway_pid(), Some(old_pid));
    assert_eq!(stack.client().get("/v1/orgs/acme/echo").status, 200);
    let ready = zonegate_e2e::client::plain_get(stack.admin, "/readyz", &[]).unwrap();
    assert_eq!(ready.status, 200, "the admin listener moved too");
}

#[test]
fn serve_upgrade_without_an_upgrade_socket_is_refused() {
    let stack = Stack::start();
    let out = Command::new(zonegate_bin())
        .args(["serve", "--upgrade", "--config"])
        .arg(&stack.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upgrade_socket"));
    // The running gateway was not disturbed.
    assert_eq!(stack.client().get("/healthz").status, 200);
}

fn as_root() -> bool {
    zonegate_e2e::stack::current_user() == "root"
}

/// `Uid:` and `Gid:` (real, effective, saved, filesystem) and `Groups:` of a process.
fn ids_of(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

#[test]
fn started_as_root_it_binds_a_privileged_port_then_runs_as_the_configured_user() {
    if !as_root() {
        eprintln!("skipping: privilege drop is tested when the suite runs as root");
        return;
    }
    let mut stack = Stack::start();
    stack.stop_gateway();
    // A port only root may bind, free now.
    let low = (800..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let config = std::fs::read_to_string(&stack.config).unwrap();
    let config = config
        .replace(
            &format!("https = \"{}\"", stack.https),
            &format!("https = \"127.0.0.1:{low}\""),
        )
        .replace("user = \"root\"", "user = \"nobody\"");
    std::fs::write(&stack.config, config).unwrap();
    stack.https = format!("127.0.0.1:{low}").parse().unwrap();
    // Everything the gateway reads or writes belongs to the account it becomes.
    let chown = Command::new("chown")
        .args(["-R", "nobody:"])
        .arg(stack.dir.path())
        .status()
        .unwrap();
    assert!(chown.success());

    stack.start_gateway();
    let pid = stack.gateway_pid().unwrap();
    let (uid, gid, groups) = ids_of(pid);
    assert_eq!(uid, "65534 65534 65534 65534", "{}", stack.gateway_log());
    assert_eq!(gid, "65534 65534 65534 65534");
    assert_eq!(groups, "65534", "root's supplementary groups are gone");
    assert!(stack.gateway_logged("privileges_dropped"));
    // Served on the privileged port, through the whole pipeline, by the unprivileged process.
    assert_eq!(stack.client().get("/healthz").status, 200);
    assert_eq!(stack.client().get("/v1/orgs/acme/echo").status, 200);
    let signup = stack.client().send_json(
        "POST",
        "/auth/signup",
        &serde_json::json!({"email": "ada@example.com", "password": "correct horse battery staple"}),
    );
    assert_eq!(signup.status, 202);
    stack.mailed_token("ada@example.com");
    let (status, _) = stack.terminate_gateway();
    assert!(status.success());
}

#[test]
fn as_root_without_a_configured_user_it_refuses_to_start() {
    if !as_root() {
        eprintln!("skipping: the root refusal is tested when the suite runs as root");
        return;
    }
    let stack = Stack::start();
    let config = stack.dir.path().join("no-user.toml");
    let text = std::fs::read_to_string(&stack.config)
        .unwrap()
        .replace("user = \"root\"", "");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(zonegate_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("running as root"), "{stderr}");
    // check-config warns, since the file may be meant for another account.
    let out = Command::new(zonegate_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running as root"));
}

/// SIGTERM closes an idle keep-alive connection at once: its client learns to reconnect now,
/// not when the grace period ends (30 s here; the read gives up well before that). A
/// connection opened just before, whose first request has not arrived yet, is not closed
/// under its client: that request is answered (and the connection then closed).
#[test]
fn sigterm_closes_an_idle_keep_alive_connection_at_once() {
    use std::io::{Read, Write};
    let mut stack = Stack::start_with(StackOptions {
        shutdown_grace_seconds: 30,
        ..StackOptions::default()
    });
    let mut tls = stack.client().connect().unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let first = loop {
        if let Some(resp) = zonegate_e2e::client::parse_response(&raw) {
            break resp;
        }
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        raw.extend_from_slice(&buf[..n]);
    };
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    let mut fresh = stack.client().connect().unwrap();
    fresh
        .sock
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();

    let pid = stack.gateway_pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut rest = Vec::new();
    match tls.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("the idle connection stayed open after SIGTERM: {e}"),
    }
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // The signal has been handled (the idle connection is gone); the fresh one sends now.
    fresh
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    match fresh.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("a connection opened before SIGTERM was not answered: {e}"),
    }
    let answer = zonegate_e2e::client::parse_response(&raw)
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&raw)));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    stack.stop_gateway();
}
