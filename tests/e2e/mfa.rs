//! TOTP over the wire: enrol, confirm, log in with password then code, replay refused, ten
//! parallel submissions of one code with one success, a recovery code once, the pending login
//! reaching nothing, and disable cutting the old secret off.
//!
//! The gateway's clock is real here, so codes are computed for the current step and its
//! neighbours (the accepted window is the step plus or minus one); the unit tests cover time
//! with an injected clock.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use totp_rs::{Algorithm, Secret, TOTP};
use zonegate_e2e::Stack;

use crate::accounts::{logged_in, Browser, PASSWORD};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn code_at(secret: &str, t: u64) -> String {
    let bytes = Secret::Encoded(secret.to_owned()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new()).generate(t)
}

/// Keep clear of a step boundary, so "this step" and "the previous step" stay what they were
/// when the codes were computed.
pub fn away_from_step_edge() {
    let into = now() % 30;
    if into > 22 {
        std::thread::sleep(std::time::Duration::from_secs(31 - into));
    }
}

pub fn password_step(stack: &Stack, email: &str) -> Browser {
    let mut b = Browser::new(stack);
    let resp = b.send(
        "POST",
        "/auth/login",
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["status"], "second_factor_required");
    let pending = resp
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("__Host-zonegate-mfa="))
        .map(|(_, v)| v.clone())
        .expect("pending-login cookie");
    assert!(
        pending.contains("HttpOnly")
            && pending.contains("Secure")
            && pending.contains("SameSite=Strict"),
        "{pending}"
    );
    assert!(
        !resp
            .headers
            .iter()
            .any(|(k, v)| k == "set-cookie" && v.starts_with("__Host-zonegate-session=")),
        "the password step alone must not give a session"
    );
    b
}

/// Turn TOTP on for a logged-in user (confirming with the previous step's code) and return
/// the secret and a fresh session that used it.
pub fn with_totp(stack: &Stack, email: &str, me: &mut Browser) -> (String, Browser) {
    let enrolled = me.send(
        "POST",
        "/auth/mfa/totp/enroll",
        Some(json!({"password": PASSWORD})),
    );
    assert_eq!(enrolled.status, 201);
    let secret = enrolled.json()["secret"].as_str().unwrap().to_owned();
    away_from_step_edge();
    let t = now();
    let confirmed = me.send(
        "POST",
        "/auth/mfa/totp/confirm",
        Some(json!({"code": code_at(&secret, t - 30)})),
    );
    assert_eq!(confirmed.status, 200);
    let mut b = password_step(stack, email);
    let ok = b.send(
        "POST",
        "/auth/login/totp",
        Some(json!({"code": code_at(&secret, t)})),
    );
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    (secret, b)
}

