//! The platform surface end to end: its own listener, its own operator accounts (made with
//! `zonegate operators add`, password and TOTP), nothing of it on the public listener, no
//! customer credential on it, and each operation working and audited with the operator. Also
//! the org MFA requirement, which the platform's suspension used to share a file with.

use serde_json::json;
use zonegate_e2e::{Client, NewOperator, Response, Stack};

use crate::accounts::{logged_in, Browser, PASSWORD};
use crate::apikeys::{create_key, owner_with_org, with_key};
use crate::mfa::{away_from_step_edge, code_at, now, with_totp};

/// An operator's browser on the platform listener: its session cookie and CSRF token.
struct Operator {
    client: Client,
    origin: String,
    session: Option<String>,
    csrf: Option<String>,
}

fn cookie(resp: &Response, name: &str) -> Option<String> {
    resp.headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .filter_map(|(_, v)| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl Operator {
    fn new(stack: &Stack) -> Operator {
        Operator {
            client: stack.platform_client(),
            origin: format!("https://localhost:{}", stack.platform.port()),
            session: None,
            csrf: None,
        }
    }

    /// Sign in with the password and the code the operator's app shows now.
    fn signed_in(stack: &Stack, new: &NewOperator, email: &str) -> Operator {
        let mut op = Operator::new(stack);
        away_from_step_edge();
        let resp = op.login(email, &new.password, &code_at(&new.totp_secret, now()));
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        op
    }

    fn login(&mut self, email: &str, password: &str, code: &str) -> Response {
        let resp = self.send(
            "POST",
            "/platform/v1/auth/login",
            Some(json!({"email": email, "password": password, "code": code})),
        );
        if resp.status == 200 {
            self.session = cookie(&resp, "__Host-zonegate-platform");
            self.csrf = resp.json()["csrf_token"].as_str().map(str::to_owned);
            assert_eq!(
                cookie(&resp, "__Host-zonegate-platform-csrf"),
                self.csrf,
                "the CSRF cookie carries the body's token"
            );
        }
        resp
    }

    /// A request as the operator's page would send it: cookie, Origin and the CSRF header.
    fn send(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Response {
        let cookie = self
            .session
            .as_ref()
            .map(|s| format!("__Host-zonegate-platform={s}"));
        let csrf = self.csrf.clone().unwrap_or_default();
        self.send_with(method, path, body, cookie.as_deref(), &self.origin, &csrf)
    }

    fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        cookie: Option<&str>,
        origin: &str,
        csrf: &str,
    ) -> Response {
        let mut headers = vec![("origin", origin), ("x-csrf-token", csrf)];
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.client.request(method, path, &headers, body.as_deref())
    }
}

/// Wait (bounded) until the trail holds every named event with `principal` as the actor.
fn audited(stack: &Stack, principal: &str, events: &[&str]) -> String {
    let mut trail = String::new();
    for _ in 0..50 {
        trail = stack.audit_export(&["--user", principal]);
        if events.iter().all(|e| trail.contains(&format!("\"{e}\""))) {
            return trail;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("not all of {events:?} recorded for {principal}: {trail}");
}

#[test]
fn the_platform_answers_only_on_its_listener_and_only_to_operators() {
    let stack = Stack::start();
    let new = stack.add_operator("ops@example.com");
    let public = stack.client();

    // Nothing under /platform/ answers on the public listener, signed in or not.
    for (method, path) in [
        ("GET", "/platform/v1/orgs/acme"),
        ("POST", "/platform/v1/auth/login"),
        ("GET", "/platform/openapi.json"),
    ] {
        public.request(method, path, &[], None).assert_problem(404);
    }
    // And the public API is not on the platform listener.
    let platform = stack.platform_client();
    for path in ["/healthz", "/v1/orgs", "/openapi.json", "/auth/session"] {
        platform.get(path).assert_problem(404);
    }
    let contract = platform.get("/platform/openapi.json");
    assert_eq!(contract.status, 200);
    assert!(contract.json()["paths"]["/platform/v1/auth/login"].is_object());

    // Both factors, every time: a wrong password, code or email is one 401.
    let mut op = Operator::new(&stack);
    away_from_step_edge();
    let code = code_at(&new.totp_secret, now());
    for (email, password, code) in [
        ("ops@example.com", "not the password", code.as_str()),
        ("ops@example.com", new.password.as_str(), "000000"),
        ("nobody@example.com", new.password.as_str(), code.as_str()),
    ] {
        op.login(email, password, code).assert_problem(401);
    }
    op.send("GET", "/platform/v1/auth/session", None)
        .assert_problem(401);
    assert_eq!(
        op.login("ops@example.com", &new.password, &code).status,
        200
    );
    let me = op.send("GET", "/platform/v1/auth/session", None);
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["operator"]["email"], "ops@example.com");
    // Logging in again from the same browser replaces its session.
    let first = op.session.clone();
    let again = op.login(
        "ops@example.com",
        &new.password,
        &code_at(&new.totp_secret, now() + 30),
    );
    assert_eq!(again.status, 200);
    let mut stale = Operator::new(&stack);
    stale.session = first;
    stale
        .send("GET", "/platform/v1/auth/session", None)
        .assert_problem(401);
    // The code was spent: a second login with it fails.
    Operator::new(&stack)
        .login("ops@example.com", &new.password, &code)
        .assert_problem(401);

    // A customer session, even an org owner's with MFA, is nobody on the platform listener.
    let (mut owner, org) = owner_with_org(&stack);
    let (_, mut owner) = with_totp(&stack, "ada@example.com", &mut owner);
    let session = customer_session(&mut owner);
    op.send_with(
        "GET",
        &format!("/platform/v1/orgs/{org}"),
        None,
        Some(&format!("__Host-zonegate-session={session}")),
        &op.origin,
        "",
    )
    .assert_problem(401);
    // An operator's cookie is nobody on the public listener.
    let platform_cookie = format!("__Host-zonegate-platform={}", op.session.clone().unwrap());
    public
        .request(
            "GET",
            "/v1/orgs",
            &[("cookie", platform_cookie.as_str())],
            None,
        )
        .assert_problem(401);

    // Changes need the platform's Origin and the session's CSRF token.
    let suspension = format!("/platform/v1/orgs/{org}/suspension");
    let cookie = op
        .session
        .as_ref()
        .map(|s| format!("__Host-zonegate-platform={s}"));
    let csrf = op.csrf.clone().unwrap();
    for (origin, token) in [
        (op.origin.as_str(), ""),
        (op.origin.as_str(), "not-the-token"),
        ("https://evil.example", csrf.as_str()),
    ] {
        op.send_with(
            "PUT",
            &suspension,
            Some(json!({"suspended": true})),
            cookie.as_deref(),
            origin,
            token,
        )
        .assert_problem(403);
    }
    assert_eq!(
        op.send("GET", &format!("/platform/v1/orgs/{org}"), None)
            .json()["suspended_at"],
        serde_json::Value::Null,
        "nothing changed"
    );

    // Signing out ends the session.
    assert_eq!(
        op.send("POST", "/platform/v1/auth/logout", None).status,
        204
    );
    op.send("GET", "/platform/v1/auth/session", None)
        .assert_problem(401);
    audited(
        &stack,
        &new.id,
        &[
            "platform_operator_added",
            "authn_platform_login_fail",
            "authn_platform_login_success",
            "authn_platform_logout",
        ],
    );
}

/// The customer's own session cookie value, as its browser holds it.
fn customer_session(b: &mut Browser) -> String {
    let resp = b.send("GET", "/auth/session", None);
    assert_eq!(resp.status, 200);
    b.session_cookie().unwrap()
}

#[test]
fn each_platform_operation_works_and_names_the_operator() {
    let stack = Stack::start();
    let new = stack.add_operator("ops@example.com");
    let op = Operator::signed_in(&stack, &new, "ops@example.com");
    let public = stack.client();
    let (mut owner, org) = owner_with_org(&stack);
    let zones = format!("/v1/orgs/{org}/zones");
    let (_, key) = create_key(&mut owner, &org, &["zones:read"]);
    assert_eq!(with_key(&public, "GET", &zones, &key, None).status, 200);

    // Find orgs by part of the name, and one by id.
    let found = op.send("GET", "/platform/v1/orgs?q=acm", None);
    assert_eq!(found.status, 200);
    assert_eq!(found.json()["orgs"][0]["id"], org.as_str());
    assert_eq!(found.json()["orgs"][0]["members"], 1);
    let shown = op.send("GET", &format!("/platform/v1/orgs/{org}"), None);
    assert_eq!(shown.json()["name"], "Acme");
    op.send("GET", "/platform/v1/orgs", None)
        .assert_problem(400);
    op.send("GET", "/platform/v1/orgs/no-such-org", None)
        .assert_problem(404);

    // Suspend: the owner and the key are refused on the next request; reinstate: back.
    let suspension = format!("/platform/v1/orgs/{org}/suspension");
    op.send("PUT", &suspension, Some(json!({"suspended": "yes"})))
        .assert_problem(422);
    let suspended = op.send("PUT", &suspension, Some(json!({"suspended": true})));
    assert_eq!(suspended.status, 200);
    assert!(suspended.json()["suspended_at"].is_i64());
    owner.send("GET", &zones, None).assert_problem(403);
    with_key(&public, "GET", &zones, &key, None).assert_problem(403);
    assert_eq!(
        op.send("PUT", &suspension, Some(json!({"suspended": false})))
            .status,
        200
    );
    assert_eq!(owner.send("GET", &zones, None).status, 200);

    // Revoke every key of the org: the integrator is refused at once.
    let revoked = op.send(
        "POST",
        &format!("/platform/v1/orgs/{org}/api-keys/revoke-all"),
        None,
    );
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.json()["revoked"], 1);
    with_key(&public, "GET", &zones, &key, None).assert_problem(401);

    // Find the user; end every session of theirs: the owner's next request is refused.
    let users = op.send("GET", "/platform/v1/users?q=ada%40example", None);
    assert_eq!(users.status, 200);
    let user = users.json()["users"][0]["id"].as_str().unwrap().to_owned();
    let shown = op.send("GET", &format!("/platform/v1/users/{user}"), None);
    assert_eq!(shown.json()["email"], "ada@example.com");
    assert_eq!(shown.json()["orgs"], 1);
    assert_eq!(
        op.send(
            "DELETE",
            &format!("/platform/v1/users/{user}/sessions"),
            None
        )
        .status,
        204
    );
    owner.send("GET", &zones, None).assert_problem(401);
    // The refresh token of that login is dead too.
    owner
        .send("POST", "/auth/refresh", None)
        .assert_problem(401);

    // Disable: no session, no login, until enabled again.
    let mut owner = logged_in_again(&stack);
    let disabled = op.send(
        "PUT",
        &format!("/platform/v1/users/{user}/disabled"),
        Some(json!({"disabled": true})),
    );
    assert_eq!(disabled.status, 200);
    assert!(disabled.json()["disabled_at"].is_i64());
    owner.send("GET", &zones, None).assert_problem(401);
    Browser::new(&stack)
        .send(
            "POST",
            "/auth/login",
            Some(json!({"email": "ada@example.com", "password": PASSWORD})),
        )
        .assert_problem(401);
    assert_eq!(
        op.send(
            "PUT",
            &format!("/platform/v1/users/{user}/disabled"),
            Some(json!({"disabled": false})),
        )
        .status,
        200
    );
    let mut owner = logged_in_again(&stack);
    assert_eq!(owner.send("GET", &zones, None).status, 200);

    // Reload policies and the certificate; run the retention purge.
    let reloaded = op.send("POST", "/platform/v1/reload", None);
    assert_eq!(
        reloaded.status,
        200,
        "{}",
        String::from_utf8_lossy(&reloaded.body)
    );
    assert_eq!(reloaded.json()["policies"]["status"], "reloaded");
    assert_eq!(
        reloaded.json()["certificate"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let purged = op.send("POST", "/platform/v1/audit/purge", None);
    assert_eq!(purged.status, 200);
    assert!(purged.json()["deleted"].is_u64());

    // Every action is on the record with the operator as its actor, and the trail reads back
    // through the platform itself.
    let trail = audited(
        &stack,
        &new.id,
        &[
            "org_suspended",
            "org_reinstated",
            "authn_apikey_revoked",
            "platform_org_keys_revoked",
            "platform_user_sessions_ended",
            "platform_user_disabled",
            "platform_user_enabled",
            "platform_reload",
            "platform_audit_purged",
            "sys_policy_reloaded",
        ],
    );
    assert!(trail.contains("ops@example.com"), "the operator is named");
    let read = op.send(
        "GET",
        &format!(
            "/platform/v1/audit-events?principal={}&event=platform_user_disabled",
            new.id
        ),
        None,
    );
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["events"][0]["details"]["user"], user.as_str());
    op.send("GET", "/platform/v1/audit-events?colour=red", None)
        .assert_problem(400);
}

fn org_of(stack: &Stack, owner: &str) -> (Browser, String) {
    let mut b = logged_in(stack, owner);
    let created = b.send("POST", "/v1/orgs", Some(json!({"name": "Acme"})));
    assert_eq!(created.status, 201);
    let org = created.json()["id"].as_str().unwrap().to_owned();
    (b, org)
}

/// ada@example.com logs in again (after her sessions were ended).
fn logged_in_again(stack: &Stack) -> Browser {
    let mut b = Browser::new(stack);
    let resp = b.send(
        "POST",
        "/auth/login",
        Some(json!({"email": "ada@example.com", "password": PASSWORD})),
    );
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    b
}

#[test]
fn an_org_that_requires_mfa_refuses_member_sessions_without_it() {
    let stack = Stack::start();
    let (mut owner, org) = org_of(&stack, "owner@example.com");
    let settings = format!("/v1/orgs/{org}");
    let zones = format!("/v1/orgs/{org}/zones");

    // Invite a viewer, who accepts.
    let invite = owner.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({"email": "viewer@example.com", "role": "viewer"})),
    );
    assert_eq!(invite.status, 202);
    let token = stack.mailed_token("viewer@example.com");
    let mut viewer = logged_in(&stack, "viewer@example.com");
    assert_eq!(
        viewer
            .send(
                "POST",
                "/v1/invitations/accept",
                Some(json!({"token": token}))
            )
            .status,
        200
    );
    assert_eq!(viewer.send("GET", &zones, None).status, 200);

    // Only from a session that used MFA itself (a policy, decided with the requested setting
    // in the context), and only owners.
    owner
        .send("PATCH", &settings, Some(json!({"require_mfa": true})))
        .assert_problem(403);
    assert!(stack.gateway_logged("require-mfa-needs-mfa"));
    viewer
        .send("PATCH", &settings, Some(json!({"require_mfa": true})))
        .assert_problem(403);
    let (_, mut owner) = with_totp(&stack, "owner@example.com", &mut owner);
    let on = owner.send("PATCH", &settings, Some(json!({"require_mfa": true})));
    assert_eq!(on.status, 200, "{}", String::from_utf8_lossy(&on.body));
    assert_eq!(on.json()["require_mfa"], true);

    // The viewer's password-only session is refused from the next request; the owner's is not.
    viewer.send("GET", &zones, None).assert_problem(403);
    assert_eq!(owner.send("GET", &zones, None).status, 200);
    // With a second factor the viewer is back.
    let (_, mut viewer) = with_totp(&stack, "viewer@example.com", &mut viewer);
    assert_eq!(viewer.send("GET", &zones, None).status, 200);
}
