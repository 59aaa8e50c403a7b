//! Audit trail tests: event names, escaping, the non-blocking log, and storage against SQLite
//! always and PostgreSQL when `ZONEGATE_TEST_POSTGRES_URL` is set. Time is a [`ManualClock`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::store::{insert, MAX_PAGE};
use super::*;
use crate::clock::ManualClock;
use crate::domain::storage::testdb::{backends, database, Backend, PgDatabase};
use crate::domain::storage::Db;

/// 2027-01-15T08:00:00Z, in milliseconds (audit times are milliseconds).
const T0: i64 = 1_800_000_000_000;
const SECOND: i64 = 1_000;
const DAY: i64 = 86_400_000;

fn clock_at_t0() -> ManualClock {
    ManualClock::at((T0 / SECOND) as u64)
}

// ---- Fixture (as in accounts/tests.rs) ---------------------------------------------------

struct Fixture {
    pool: Db,
    trail: AuditTrail,
    _tmp: tempfile::TempDir,
    _db: Option<PgDatabase>,
}

async fn fixture(backend: Backend) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (pool, db) = database(backend, tmp.path(), 4).await;
    Fixture {
        trail: AuditTrail::new(pool.clone()),
        pool,
        _tmp: tmp,
        _db: db,
    }
}

/// An org's page, as the endpoint asks for it.
async fn query(
    f: &Fixture,
    org: &str,
    from: Option<i64>,
    to: Option<i64>,
    event: Option<SecurityEvent>,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<Page, AuditError> {
    f.trail
        .query(
            org,
            &OrgQuery {
                from,
                to,
                event,
                cursor: cursor.copied(),
                limit,
            },
        )
        .await
}

fn ev(kind: SecurityEvent, at: i64, org: &str) -> AuditEvent {
    AuditEvent::new(kind).at(at).org(org)
}

async fn count(db: &Db) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events")
        .fetch_one(db.pool())
        .await
        .unwrap();
    n
}

// ---- Names and formatting ----------------------------------------------------------------

#[test]
fn event_names_are_stable_unique_and_round_trip() {
    let mut seen = HashSet::new();
    for e in SecurityEvent::ALL {
        let name = e.as_str();
        assert!(seen.insert(name), "duplicate name {name}");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        assert_eq!(name.parse::<SecurityEvent>().unwrap(), *e);
    }
    // The names dashboards and alerts rely on, from the OWASP vocabulary.
    assert_eq!(SecurityEvent::LoginSuccess.as_str(), "authn_login_success");
    assert_eq!(SecurityEvent::LoginFail.as_str(), "authn_login_fail");
    assert_eq!(SecurityEvent::LoginLock.as_str(), "authn_login_lock");
    assert_eq!(SecurityEvent::RefreshReuse.as_str(), "authn_token_reuse");
    assert_eq!(SecurityEvent::SessionCreated.as_str(), "session_created");
    assert_eq!(SecurityEvent::AuthzFail.as_str(), "authz_fail");
    assert_eq!(
        SecurityEvent::RateLimitExceeded.as_str(),
        "excess_rate_limit_exceeded"
    );
    assert!("authn_nonsense".parse::<SecurityEvent>().is_err());
}

#[test]
fn json_has_unix_and_rfc3339_time() {
    let e = AuditEvent::new(SecurityEvent::ApiKeyRevoked)
        .at(T0)
        .principal("user-1")
        .org("org-1")
        .client("192.0.2.7".parse().unwrap())
        .detail("key_id", "k1");
    let v: serde_json::Value = serde_json::from_str(&e.to_json_line().unwrap()).unwrap();
    assert_eq!(v["at"], T0);
    assert_eq!(v["time"], "2027-01-15T08:00:00.000Z");
    assert_eq!(v["event"], "authn_apikey_revoked");
    assert_eq!(v["client"], "192.0.2.7");
    assert_eq!(v["details"]["key_id"], "k1");
    assert!(v["request_id"].is_null());
}

