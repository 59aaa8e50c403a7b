//! The canary: a whole scenario with known secrets (password, API key, TOTP seed and codes,
//! recovery codes, session, refresh and CSRF cookies), after which none of them may appear in
//! the gateway's or the backend's log, in the audit table (read back through `zonegate audit
//! export`), in the decision log (through `zonegate decisions export`), or in any response
//! body except the one that handed it out.

use std::process::Command;

use serde_json::json;
use zonegate_e2e::stack::zonegate_bin;
use zonegate_e2e::{Response, Stack};

use crate::accounts::{logged_in, Browser, PASSWORD};
use crate::apikeys::{create_key, with_key};
use crate::mfa::{away_from_step_edge, code_at, now, password_step};

/// Every response, with whether it is allowed to carry a secret (the one that issued it).
#[derive(Default)]
struct Seen(Vec<(String, Response)>);

impl Seen {
    fn keep(&mut self, what: &str, resp: Response) -> Response {
        self.0.push((what.to_owned(), resp.clone()));
        resp
    }

    /// Values of the named cookies set by any response.
    fn cookie_values(&self) -> Vec<String> {
        let names = [
            "__Host-zonegate-session=",
            "__Secure-zonegate-refresh=",
            "__Host-zonegate-csrf=",
            "__Host-zonegate-mfa=",
        ];
        let mut out = Vec::new();
        for (_, r) in &self.0 {
            for (k, v) in &r.headers {
                if k != "set-cookie" {
                    continue;
                }
                let pair = v.split(';').next().unwrap_or("");
                for name in names {
                    if let Some(value) = pair.strip_prefix(name) {
                        if !value.is_empty() {
                            out.push(value.to_owned());
                        }
                    }
                }
            }
        }
        out
    }
}

