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

/// A Redis `host:port` from `ZONEGATE_TEST_REDIS_URL`, or `None` (saying so).
fn test_redis(test: &str) -> Option<std::net::SocketAddr> {
    let Ok(url) = std::env::var("ZONEGATE_TEST_REDIS_URL") else {
        eprintln!("ZONEGATE_TEST_REDIS_URL is not set: skipping {test}");
        return None;
    };
    let rest = url.split("://").nth(1).unwrap_or(&url);
    let host_port = rest.split(['/', '?']).next().unwrap();
    use std::net::ToSocketAddrs;
    Some(host_port.to_socket_addrs().unwrap().next().unwrap())
}

/// Ask readiness until `check` holds on it (bounded at 10 s).
fn ready_until(
    admin: std::net::SocketAddr,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let started = std::time::Instant::now();
    loop {
        let ready = readiness(admin);
        if check(&ready) {
            println!("{what}: after {} ms", started.elapsed().as_millis());
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}: readiness still {ready}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_limit_shared_through_redis_holds_across_instances_and_outlives_redis_going_away() {
    let Some(redis) = test_redis("the shared-limit test") else {
        return;
    };
    let Some(db) = ScratchDatabase::create("the shared-limit test") else {
        return;
    };
    // Redis behind a proxy the test can cut, as a network partition or a Redis restart would.
    let proxy = zonegate_e2e::tcp_proxy::TcpProxy::start(redis);
    let prefix = format!("zonegate-e2e-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start_with(StackOptions {
        extra_config: format!(
            "[database]\nurl = \"{}\"\n\n[redis]\nurl = \"redis://{}\"\ninstances = 3\nkey_prefix = \"{prefix}\"\n",
            db.url_via(db.server()),
            proxy.addr
        ),
        // 12 requests per key an hour: one refills every 5 minutes, far longer than the test.
        rate_limits: zonegate_e2e::stack::GENEROUS_RATE_LIMITS.replace(
            "api_key = { requests = 100000, window_seconds = 60 }",
            "api_key = { requests = 12, window_seconds = 3600 }",
        ),
        ..StackOptions::default()
    });
    let b = stack.start_peer("gateway-b");
    let c = stack.start_peer("gateway-c");
    let admins = [stack.admin, b.admin, c.admin];
    let origin = format!("https://localhost:{}", stack.https.port());
    let wrong_login = || {
        stack.client().request(
            "POST",
            "/auth/login",
            &[("content-type", "application/json"), ("origin", &origin)],
            Some(br#"{"email":"nobody@example.com","password":"not the password"}"#),
        )
    };
    for admin in admins {
        ready_until(admin, "shared limits up", |r| r["redis"]["status"] == "up");
    }
    let clients = [
        stack.client(),
        Client::new(b.https, &stack.cert),
        Client::new(c.https, &stack.cert),
    ];

    // 30 calls spread over the three instances: 12 admitted in all, not 12 each.
    let (mut ada, org) = owner_with_org(&stack);
    let (_, key) = create_key(&mut ada, &org, &["zones:read"]);
    let zones = format!("/v1/orgs/{org}/zones");
    let mut admitted = [0; 3];
    let mut refused = [0; 3];
    for i in 0..30 {
        let resp = with_key(&clients[i % 3], "GET", &zones, &key, None);
        match resp.status {
            200 => admitted[i % 3] += 1,
            429 => {
                assert_eq!(resp.header("ratelimit-policy"), Some("12;w=3600"));
                assert!(resp.header("retry-after").is_some());
                refused[i % 3] += 1;
            }
            other => panic!("call {i}: {other}"),
        }
    }
    assert_eq!(admitted.iter().sum::<i32>(), 12, "{admitted:?}");
    assert!(refused.iter().all(|r| *r > 0), "{refused:?}");

    // Redis goes away.
    proxy.cut();
    for admin in admins {
        ready_until(admin, "readiness fails without Redis", |r| {
            r["redis"]["status"] == "down" && r["status"] == "not ready"
        });
    }
    // The account routes fail closed: 503 with Retry-After, never an unlimited login.
    let login = wrong_login();
    login.assert_problem(503);
    assert!(login.header("retry-after").is_some());
    // API traffic goes on at each instance's share of the limit: 12 / 3 = 4 on A, whatever
    // Redis had counted.
    let on_a: Vec<u16> = (0..8)
        .map(|_| with_key(&clients[0], "GET", &zones, &key, None).status)
        .collect();
    assert_eq!(on_a.iter().filter(|s| **s == 200).count(), 4, "{on_a:?}");
    let past_share = with_key(&clients[0], "GET", &zones, &key, None);
    assert_eq!(past_share.status, 429);
    assert_eq!(past_share.header("ratelimit-policy"), Some("4;w=3600"));
    assert!(stack.gateway_logged("shared_limits_down"));
    assert!(b.log().contains("shared_limits_down"));

    // Redis is back: every instance counts in it again, where the key is still spent, and the
    // account routes answer again.
    proxy.restore();
    for admin in admins {
        ready_until(admin, "shared limits back", |r| {
            r["redis"]["status"] == "up" && r["status"] == "ready"
        });
    }
    for client in &clients {
        let resp = with_key(client, "GET", &zones, &key, None);
        assert_eq!(resp.status, 429);
        assert_eq!(resp.header("ratelimit-policy"), Some("12;w=3600"));
    }
    let login = wrong_login();
    assert_eq!(login.status, 401);
    assert!(stack.gateway_logged("shared_limits_up"));
}
