//! Microbenchmarks of the pipeline's stages on their hot paths:
//! `cargo bench -p zonegate --bench stages`. Numbers go to BENCHMARKS.md; no test asserts them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use zonegate::clock::SystemClock;
use zonegate::domain::apikeys::ApiKeys;
use zonegate::domain::audit::AuditLog;
use zonegate::domain::keyring::KeyRing;
use zonegate::domain::orgs::{OrgFacts, Role};
use zonegate::domain::policy::{CedarPrincipal, OrgContext, PolicyEngine, PolicyStore};
use zonegate::domain::principal::{Principal, UserPrincipal};
use zonegate::domain::storage::Db;
use zonegate::pipeline::authorise::decide;
use zonegate::pipeline::route::{Match, RouteTable};

fn policies() -> (PolicyEngine, RouteTable) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let store = PolicyStore::load(&root).unwrap();
    let routes = RouteTable::load(
        &root.join("routes.toml"),
        &BTreeSet::from(["zones".to_owned()]),
    )
    .unwrap();
    (PolicyEngine::new(store), routes)
}

fn cedar_decision(c: &mut Criterion) {
    let (engine, routes) = policies();
    let user = Principal::User(Arc::new(UserPrincipal {
        user_id: "7f1c2a9e-0000-4000-8000-000000000001".into(),
        email: "ada@example.com".into(),
        email_verified: true,
        mfa: false,
        session_id: "s".into(),
        family_id: "f".into(),
    }));
    let org = OrgContext {
        facts: OrgFacts {
            id: "0123456789abcdef0123456789abcdef".into(),
            suspended: false,
            require_mfa: false,
        },
        role: Some(Role::Developer),
        member_role: None,
    };
    let Match::Found(route, params) = routes.find(
        &http::Method::PUT,
        "/v1/orgs/0123456789abcdef0123456789abcdef/zones/3f0c9a2e-1d4b-4c5e-9f60-7a8b9c0d1e2f",
    ) else {
        panic!("route")
    };
    assert!(decide(&engine, &user, route, &params, Some(&org)).allowed);
    c.bench_function(
        "cedar decision (shipped policies, developer updates a zone)",
        |b| b.iter(|| decide(&engine, &user, route, &params, Some(&org))),
    );

    // The decision's parts, to see where the time goes.
    let resource = route.resource_uid(&params);
    c.bench_function("cedar part: build the entities", |b| {
        b.iter(|| zonegate::domain::policy::entities::build(&user, &resource, Some(&org)).unwrap())
    });
    let cache = zonegate::domain::policy::entities::EntityCache::default();
    c.bench_function(
        "cedar part: build the entities, caller's base cached",
        |b| {
            b.iter(|| {
                zonegate::domain::policy::entities::build_with(
                    &user,
                    &resource,
                    Some(&org),
                    Some(&cache),
                )
                .unwrap()
            })
        },
    );
    let entities = zonegate::domain::policy::entities::build(&user, &resource, Some(&org)).unwrap();
    let request = cedar_policy::Request::new(
        user.uid(),
        route.action.clone(),
        resource.clone(),
        cedar_policy::Context::empty(),
        None,
    )
    .unwrap();
    let store = engine.active();
    let slice = store
        .slice(&route.action, user.type_name(), resource.type_name())
        .unwrap()
        .clone();
    let authorizer = cedar_policy::Authorizer::new();
    c.bench_function(
        &format!(
            "cedar part: evaluate the {} policies of the slice",
            slice.policies().count()
        ),
        |b| b.iter(|| authorizer.is_authorized(&request, &slice, &entities)),
    );
}

fn route_and_sanitise(c: &mut Criterion) {
    let (_, routes) = policies();
    let path =
        "/v1/orgs/0123456789abcdef0123456789abcdef/zones/3f0c9a2e-1d4b-4c5e-9f60-7a8b9c0d1e2f";
    c.bench_function("canonical path check + route match", |b| {
        b.iter(|| {
            zonegate::pipeline::sanitise::canonical_path(path).unwrap();
            matches!(routes.find(&http::Method::GET, path), Match::Found(..))
        })
    });
}

