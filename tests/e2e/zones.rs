//! The zone API through the gateway: CRUD, coverage, cross-org isolation and bad input.

use serde_json::json;
use zonegate_e2e::Stack;

/// A square around (lon 10..11, lat 50..51).
fn square() -> serde_json::Value {
    json!({
        "type": "Polygon",
        "coordinates": [[[10.0, 50.0], [11.0, 50.0], [11.0, 51.0], [10.0, 51.0], [10.0, 50.0]]]
    })
}

#[test]
fn zone_crud_and_coverage_through_the_gateway() {
    let stack = Stack::start();
    let c = stack.client();
    let created = c.send_json(
        "POST",
        "/v1/orgs/acme/zones",
        &json!({"name": "Centre", "area": square()}),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let zone = created.json();
    let id = zone["id"].as_str().unwrap().to_owned();
    assert_eq!(zone["org"], "acme");
    assert_eq!(zone["name"], "Centre");

    let list = c.get("/v1/orgs/acme/zones").json();
    assert_eq!(list["zones"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get(&format!("/v1/orgs/acme/zones/{id}")).json()["id"],
        id.as_str()
    );

    let inside = c.get("/v1/orgs/acme/coverage?lat=50.5&lon=10.5").json();
    assert_eq!(inside["zones"][0]["id"], id.as_str());
    let outside = c.get("/v1/orgs/acme/coverage?lat=52.5&lon=10.5").json();
    assert_eq!(outside["zones"].as_array().unwrap().len(), 0);

    let updated = c.send_json(
        "PUT",
        &format!("/v1/orgs/acme/zones/{id}"),
        &json!({"name": "Centre-North", "area": square()}),
    );
    assert_eq!(updated.status, 200);
    assert_eq!(updated.json()["name"], "Centre-North");

    let deleted = c.request("DELETE", &format!("/v1/orgs/acme/zones/{id}"), &[], None);
    assert_eq!(deleted.status, 204);
    c.get(&format!("/v1/orgs/acme/zones/{id}"))
        .assert_problem(404);
}

#[test]
fn one_org_never_sees_or_touches_another_orgs_zones() {
    let stack = Stack::start();
    let c = stack.client();
    let acme = c.send_json(
        "POST",
        "/v1/orgs/acme/zones",
        &json!({"name": "A", "area": square()}),
    );
    let id = acme.json()["id"].as_str().unwrap().to_owned();

    assert_eq!(
        c.get("/v1/orgs/globex/zones").json()["zones"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    c.get(&format!("/v1/orgs/globex/zones/{id}"))
        .assert_problem(404);
    c.send_json(
        "PUT",
        &format!("/v1/orgs/globex/zones/{id}"),
        &json!({"name": "x", "area": square()}),
    )
    .assert_problem(404);
    c.request("DELETE", &format!("/v1/orgs/globex/zones/{id}"), &[], None)
        .assert_problem(404);
    let cov = c.get("/v1/orgs/globex/coverage?lat=50.5&lon=10.5").json();
    assert_eq!(cov["zones"].as_array().unwrap().len(), 0);

    // Still there, unchanged, for its owner.
    assert_eq!(
        c.get(&format!("/v1/orgs/acme/zones/{id}")).json()["name"],
        "A"
    );
}

#[test]
fn bad_input_is_a_4xx_problem_and_stores_nothing() {
    let stack = Stack::start();
    let c = stack.client();
    let path = "/v1/orgs/acme/zones";
    let json_ct = [("content-type", "application/json")];
    c.request("POST", path, &json_ct, Some(b"{not json"))
        .assert_problem(400);
    c.request("POST", path, &[("content-type", "text/plain")], Some(b"{}"))
        .assert_problem(415);
    let big = vec![b' '; 300 * 1024];
    c.request("POST", path, &json_ct, Some(&big))
        .assert_problem(413);
    let invalid = [
        json!({"name": "x", "area": square(), "colour": "red"}),
        json!({"name": "", "area": square()}),
        json!({"name": "x"}),
        json!({"name": "x", "area": {"type": "Point", "coordinates": [10.0, 50.0]}}),
        json!({"name": "x", "area": {"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 50.0], [10.0, 50.0]]]}}),
        json!({"name": "x", "area": {"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 50.0], [11.0, 51.0], [10.0, 51.0]]]}}),
        json!({"name": "x", "area": {"type": "Polygon", "coordinates": [[[190.0, 50.0], [191.0, 50.0], [191.0, 51.0], [190.0, 50.0]]]}}),
        json!({"name": "x", "area": {"type": "Polygon", "coordinates": [[[10.0, 95.0], [11.0, 95.0], [11.0, 96.0], [10.0, 95.0]]]}}),
        json!({"name": "x", "area": {"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 51.0], [11.0, 50.0], [10.0, 51.0], [10.0, 50.0]]]}}),
    ];
    for body in &invalid {
        let resp = c.send_json("POST", path, body);
        assert!(
            (400..500).contains(&resp.status),
            "{body} got {}",
            resp.status
        );
        resp.assert_problem(resp.status);
    }
    for query in [
        "lat=abc&lon=1",
        "lat=91&lon=1",
        "lat=1",
        "lat=1&lon=181",
        "lat=NaN&lon=1",
    ] {
        c.get(&format!("/v1/orgs/acme/coverage?{query}"))
            .assert_problem(400);
    }
    assert_eq!(
        c.get(path).json()["zones"].as_array().unwrap().len(),
        0,
        "nothing was stored"
    );
}
