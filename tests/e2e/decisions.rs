//! The decision log and `zonegate policy diff`, end to end: traffic through the gateway with
//! the shipped policies, then candidates replayed on what was logged, from the database and
//! from an exported file, as a policy pull request's CI would.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};
use zonegate_e2e::stack::{workspace_root, zonegate_bin};
use zonegate_e2e::Stack;

use crate::accounts::logged_in;
use crate::apikeys::with_key;
use crate::policy::{admin_json, create_key, create_org, member, path_str, zonegate, Role};

fn square() -> Value {
    json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 50.0], [11.0, 51.0], [10.0, 51.0], [10.0, 50.0]]]})
}

fn zone(name: &str) -> Value {
    json!({ "name": name, "area": square() })
}

/// The stack's policy set with `edit` applied to the file `file`, in a new directory.
fn candidate(stack: &Stack, file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&stack.policies).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let target = dir.path().join(file);
    let text = std::fs::read_to_string(&target).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing in {file}");
    std::fs::write(&target, edited).unwrap();
    dir
}

/// `zonegate policy diff --format json` against the stack's database (or `--input` file).
fn diff(stack: &Stack, candidate: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "policy",
        "diff",
        "--config",
        path_str(&stack.config),
        "--candidate",
        path_str(candidate),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = zonegate(&args);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, report, err)
}

/// Every request id sampled in the groups of one direction, with the groups' routes and kinds.
fn sampled(
    report: &Value,
    direction: &str,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let mut routes = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for g in report["changes"]["groups"].as_array().unwrap() {
        if g["direction"] != direction {
            continue;
        }
        routes.insert(g["route"].as_str().unwrap().to_owned());
        kinds.insert(g["principal_kind"].as_str().unwrap().to_owned());
        for id in g["sample_request_ids"].as_array().unwrap() {
            ids.insert(id.as_str().unwrap().to_owned());
        }
    }
    (ids, routes, kinds)
}

