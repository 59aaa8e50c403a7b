//! The dashboard in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser/journey.mjs`) against the real gateway and backend over TLS, through the
//! whole journey (sign up, mail link, TOTP, org, invitation, API key, drawn zone, coverage,
//! revocation, audit), with axe-core on every page and the CSP checked on every page.
//!
//! Needs `node`, `/usr/bin/chromium` and `npm ci` in `tests/browser`; without them the test
//! says so and skips, except where `ZONEGATE_REQUIRE_BROWSER` is set (CI installs them).
//! Screenshots go to `target/dashboard-screenshots/`.

use std::path::Path;
use std::process::Command;

use zonegate_e2e::stack::workspace_root;
use zonegate_e2e::Stack;

fn missing(browser_dir: &Path) -> Option<String> {
    let chromium = std::env::var("ZG_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".into());
    }
    if !browser_dir.join("node_modules/playwright-core").exists()
        || !browser_dir.join("node_modules/axe-core").exists()
    {
        return Some(format!("run `npm ci` in {}", browser_dir.display()));
    }
    None
}

#[test]
fn the_whole_journey_in_chromium_with_axe_on_every_page() {
    let browser_dir = workspace_root().join("tests/browser");
    if let Some(why) = missing(&browser_dir) {
        assert!(
            std::env::var_os("ZONEGATE_REQUIRE_BROWSER").is_none(),
            "ZONEGATE_REQUIRE_BROWSER is set but {why}"
        );
        eprintln!("SKIPPED the_whole_journey_in_chromium: {why}");
        return;
    }
    let stack = Stack::start();
    let shots = workspace_root().join("target/dashboard-screenshots");
    let out = Command::new("node")
        .arg(browser_dir.join("journey.mjs"))
        .current_dir(&browser_dir)
        .env(
            "ZG_BASE",
            format!("https://localhost:{}", stack.https.port()),
        )
        .env("ZG_OUTBOX", stack.dir.path().join("outbox"))
        .env("ZG_SHOTS", &shots)
        .env("NODE_EXTRA_CA_CERTS", &stack.cert)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser journey failed:\n{stdout}\n{stderr}\ngateway log tail:\n{}",
        stack
            .gateway_log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("journey: ok"));
    assert!(shots.join("zones.png").exists());
}