#[test]
fn user_agent_is_truncated_and_details_bounded() {
    let e = AuditEvent::new(SecurityEvent::LoginFail).user_agent(&"é".repeat(1000));
    assert_eq!(e.user_agent.unwrap().chars().count(), USER_AGENT_MAX_CHARS);
    let big = AuditEvent::new(SecurityEvent::LoginFail).detail("x", "y".repeat(5000));
    assert_eq!(big.details_json(), r#"{"truncated":true}"#);
}

/// A writer for captured log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// An AuditLog with no writer task: the queue is only inspected.
fn detached(queue: usize) -> (AuditLog, mpsc::Receiver<Msg>, Arc<ManualClock>) {
    let clock = Arc::new(clock_at_t0());
    let (tx, rx) = mpsc::channel(queue);
    (AuditLog::with_sender(tx, clock.clone()), rx, clock)
}

const HOSTILE_UA: &str = "Mozilla/5.0\r\n{\"event\":\"authn_login_success\"}\n\u{1b}[31mred";

fn hostile_event() -> AuditEvent {
    AuditEvent::new(SecurityEvent::LoginFail)
        .principal("user\r\n-1")
        .user_agent(HOSTILE_UA)
        .request_id("req\n1")
        .detail("reason", "bad\r\npassword")
}

#[test]
fn crlf_in_user_input_never_reaches_a_log_line_raw() {
    for json in [true, false] {
        let (log, mut rx, _clock) = detached(64);
        let out = Captured::default();
        let writer = out.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_target(true);
        let dispatch: tracing::Dispatch = if json {
            builder.json().flatten_event(true).finish().into()
        } else {
            builder.finish().into()
        };
        // Interest in a callsite is cached process-wide, and other tests record without a
        // subscriber in parallel, so an event can be filtered out by a stale cache. Retry a
        // few times; every attempt is one call to `record` with a fresh buffer.
        for _ in 0..50 {
            out.0.lock().unwrap().clear();
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::callsite::rebuild_interest_cache();
                log.record(hostile_event());
            });
            if !out.text().is_empty() {
                break;
            }
            std::thread::yield_now();
        }
        let text = out.text();
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(text.ends_with('\n'));
        assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("zonegate::security"));
        assert!(text.contains("authn_login_fail"));
        if json {
            let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(line["event"], "authn_login_fail");
            assert_eq!(line["time"], "2027-01-15T08:00:00.000Z");
            // The escape is visible, not interpreted.
            assert!(line["user_agent"].as_str().unwrap().contains("\\r\\n"));
        }

        // The queued (to be stored) copy holds no raw control character either.
        let Some(Msg::Event(stored)) = rx.try_recv().ok() else {
            panic!("event queued")
        };
        while rx.try_recv().is_ok() {}
        for field in [
            stored.user_agent.as_deref(),
            stored.principal_id.as_deref(),
            stored.request_id.as_deref(),
            Some(stored.details_json().as_str()),
            Some(stored.to_json_line().unwrap().as_str()),
        ] {
            let field = field.unwrap();
            assert!(!field.chars().any(char::is_control), "{field:?}");
        }
        assert_eq!(
            stored.user_agent.as_deref(),
            Some("Mozilla/5.0\\r\\n{\"event\":\"authn_login_success\"}\\n\\u{1b}[31mred")
        );
    }
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let (log, mut rx, _clock) = detached(2);
    for n in 0..5 {
        log.record(AuditEvent::new(SecurityEvent::LoginFail).detail("n", n));
    }
    assert_eq!(log.dropped(), 3);
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_err());
    // A stopped writer is the same: logged, counted, no error to the caller.
    drop(rx);
    log.record(AuditEvent::new(SecurityEvent::LoginFail));
    assert_eq!(log.dropped(), 4);
}

