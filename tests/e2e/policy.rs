//! Cedar RBAC for every route, end to end: the shipped route table called as every role, API
//! key scope, org, anonymous and unverified caller against an expected matrix written down
//! independently of the policies; policy reloads (admin listener and SIGHUP) under load; shadow
//! mode; and the `zonegate policy` commands as CI runs them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use zonegate_e2e::client::{plain, plain_get};
use zonegate_e2e::stack::{workspace_root, zonegate_bin};
use zonegate_e2e::{copy_policies, Client, Response, Stack, StackOptions};

use crate::accounts::{logged_in, Browser, PASSWORD};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Viewer,
    Developer,
    Admin,
    Owner,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// What every org-scoped action needs, written down from the issue and independent of the
/// policies: the weakest role of a member that may take it, and the scope an API key of the
/// same org needs (`None`: keys never may). For members:update/remove the target is a member
/// below owner (here: nobody), so admins qualify.
const EXPECTED: &[(&str, Role, Option<&str>)] = &[
    ("zones:list", Role::Viewer, Some("zones:read")),
    ("zones:read", Role::Viewer, Some("zones:read")),
    ("coverage:read", Role::Viewer, Some("coverage:read")),
    ("zones:create", Role::Developer, Some("zones:write")),
    ("zones:update", Role::Developer, Some("zones:write")),
    ("zones:delete", Role::Developer, Some("zones:write")),
    ("orgs:read", Role::Viewer, None),
    ("orgs:update", Role::Owner, None),
    ("members:list", Role::Viewer, None),
    ("members:invite", Role::Admin, None),
    ("members:update", Role::Admin, None),
    ("members:remove", Role::Admin, None),
    ("members:leave", Role::Viewer, None),
    ("invitations:list", Role::Admin, None),
    ("invitations:revoke", Role::Admin, None),
    ("apikeys:list", Role::Admin, None),
    ("apikeys:create", Role::Admin, None),
    ("apikeys:revoke", Role::Admin, None),
    ("apikeys:roll", Role::Admin, None),
    ("audit:read", Role::Admin, None),
];

const SCOPES: [&str; 3] = ["zones:read", "zones:write", "coverage:read"];

#[derive(Debug, Deserialize)]
struct RouteFile {
    route: Vec<RouteDef>,
}

#[derive(Debug, Clone, Deserialize)]
struct RouteDef {
    name: String,
    methods: Vec<String>,
    path: String,
    action: String,
    credentials: Vec<String>,
}

impl RouteDef {
    fn accepts(&self, credential: &str) -> bool {
        self.credentials.iter().any(|c| c == credential)
    }
}

fn org_routes(file: &Path) -> Vec<RouteDef> {
    let text = std::fs::read_to_string(file).unwrap();
    let parsed: RouteFile = toml::from_str(&text).unwrap();
    parsed
        .route
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/orgs/{org}"))
        .collect()
}

enum Cred {
    Session(Box<Browser>),
    /// Signed up, never verified: it cannot log in, so it has no session to present.
    Unverified(Box<Browser>),
    Key(String),
    Anonymous,
}

struct Caller {
    label: String,
    /// Index into the orgs (0 = A, 1 = B) the caller belongs to.
    org: Option<usize>,
    role: Option<Role>,
    scopes: Vec<&'static str>,
    cred: Cred,
}

impl Caller {
    /// `None` when authorisation must let the call through; else the status of the refusal.
    fn expected(&self, route: &RouteDef, target: usize) -> Option<u16> {
        let (_, min_role, scope) = EXPECTED
            .iter()
            .find(|(a, _, _)| *a == route.action)
            .unwrap();
        let same_org = self.org == Some(target);
        match &self.cred {
            Cred::Anonymous | Cred::Unverified(_) => {
                Some(if route.accepts("anonymous") { 403 } else { 401 })
            }
            Cred::Key(_) if !route.accepts("api_key") => Some(401),
            Cred::Key(_) => {
                let ok = same_org && scope.is_some_and(|s| self.scopes.contains(&s));
                (!ok).then_some(403)
            }
            Cred::Session(_) if !route.accepts("session") => Some(401),
            Cred::Session(_) => {
                let ok = same_org && self.role.is_some_and(|r| r >= *min_role);
                (!ok).then_some(403)
            }
        }
    }

