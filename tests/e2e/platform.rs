//! The platform surface and the org MFA requirement, end to end: platform admins (from
//! config) with a second factor suspend and reinstate an org; nobody else reaches the surface;
//! an org that requires MFA refuses its members' sessions without one.

use serde_json::json;
use zonegate_e2e::{Stack, StackOptions};

use crate::accounts::logged_in;
use crate::mfa::with_totp;

fn org_of(stack: &Stack, owner: &str) -> (crate::accounts::Browser, String) {
    let mut b = logged_in(stack, owner);
    let created = b.send("POST", "/v1/orgs", Some(json!({"name": "Acme"})));
    assert_eq!(created.status, 201);
    let org = created.json()["id"].as_str().unwrap().to_owned();
    (b, org)
}

#[test]
fn platform_admins_with_mfa_suspend_orgs_and_nobody_else_reaches_the_surface() {
    let stack = Stack::start_with(StackOptions {
        extra_config: "[platform]\nadmins = [\"ops@example.com\"]\n".into(),
        ..StackOptions::default()
    });
    let (mut owner, org) = org_of(&stack, "owner@example.com");
    let zones = format!("/v1/orgs/{org}/zones");
    let platform = format!("/platform/v1/orgs/{org}");
    let suspension = format!("{platform}/suspension");
    assert_eq!(owner.send("GET", &zones, None).status, 200);

    // The org's own owner, even with MFA, never reaches the platform surface.
    let (_, mut owner_mfa) = with_totp(&stack, "owner@example.com", &mut owner);
    owner_mfa.send("GET", &platform, None).assert_problem(403);
    owner_mfa
        .send("PUT", &suspension, Some(json!({"suspended": true})))
        .assert_problem(403);

    // A platform admin without a second factor is refused; with one, allowed.
    let mut ops = logged_in(&stack, "ops@example.com");
    ops.send("GET", &platform, None).assert_problem(403);
    let (_, mut ops) = with_totp(&stack, "ops@example.com", &mut ops);
    let seen = ops.send("GET", &platform, None);
    assert_eq!(seen.status, 200, "{}", String::from_utf8_lossy(&seen.body));
    assert_eq!(seen.json()["members"], 1);
    assert_eq!(seen.json()["suspended_at"], serde_json::Value::Null);
    // ... and gains nothing inside the org from it.
    ops.send("GET", &zones, None).assert_problem(403);

    // Bad input changes nothing.
    ops.send("PUT", &suspension, Some(json!({"suspended": "yes"})))
        .assert_problem(422);
    assert_eq!(owner_mfa.send("GET", &zones, None).status, 200);

    // Suspended: the owner is refused on the very next request; reinstated: back.
    let suspended = ops.send("PUT", &suspension, Some(json!({"suspended": true})));
    assert_eq!(suspended.status, 200);
    assert!(suspended.json()["suspended_at"].is_i64());
    owner_mfa.send("GET", &zones, None).assert_problem(403);
    owner_mfa
        .send("GET", &format!("/v1/orgs/{org}"), None)
        .assert_problem(403);
    assert_eq!(ops.send("GET", &platform, None).status, 200);
    assert_eq!(
        ops.send("PUT", &suspension, Some(json!({"suspended": false})))
            .status,
        200
    );
    assert_eq!(owner_mfa.send("GET", &zones, None).status, 200);
    assert!(stack.gateway_logged(r#""event":"org_suspended""#));
    assert!(stack.gateway_logged(r#""event":"org_reinstated""#));
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