#[test]
fn access_noise_leaves_the_last_tenth_of_the_queue_to_other_events() {
    let (log, mut rx, _clock) = detached(20);
    // Distinct denials (each its own route), far more than the queue holds.
    for n in 0..100 {
        log.record(AuditEvent::new(SecurityEvent::AuthzFail).detail("route", n));
    }
    assert_eq!(log.dropped(), 82, "18 queued, two slots kept free");
    log.record(AuditEvent::new(SecurityEvent::ApiKeyRevoked));
    log.record(AuditEvent::new(SecurityEvent::LoginLock));
    assert_eq!(log.dropped(), 82, "the reserved slots took both");
    let mut queued = Vec::new();
    while let Ok(Msg::Event(e)) = rx.try_recv() {
        queued.push(e.event);
    }
    assert_eq!(queued.len(), 20);
    assert_eq!(
        &queued[18..],
        [SecurityEvent::ApiKeyRevoked, SecurityEvent::LoginLock]
    );
}

#[test]
fn a_flood_of_one_denial_is_stored_as_the_first_and_one_counted_summary() {
    let (log, mut rx, clock) = detached(64);
    let denial = || {
        AuditEvent::new(SecurityEvent::AuthzFail)
            .principal("stranger")
            .org("victim")
            .detail("route", "zones-list")
            .user_agent(&"x".repeat(1000))
    };
    for _ in 0..300 {
        log.record(denial());
        clock.advance_millis(3);
    }
    log.sweep_repeats();
    let mut stored = Vec::new();
    while let Ok(Msg::Event(e)) = rx.try_recv() {
        stored.push(e);
    }
    assert_eq!(
        stored.len(),
        1,
        "the window is still open: one event so far"
    );
    assert_eq!(
        stored[0].user_agent.as_deref().map(|u| u.chars().count()),
        Some(USER_AGENT_MAX_CHARS)
    );
    clock.advance(60);
    log.sweep_repeats();
    let Ok(Msg::Event(summary)) = rx.try_recv() else {
        panic!("a summary after the window")
    };
    assert_eq!(summary.event, SecurityEvent::AuthzFail);
    assert_eq!(summary.details["repeated"], 299);
    assert_eq!(summary.org_id.as_deref(), Some("victim"));
    assert_eq!(
        summary.at,
        T0 + 300 * 3 + 60 * SECOND,
        "stamped when recorded"
    );
    assert_eq!(log.dropped(), 0);
}

// ---- Storage -----------------------------------------------------------------------------

#[tokio::test]
async fn record_and_flush_store_the_event_with_the_clock_time() {
    for backend in backends() {
        let f = fixture(backend).await;
        let clock = Arc::new(clock_at_t0());
        let (log, writer) = AuditLog::spawn(f.pool.clone(), clock.clone(), 64);
        log.record(hostile_event().org("org-1"));
        clock.advance(5);
        for i in 0..300 {
            log.record(
                AuditEvent::new(SecurityEvent::RateLimitExceeded)
                    .org("org-1")
                    .detail("n", i),
            );
            if i % 32 == 0 {
                // Let the writer keep up: this test is about storage, not drops.
                log.flush().await.unwrap();
            }
        }
        log.flush().await.unwrap();
        assert_eq!(log.dropped(), 0, "{backend:?}");
        assert_eq!(count(&f.pool).await, 301, "{backend:?}");

        let page = query(&f, "org-1", None, Some(T0), None, None, 10)
            .await
            .unwrap();
        assert_eq!(page.events.len(), 1, "{backend:?}");
        let stored = &page.events[0];
        assert_eq!(stored.at, T0);
        assert_eq!(stored.event, SecurityEvent::LoginFail);
        assert_eq!(
            stored.user_agent.as_deref(),
            Some("Mozilla/5.0\\r\\n{\"event\":\"authn_login_success\"}\\n\\u{1b}[31mred")
        );
        assert!(!stored.to_json_line().unwrap().contains(['\r', '\n']));
        assert_eq!(stored.details["reason"], "bad\\r\\npassword");

        // Dropping the last handle ends the writer after the queue drains.
        log.record(AuditEvent::new(SecurityEvent::PolicyReloaded));
        drop(log);
        writer.await.unwrap();
        assert_eq!(count(&f.pool).await, 302, "{backend:?}");
    }
}

