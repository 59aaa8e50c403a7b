//! Several gateway instances on one PostgreSQL database, as a fleet runs behind a load
//! balancer: what one instance revokes, the others refuse on the database's notification,
//! though their caches would trust it for an hour; a policy reload on one reaches the others.
//! Skipped, saying so, without `ZONEGATE_TEST_POSTGRES_URL`.

use serde_json::json;
use zonegate_e2e::client::plain_get;
use zonegate_e2e::pg::ScratchDatabase;
use zonegate_e2e::{Client, Response, Stack, StackOptions};

use crate::accounts::logged_in;
use crate::apikeys::{create_key, owner_with_org, with_key};
use crate::mfa::{code_at, now, password_step, with_totp};

/// Ask until `ask` answers `status` (bounded far below the caches' hour); prints how long it
/// took, a measurement for the record, not an assertion.
fn eventually(what: &str, status: u16, mut ask: impl FnMut() -> Response) {
    let started = std::time::Instant::now();
    let mut last = 0;
    for _ in 0..500 {
        last = ask().status;
        if last == status {
            println!(
                "{what}: {status} after {} ms",
                started.elapsed().as_millis()
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{what}: still {last} after 5 s, not {status}");
}

fn readiness(admin: std::net::SocketAddr) -> serde_json::Value {
    let r = plain_get(admin, "/readyz", &[]).unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn what_one_instance_revokes_every_other_refuses_at_once() {
    let Some(db) = ScratchDatabase::create("the cluster test") else {
        return;
    };
    let Some(zones_db) = ScratchDatabase::create("the cluster test (zone backend)") else {
        return;
    };
    let stack = Stack::start_with(StackOptions {
        extra_config: format!("[database]\nurl = \"{}\"\n", db.url_via(db.server())),
        // Without a notification, the others would trust their caches for an hour.
        accounts_config: "cache_revalidate_seconds = 3600\n".into(),
        // The zone backend shares PostgreSQL too.
        backend_database: Some(zones_db.url_via(zones_db.server())),
        ..StackOptions::default()
    });
    let b = stack.start_peer("gateway-b");
    let c = stack.start_peer("gateway-c");
    let (on_b, on_c) = (
        Client::new(b.https, &stack.cert),
        Client::new(c.https, &stack.cert),
    );
    for admin in [stack.admin, b.admin, c.admin] {
        let ready = readiness(admin);
        assert_eq!(ready["invalidation"]["status"], "listening", "{ready}");
        assert!(ready["invalidation"]["queue_usage"].is_number(), "{ready}");
    }

    // Made on A, used (and cached) on B and C.
    let (mut ada, org) = owner_with_org(&stack);
    let (key_id, key) = create_key(&mut ada, &org, &["zones:read"]);
    let zones = format!("/v1/orgs/{org}/zones");
    for client in [&on_b, &on_c] {
        assert_eq!(with_key(client, "GET", &zones, &key, None).status, 200);
    }
    // A zone written through A (to the backend on PostgreSQL) is read through C.
    let square = json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 50.0], [11.0, 51.0], [10.0, 51.0], [10.0, 50.0]]]});
    let created = ada.send(
        "POST",
        &zones,
        Some(json!({"name": "Centre", "area": square})),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let listed = with_key(&on_c, "GET", &zones, &key, None);
    assert_eq!(listed.json()["zones"][0]["name"], "Centre");

    // Revoked on A: refused on B and C without waiting out their caches.
    assert_eq!(
        ada.send("DELETE", &format!("/v1/orgs/{org}/api-keys/{key_id}"), None)
            .status,
        204
    );
    for client in [&on_b, &on_c] {
        eventually("the revoked key on another instance", 401, || {
            with_key(client, "GET", &zones, &key, None)
        });
    }

    // A session used on B, ended on A (logout): refused on B.
    let cookie = format!("__Host-zonegate-session={}", ada.session_cookie().unwrap());
    let session_on_b = || on_b.request("GET", &zones, &[("cookie", cookie.as_str())], None);
    assert_eq!(session_on_b().status, 200);
    assert!(ada.send("POST", "/auth/logout", None).status < 300);
    eventually("the ended session on another instance", 401, session_on_b);

    // One TOTP code replayed on all three instances at once: exactly one login succeeds.
    let mut bob = logged_in(&stack, "bob@example.com");
    let (secret, _) = with_totp(&stack, "bob@example.com", &mut bob);
    // The step after the one `with_totp` logged in with (accepted within the clock skew).
    let code = code_at(&secret, now() + 30);
    let pending: Vec<String> = (0..3)
        .map(|_| password_step(&stack, "bob@example.com").pending.unwrap())
        .collect();
    let origin = format!("https://localhost:{}", stack.https.port());
    let body = serde_json::to_vec(&serde_json::json!({ "code": code })).unwrap();
    let cert = &stack.cert;
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let tries: Vec<_> = [stack.https, b.https, c.https]
            .into_iter()
            .zip(&pending)
            .map(|(addr, pending)| {
                let (origin, body) = (&origin, &body);
                s.spawn(move || {
                    let cookie = format!("__Host-zonegate-mfa={pending}");
                    Client::new(addr, cert)
                        .request(
                            "POST",
                            "/auth/login/totp",
                            &[
                                ("cookie", cookie.as_str()),
                                ("origin", origin.as_str()),
                                ("content-type", "application/json"),
                            ],
                            Some(body),
                        )
                        .status
                })
            })
            .collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "one code, three instances: {statuses:?}"
    );

    // A policy set reloaded on A is the set B and C enforce, without touching them.
    let before = readiness(b.admin)["policy_hash"].clone();
    let extra = stack.policies.join("cluster.cedar");
    std::fs::write(
        &extra,
        "// Nobody reads security.txt (a change to tell policy sets apart).\n@id(\"cluster-test\")\nforbid (principal, action == Zonegate::Action::\"security-txt\", resource);\n",
    )
    .unwrap();
    let reloaded = zonegate_e2e::client::plain(
        stack.admin,
        "POST /policies/reload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        reloaded.status,
        200,
        "{}",
        String::from_utf8_lossy(&reloaded.body)
    );
    let hash = readiness(stack.admin)["policy_hash"].clone();
    assert_ne!(hash, before);
    for admin in [b.admin, c.admin] {
        let mut seen = serde_json::Value::Null;
        for _ in 0..100 {
            seen = readiness(admin)["policy_hash"].clone();
            if seen == hash {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(seen, hash, "another instance reloads the announced set");
    }
    assert!(readiness(b.admin)["faults"].as_array().unwrap().is_empty());
}
