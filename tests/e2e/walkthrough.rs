//! The README's walkthrough, `tools/walkthrough`, against a fresh `zonegate dev`: the product on
//! its embedded defaults (the shipped `config/zonegate.toml`, only its ports moved), started as
//! README says, in an empty directory.

use std::process::{Child, Command, Stdio};

use zonegate_e2e::stack::{free_port, wait_for, workspace_root, zonegate_bin};

/// Stops the dev process however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_walkthrough_passes_on_a_fresh_dev_start() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let (https, http, admin, backend) = (free_port(), free_port(), free_port(), free_port());
    let mut config = std::fs::read_to_string(root.join("config/zonegate.toml")).unwrap();
    for (shipped, here) in [
        (
            "\"https://localhost:8443\"".to_owned(),
            format!("\"https://localhost:{}\"", https.port()),
        ),
        ("\"127.0.0.1:8443\"".into(), format!("\"{https}\"")),
        ("\"127.0.0.1:8080\"".into(), format!("\"{http}\"")),
        ("\"127.0.0.1:9090\"".into(), format!("\"{admin}\"")),
        ("\"127.0.0.1:8081\"".into(), format!("\"{backend}\"")),
        (
            "policies = \"policies\"".into(),
            format!("policies = {:?}", root.join("policies")),
        ),
        (
            "routes = \"policies/routes.toml\"".into(),
            format!("routes = {:?}", root.join("policies/routes.toml")),
        ),
    ] {
        assert!(
            config.contains(&shipped),
            "the shipped config has {shipped}"
        );
        config = config.replace(&shipped, &here);
    }
    let config_path = dir.path().join("zonegate.toml");
    std::fs::write(&config_path, config).unwrap();
    let log_path = dir.path().join("dev.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _dev = Running(
        Command::new(zonegate_bin())
            .arg("dev")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for(admin, "/readyz", "zonegate dev", log_path.clone());

    let out = Command::new(root.join("tools/walkthrough"))
        .current_dir(dir.path())
        .env("ORIGIN", format!("https://localhost:{}", https.port()))
        .env("CACERT", dir.path().join("data/tls/cert.pem"))
        .env("OUTBOX", dir.path().join("data/outbox"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{}\n--- zonegate dev log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("walkthrough: done"), "{said}");
}
