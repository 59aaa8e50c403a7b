//! `zonegate dev`, started as README says, in an empty directory: the whole product on its
//! embedded defaults (the shipped `config/zonegate.toml`, with its ports moved to free ones and
//! any other edits a test asks for).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};

use crate::stack::{free_port, wait_for, workspace_root, zonegate_bin};

pub struct DevProduct {
    /// The working directory: `data/` (keys, certificate, databases, outbox) is created here.
    pub dir: tempfile::TempDir,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl DevProduct {
    /// Start it with the shipped config, its text passed through `edit` first; wait until the
    /// admin listener says it is ready.
    pub fn start(edit: impl FnOnce(String) -> String) -> DevProduct {
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
        let config = edit(config);
        let config_path = dir.path().join("zonegate.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("dev.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(zonegate_bin())
            .arg("dev")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let dev = DevProduct {
            dir,
            https,
            admin,
            log,
            child,
        };
        wait_for(admin, "/readyz", "zonegate dev", dev.log.clone());
        dev
    }

    /// The environment the scripts in `tools/` take: ORIGIN, CACERT and OUTBOX.
    pub fn script_env(&self) -> Vec<(&'static str, String)> {
        let data = self.dir.path().join("data");
        vec![
            ("ORIGIN", format!("https://localhost:{}", self.https.port())),
            ("CACERT", data.join("tls/cert.pem").display().to_string()),
            ("OUTBOX", data.join("outbox").display().to_string()),
        ]
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DevProduct {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
