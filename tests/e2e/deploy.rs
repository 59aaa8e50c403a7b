//! The deployment files: the container image and the compose file keep the promises README
//! makes of them (non-root, read-only root filesystem, keys on their own volume, PostgreSQL
//! and the backend on an internal network only the gateway reaches, TLS to PostgreSQL
//! verified, secrets from files), and the container's config loads. Where a container engine
//! runs and the base images are present, the image is built too (never pulled: the tests
//! download nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use zonegate_e2e::stack::workspace_root;

fn deploy(file: &str) -> PathBuf {
    workspace_root().join("deploy").join(file)
}

fn compose() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(deploy("compose.yaml")).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The networks a service is on, whether listed or keyed.
fn networks(service: &Value) -> Vec<String> {
    match &service["networks"] {
        Value::Sequence(_) => strings(&service["networks"]),
        Value::Mapping(m) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_compose_file_keeps_the_backend_and_database_internal_and_the_gateway_unprivileged() {
    let c = compose();
    let services = &c["services"];
    assert_eq!(c["networks"]["internal"]["internal"], Value::Bool(true));
    for name in ["backend", "postgres"] {
        let s = &services[name];
        assert_eq!(
            networks(s),
            ["internal"],
            "{name} must be on the internal network only"
        );
        assert!(s["ports"].is_null(), "{name} must publish no port");
    }
    let gateway = &services["gateway"];
    let mut nets = networks(gateway);
    nets.sort();
    assert_eq!(nets, ["edge", "internal"]);
    // Public HTTPS to the world; the platform listener (operators) on the host's loopback only.
    assert_eq!(
        strings(&gateway["ports"]),
        ["443:8443", "127.0.0.1:8445:8445"]
    );
    for name in ["gateway", "backend"] {
        let s = &services[name];
        assert_eq!(s["read_only"], Value::Bool(true), "{name}: read-only root");
        assert_eq!(strings(&s["cap_drop"]), ["ALL"], "{name}: no capabilities");
        let user = s["user"].as_str().unwrap();
        assert!(
            !user.starts_with("0") && !user.starts_with("root"),
            "{name} runs as {user}"
        );
    }
    // Keys on a volume of their own, never baked in or shared with the backend.
    let volumes = strings(&gateway["volumes"]);
    assert!(
        volumes.contains(&"keys:/var/lib/zonegate/keys".to_owned()),
        "{volumes:?}"
    );
    assert!(strings(&services["backend"]["volumes"])
        .iter()
        .all(|v| !v.starts_with("keys:")));
    // Secrets from files, to the gateway and PostgreSQL alike.
    assert_eq!(strings(&gateway["secrets"]), ["db_password"]);
    assert_eq!(
        c["secrets"]["db_password"]["file"].as_str(),
        Some("./secrets/db_password")
    );
    assert_eq!(
        services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].as_str(),
        Some("/run/secrets/db_password")
    );
    let pg = strings(&services["postgres"]["command"]);
    assert!(pg.contains(&"ssl=on".to_owned()), "{pg:?}");
    let hba = std::fs::read_to_string(deploy("pg_hba.conf")).unwrap();
    assert!(
        hba.lines()
            .filter(|l| l.starts_with("host"))
            .all(|l| l.starts_with("hostssl")),
        "PostgreSQL must refuse connections without TLS:\n{hba}"
    );

    // Where a compose tool exists, it agrees the file is valid.
    let has_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_compose {
        let out = Command::new("docker")
            .args(["compose", "-f"])
            .arg(deploy("compose.yaml"))
            .args(["config", "-q"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker compose config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("docker compose is not installed: checked the file's structure only");
    }
}

#[test]
fn the_container_config_loads_and_matches_the_image_and_compose_file() {
    let path = deploy("zonegate.toml");
    let config =
        zonegate::config::Config::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    assert_eq!(
        config.listen.https.port(),
        8443,
        "compose publishes 443:8443"
    );
    assert!(config.listen.admin.ip().is_loopback());
    assert_eq!(config.server.user.as_deref(), Some("zonegate"));
    assert!(
        config.database_url.contains("sslmode=verify-full")
            && config.database_url.contains("sslrootcert="),
        "{}",
        config.database_url
    );
    assert_eq!(
        config.database_password,
        Some(zonegate::config::secrets::SecretSource::File(
            "/run/secrets/db_password".into()
        ))
    );
    assert_eq!(config.key_dir, Path::new("/var/lib/zonegate/keys"));
    let c = compose();
    let backend_ip = c["services"]["backend"]["networks"]["internal"]["ipv4_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let upstream = config.upstreams["zones"].address;
    assert_eq!(upstream.ip().to_string(), backend_ip);
}

#[test]
fn the_image_runs_unprivileged_and_builds_where_an_engine_and_its_base_images_are_present() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the final stage");
    assert!(!user.starts_with('0') && user != "root", "USER {user}");
    assert!(dockerfile.contains("VOLUME [\"/var/lib/zonegate/keys\""));
    let ignore = std::fs::read_to_string(workspace_root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "target"),
        "the build context leaves target/ out"
    );

    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    if !matches!(&engine, Ok(out) if out.status.success()) {
        eprintln!("skipping the image build: no container engine answers (docker info)");
        return;
    }
    let bases: Vec<&str> = froms
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let present = Command::new("docker")
        .args(["image", "inspect"])
        .args(&bases)
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!("skipping the image build: base images {bases:?} are not present and tests pull nothing");
        return;
    }
    let build = Command::new("docker")
        .args(["build", "--pull=false", "-f"])
        .arg(deploy("Dockerfile"))
        .args(["-t", "zonegate:test"])
        .arg(workspace_root())
        .status()
        .unwrap();
    assert!(build.success());
}
