//! The decision log: what a record holds (and never holds), the round trip through JSON and the
//! table (SQLite always, PostgreSQL when `ZONEGATE_TEST_POSTGRES_URL` is set), and the replay's
//! fixed point: the log replayed against the set that made it changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use super::replay::{Facts, Replay};
use super::*;
use crate::clock::ManualClock;
use crate::domain::policy::{member_uid, org_uid, tables, PolicyEngine, PolicyStore};
use crate::domain::storage::testdb::{backends, database};

fn shipped() -> PolicyEngine {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    PolicyEngine::new(PolicyStore::load(&root).unwrap())
}

fn user(id: &str, verified: bool, mfa: bool) -> Principal {
    Principal::User(Arc::new(UserPrincipal {
        user_id: id.into(),
        email: format!("{id}-secret-mail@example.com"),
        email_verified: verified,
        mfa,
        session_id: format!("{id}-session-id"),
        family_id: format!("{id}-family-id"),
    }))
}

fn key(id: &str, org: &str, scopes: &[&str]) -> Principal {
    Principal::ApiKey(Arc::new(ApiKeyPrincipal {
        key_id: id.into(),
        org_id: org.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }))
}

fn org(id: &str, role: Option<Role>) -> OrgContext {
    OrgContext {
        facts: OrgFacts {
            id: id.into(),
            suspended: false,
            require_mfa: false,
        },
        role,
        member_role: None,
    }
}

/// Decide and record, as the pipeline does.
fn decided(
    engine: &PolicyEngine,
    principal: &Principal,
    action: &str,
    resource: EntityUid,
    org: Option<&OrgContext>,
    context: Option<&serde_json::Map<String, serde_json::Value>>,
    n: u32,
) -> DecisionRecord {
    let action = tables::action_uid(action).unwrap();
    let query = Query {
        principal,
        action: &action,
        resource,
        org,
        context: context.map(|c| policy::json_context(c).unwrap()),
    };
    let decision = engine.decide(&query);
    DecisionRecord::of(
        &Entry {
            request_id: &format!("req-{n}"),
            route: "some.route",
            query: &query,
            context,
            decision: &decision,
        },
        format!("id-{n:04}"),
        1_800_000_000_000 + i64::from(n),
    )
}

#[test]
fn a_record_holds_what_cedar_read_and_nothing_secret() {
    let engine = shipped();
    let ada = user("ada", true, true);
    let r = decided(
        &engine,
        &ada,
        "zones:create",
        org_uid("acme"),
        Some(&org("acme", Some(Role::Developer))),
        None,
        1,
    );
    assert_eq!(r.decision, Effect::Allow);
    assert_eq!(r.action, "zones:create");
    assert_eq!(r.resource.type_name, "Zonegate::Org");
    assert_eq!(r.policy_hash, engine.active_hash());
    assert!(!r.policies.is_empty());
    let json = serde_json::to_string(&r).unwrap();
    for secret in ["secret-mail", "session-id", "family-id"] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
    let back: DecisionRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert!(
        serde_json::from_str::<DecisionRecord>(&json.replace("\"route\"", "\"rout\"")).is_err()
    );
}

fn replay_unchanged(engine: &PolicyEngine, records: &[DecisionRecord]) -> replay::Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut replay = Replay::new(engine, engine, Facts::AsLogged);
    for r in records {
        // Through JSON, as an export is read back.
        let r: DecisionRecord = serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap();
        rt.block_on(replay.add(&r)).unwrap();
    }
    replay.report()
}

