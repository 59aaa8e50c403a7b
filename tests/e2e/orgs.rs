//! Organisations end to end: create, invite and accept, roles decided by Cedar on the zone API,
//! role changes and removal effective on the very next request, the last-owner rule.

use serde_json::json;
use zonegate_e2e::Stack;

use crate::accounts::logged_in;

fn square() -> serde_json::Value {
    json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 50.0], [11.0, 51.0], [10.0, 51.0], [10.0, 50.0]]]})
}

#[test]
fn roles_decide_zone_access_and_changes_apply_on_the_next_request() {
    let stack = Stack::start();
    let mut ada = logged_in(&stack, "ada@example.com");
    let created = ada.send("POST", "/v1/orgs", Some(json!({"name": "Acme Deliveries"})));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let org = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(org.len(), 32, "org ids carry 128 random bits");
    assert_eq!(
        ada.send("GET", "/v1/orgs", None).json()["orgs"][0]["role"],
        "owner"
    );
    let zones = format!("/v1/orgs/{org}/zones");
    assert_eq!(
        ada.send(
            "POST",
            &zones,
            Some(json!({"name": "Centre", "area": square()}))
        )
        .status,
        201
    );

    // An outsider sees nothing of the org.
    let mut carol = logged_in(&stack, "carol@example.com");
    carol
        .send("GET", &format!("/v1/orgs/{org}"), None)
        .assert_problem(403);
    carol.send("GET", &zones, None).assert_problem(403);

    // Invite bob as a viewer; he accepts with the mailed token.
    let invite = ada.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({"email": "bob@example.com", "role": "viewer"})),
    );
    assert_eq!(invite.status, 202);
    let token = stack.mailed_token("bob@example.com");
    let mut bob = logged_in(&stack, "bob@example.com");
    carol
        .send(
            "POST",
            "/v1/invitations/accept",
            Some(json!({"token": token})),
        )
        .assert_problem(400);
    let joined = bob.send(
        "POST",
        "/v1/invitations/accept",
        Some(json!({"token": token})),
    );
    assert_eq!(
        joined.status,
        200,
        "{}",
        String::from_utf8_lossy(&joined.body)
    );
    assert_eq!(joined.json()["role"], "viewer");
    let bob_id = bob.send("GET", "/auth/session", None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Viewer: reads, cannot write or manage members.
    assert_eq!(
        bob.send("GET", &zones, None).json()["zones"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    bob.send("POST", &zones, Some(json!({"name": "B", "area": square()})))
        .assert_problem(403);
    bob.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({"email": "x@example.com", "role": "viewer"})),
    )
    .assert_problem(403);
    assert_eq!(
        bob.send("GET", &format!("/v1/orgs/{org}/members"), None)
            .json()["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Promoted to developer: the very next request may write.
    let member = format!("/v1/orgs/{org}/members/{bob_id}");
    assert_eq!(
        ada.send("PUT", &member, Some(json!({"role": "developer"})))
            .status,
        204
    );
    assert_eq!(
        bob.send("POST", &zones, Some(json!({"name": "B", "area": square()})))
            .status,
        201
    );

    // The backend saw a user identity for that org.
    assert!(stack.gateway_logged("\"principal_kind\":\"user\""));

    // Removed: the very next request is refused.
    assert_eq!(ada.send("DELETE", &member, None).status, 204);
    bob.send("GET", &zones, None).assert_problem(403);

    // The last owner can neither leave nor be demoted.
    let ada_id = ada.send("GET", "/auth/session", None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ada.send("POST", &format!("/v1/orgs/{org}/leave"), None)
        .assert_problem(409);
    ada.send(
        "PUT",
        &format!("/v1/orgs/{org}/members/{ada_id}"),
        Some(json!({"role": "viewer"})),
    )
    .assert_problem(409);
    ada.send("PUT", &member, Some(json!({"role": "emperor"})))
        .assert_problem(422);
}

#[test]
fn admins_cannot_touch_owners_or_grant_owner() {
    let stack = Stack::start();
    let mut ada = logged_in(&stack, "ada@example.com");
    let org = ada
        .send("POST", "/v1/orgs", Some(json!({"name": "Acme"})))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ada.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({"email": "dan@example.com", "role": "admin"})),
    );
    let token = stack.mailed_token("dan@example.com");
    let mut dan = logged_in(&stack, "dan@example.com");
    assert_eq!(
        dan.send(
            "POST",
            "/v1/invitations/accept",
            Some(json!({"token": token}))
        )
        .status,
        200
    );
    let ada_id = ada.send("GET", "/auth/session", None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dan_id = dan.send("GET", "/auth/session", None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    dan.send(
        "PUT",
        &format!("/v1/orgs/{org}/members/{ada_id}"),
        Some(json!({"role": "viewer"})),
    )
    .assert_problem(403);
    dan.send("DELETE", &format!("/v1/orgs/{org}/members/{ada_id}"), None)
        .assert_problem(403);
    dan.send(
        "PUT",
        &format!("/v1/orgs/{org}/members/{dan_id}"),
        Some(json!({"role": "owner"})),
    )
    .assert_problem(403);
    dan.send(
        "POST",
        &format!("/v1/orgs/{org}/invitations"),
        Some(json!({"email": "eve@example.com", "role": "owner"})),
    )
    .assert_problem(403);
    // But an admin may leave.
    assert_eq!(
        dan.send("POST", &format!("/v1/orgs/{org}/leave"), None)
            .status,
        204
    );
}

#[test]
fn pending_invitations_are_listed_revoked_and_lapse_with_their_inviters_role() {
    let stack = Stack::start();
    let mut ada = logged_in(&stack, "ada@example.com");
    let org = ada
        .send("POST", "/v1/orgs", Some(json!({"name": "Acme"})))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let invitations = format!("/v1/orgs/{org}/invitations");
    let invite = |who: &mut crate::accounts::Browser, email: &str, role: &str| {
        let r = who.send(
            "POST",
            &invitations,
            Some(json!({"email": email, "role": role})),
        );
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    };

    // Listed for admins (never with the token), and withdrawn: the link stops working.
    invite(&mut ada, "bob@example.com", "developer");
    let bob_token = stack.mailed_token("bob@example.com");
    let listed = ada.send("GET", &invitations, None);
    assert_eq!(listed.status, 200);
    let pending = listed.json()["invitations"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["email"], "bob@example.com");
    assert_eq!(pending[0]["role"], "developer");
    assert!(!String::from_utf8_lossy(&listed.body).contains(&bob_token));
    let id = pending[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ada.send("DELETE", &format!("{invitations}/{id}"), None)
            .status,
        204
    );
    ada.send("DELETE", &format!("{invitations}/{id}"), None)
        .assert_problem(404);
    assert!(ada.send("GET", &invitations, None).json()["invitations"]
        .as_array()
        .unwrap()
        .is_empty());
    let mut bob = logged_in(&stack, "bob@example.com");
    bob.send(
        "POST",
        "/v1/invitations/accept",
        Some(json!({"token": bob_token})),
    )
    .assert_problem(400);

    // An admin invites; demoted before the invitation is accepted, the invitation lapses
    // (and stays unspent: it works again if the inviter is promoted back).
    invite(&mut ada, "carol@example.com", "admin");
    let token = stack.mailed_token("carol@example.com");
    let mut carol = logged_in(&stack, "carol@example.com");
    let joined = carol.send(
        "POST",
        "/v1/invitations/accept",
        Some(json!({"token": token})),
    );
    assert_eq!(joined.status, 200);
    let carol_id = carol.send("GET", "/auth/session", None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        carol.send("GET", &invitations, None).status,
        200,
        "admins list"
    );
    invite(&mut carol, "dave@example.com", "viewer");
    let dave_token = stack.mailed_token("dave@example.com");
    let carol_member = format!("/v1/orgs/{org}/members/{carol_id}");
    assert_eq!(
        ada.send("PUT", &carol_member, Some(json!({"role": "viewer"})))
            .status,
        204
    );
    carol.send("GET", &invitations, None).assert_problem(403);
    let mut dave = logged_in(&stack, "dave@example.com");
    let accept = json!({"token": dave_token});
    dave.send("POST", "/v1/invitations/accept", Some(accept.clone()))
        .assert_problem(403);
    assert_eq!(
        ada.send("PUT", &carol_member, Some(json!({"role": "admin"})))
            .status,
        204
    );
    let joined = dave.send("POST", "/v1/invitations/accept", Some(accept));
    assert_eq!(
        joined.status,
        200,
        "{}",
        String::from_utf8_lossy(&joined.body)
    );
    assert_eq!(joined.json()["role"], "viewer");
}