/// Export the whole log to `out`, waiting until it holds `last` (the writer is asynchronous).
fn export_until(stack: &Stack, out: &Path, last: &str) -> String {
    for _ in 0..100 {
        let (code, _, err) = zonegate(&[
            "decisions",
            "export",
            "--from",
            "1h",
            "--config",
            path_str(&stack.config),
            "--out",
            path_str(out),
        ]);
        assert_eq!(code, 0, "{err}");
        let text = std::fs::read_to_string(out).unwrap();
        if text.contains(last) {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("request {last} never reached the decision log");
}

fn rid(resp: &zonegate_e2e::Response) -> String {
    resp.header("x-request-id").unwrap().to_owned()
}

#[test]
fn policy_diff_reports_exactly_the_requests_a_candidate_changes() {
    let stack = Stack::start();
    let mut ada = logged_in(&stack, "ada@example.com");
    let org = create_org(&mut ada, "Diff Deliveries");
    let zones = format!("/v1/orgs/{org}/zones");
    let made = ada.send("POST", &zones, Some(zone("Owner's")));
    assert_eq!(made.status, 201);
    let mut dev = member(&stack, &mut ada, &org, "dev@example.com", Role::Developer);
    let mut viewer = member(&stack, &mut ada, &org, "viewer@example.com", Role::Viewer);
    let key = create_key(&mut ada, &org, &["zones:read", "zones:write"]);
    let c = stack.client();

    // The developer's writes: what the first candidate takes away.
    let mut dev_writes = BTreeSet::new();
    let created = dev.send("POST", &zones, Some(zone("Dev's")));
    assert_eq!(created.status, 201);
    dev_writes.insert(rid(&created));
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let updated = dev.send(
        "PUT",
        &format!("{zones}/{id}"),
        Some(zone("Dev's, renamed")),
    );
    assert_eq!(
        updated.status,
        200,
        "{}",
        String::from_utf8_lossy(&updated.body)
    );
    dev_writes.insert(rid(&updated));
    // Everything else stays as it is under that candidate.
    assert_eq!(dev.send("GET", &zones, None).status, 200);
    assert_eq!(viewer.send("GET", &zones, None).status, 200);
    let refused = viewer.send("POST", &zones, Some(zone("Viewer's")));
    assert_eq!(refused.status, 403);
    let viewer_write = rid(&refused);
    assert_eq!(
        ada.send("POST", &zones, Some(zone("Owner's 2"))).status,
        201
    );
    let by_key = with_key(&c, "POST", &zones, &key, Some(zone("Key's")));
    assert_eq!(by_key.status, 201);
    // A query string and a credential never reach the log.
    let queried = with_key(
        &c,
        "GET",
        &format!("{zones}?canary=q-canary-4711"),
        &key,
        None,
    );
    assert_eq!(queried.status, 200);
    let last = rid(&queried);

    let tmp = tempfile::tempdir().unwrap();
    let exported = tmp.path().join("decisions.jsonl");
    let log = export_until(&stack, &exported, &last);
    assert!(!log.contains("q-canary-4711"), "a query string in the log");
    assert!(!log.contains(&key), "an API key in the log");
    assert!(
        !log.contains("dev@example.com"),
        "an email address in the log"
    );
    // Identical decisions share a record, so there are fewer lines than requests.
    assert!(log.lines().count() >= 5, "{log}");
    assert_eq!(
        admin_json(&stack, "/policies")["decision_log"]["enabled"],
        true
    );

    // Candidate 1: zone writes need an admin. Exactly the developer's writes change.
    let admins_write = candidate(&stack, "orgs.cedar", |t| {
        t.replace(
            "action == Zonegate::Action::\"zones:create\",\n  resource is Zonegate::Org\n)\nwhen { principal in resource.developers };",
            "action == Zonegate::Action::\"zones:create\",\n  resource is Zonegate::Org\n)\nwhen { principal in resource.admins };",
        )
        .replace(
            "resource is Zonegate::Zone\n)\nwhen { principal in resource.org.developers };",
            "resource is Zonegate::Zone\n)\nwhen { principal in resource.org.admins };",
        )
    });
    let (code, report, err) = diff(&stack, admins_write.path(), &[]);
    assert_eq!(code, 0, "narrowing only: {err}");
    assert_eq!(report["facts"], "stored");
    assert_eq!(report["changes"]["allow_to_deny"], 2, "{report:#}");
    assert_eq!(report["changes"]["deny_to_allow"], 0, "{report:#}");
    let (ids, routes, kinds) = sampled(&report, "allow_to_deny");
    assert_eq!(ids, dev_writes, "{report:#}");
    assert_eq!(
        routes,
        BTreeSet::from(["zones-create".to_owned(), "zones-update".to_owned()])
    );
    assert_eq!(kinds, BTreeSet::from(["user".to_owned()]));
    assert!(report["replayed"].as_u64().unwrap() >= 10);
    assert_eq!(report["drift"], 0);

    // The same from the exported file, where no database is reachable: roles as logged.
    let (code, from_file, err) = diff(
        &stack,
        admins_write.path(),
        &["--input", path_str(&exported)],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_file["facts"], "logged");
    assert_eq!(from_file["changes"]["allow_to_deny"], 2);
    assert_eq!(sampled(&from_file, "allow_to_deny").0, dev_writes);
    // Narrowed to one route, only its change is left.
    let (_, one_route, _) = diff(&stack, admins_write.path(), &["--route", "zones-update"]);
    assert_eq!(one_route["changes"]["allow_to_deny"], 1, "{one_route:#}");

    // Candidate 2: viewers may create zones. A widening: reported and exit 1.
    let viewers_write = candidate(&stack, "orgs.cedar", |mut t| {
        t.push_str(
            "\n// Candidate: viewers create zones too.\n@id(\"viewers-create\")\n\
             permit (\n  principal is Zonegate::User,\n  action == Zonegate::Action::\"zones:create\",\n  \
             resource is Zonegate::Org\n)\nwhen { principal in resource.viewers };\n",
        );
        t
    });
    let (code, report, err) = diff(&stack, viewers_write.path(), &[]);
    assert_eq!(code, 1, "a widening fails the diff");
    assert!(err.contains("--allow-widening"), "{err}");
    assert_eq!(report["changes"]["deny_to_allow"], 1, "{report:#}");
    assert_eq!(report["changes"]["allow_to_deny"], 0);
    let (ids, routes, _) = sampled(&report, "deny_to_allow");
    assert_eq!(ids, BTreeSet::from([viewer_write]));
    assert_eq!(routes, BTreeSet::from(["zones-create".to_owned()]));
    let group = &report["changes"]["groups"][0];
    assert_eq!(group["after_policies"], json!(["viewers-create"]));
    let (code, _, err) = diff(&stack, viewers_write.path(), &["--allow-widening"]);
    assert_eq!(code, 0, "{err}");

    // The text report, as a person reads it.
    let (code, text, err) = zonegate(&[
        "policy",
        "diff",
        "--config",
        path_str(&stack.config),
        "--candidate",
        path_str(viewers_write.path()),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        text.contains("deny→allow 1 request on route zones-create by user"),
        "{text}"
    );
    assert!(text.contains("after:  viewers-create"), "{text}");
    assert!(text.contains("roles and org flags as stored now"), "{text}");

    // The recipe a policy repository's CI runs, on files only.
    let ci = |candidate: &Path, allow: &str| {
        let ws = workspace_root();
        let out = std::process::Command::new("sh")
            .arg(ws.join("tools/policy-ci.sh"))
            .args([candidate, &stack.policies])
            .arg(ws.join("tests/fixtures/routes.toml"))
            .arg(&exported)
            .env("ZONEGATE", zonegate_bin())
            .env("ALLOW_WIDENING", allow)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = ci(viewers_write.path(), "0");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("policy set OK"), "{out}");
    assert!(
        out.contains("deny→allow 1 request on route zones-create by user"),
        "{out}"
    );
    assert!(out.contains("roles and org flags as logged"), "{out}");
    let (code, out) = ci(viewers_write.path(), "1");
    assert_eq!(code, 0, "{out}");
    let (code, out) = ci(admins_write.path(), "0");
    assert_eq!(code, 0, "narrowing passes: {out}");
    assert!(
        out.contains("allow→deny 1 request on route zones-create"),
        "{out}"
    );

    // A candidate that does not validate is refused before anything is replayed.
    let broken = candidate(&stack, "orgs.cedar", |t| {
        t.replace("zones:create", "zones:creat")
    });
    let (code, _, err) = zonegate(&[
        "policy",
        "diff",
        "--config",
        path_str(&stack.config),
        "--candidate",
        path_str(broken.path()),
    ]);
    assert_eq!(code, 2, "{err}");
}