#[test]
fn enrol_confirm_login_replay_parallel_recovery_and_disable() {
    let stack = Stack::start();
    let email = "mfa@example.com";
    let mut me = logged_in(&stack, email);

    // Enrolment needs the password again; a wrong one changes nothing.
    let wrong = me.send(
        "POST",
        "/auth/mfa/totp/enroll",
        Some(json!({"password": "not it at all"})),
    );
    wrong.assert_problem(403);
    let enrolled = me.send(
        "POST",
        "/auth/mfa/totp/enroll",
        Some(json!({"password": PASSWORD})),
    );
    assert_eq!(
        enrolled.status,
        201,
        "{}",
        String::from_utf8_lossy(&enrolled.body)
    );
    let e = enrolled.json();
    let secret = e["secret"].as_str().unwrap().to_owned();
    assert!(Secret::Encoded(secret.clone()).to_bytes().unwrap().len() >= 20);
    let uri = e["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(
        uri.contains("mfa%40example.com") || uri.contains("mfa@example.com"),
        "{uri}"
    );
    assert!(uri.contains("issuer="), "{uri}");
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));

    // Not active until confirmed: login still completes with the password alone.
    let mut other = Browser::new(&stack);
    let resp = other.send(
        "POST",
        "/auth/login",
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(resp.status, 200);

    // Confirm with the previous step's code, leaving this step's code for the logins below.
    away_from_step_edge();
    let t = now();
    for bad in [
        "12345",
        "1234567",
        " 123456",
        "１２３４５６",
        "+12345",
        "12 345",
    ] {
        me.send("POST", "/auth/mfa/totp/confirm", Some(json!({"code": bad})))
            .assert_problem(401);
    }
    let confirmed = me.send(
        "POST",
        "/auth/mfa/totp/confirm",
        Some(json!({"code": code_at(&secret, t - 30)})),
    );
    assert_eq!(
        confirmed.status,
        200,
        "{}",
        String::from_utf8_lossy(&confirmed.body)
    );
    let recovery: Vec<String> = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert!(recovery.len() >= 10);
    // Confirming ended the user's other logins.
    other.send("GET", "/auth/session", None).assert_problem(401);

    // The pending login reaches no protected route, under either cookie name.
    let pending = password_step(&stack, email);
    let value = pending.pending.clone().unwrap();
    let client = stack.client();
    for cookie in [
        format!("__Host-zonegate-mfa={value}"),
        format!("__Host-zonegate-session={value}"),
    ] {
        let resp = client.request("GET", "/auth/session", &[("cookie", cookie.as_str())], None);
        resp.assert_problem(401);
    }

    // Ten parallel submissions of one valid code: exactly one session.
    let code = code_at(&secret, t);
    let mut browsers: Vec<Browser> = (0..10).map(|_| password_step(&stack, email)).collect();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = browsers
            .iter_mut()
            .map(|b| {
                let code = code.clone();
                s.spawn(move || {
                    b.send("POST", "/auth/login/totp", Some(json!({"code": code})))
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        9,
        "{statuses:?}"
    );
    let mut winner = browsers
        .into_iter()
        .zip(&statuses)
        .find(|(_, s)| **s == 200)
        .unwrap()
        .0;
    let who = winner.send("GET", "/auth/session", None);
    assert_eq!(who.status, 200);
    assert_eq!(who.json()["factors"], json!(["pwd", "otp"]));

    // The same code again, on a fresh pending login: refused.
    let mut replay = password_step(&stack, email);
    replay
        .send("POST", "/auth/login/totp", Some(json!({"code": code})))
        .assert_problem(401);
    // The next step's code is new, and works once.
    let next = code_at(&secret, t + 30);
    let ok = replay.send("POST", "/auth/login/totp", Some(json!({"code": next})));
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));

    // A recovery code works once.
    let mut rec = password_step(&stack, email);
    let ok = rec.send(
        "POST",
        "/auth/login/totp",
        Some(json!({"code": recovery[0]})),
    );
    assert_eq!(ok.status, 200);
    let mut again = password_step(&stack, email);
    again
        .send(
            "POST",
            "/auth/login/totp",
            Some(json!({"code": recovery[0]})),
        )
        .assert_problem(401);

    // Disable needs the password and a current or recovery code; the old secret then stops.
    let mut before = password_step(&stack, email);
    let mut me = rec;
    me.send(
        "POST",
        "/auth/mfa/totp/disable",
        Some(json!({"password": PASSWORD, "code": "000000"})),
    )
    .assert_problem(401);
    let off = me.send(
        "POST",
        "/auth/mfa/totp/disable",
        Some(json!({"password": PASSWORD, "code": recovery[1]})),
    );
    assert_eq!(off.status, 204, "{}", String::from_utf8_lossy(&off.body));
    before
        .send(
            "POST",
            "/auth/login/totp",
            Some(json!({"code": code_at(&secret, now())})),
        )
        .assert_problem(401);
    let mut plain = Browser::new(&stack);
    let resp = plain.send(
        "POST",
        "/auth/login",
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(resp.status, 200, "password alone is enough again");

    // No seed, code or recovery code in the log.
    let log = stack.gateway_log();
    for secret_value in [
        secret.as_str(),
        code.as_str(),
        recovery[0].as_str(),
        recovery[1].as_str(),
    ] {
        assert!(
            !log.contains(secret_value),
            "{secret_value} is in the gateway log"
        );
    }
    assert!(stack.gateway_logged("authn_mfa_confirmed"));
    assert!(stack.gateway_logged("authn_mfa_recovery_used"));
    assert!(stack.gateway_logged("authn_mfa_disabled"));
}