fn shared_engine() -> &'static PolicyEngine {
    static ENGINE: std::sync::OnceLock<PolicyEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(shipped)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The fixed point of `policy diff`: whatever was logged, replayed on the set that decided
    /// it (rebuilt from the logged inputs alone), changes nothing and drifts nowhere.
    #[test]
    fn replaying_the_log_against_the_unchanged_set_reports_no_change(
        questions in proptest::collection::vec(
            (0usize..4, 0usize..5, proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY,
             proptest::bool::ANY, 0usize..8, 0usize..3, 0usize..4),
            1..40,
        )
    ) {
        let engine = shared_engine();
        let actions = ["zones:list", "zones:create", "zones:delete", "members:update",
                       "members:invite", "apikeys:revoke", "orgs:update", "coverage:read"];
        let mut records = Vec::new();
        for (n, (who, role, verified, mfa, suspended, require_mfa, action, resource, granted))
            in questions.into_iter().enumerate()
        {
            let principal = match who {
                0 => Principal::Anonymous,
                1 => key("k1", "acme", &["zones:read", "zones:write"]),
                2 => key("k2", "other", &["coverage:read"]),
                _ => user("u1", verified, mfa),
            };
            let mut o = org("acme", Role::ALL.get(role).copied());
            o.facts.suspended = suspended;
            o.facts.require_mfa = require_mfa;
            o.member_role = Role::ALL.get(granted).copied();
            let resource = match resource {
                0 => org_uid("acme"),
                1 => r#"Zonegate::Zone::"z1""#.parse().unwrap(),
                _ => member_uid("u9"),
            };
            // Handlers' questions carry context (the role an invitation grants, new settings).
            let mut context = serde_json::Map::new();
            match actions[action] {
                "members:invite" | "members:update" => {
                    context.insert("role".into(), Role::ALL[granted].as_str().into());
                }
                "orgs:update" => {
                    context.insert("require_mfa".into(), require_mfa.into());
                }
                _ => {}
            }
            let context = (!context.is_empty()).then_some(&context);
            records.push(decided(engine, &principal, actions[action], resource, Some(&o), context, n as u32));
        }
        let report = replay_unchanged(engine, &records);
        proptest::prop_assert_eq!(report.replayed, records.len() as u64);
        proptest::prop_assert_eq!(report.unchanged, report.replayed);
        proptest::prop_assert_eq!(report.drift, 0);
        proptest::prop_assert!(!report.widens());
    }
}

#[tokio::test]
async fn records_round_trip_through_the_table_selected_by_time_org_and_route() {
    let engine = shipped();
    for backend in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, _guard) = database(backend, tmp.path(), 4).await;
        let table = DecisionTable::new(db.clone());
        let ada = user("ada", true, false);
        let mut records: Vec<DecisionRecord> = (0..5)
            .map(|n| {
                let org_id = if n % 2 == 0 { "acme" } else { "other" };
                decided(
                    &engine,
                    &ada,
                    "zones:list",
                    org_uid(org_id),
                    Some(&org(org_id, Some(Role::Viewer))),
                    None,
                    n,
                )
            })
            .collect();
        records[4].route = "zones.create".into();
        // Inserted twice: a retried batch must not duplicate.
        table.insert(&records).await.unwrap();
        table.insert(&records[..2]).await.unwrap();

        let all = Selection::default();
        let (read, _) = table.read(&all, None).await.unwrap();
        assert_eq!(read, records, "{backend:?}");
        let acme = Selection {
            org: Some("acme".into()),
            ..Selection::default()
        };
        let (read, _) = table.read(&acme, None).await.unwrap();
        assert_eq!(
            read.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["id-0000", "id-0002", "id-0004"]
        );
        assert!(read.iter().all(|r| acme.matches(r)));
        let window = Selection {
            from: Some(records[1].at),
            to: Some(records[3].at),
            route: Some("some.route".into()),
            ..Selection::default()
        };
        let (read, _) = table.read(&window, None).await.unwrap();
        assert_eq!(read.len(), 3);
        assert!(!window.matches(&records[4]));

        let mut out = Vec::new();
        assert_eq!(table.export(&all, &mut out).await.unwrap(), 5);
        let lines: Vec<DecisionRecord> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, records);

        // Retention: a millisecond past 30 days after the third record, the first three go;
        // one exactly at the boundary stays.
        let now = records[2].at + 30 * 86_400_000 + 1;
        assert_eq!(table.purge(now, 30).await.unwrap(), 3, "{backend:?}");
        let (read, _) = table.read(&all, None).await.unwrap();
        assert_eq!(read, records[3..], "{backend:?}");
    }
}

/// A decision log holding at most `max_pending` questions per window, on a fresh SQLite
/// table (kept in the returned directory), its clock stopped.
async fn sqlite_log(
    max_pending: usize,
) -> (
    DecisionLog,
    DecisionTable,
    Arc<ManualClock>,
    tempfile::TempDir,
) {
    let tmp = tempfile::tempdir().unwrap();
    let (db, guard) = database(
        crate::domain::storage::testdb::Backend::Sqlite,
        tmp.path(),
        2,
    )
    .await;
    // Only PostgreSQL databases need dropping at the end.
    assert!(guard.is_none());
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let table = DecisionTable::new(db);
    let (log, _writer) = DecisionLog::new(
        table.clone(),
        clock.clone(),
        max_pending,
        std::time::Duration::from_secs(10),
    );
    (log, table, clock, tmp)
}