fn api_key_verification(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let keys_dir = tmp.path().join("keys");
    KeyRing::init(&keys_dir).unwrap();
    let ring = KeyRing::load(&keys_dir).unwrap();
    let (keys, key) = rt.block_on(async {
        let db = Db::connect(&format!("sqlite://{}", tmp.path().join("b.db").display()), 2).await.unwrap();
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at, password_changed_at) VALUES ('u', 'u@x.example', 'x', 0, 0)")
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO orgs (id, name, created_by, created_at) VALUES ('o', 'O', 'u', 0)")
            .execute(db.pool())
            .await
            .unwrap();
        let (audit, _writer) = AuditLog::detached(db.clone(), Arc::new(SystemClock), 16);
        // A long revalidation interval: this measures the cache hit, not the database.
        let keys = ApiKeys::new(db, &ring, Arc::new(SystemClock), audit, 3600, 3600).unwrap();
        let issued = keys.create("o", "u", "bench", &["zones:read".to_owned()], None).await.unwrap();
        assert!(keys.verify(&issued.key).await.unwrap().is_some());
        (keys, issued.key)
    });
    c.bench_function(
        "api key verification (cache hit: parse, checksum, HMAC, compare)",
        |b| {
            b.to_async(&rt)
                .iter(|| async { keys.verify(&key).await.unwrap() })
        },
    );
}