#[test]
fn no_secret_reaches_a_log_the_audit_table_or_another_response() {
    let stack = Stack::start();
    let mut seen = Seen::default();
    let email = "canary@example.com";
    let mut me = logged_in(&stack, email);
    let org = me.send("POST", "/v1/orgs", Some(json!({"name": "Canary"})));
    let org = seen.keep("org", org).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // An API key: issued once, used, misused, rolled and revoked.
    let (key_id, key) = create_key(&mut me, &org, &["zones:read", "zones:write"]);
    let c = stack.client();
    let zones = format!("/v1/orgs/{org}/zones");
    seen.keep("zones by key", with_key(&c, "GET", &zones, &key, None));
    let mut forged = key.clone();
    let at = forged.len() - 8;
    let swap = if &forged[at..=at] == "Z" { "Y" } else { "Z" };
    forged.replace_range(at..=at, swap);
    seen.keep("forged key", with_key(&c, "GET", &zones, &forged, None));
    seen.keep("key in url", c.get(&format!("{zones}?api_key={key}")));
    let rolled = me.send(
        "POST",
        &format!("/v1/orgs/{org}/api-keys/{key_id}/roll"),
        None,
    );
    let rolled_key = rolled.json()["key"].as_str().unwrap_or_default().to_owned();
    assert!(
        rolled_key.starts_with("zgk_"),
        "{}",
        String::from_utf8_lossy(&rolled.body)
    );
    seen.keep(
        "key list",
        me.send("GET", &format!("/v1/orgs/{org}/api-keys"), None),
    );
    seen.keep(
        "revoke",
        me.send("DELETE", &format!("/v1/orgs/{org}/api-keys/{key_id}"), None),
    );
    seen.keep(
        "revoked key",
        with_key(&c, "GET", &zones, &rolled_key, None),
    );

    // A wrong password, then TOTP: enrol, confirm, log in with a code, a wrong code, a
    // recovery code.
    let mut stranger = Browser::new(&stack);
    seen.keep(
        "wrong password",
        stranger.send(
            "POST",
            "/auth/login",
            Some(json!({"email": email, "password": format!("{PASSWORD}!")})),
        ),
    );
    let enrolled = me.send(
        "POST",
        "/auth/mfa/totp/enroll",
        Some(json!({"password": PASSWORD})),
    );
    let seed = enrolled.json()["secret"].as_str().unwrap().to_owned();
    away_from_step_edge();
    let t = now();
    let confirmed = me.send(
        "POST",
        "/auth/mfa/totp/confirm",
        Some(json!({"code": code_at(&seed, t - 30)})),
    );
    let recovery: Vec<String> = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut second = password_step(&stack, email);
    seen.keep(
        "wrong code",
        second.send("POST", "/auth/login/totp", Some(json!({"code": "000000"}))),
    );
    let code = code_at(&seed, t);
    let done = second.send("POST", "/auth/login/totp", Some(json!({"code": code})));
    assert_eq!(seen.keep("login with code", done).status, 200);
    seen.keep("whoami", second.send("GET", "/auth/session", None));
    seen.keep("sessions", second.send("GET", "/auth/sessions", None));
    seen.keep("refresh", second.send("POST", "/auth/refresh", None));
    seen.keep("mfa status", second.send("GET", "/auth/mfa/totp", None));
    let mut third = password_step(&stack, email);
    seen.keep(
        "recovery login",
        third.send(
            "POST",
            "/auth/login/totp",
            Some(json!({"code": recovery[0]})),
        ),
    );
    seen.keep(
        "audit",
        second.send(
            "GET",
            &format!("/v1/orgs/{org}/audit-events?limit=200"),
            None,
        ),
    );
    seen.keep("logout", second.send("POST", "/auth/logout", None));
    seen.keep("after logout", second.send("GET", "/auth/session", None));

    // What must not leak.
    let mut secrets: Vec<(String, String)> = vec![
        ("password".into(), PASSWORD.into()),
        ("api key".into(), key.clone()),
        ("api key secret".into(), key[21..].to_owned()),
        ("rolled api key".into(), rolled_key.clone()),
        ("totp seed".into(), seed.clone()),
        ("totp code".into(), code.clone()),
    ];
    secrets.extend(
        recovery
            .iter()
            .map(|r| ("recovery code".to_owned(), r.clone())),
    );
    secrets.extend(
        seen.cookie_values()
            .into_iter()
            .map(|v| ("cookie value".to_owned(), v)),
    );
    assert!(
        secrets.len() > 15,
        "the scenario issued cookies: {}",
        secrets.len()
    );

    // Response bodies (the issuing responses were not kept).
    for (what, resp) in &seen.0 {
        let body = String::from_utf8_lossy(&resp.body);
        for (name, secret) in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "the {name} is in the body of `{what}`: {body}"
            );
        }
    }

    // Logs: give the writers a moment, then read everything both processes wrote.
    assert!(stack.gateway_logged("authn_mfa_recovery_used"));
    let logs = format!(
        "{}{}",
        stack.gateway_log(),
        std::fs::read_to_string(stack.dir.path().join("backend.log")).unwrap_or_default()
    );
    assert!(logs.contains("authn_login_fail") && logs.contains("authn_apikey_fail"));
    for (name, secret) in &secrets {
        assert!(!logs.contains(secret.as_str()), "the {name} is in a log");
    }

    // The audit table, through the incident export.
    let mut audit = String::new();
    for _ in 0..50 {
        audit = stack.audit_export(&[]);
        if audit.contains("authn_mfa_recovery_used") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(audit.contains("authn_mfa_recovery_used"), "{audit}");
    for event in [
        "authn_login_fail",
        "authn_apikey_fail",
        "authn_login_success",
        "session_created",
        "authn_token_created",
        "session_renewed",
        "authn_mfa_confirmed",
        "authn_apikey_created",
        "authn_apikey_revoked",
    ] {
        assert!(
            audit.contains(event),
            "no {event} in the audit table: {audit}"
        );
    }
    for (name, secret) in &secrets {
        assert!(
            !audit.contains(secret.as_str()),
            "the {name} is in the audit table"
        );
    }

    // The decision log, through its export: every authorised request's inputs, no secret.
    let out = stack.dir.path().join("decisions.jsonl");
    let mut decisions = String::new();
    for _ in 0..50 {
        let status = Command::new(zonegate_bin())
            .args(["decisions", "export", "--from", "1h"])
            .arg("--config")
            .arg(&stack.config)
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        decisions = std::fs::read_to_string(&out).unwrap();
        if decisions.contains(&key_id) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        decisions.contains(&org) && decisions.contains(&key_id),
        "{decisions}"
    );
    for (name, secret) in &secrets {
        assert!(
            !decisions.contains(secret.as_str()),
            "the {name} is in the decision log"
        );
    }
    assert!(
        !decisions.contains(email),
        "an email address in the decision log"
    );
}