#[tokio::test]
async fn identical_decisions_in_a_window_are_one_record_with_a_count() {
    let (log, table, clock, _tmp) = sqlite_log(2).await;
    let engine = shipped();
    let ask = |principal: &Principal, request_id: &str| {
        let action = tables::action_uid("zones:list").unwrap();
        let o = org("acme", Some(Role::Viewer));
        let query = Query {
            principal,
            action: &action,
            resource: org_uid("acme"),
            org: Some(&o),
            context: None,
        };
        let decision = engine.decide(&query);
        log.record(Entry {
            request_id,
            route: "zones-list",
            query: &query,
            context: None,
            decision: &decision,
        });
    };
    let ada = user("ada", true, false);
    for n in 0..7 {
        ask(&ada, &format!("r{n}"));
        clock.advance_millis(10);
    }
    // A fresh principal value for the same user and attributes: the same record.
    ask(&user("ada", true, false), "r7");
    // With a second factor the question differs.
    ask(&user("ada", true, true), "m0");
    // The window holds two distinct questions: a third is dropped and counted.
    ask(&user("bob", true, false), "b0");
    assert_eq!(log.dropped(), 1);

    log.flush().await.unwrap();
    let (read, _) = table.read(&Selection::default(), None).await.unwrap();
    assert_eq!(read.len(), 2, "{read:#?}");
    let ada_plain = read.iter().find(|r| r.count > 1).unwrap();
    assert_eq!(ada_plain.count, 8);
    assert_eq!(ada_plain.request_ids, ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(ada_plain.at, 1_800_000_000_000);
    assert_eq!(ada_plain.last_at, 1_800_000_000_070);
    assert_eq!(ada_plain.decision, Effect::Allow);

    // The window was emptied: a flush stores nothing new, and the next window starts afresh.
    log.flush().await.unwrap();
    ask(&user("bob", true, false), "b1");
    log.flush().await.unwrap();
    let (read, _) = table.read(&Selection::default(), None).await.unwrap();
    assert_eq!(read.len(), 3);

    let off = DecisionLog::off();
    assert!(!off.enabled());
    off.flush().await.unwrap();
}

/// The window's hash leaves out the action and the resource's type (a route names one of
/// each): questions that differ only there share a chain and are still two records.
#[tokio::test]
async fn questions_differing_only_in_action_or_resource_type_are_two_records() {
    let (log, table, _clock, _tmp) = sqlite_log(10).await;
    let engine = shipped();
    let ada = user("ada", true, false);
    let o = org("acme", Some(Role::Viewer));
    let zone: EntityUid = r#"Zonegate::Zone::"acme""#.parse().unwrap();
    // One answer for all, so that only the question tells them apart.
    let mut decision = None;
    for (action, resource) in [
        ("zones:list", org_uid("acme")),
        ("zones:create", org_uid("acme")),
        ("zones:list", zone),
        ("zones:list", org_uid("acme")),
    ] {
        let action = tables::action_uid(action).unwrap();
        let query = Query {
            principal: &ada,
            action: &action,
            resource,
            org: Some(&o),
            context: None,
        };
        let decision = decision.get_or_insert_with(|| engine.decide(&query));
        log.record(Entry {
            request_id: "r",
            route: "one-route",
            query: &query,
            context: None,
            decision,
        });
    }
    log.flush().await.unwrap();
    let (read, _) = table.read(&Selection::default(), None).await.unwrap();
    let mut counts: Vec<u64> = read.iter().map(|r| r.count).collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2], "{read:#?}");
}

#[tokio::test]
async fn a_window_of_distinct_long_ids_is_bounded_in_memory() {
    let (log, _table, _clock, _tmp) = sqlite_log(50_000).await;
    let engine = shipped();
    let ada = user("ada", true, false);
    let o = org("acme", Some(Role::Viewer));
    let action = tables::action_uid("zones:read").unwrap();
    // Distinct 16 KiB zone ids, as a caller with long paths could send.
    for n in 0..3000 {
        let resource: EntityUid = format!(r#"Zonegate::Zone::"{n}-{}""#, "z".repeat(16 * 1024))
            .parse()
            .unwrap();
        let query = Query {
            principal: &ada,
            action: &action,
            resource,
            org: Some(&o),
            context: None,
        };
        let decision = engine.decide(&query);
        log.record(Entry {
            request_id: "r",
            route: "zones-read",
            query: &query,
            context: None,
            decision: &decision,
        });
    }
    let kept = 3000 - log.dropped();
    assert!(
        log.dropped() > 0,
        "the byte bound applies before max_pending"
    );
    assert!(
        kept * 2 * 16 * 1024 <= 64 << 20,
        "{kept} records of 16 KiB ids"
    );
}