#[tokio::test]
async fn insert_is_idempotent_by_id() {
    for backend in backends() {
        let f = fixture(backend).await;
        let e = ev(SecurityEvent::LoginSuccess, T0, "org-1");
        insert(&f.pool, std::slice::from_ref(&e)).await.unwrap();
        insert(
            &f.pool,
            &[e.clone(), ev(SecurityEvent::LoginFail, T0, "org-1")],
        )
        .await
        .unwrap();
        assert_eq!(count(&f.pool).await, 2, "{backend:?}");
    }
}

#[tokio::test]
async fn query_pages_newest_first_without_repeats_under_inserts() {
    for backend in backends() {
        let f = fixture(backend).await;
        // 25 events for org-1, several per second (ties on `at`), and noise in org-2.
        let mine: Vec<AuditEvent> = (0..25)
            .map(|i| ev(SecurityEvent::AuthzFail, T0 + i / 3, "org-1"))
            .collect();
        let theirs: Vec<AuditEvent> = (0..5)
            .map(|i| ev(SecurityEvent::AuthzFail, T0 + i, "org-2"))
            .collect();
        insert(&f.pool, &mine).await.unwrap();
        insert(&f.pool, &theirs).await.unwrap();

        let mut expected = mine.clone();
        expected.sort_by_key(|e| std::cmp::Reverse(e.at));

        let mut got = Vec::new();
        let mut cursor: Option<Cursor> = None;
        let mut pages = 0;
        loop {
            let page = query(&f, "org-1", None, None, None, cursor.as_ref(), 10)
                .await
                .unwrap();
            pages += 1;
            got.extend(page.events.iter().map(|e| e.id.clone()));
            if pages == 1 {
                // Newer events arriving mid-pagination must not shift later pages.
                let newer: Vec<AuditEvent> = (0..7)
                    .map(|_| ev(SecurityEvent::AuthzFail, T0 + 100, "org-1"))
                    .collect();
                insert(&f.pool, &newer).await.unwrap();
            }
            // Cursors survive a round trip through their string form.
            cursor = page
                .next_cursor
                .map(|c| c.encode().parse::<Cursor>().unwrap());
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(pages, 3, "{backend:?}");
        let unique: HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "no repeats ({backend:?})");
        // Ties on `at` are ordered by the sequence number, consistently with the cursor: the
        // pages are exactly the original rows, newest first by `at`.
        assert_eq!(got.len(), 25, "{backend:?}");
        let ats: Vec<i64> = expected.iter().map(|e| e.at).collect();
        let by_id: std::collections::HashMap<_, _> =
            mine.iter().map(|e| (e.id.clone(), e.at)).collect();
        let got_ats: Vec<i64> = got.iter().map(|id| by_id[id]).collect();
        assert_eq!(got_ats, ats, "{backend:?}");
    }
}

