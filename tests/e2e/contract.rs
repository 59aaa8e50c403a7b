//! The API contract against the running product: `tools/contract-check` runs schemathesis over
//! every operation of the served `/openapi.json` with a real API key and session, on a fresh
//! `zonegate dev` whose rate limits are raised (thousands of generated requests from one
//! address would otherwise meet them, and a 429 tells nothing about the contract).
//!
//! schemathesis comes from PyPI. Without it the test says so and passes, unless
//! `ZONEGATE_REQUIRE_SCHEMATHESIS` is set, as `.ci/run` sets it after installing it.

use std::process::{Command, Stdio};

use zonegate_e2e::dev::DevProduct;
use zonegate_e2e::stack::workspace_root;

const RAISED: &str = "[rate_limits]
auth_strict = { requests = 1000000, window_seconds = 60 }
auth = { requests = 1000000, window_seconds = 60 }
api_key = { requests = 1000000, window_seconds = 60 }
org = { requests = 1000000, window_seconds = 60 }
user = { requests = 1000000, window_seconds = 60 }
org_sessions = { requests = 1000000, window_seconds = 60 }
";

#[test]
fn the_served_contract_holds_for_every_operation() {
    let installed = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("ZONEGATE_REQUIRE_SCHEMATHESIS").is_none(),
            "ZONEGATE_REQUIRE_SCHEMATHESIS is set but schemathesis is not installed"
        );
        eprintln!("SKIPPED: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let dev = DevProduct::start(|config| {
        let start = config.find("[rate_limits]").unwrap();
        let end = start + config[start..].find("max_tracked_keys").unwrap();
        format!("{}{RAISED}{}", &config[..start], &config[end..])
    });
    let out = Command::new(workspace_root().join("tools/contract-check"))
        .current_dir(dev.dir.path())
        .envs(dev.script_env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // On failure: every warning and error the gateway logged during the run, then the tail.
    let log = dev.log_text();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        out.status.success(),
        "the contract check failed:\n{said}\n--- zonegate dev warnings and errors ---\n{}\n--- zonegate dev log (tail) ---\n{}",
        trouble.join("\n"),
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    // Every pass ran: all operations but those that end the run's credentials, those, then
    // logout.
    assert!(said.contains("now those"), "{said}");
    assert!(
        said.contains("contract-check: done: all operations"),
        "{said}"
    );
    // schemathesis prints `Operations: N selected / M total` per pass: together, all of them.
    let passes: Vec<(usize, usize)> = said
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Operations:"))
        .filter_map(|l| {
            let (selected, total) = l.split_once("selected /")?;
            Some((
                selected.trim().parse().ok()?,
                total.trim().trim_end_matches("total").trim().parse().ok()?,
            ))
        })
        .collect();
    assert_eq!(passes.len(), 3, "{said}");
    let total = passes[0].1;
    assert_eq!(
        passes.iter().map(|p| p.0).sum::<usize>(),
        total,
        "{passes:?}"
    );
}