/// The whole in-process pipeline of an API-key request, from the parsed head to the signed
/// head for the upstream: admit, sanitise, route, both throttles, authenticate (key cache
/// hit), authorise (org facts cached), and the forwarded head with its identity assertion.
/// What a request costs the gateway beside TLS and the network, so a regression shows here.
fn api_key_request_in_process(c: &mut Criterion) {
    use zonegate::pipeline::{forward, RequestCtx};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    KeyRing::init(&tmp.path().join("keys")).unwrap();
    zonegate::server::tls::ensure_dev_certificate(
        &tmp.path().join("cert.pem"),
        &tmp.path().join("key.pem"),
    )
    .unwrap();
    let config = format!(
        r#"public_origin = "https://localhost:8443"
[listen]
https = "127.0.0.1:1"
admin = "127.0.0.1:2"
[tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"
[paths]
data_dir = "{dir}"
key_dir = "{dir}/keys"
policies = "{root}/policies"
routes = "{root}/policies/routes.toml"
[upstreams.zones]
address = "127.0.0.1:3"
[accounts]
bcrypt_cost = 4
[rate_limits]
api_key = {{ requests = 1000000000, window_seconds = 60 }}
org = {{ requests = 1000000000, window_seconds = 60 }}
"#,
        dir = tmp.path().display(),
        root = root.display()
    );
    let config = zonegate::config::Config::parse(&config, Path::new("bench.toml")).unwrap();
    let prepared = zonegate::server::prepare(config, Arc::new(SystemClock)).unwrap();
    let pipeline = prepared.gateway.pipeline.clone();
    let outbox = zonegate::domain::mail::Outbox::new(tmp.path().join("outbox"));
    let (org, key) = rt.block_on(async {
        let s = &pipeline.services;
        s.accounts
            .signup("bench@example.com", "correct horse battery staple")
            .await
            .unwrap();
        let token = outbox.newest_link_to("bench@example.com").unwrap();
        s.accounts
            .verify_email(token.link_token().unwrap())
            .await
            .unwrap();
        let user = s
            .accounts
            .login(
                "bench@example.com",
                "correct horse battery staple",
                None,
                None,
            )
            .await
            .unwrap()
            .issued()
            .unwrap();
        let org = s.orgs.create(&user.user_id, "Bench").await.unwrap();
        let key = s
            .keys
            .create(
                &org.id,
                &user.user_id,
                "bench",
                &["zones:read".to_owned()],
                None,
            )
            .await
            .unwrap();
        (org.id, key.key.to_string())
    });
    let mut head = pingora::http::RequestHeader::build(
        "GET",
        format!("/v1/orgs/{org}/zones").as_bytes(),
        None,
    )
    .unwrap();
    head.insert_header("host", "localhost:8443").unwrap();
    head.insert_header("authorization", format!("Bearer {key}"))
        .unwrap();
    head.insert_header("user-agent", "bench/1").unwrap();
    head.insert_header("accept", "application/json").unwrap();
    let peer = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let run = || async {
        let mut req = head.clone();
        let mut ctx = RequestCtx::new(pipeline.request_ids.next());
        pipeline
            .check(&mut ctx, &mut req, None, peer)
            .await
            .unwrap();
        let upstream = pipeline.upstreams.get("zones").unwrap();
        forward::upstream_request(&pipeline, &ctx, upstream, &req, b"").unwrap()
    };
    rt.block_on(run());
    c.bench_function(
        "API-key request in process (admit .. authorise, signed upstream head)",
        |b| b.to_async(&rt).iter(run),
    );
}

/// Minting one identity assertion, each algorithm: HS256 (a shared key) against EdDSA (the
/// backend holds only a public key), both with a fresh `jti` and the empty body's digest.
fn identity_assertion(c: &mut Criterion) {
    use zonegate::domain::identity::{Algorithm, Signer, Subject, EMPTY_CONTENT_DIGEST};
    let tmp = tempfile::tempdir().unwrap();
    KeyRing::init(&tmp.path().join("keys")).unwrap();
    let ring = KeyRing::load(&tmp.path().join("keys")).unwrap();
    let principal = Principal::Anonymous;
    for (name, algorithm) in [
        ("identity assertion, HS256", Algorithm::Hs256),
        ("identity assertion, EdDSA", Algorithm::EdDsa),
    ] {
        let signer = Signer::new(
            &ring,
            algorithm,
            "zone-backend",
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        c.bench_function(name, |b| {
            b.iter(|| {
                signer
                    .sign(
                        Subject {
                            principal: &principal,
                            org: Some("0b7c1d2e-org"),
                            method: "GET",
                            target: "/v1/orgs/0b7c1d2e-org/zones",
                            request_id: "bafa4b8fc377205800000001",
                            content_digest: EMPTY_CONTENT_DIGEST,
                        },
                        1_800_000_000,
                    )
                    .unwrap()
            });
        });
    }
}

/// What a request adds outside the stages: its metrics (request count and latency, the
/// decision and its policy, the upstream exchange) and the head framing reader's pass over a
/// typical head. Compared with the whole request's CPU (BENCHMARKS.md), these say what the
/// metrics and the head limit cost.
fn per_request_bookkeeping(c: &mut Criterion) {
    use zonegate::domain::policy::Decision;
    use zonegate::pipeline::metrics::Metrics;
    use zonegate::server::heads::{Framing, HeadLimits};
    let metrics = Metrics::default();
    let decision = Decision {
        allowed: true,
        policies: vec!["apikey-zones-list".to_owned()],
        errors: Vec::new(),
        shadow: None,
        policy_hash: std::sync::Arc::from("hash"),
    };
    let method = http::Method::GET;
    let zones = metrics.for_upstream("zones");
    // The route's series as the route table holds them, bound once.
    let route = metrics.for_route(&"zones-list".into());
    c.bench_function("metrics of one forwarded API-key request", |b| {
        b.iter(|| {
            metrics.decision(&decision);
            if let Some(zones) = &zones {
                zones.exchange(true, std::time::Duration::from_micros(180));
            }
            metrics.request(
                Some(&route),
                Some(&method),
                200,
                std::time::Duration::from_micros(240),
                None,
            );
        });
    });
    let head = b"GET /v1/orgs/0b7c1d2e-org/zones HTTP/1.1\r\nhost: localhost:8443\r\n\
        authorization: Bearer zgk_0123456789abcdef0123456789abcdef0123456789abcdef\r\n\
        user-agent: wrk\r\naccept: */*\r\n\r\n";
    c.bench_function("head framing reader over one request head", |b| {
        b.iter(|| {
            let mut framing = Framing::new(HeadLimits {
                max_bytes: 32 * 1024,
                max_fields: 100,
            });
            framing.feed(std::hint::black_box(head));
            framing
        });
    });
}

criterion_group!(
    benches,
    cedar_decision,
    route_and_sanitise,
    api_key_verification,
    api_key_request_in_process,
    identity_assertion,
    per_request_bookkeeping
);
criterion_main!(benches);