#[tokio::test]
async fn query_filters_and_clamps_the_limit() {
    for backend in backends() {
        let f = fixture(backend).await;
        let mut rows: Vec<AuditEvent> = (0..210)
            .map(|i| ev(SecurityEvent::LoginFail, T0 + i * SECOND, "org-1"))
            .collect();
        rows.push(ev(SecurityEvent::LoginLock, T0 + 50 * SECOND, "org-1"));
        insert(&f.pool, &rows).await.unwrap();

        let page = query(&f, "org-1", None, None, None, None, 10_000)
            .await
            .unwrap();
        assert_eq!(page.events.len(), MAX_PAGE as usize, "{backend:?}");
        let page = query(&f, "org-1", None, None, None, None, 0).await.unwrap();
        assert_eq!(page.events.len(), 1, "{backend:?}");
        assert_eq!(page.events[0].at, T0 + 209 * SECOND);

        let locks = query(
            &f,
            "org-1",
            None,
            None,
            Some(SecurityEvent::LoginLock),
            None,
            50,
        )
        .await
        .unwrap();
        assert_eq!(locks.events.len(), 1, "{backend:?}");
        assert_eq!(locks.next_cursor, None);

        // from and to are inclusive.
        let window = query(
            &f,
            "org-1",
            Some(T0 + 10 * SECOND),
            Some(T0 + 19 * SECOND),
            Some(SecurityEvent::LoginFail),
            None,
            50,
        )
        .await
        .unwrap();
        assert_eq!(window.events.len(), 10, "{backend:?}");
        assert_eq!(window.events[0].at, T0 + 19 * SECOND);
        assert_eq!(window.events[9].at, T0 + 10 * SECOND);

        let other = query(&f, "org-2", None, None, None, None, 50)
            .await
            .unwrap();
        assert!(other.events.is_empty());
        assert_eq!(other.next_cursor, None);
    }
}

#[test]
fn malformed_cursors_are_refused() {
    for bad in [
        "",
        "12",
        "x.abc",
        "12.",
        "12.a b",
        "12.1;drop",
        "12.ä",
        "-1.2",
        "1.99999999999999999999",
    ] {
        assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
    }
    let c: Cursor = "1800000000000.42".parse().unwrap();
    assert_eq!((c.at, c.seq), (1_800_000_000_000, 42));
    assert_eq!(c.encode(), "1800000000000.42");
}

#[tokio::test]
async fn events_of_one_millisecond_keep_the_order_they_were_recorded_in() {
    for backend in backends() {
        let f = fixture(backend).await;
        let clock = Arc::new(clock_at_t0());
        let (log, writer) = AuditLog::spawn(f.pool.clone(), clock.clone(), 64);
        for i in 0..20 {
            log.record(
                AuditEvent::new(SecurityEvent::AuthzFail)
                    .org("org-1")
                    .detail("n", i),
            );
        }
        log.flush().await.unwrap();
        let page = query(&f, "org-1", None, None, None, None, 50)
            .await
            .unwrap();
        let order: Vec<i64> = page
            .events
            .iter()
            .map(|e| e.details["n"].as_i64().unwrap())
            .collect();
        // Newest first: the reverse of the recording order, though every `at` is equal.
        assert_eq!(order, (0..20).rev().collect::<Vec<_>>(), "{backend:?}");
        assert!(page.events.iter().all(|e| e.at == T0));
        drop(log);
        writer.await.unwrap();
    }
}

#[tokio::test]
async fn purge_deletes_only_rows_outside_the_retention_window() {
    for backend in backends() {
        let f = fixture(backend).await;
        let clock = clock_at_t0();
        let keep_days = 365;
        let edge = T0 - keep_days * DAY;
        insert(
            &f.pool,
            &[
                ev(SecurityEvent::LoginFail, edge - 1, "org-1"), // just outside: goes
                ev(SecurityEvent::LoginFail, edge - 10 * DAY, "org-1"), // goes
                ev(SecurityEvent::LoginFail, edge, "org-1"),     // exactly 12 months: stays
                ev(SecurityEvent::LoginFail, edge + 1, "org-1"), // just inside: stays
                ev(SecurityEvent::LoginFail, T0, "org-1"),
            ],
        )
        .await
        .unwrap();
        let now = clock.unix_millis() as i64;
        assert_eq!(
            f.trail.purge(now, keep_days as u32).await.unwrap(),
            2,
            "{backend:?}"
        );
        assert_eq!(count(&f.pool).await, 3);
        assert_eq!(f.trail.purge(now, keep_days as u32).await.unwrap(), 0);

        // A day later the boundary row has aged out too.
        clock.advance((DAY / SECOND) as u64);
        let now = clock.unix_millis() as i64;
        assert_eq!(
            f.trail.purge(now, keep_days as u32).await.unwrap(),
            2,
            "{backend:?}"
        );
        assert_eq!(count(&f.pool).await, 1);
    }
}