    fn call(&mut self, c: &Client, method: &str, path: &str, body: Option<Value>) -> Response {
        match &mut self.cred {
            Cred::Session(b) | Cred::Unverified(b) => b.send(method, path, body),
            Cred::Key(key) => {
                let auth = format!("Bearer {key}");
                request(c, method, path, &[("authorization", &auth)], body)
            }
            Cred::Anonymous => request(c, method, path, &[], body),
        }
    }
}

fn request(
    c: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Response {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let mut headers = headers.to_vec();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    c.request(method, path, &headers, body.as_deref())
}

pub(crate) fn create_org(owner: &mut Browser, name: &str) -> String {
    let resp = owner.send("POST", "/v1/orgs", Some(json!({ "name": name })));
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()["id"].as_str().unwrap().to_owned()
}

pub(crate) fn create_key(owner: &mut Browser, org: &str, scopes: &[&str]) -> String {
    let resp = owner.send(
        "POST",
        &format!("/v1/orgs/{org}/api-keys"),
        Some(json!({ "name": "matrix", "scopes": scopes })),
    );
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()["key"].as_str().unwrap().to_owned()
}

fn user_id(b: &mut Browser) -> String {
    b.send("GET", "/auth/session", None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Invite `email` into `org` with `role`, sign them up, verify, log in and accept.
pub(crate) fn member(
    stack: &Stack,
    owner: &mut Browser,
    org: &str,
    email: &str,
    role: Role,
) -> Browser {
    let invite = owner.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({ "email": email, "role": role.as_str() })),
    );
    assert_eq!(
        invite.status,
        202,
        "{}",
        String::from_utf8_lossy(&invite.body)
    );
    let token = stack.mailed_token(email);
    let mut b = logged_in(stack, email);
    let joined = b.send(
        "POST",
        "/v1/invitations/accept",
        Some(json!({ "token": token })),
    );
    assert_eq!(
        joined.status,
        200,
        "{}",
        String::from_utf8_lossy(&joined.body)
    );
    assert_eq!(joined.json()["role"], role.as_str());
    b
}

/// The concrete request for a route against `org`. Writes carry a body the handler refuses and
/// ids that do not exist, so an allowed call changes nothing (members:leave aside).
fn concrete(route: &RouteDef, org: &str, member: &str) -> (String, String, Option<Value>) {
    let method = route.methods[0].clone();
    let mut path = route
        .path
        .replace("{org}", org)
        .replace("{zone}", "zone-that-does-not-exist")
        .replace("{user}", member)
        .replace("{key}", "key-that-does-not-exist")
        .replace("{invitation}", "invitation-that-does-not-exist");
    if route.action == "coverage:read" {
        path.push_str("?lat=50.5&lon=10.5");
    }
    let body = matches!(method.as_str(), "POST" | "PUT" | "PATCH")
        .then(|| json!({ "unexpected": true }))
        .filter(|_| route.action != "members:leave" && route.action != "apikeys:roll");
    (method, path, body)
}

/// Judge one answer: `None` when it matches the expectation, else a line for the report.
fn judge(
    caller: &str,
    route: &RouteDef,
    target: &str,
    expected: Option<u16>,
    resp: &Response,
) -> Option<String> {
    let status = resp.status;
    let method = route.methods[0].as_str();
    let wrong = match expected {
        Some(denied) => status != denied,
        // Allowed: past authorisation, and (for writes) refused by the handler, so nothing
        // changed; leaving is the one allowed write, and the last owner cannot leave.
        None => {
            status == 401
                || status == 403
                || status >= 500
                || (method != "GET"
                    && route.action != "members:leave"
                    && !(400..500).contains(&status))
        }
    };
    wrong.then(|| {
        format!(
            "{caller} {method} {} ({}) on org {target}: expected {}, got {status}: {}",
            route.name,
            route.action,
            expected.map_or("allowed".to_owned(), |s| format!("denied {s}")),
            String::from_utf8_lossy(&resp.body)
        )
    })
}

#[test]
fn every_org_route_as_every_role_key_and_org_matches_the_expected_matrix() {
    let ws = workspace_root();
    let routes_file = ws.join("policies/routes.toml");
    let routes = org_routes(&routes_file);
    assert!(routes.len() >= 10, "the route table has org routes");

    // A new org-scoped route forces this matrix to be updated, and a stale row is flagged.
    for r in &routes {
        assert!(
            EXPECTED.iter().any(|(a, _, _)| *a == r.action),
            "route `{}` has action `{}`, which the expected matrix does not cover: add it",
            r.name,
            r.action
        );
    }
    for (action, _, _) in EXPECTED {
        assert!(
            routes.iter().any(|r| r.action == *action),
            "the expected matrix lists `{action}`, which no org route uses"
        );
    }

    // The shipped policies and routes, nothing from the fixtures.
    let policies = tempfile::tempdir().unwrap();
    copy_policies(&[ws.join("policies")], policies.path());
    let stack = Stack::start_with(StackOptions {
        policies: Some(policies.path().to_owned()),
        routes: Some(routes_file),
        ..StackOptions::default()
    });
    let c = stack.client();

    let mut owner = logged_in(&stack, "owner@a.example");
    let org_a = create_org(&mut owner, "Org A");
    let owner_id = user_id(&mut owner);
    let admin = member(&stack, &mut owner, &org_a, "admin@a.example", Role::Admin);
    let developer = member(&stack, &mut owner, &org_a, "dev@a.example", Role::Developer);
    let viewer = member(&stack, &mut owner, &org_a, "viewer@a.example", Role::Viewer);
    let mut owner_b = logged_in(&stack, "owner@b.example");
    let org_b = create_org(&mut owner_b, "Org B");
    let orgs = [org_a.clone(), org_b.clone()];

    // Keys: one per single scope in A; all scopes in B. A key needs a scope: none is refused.
    let mut callers = Vec::new();
    for scope in SCOPES {
        callers.push(Caller {
            label: format!("key A [{scope}]"),
            org: Some(0),
            role: None,
            scopes: vec![scope],
            cred: Cred::Key(create_key(&mut owner, &org_a, &[scope])),
        });
    }
    callers.push(Caller {
        label: "key B [all scopes]".into(),
        org: Some(1),
        role: None,
        scopes: SCOPES.to_vec(),
        cred: Cred::Key(create_key(&mut owner_b, &org_b, &SCOPES)),
    });
    let no_scope = owner.send(
        "POST",
        &format!("/v1/orgs/{org_a}/api-keys"),
        Some(json!({ "name": "none", "scopes": [] })),
    );
    assert!(
        (400..500).contains(&no_scope.status) && no_scope.status != 403,
        "a key without scopes is refused as invalid input: {}",
        no_scope.status
    );

    // Unverified: signed up, never verified; it cannot log in (distinct problem type).
    let mut unverified = Browser::new(&stack);
    let email = "unverified@a.example";
    let signup = unverified.send(
        "POST",
        "/auth/signup",
        Some(json!({ "email": email, "password": PASSWORD })),
    );
    assert_eq!(signup.status, 202);
    // Signup answers before it creates the account; its mail says it is done.
    let _ = stack.mailed_token(email);
    let login = unverified.send(
        "POST",
        "/auth/login",
        Some(json!({ "email": email, "password": PASSWORD })),
    );
    assert_eq!(
        login.assert_problem(403)["type"],
        "urn:zonegate:problem:email-not-verified"
    );

    for (label, b, role) in [
        ("owner A", owner, Role::Owner),
        ("admin A", admin, Role::Admin),
        ("developer A", developer, Role::Developer),
        ("viewer A", viewer, Role::Viewer),
    ] {
        callers.push(Caller {
            label: label.into(),
            org: Some(0),
            role: Some(role),
            scopes: Vec::new(),
            cred: Cred::Session(Box::new(b)),
        });
    }
    callers.push(Caller {
        label: "member of B only (its owner)".into(),
        org: Some(1),
        role: Some(Role::Owner),
        scopes: Vec::new(),
        cred: Cred::Session(Box::new(owner_b)),
    });
    callers.push(Caller {
        label: "unverified".into(),
        org: None,
        role: None,
        scopes: Vec::new(),
        cred: Cred::Unverified(Box::new(unverified)),
    });
    callers.push(Caller {
        label: "anonymous".into(),
        org: None,
        role: None,
        scopes: Vec::new(),
        cred: Cred::Anonymous,
    });

    // Leaving changes membership, so it runs last.
    let (leave, others): (Vec<_>, Vec<_>) =
        routes.iter().partition(|r| r.action == "members:leave");
    let mut failures = Vec::new();
    let mut calls = 0;
    let mut run = |routes: &[&RouteDef], callers: &mut [Caller], failures: &mut Vec<String>| {
        for route in routes {
            for caller in callers.iter_mut() {
                for (target, org) in orgs.iter().enumerate() {
                    let (method, path, body) = concrete(route, org, "user-that-does-not-exist");
                    let resp = caller.call(&c, &method, &path, body);
                    calls += 1;
                    let name = if target == 0 { "A" } else { "B" };
                    failures.extend(judge(
                        &caller.label,
                        route,
                        name,
                        caller.expected(route, target),
                        &resp,
                    ));
                }
            }
        }
    };
    run(&others, &mut callers, &mut failures);

    // members:update/remove aimed at an owner: only owners may (the owner is the last one, so
    // the handler refuses to demote or remove them: 4xx, nothing changes).
    let on_owner: Vec<_> = others
        .iter()
        .filter(|r| r.action == "members:update" || r.action == "members:remove")
        .collect();
    assert_eq!(on_owner.len(), 2);
    for route in on_owner {
        for caller in callers.iter_mut() {
            let (method, path, body) = concrete(route, &org_a, &owner_id);
            let resp = caller.call(&c, &method, &path, body);
            let expected = match caller.expected(route, 0) {
                None if caller.role != Some(Role::Owner) => Some(403),
                other => other,
            };
            failures.extend(judge(
                &format!("{} (target: the owner)", caller.label),
                route,
                "A",
                expected,
                &resp,
            ));
        }
    }

    run(&leave, &mut callers, &mut failures);
    assert!(
        failures.is_empty(),
        "{} of {calls} calls disagree with the expected matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(calls >= routes.len() * callers.len() * 2);
}

pub(crate) fn admin_json(stack: &Stack, path: &str) -> Value {
    let resp = plain_get(stack.admin, path, &[]).unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()
}

fn admin_reload(stack: &Stack) -> Response {
    plain(
        stack.admin,
        "POST /policies/reload HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    )
    .unwrap()
}

fn active_hash(stack: &Stack) -> String {
    admin_json(stack, "/policies")["policy_hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn reloads_under_load_swap_atomically_and_refuse_an_invalid_set() {
    let stack = Stack::start();
    let c = stack.client();
    let dir = stack.policies.clone();
    let h0 = active_hash(&stack);
    assert_eq!(h0.len(), 64, "sha256 hex");
    assert_eq!(admin_json(&stack, "/readyz")["policy_hash"], h0.as_str());

    // Creating a zone with a body the backend refuses: allowed by policy now, nothing stored.
    let create = || {
        c.send_json(
            "POST",
            "/v1/orgs/acme/zones",
            &json!({ "unexpected": true }),
        )
        .status
    };
    let before = create();
    assert!((400..500).contains(&before) && before != 403, "{before}");
    assert_eq!(c.get("/healthz").status, 200);

    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let wrong: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let status = c.get("/v1/orgs/acme/zones").status;
                    served.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        wrong.lock().unwrap().push(status);
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));

        // (a) A valid change (anonymous callers lose zones:create), reloaded by the admin API.
        let e2e = dir.join("e2e.cedar");
        let text = std::fs::read_to_string(&e2e).unwrap();
        let changed = text.replace("    Zonegate::Action::\"zones:create\",\n", "");
        assert_ne!(changed, text);
        std::fs::write(&e2e, changed).unwrap();
        let resp = admin_reload(&stack);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let v = resp.json();
        assert_eq!(v["status"], "reloaded");
        assert_eq!(v["previous_hash"], h0.as_str());
        let h1 = v["policy_hash"].as_str().unwrap().to_owned();
        assert_ne!(h1, h0);
        assert_eq!(active_hash(&stack), h1);
        assert_eq!(admin_json(&stack, "/readyz")["policy_hash"], h1.as_str());
        assert_eq!(create(), 403, "the changed rule applies after the reload");

        // (b) An invalid set: refused (fixed text in the body; the validation errors go to the
        // operator's log and the audit trail), the old set stays.
        let bad = dir.join("broken.cedar");
        std::fs::write(
            &bad,
            "// Names an action the schema does not declare.\n\
             @id(\"broken-undeclared-action\")\n\
             permit (principal, action == Zonegate::Action::\"zones:nuke\", resource);\n",
        )
        .unwrap();
        let resp = admin_reload(&stack);
        let problem = resp.assert_problem(422);
        assert_eq!(problem["type"], "urn:zonegate:problem:invalid-policy-set");
        assert!(
            problem.get("errors").is_none(),
            "no internal text in the body"
        );
        assert!(stack.gateway_logged("broken-undeclared-action"));
        assert!(stack.gateway_logged("zones:nuke"));
        assert_eq!(active_hash(&stack), h1);
        assert_eq!(create(), 403);
        std::fs::remove_file(&bad).unwrap();

        // (c) Another valid change, by SIGHUP: the health permit goes, and an action no policy
        // mentions is denied.
        std::fs::remove_file(dir.join("public.cedar")).unwrap();
        let pid = stack.gateway_pid().unwrap().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let h2 = loop {
            let h = active_hash(&stack);
            if h != h1 {
                break h;
            }
            assert!(Instant::now() < deadline, "SIGHUP did not reload");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_ne!(h2, h0);
        c.get("/healthz").assert_problem(403);
        assert_eq!(create(), 403);

        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
    });
    let wrong = wrong.into_inner().unwrap();
    let served = served.into_inner();
    assert!(
        wrong.is_empty(),
        "{} of {served} requests under load failed: {wrong:?}",
        wrong.len()
    );
    assert!(served > 20, "the load ran: {served} requests");
    assert!(stack.gateway_logged("sys_policy_reloaded"));
    assert!(stack.gateway_logged("sys_policy_reload_fail"));
    assert!(stack.gateway_logged(r#"\"trigger\":\"sighup\""#));
}

#[test]
fn with_an_admin_token_a_reload_needs_it_and_reads_do_not() {
    let secrets = tempfile::tempdir().unwrap();
    let token = "c0ffee".repeat(8);
    let file = secrets.path().join("admin-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stack = Stack::start_with(StackOptions {
        listen_config: format!("admin_token_file = \"{}\"", file.display()),
        ..StackOptions::default()
    });
    // A token readable by others is refused, naming the file.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = std::process::Command::new(zonegate_e2e::stack::zonegate_bin())
        .args(["check-config", "--config"])
        .arg(&stack.config)
        .output()
        .unwrap();
    assert_eq!(loose.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&loose.stderr);
    assert!(
        stderr.contains("chmod 600") && stderr.contains("admin-token"),
        "{stderr}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let reload = |authorization: &str| {
        plain(
            stack.admin,
            &format!(
                "POST /policies/reload HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{authorization}content-length: 0\r\n\r\n"
            ),
        )
        .unwrap()
    };
    let h0 = active_hash(&stack);
    for wrong in [
        String::new(),
        "authorization: Bearer nope\r\n".to_owned(),
        format!("authorization: Bearer {}\r\n", &token[..token.len() - 1]),
        format!("authorization: Basic {token}\r\n"),
    ] {
        let resp = reload(&wrong);
        assert_eq!(resp.status, 401, "{wrong:?}");
        assert_eq!(
            resp.header("www-authenticate"),
            Some(r#"Bearer realm="zonegate""#)
        );
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("application/problem+json"));
    }
    // A path of the client's own making is not kept as it came.
    let odd = plain(
        stack.admin,
        "DELETE /x/%0d%0a-anything HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(odd.status, 401);
    assert!(stack.gateway_logged("authn_admin_token_fail"));
    assert!(
        !stack.gateway_log().contains(&token),
        "the token is never logged"
    );
    let ok = reload(&format!("authorization: Bearer {token}\r\n"));
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(ok.json()["previous_hash"], h0.as_str());
    // Both are in the audit trail with the caller's address: the refusals (four from one
    // address within a minute: the first, the rest counted into its window) and the reload.
    let mut trail = String::new();
    for _ in 0..50 {
        trail = stack.audit_export(&[]);
        if trail.contains("authn_admin_token_fail") && trail.contains(r#""trigger":"admin""#) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let events: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "authn_admin_token_fail")
        .collect();
    assert_eq!(refused.len(), 2, "{trail}");
    let named = |method: &str, path: &str| {
        refused.iter().any(|e| {
            e["client"] == "127.0.0.1"
                && e["details"]["method"] == method
                && e["details"]["path"] == path
        })
    };
    assert!(named("POST", "/policies/reload"), "{trail}");
    assert!(named("DELETE", "other"), "{trail}");
    assert!(!trail.contains("anything"), "{trail}");
    let reloaded = events
        .iter()
        .find(|e| e["event"] == "sys_policy_reloaded" && e["details"]["trigger"] == "admin")
        .unwrap_or_else(|| panic!("no admin reload in {trail}"));
    assert_eq!(reloaded["client"], "127.0.0.1");
    assert!(!trail.contains(&token), "the token is never in the trail");
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let ok = reload(&format!("authorization: bearer {token}\r\n"));
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    // Any change needs it, not only the reload.
    let put = plain(
        stack.admin,
        "PUT /policies HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(put.status, 401);
    // Probes and scrapers need no secret.
    assert_eq!(plain_get(stack.admin, "/readyz", &[]).unwrap().status, 200);
    assert_eq!(plain_get(stack.admin, "/metrics", &[]).unwrap().status, 200);
}

#[test]
fn shadow_set_is_evaluated_and_logged_but_never_enforced() {
    let ws = workspace_root();
    let shadow = tempfile::tempdir().unwrap();
    copy_policies(
        &[ws.join("policies"), ws.join("tests/fixtures/policies")],
        shadow.path(),
    );
    let e2e = shadow.path().join("e2e.cedar");
    let mut text = std::fs::read_to_string(&e2e).unwrap();
    text.push_str(
        "\n// Candidate: anonymous callers may no longer create zones.\n\
         @id(\"shadow-no-anonymous-create\")\n\
         forbid (\n  principal == Zonegate::Anonymous::\"anonymous\",\n  \
         action == Zonegate::Action::\"zones:create\",\n  resource\n);\n",
    );
    std::fs::write(&e2e, text).unwrap();
    let stack = Stack::start_with(StackOptions {
        shadow_policies: Some(shadow.path().to_owned()),
        ..StackOptions::default()
    });
    let c = stack.client();

    let before = admin_json(&stack, "/policies");
    let shadow_hash = before["shadow_hash"].as_str().unwrap();
    assert_ne!(shadow_hash, before["policy_hash"].as_str().unwrap());
    assert_eq!(before["shadow_mismatches"], 0);

    // Both sets agree: no mismatch.
    assert_eq!(c.get("/v1/orgs/acme/zones").status, 200);
    assert_eq!(admin_json(&stack, "/policies")["shadow_mismatches"], 0);

    // The shadow would deny this; the enforced set allows it (the backend refuses the body).
    let resp = c.send_json(
        "POST",
        "/v1/orgs/acme/zones",
        &json!({ "unexpected": true }),
    );
    assert!(
        (400..500).contains(&resp.status) && resp.status != 403,
        "decided by the enforced set: {}",
        resp.status
    );
    let rid = resp.header("x-request-id").unwrap().to_owned();
    assert!(stack.gateway_logged("policy_shadow_mismatch"));
    let log = stack.gateway_log();
    let line = log
        .lines()
        .find(|l| l.contains("policy_shadow_mismatch"))
        .unwrap();
    for needle in [
        rid.as_str(),
        "shadow-no-anonymous-create",
        "e2e-anonymous-zones",
        "\"shadow\":\"deny\"",
        "\"enforced\":\"allow\"",
    ] {
        assert!(line.contains(needle), "{needle} not in {line}");
    }
    assert!(admin_json(&stack, "/policies")["shadow_mismatches"].as_u64() >= Some(1));

    // Grouped as `policy diff` groups a replay: enforced before, shadow after.
    let changes = &admin_json(&stack, "/policies")["shadow_changes"];
    assert_eq!(changes["allow_to_deny"], 1, "{changes:#}");
    assert_eq!(changes["deny_to_allow"], 0, "{changes:#}");
    let group = &changes["groups"][0];
    assert_eq!(group["direction"], "allow_to_deny");
    assert_eq!(group["route"], "zones-create");
    assert_eq!(group["principal_kind"], "anonymous");
    assert_eq!(
        group["after_policies"],
        json!(["shadow-no-anonymous-create"])
    );
    assert_eq!(group["sample_request_ids"], json!([rid]));
}

/// Run `zonegate` with these arguments: exit code, stdout, stderr.
pub(crate) fn zonegate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(zonegate_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn policy_cli_tests_validates_and_explains_the_shipped_set() {
    let ws = workspace_root();
    let policies = ws.join("policies");
    let routes = policies.join("routes.toml");
    let tmp = tempfile::tempdir().unwrap();
    let no_config = tmp.path().join("no-such-config.toml");
    let base: Vec<String> = [
        "--policies",
        path_str(&policies),
        "--routes",
        path_str(&routes),
        "--config",
        path_str(&no_config),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let with = |cmd: &[&str], extra: &[&str]| -> (i32, String, String) {
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend(base.iter().map(String::as_str));
        args.extend_from_slice(extra);
        zonegate(&args)
    };

    // The shipped tables pass, with a summary line.
    let (code, out, err) = with(&["policy", "test"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let summary = out.lines().last().unwrap();
    let (cases, rest) = summary.split_once(" cases in ").unwrap();
    assert!(
        rest.ends_with(&format!(": {cases} passed, 0 failed")),
        "{summary}"
    );
    assert!(cases.parse::<u32>().unwrap() > 0);

    // One wrong expectation: exit 1 with a readable diff.
    let tables = tmp.path().join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    for entry in std::fs::read_dir(policies.join("tests")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tables.join(p.file_name().unwrap())).unwrap();
    }
    let orgs = tables.join("orgs.toml");
    let text = std::fs::read_to_string(&orgs).unwrap();
    assert!(text.contains("name = \"a viewer may orgs:read\""));
    std::fs::write(
        &orgs,
        text.replacen("expect = \"allow\"", "expect = \"deny\"", 1),
    )
    .unwrap();
    let (code, out, err) = with(&["policy", "test"], &["--tables", path_str(&tables)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAIL "), "{out}");
    assert!(out.contains(":: a viewer may orgs:read"), "{out}");
    assert!(out.contains("- expected: deny"), "{out}");
    assert!(
        out.contains("+ got:      allow by org-members-read"),
        "{out}"
    );
    assert!(out.lines().last().unwrap().ends_with(", 1 failed"), "{out}");

    // validate: the shipped set is fine; a policy without a comment is refused by name.
    let (code, out, err) = with(&["policy", "validate"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("policy set OK"), "{out}");
    let uncommented = tmp.path().join("uncommented");
    copy_policies(std::slice::from_ref(&policies), &uncommented);
    let file = uncommented.join("orgs.cedar");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(
        "\n@id(\"uncommented-rule\")\n\
         permit (principal is Zonegate::User, action == Zonegate::Action::\"orgs:read\", resource is Zonegate::Org)\n\
         when { principal in resource.viewers };\n",
    );
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = zonegate(&[
        "policy",
        "validate",
        "--policies",
        path_str(&uncommented),
        "--routes",
        path_str(&routes),
        "--config",
        path_str(&no_config),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("uncommented-rule") && err.contains("comment"),
        "{err}"
    );

    // explain: a viewer deleting a zone is denied, and the candidates are named.
    let explain = |principal: &str| {
        with(
            &["policy", "explain"],
            &[
                "--principal",
                principal,
                "--request",
                "DELETE /v1/orgs/acme/zones/z1",
            ],
        )
    };
    let (code, out, err) = explain("{ user = \"u\", role = \"viewer\" }");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("decision:  DENY"), "{out}");
    assert!(out.contains("zones:delete"), "{out}");
    assert!(out.contains("no permit matched"), "{out}");
    assert!(out.contains("policies for this action:"), "{out}");
    for candidate in ["zones-write-zone", "apikey-zone-write"] {
        assert!(out.contains(candidate), "{candidate} not in {out}");
    }
    let (code, out, err) = explain("{ user = \"u\", role = \"developer\" }");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("decision:  ALLOW"), "{out}");
    assert!(out.contains("permitted by zones-write-zone"), "{out}");
}
