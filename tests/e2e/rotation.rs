//! Key rotation that finishes, as an operator runs it: `keys rotate`, restart, readiness shows
//! the new keys in use, `keys status` counts what still depends on the old ones, `keys retire`
//! refuses until nothing does, and after the retirement every credential still works.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use serde_json::json;
use zonegate_e2e::client::plain_get;
use zonegate_e2e::{stack::zonegate_bin, Stack};

use crate::accounts::{Browser, PASSWORD};
use crate::apikeys::{create_key, owner_with_org, with_key};

fn zonegate(stack: &Stack, args: &[&str]) -> Output {
    Command::new(zonegate_bin())
        .args(args)
        .arg("--config")
        .arg(&stack.config)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The line of `keys status` for one key.
fn status_of(stack: &Stack, id: &str) -> String {
    let out = zonegate(stack, &["keys", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no line for {id} in\n{}", text(&out)))
        .to_owned()
}

fn ready(stack: &Stack) -> (u16, serde_json::Value) {
    let r = plain_get(stack.admin, "/readyz", &[]).unwrap();
    (r.status, r.json())
}

fn login(stack: &Stack, email: &str) -> Browser {
    let mut b = Browser::new(stack);
    let resp = b.send(
        "POST",
        "/auth/login",
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    b
}

#[test]
fn an_old_key_is_retired_once_nothing_depends_on_it_and_everything_still_works() {
    let mut stack = Stack::start();
    let (mut ada, org) = owner_with_org(&stack);
    let (key_id, key) = create_key(&mut ada, &org, &["zones:read"]);
    let zones = format!("/v1/orgs/{org}/zones");

    let out = Command::new(zonegate_bin())
        .args(["keys", "rotate", "--dir"])
        .arg(&stack.key_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The running instance still uses the old keys, and says a restart is due.
    let (status, body) = ready(&stack);
    assert_eq!(status, 200);
    assert!(body["key_ring"]["active"]
        .as_array()
        .unwrap()
        .contains(&json!("pepper-1")));
    assert!(body["key_ring"]["restart_to_use"]
        .as_array()
        .unwrap()
        .contains(&json!("pepper-2")));

    // Stopped cleanly, the old instance stops counting as a user of the old keys.
    let (stopped, _) = stack.terminate_gateway();
    assert!(stopped.success());
    stack.stop_backend();
    stack.start_backend();
    stack.start_gateway();
    let (_, body) = ready(&stack);
    assert!(body["key_ring"]["active"]
        .as_array()
        .unwrap()
        .contains(&json!("pepper-2")));
    assert_eq!(body["key_ring"]["restart_to_use"], json!([]));

    // Made under pepper-1: ada's password, her login's CSRF token, the API key.
    let line = status_of(&stack, "pepper-1");
    assert!(
        line.contains("1 password") && line.contains("1 API key") && line.contains("1 login"),
        "{line}"
    );
    assert!(status_of(&stack, "pepper-2").contains("active"));
    let refused = zonegate(&stack, &["keys", "retire", "pepper-1"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("still needed by"),
        "{}",
        text(&refused)
    );
    let refused = zonegate(&stack, &["keys", "retire", "pepper-2"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused).contains("active pepper key"),
        "{}",
        text(&refused)
    );
    assert!(stack.key_dir.join("pepper-1.key").exists());

    // Old material works under the rotated ring; then it moves on: a login re-hashes the
    // password, the old login ends, the key is replaced by one made under pepper-2.
    assert_eq!(
        with_key(&stack.client(), "GET", &zones, &key, None).status,
        200
    );
    assert_eq!(ada.send("POST", "/auth/logout", None).status, 204);
    let mut ada = login(&stack, "ada@example.com");
    let (_, new_key) = create_key(&mut ada, &org, &["zones:read"]);
    assert_eq!(
        ada.send("DELETE", &format!("/v1/orgs/{org}/api-keys/{key_id}"), None)
            .status,
        204
    );
    let line = status_of(&stack, "pepper-1");
    assert!(line.contains("nothing stored"), "{line}");

    let out = zonegate(&stack, &["keys", "retire", "pepper-1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stack.key_dir.join("pepper-1.key").exists());
    let out = zonegate(&stack, &["keys", "retire", "identity-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let audit = stack.audit_export(&[]);
    let retired: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("sys_key_retired"))
        .collect();
    assert_eq!(retired.len(), 2, "{audit}");
    assert!(retired[0].contains("pepper-1"));

    // An instance started on the retired ring: the same password, the new key, a new login.
    stack.stop_gateway();
    stack.start_gateway();
    let mut ada = login(&stack, "ada@example.com");
    assert_eq!(ada.send("GET", "/auth/session", None).status, 200);
    assert_eq!(
        with_key(&stack.client(), "GET", &zones, &new_key, None).status,
        200
    );
}

#[test]
fn readiness_fails_while_the_key_directory_cannot_be_loaded() {
    let stack = Stack::start();
    assert_eq!(ready(&stack).0, 200);
    // Group-readable: a restart would refuse it, so the instance is not ready. (A mode check
    // rather than an unreadable directory, so the test means the same when run as root.)
    std::fs::set_permissions(&stack.key_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let (status, body) = ready(&stack);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["key_ring"]["status"], "unreadable");
    assert!(
        body["key_ring"]["error"]
            .as_str()
            .unwrap()
            .contains("chmod 700"),
        "{body}"
    );
    // Requests are still served with the keys in memory; readiness only tells the operator.
    assert_eq!(stack.client().get("/healthz").status, 200);
    std::fs::set_permissions(&stack.key_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(ready(&stack).0, 200);
}