#[tokio::test]
async fn retention_task_purges_on_its_clock() {
    for backend in backends() {
        let f = fixture(backend).await;
        let clock = Arc::new(clock_at_t0());
        insert(
            &f.pool,
            &[
                ev(SecurityEvent::LoginFail, T0 - 31 * DAY, "org-1"),
                ev(SecurityEvent::LoginFail, T0 - 29 * DAY, "org-1"),
            ],
        )
        .await
        .unwrap();
        // The first tick is immediate; the period is long so only that one runs.
        let task = f
            .trail
            .spawn_retention(clock, 30, Duration::from_secs(3600));
        let mut left = count(&f.pool).await;
        for _ in 0..100 {
            if left == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            left = count(&f.pool).await;
        }
        task.abort();
        assert_eq!(left, 1, "{backend:?}");
    }
}

#[tokio::test]
async fn export_writes_json_lines_oldest_first() {
    for backend in backends() {
        let f = fixture(backend).await;
        // More than one export chunk (500) for org-1/user-1, plus rows that must not appear.
        let mut rows: Vec<AuditEvent> = (0..1_100)
            .map(|i| {
                ev(SecurityEvent::SessionCreated, T0 + i / 2 * SECOND, "org-1").principal("user-1")
            })
            .collect();
        rows.push(ev(SecurityEvent::SessionCreated, T0, "org-1").principal("user-2"));
        rows.push(ev(SecurityEvent::SessionCreated, T0, "org-2").principal("user-1"));
        rows.push(ev(SecurityEvent::SessionCreated, T0 - 1, "org-1").principal("user-1"));
        insert(&f.pool, &rows).await.unwrap();

        let mut out = Vec::new();
        let n = f
            .trail
            .export(
                T0,
                T0 + 10_000 * SECOND,
                Some("org-1"),
                Some("user-1"),
                &mut out,
            )
            .await
            .unwrap();
        assert_eq!(n, 1_100, "{backend:?}");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1_100);
        let ids: HashSet<_> = lines
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1_100, "no repeats across chunks ({backend:?})");
        let ats: Vec<i64> = lines.iter().map(|l| l["at"].as_i64().unwrap()).collect();
        assert!(ats.windows(2).all(|w| w[0] <= w[1]), "ascending time");
        assert!(lines
            .iter()
            .all(|l| l["org_id"] == "org-1" && l["principal_id"] == "user-1"));

        // Without filters: everything in the range.
        let mut all = Vec::new();
        let n = f
            .trail
            .export(T0 - 1, T0 + 10_000 * SECOND, None, None, &mut all)
            .await
            .unwrap();
        assert_eq!(n, 1_103, "{backend:?}");
    }
}

/// README's table of security events names exactly the events the code records.
#[test]
fn readme_lists_every_security_event_and_no_other() {
    let readme = include_str!("../../../../README.md");
    let section = readme
        .split("### Security events")
        .nth(1)
        .expect("README has a Security events section");
    let documented: HashSet<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("| event"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    let coded: HashSet<&str> = SecurityEvent::ALL.iter().map(|e| e.as_str()).collect();
    let missing: Vec<_> = coded.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&coded).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README's event table is out of date: missing {missing:?}, not in the code {stale:?}"
    );
}

/// Security events reach the log only through `AuditLog::record` (which also stores them):
/// no other code logs on the `zonegate::security` target.
#[test]
fn only_the_audit_log_writes_security_events() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let target = ["target: \"zonegate", "::security\""].concat();
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("domain/audit/mod.rs"))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(&target))
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "{offenders:?}");
}
