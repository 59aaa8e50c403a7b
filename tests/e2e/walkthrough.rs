//! The README's walkthrough, `tools/walkthrough`, against a fresh `zonegate dev`: the product on
//! its embedded defaults, started as README says, in an empty directory.

use std::process::{Command, Stdio};

use zonegate_e2e::dev::DevProduct;
use zonegate_e2e::stack::workspace_root;

#[test]
fn the_readme_walkthrough_passes_on_a_fresh_dev_start() {
    let dev = DevProduct::start(|config| config);
    let out = Command::new(workspace_root().join("tools/walkthrough"))
        .current_dir(dev.dir.path())
        .envs(dev.script_env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{}\n--- zonegate dev log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        dev.log_text()
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("walkthrough: done"), "{said}");
}
