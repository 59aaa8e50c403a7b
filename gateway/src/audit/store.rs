//! SQL for the audit trail. Portable between SQLite and PostgreSQL ($n placeholders, TEXT and
//! BIGINT only). Append, read, export and purge: there is deliberately no update.
//!
//! Ordering is by `(at, id)`: `at` alone has ties (many events per second), and the uuid breaks
//! them so keyset pagination neither repeats nor skips a row. Both backends compare `id` with
//! the same collation in `ORDER BY` and in the cursor condition, so the order is consistent
//! even where that collation is not bytewise.

use std::io::Write;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::task::JoinHandle;

use super::{AuditError, AuditEvent, SecurityEvent};
use crate::clock::Clock;

/// Largest page the query returns; larger requests are cut to it.
pub const MAX_PAGE: u32 = 200;
/// Rows per multi-row INSERT: 9 parameters each, well under SQLite's 999-parameter limit of
/// older builds.
const INSERT_CHUNK: usize = 50;
/// Rows read per round trip while exporting, so an export of a year holds one chunk in memory.
const EXPORT_CHUNK: i64 = 500;

const COLUMNS: &str =
    "id, at, event, principal_id, org_id, client, request_id, user_agent, details";

/// Append events in one transaction. Idempotent: an id already stored is skipped, so a retried
/// batch does not duplicate rows.
pub async fn insert(pool: &AnyPool, events: &[AuditEvent]) -> Result<(), AuditError> {
    let mut tx = pool.begin().await?;
    for chunk in events.chunks(INSERT_CHUNK) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p: Vec<String> = (1..=9).map(|j| format!("${}", i * 9 + j)).collect();
                format!("({})", p.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_events ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(e.id.clone())
                .bind(e.at)
                .bind(e.event.as_str())
                .bind(e.principal_id.clone())
                .bind(e.org_id.clone())
                .bind(e.client.map(|c| c.to_string()))
                .bind(e.request_id.clone())
                .bind(e.user_agent.clone())
                .bind(e.details_json());
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn event(row: &AnyRow) -> Result<AuditEvent, AuditError> {
    let name: String = row.try_get("event")?;
    let client: Option<String> = row.try_get("client")?;
    let details: String = row.try_get("details")?;
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        event: SecurityEvent::from_str(&name)?,
        principal_id: row.try_get("principal_id")?,
        org_id: row.try_get("org_id")?,
        // Only this module writes the column, from an IpAddr.
        client: client.and_then(|c| c.parse::<IpAddr>().ok()),
        request_id: row.try_get("request_id")?,
        user_agent: row.try_get("user_agent")?,
        details: serde_json::from_str(&details)?,
    })
}

/// Where the next page starts: the last `(at, id)` of the previous one. Opaque to clients as
/// `<at>.<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at, self.id)
    }
}

impl FromStr for Cursor {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Cursor, AuditError> {
        let (at, id) = s.split_once('.').ok_or(AuditError::BadCursor)?;
        let at = at.parse().map_err(|_| AuditError::BadCursor)?;
        // Ids are uuids; refusing anything else keeps odd input out of the query.
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(AuditError::BadCursor);
        }
        Ok(Cursor {
            at,
            id: id.to_owned(),
        })
    }
}

/// One page of events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    /// Present when there may be more: pass it back to get the next page.
    pub next_cursor: Option<Cursor>,
}

enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

/// WHERE clause builder: only the filters given appear, so no untyped NULL parameter reaches
/// PostgreSQL (whose planner cannot type `$1 IS NULL`).
#[derive(Default)]
struct Filter<'a> {
    clauses: Vec<String>,
    args: Vec<Arg<'a>>,
}

impl<'a> Filter<'a> {
    fn next(&self) -> usize {
        self.args.len() + 1
    }

    fn push(&mut self, clause: impl Into<String>, arg: Arg<'a>) {
        self.clauses.push(clause.into());
        self.args.push(arg);
    }

    fn eq(&mut self, column: &str, value: &'a str) {
        let n = self.next();
        self.push(format!("{column} = ${n}"), Arg::Text(value));
    }

    fn range(&mut self, from: Option<i64>, to: Option<i64>) {
        if let Some(from) = from {
            let n = self.next();
            self.push(format!("at >= ${n}"), Arg::Int(from));
        }
        if let Some(to) = to {
            let n = self.next();
            self.push(format!("at <= ${n}"), Arg::Int(to));
        }
    }

    /// Rows strictly after (`>`) or before (`<`) the cursor in `(at, id)` order.
    fn after(&mut self, cursor: &'a Cursor, op: &str) {
        let (a, b, c) = (self.next(), self.next() + 1, self.next() + 2);
        self.clauses
            .push(format!("(at {op} ${a} OR (at = ${b} AND id {op} ${c}))"));
        self.args.push(Arg::Int(cursor.at));
        self.args.push(Arg::Int(cursor.at));
        self.args.push(Arg::Text(&cursor.id));
    }

    fn sql(&self, tail: &str) -> String {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_events");
        if !self.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.clauses.join(" AND "));
        }
        sql.push(' ');
        sql.push_str(tail);
        sql
    }

    async fn fetch(&self, pool: &AnyPool, tail: &str) -> Result<Vec<AuditEvent>, AuditError> {
        let sql = self.sql(tail);
        let mut q = sqlx::query(&sql);
        for arg in &self.args {
            q = match arg {
                Arg::Int(i) => q.bind(*i),
                Arg::Text(s) => q.bind(*s),
            };
        }
        q.fetch_all(pool).await?.iter().map(event).collect()
    }
}

/// An org's events, newest first, for the org audit endpoint. `from` and `to` are inclusive
/// unix seconds; `event` filters by name; `limit` is clamped to 1..=[`MAX_PAGE`].
///
/// Keyset pagination on `(at, id)`: events inserted while a client pages through land before
/// its cursor (they are newer), so pages never repeat or skip a row.
pub async fn query(
    pool: &AnyPool,
    org_id: &str,
    from: Option<i64>,
    to: Option<i64>,
    event: Option<&str>,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<Page, AuditError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut f = Filter::default();
    f.eq("org_id", org_id);
    f.range(from, to);
    if let Some(event) = event {
        f.eq("event", event);
    }
    if let Some(cursor) = cursor {
        f.after(cursor, "<");
    }
    // One extra row says whether another page exists.
    let tail = format!("ORDER BY at DESC, id DESC LIMIT {}", i64::from(limit) + 1);
    let mut events = f.fetch(pool, &tail).await?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next_cursor = more.then(|| events.last()).flatten().map(|e| Cursor {
        at: e.at,
        id: e.id.clone(),
    });
    Ok(Page {
        events,
        next_cursor,
    })
}

/// Delete events strictly older than `retention_days` before `now_unix`; returns how many.
/// An event exactly at the boundary stays.
pub async fn purge(pool: &AnyPool, now_unix: i64, retention_days: u32) -> Result<u64, AuditError> {
    let cutoff = now_unix.saturating_sub(i64::from(retention_days) * 86_400);
    let done = sqlx::query("DELETE FROM audit_events WHERE at < $1")
        .bind(cutoff)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Purge now and then every `every`, on `clock`'s idea of the date. Failures are logged and
/// retried at the next tick. Abort the handle to stop.
pub fn spawn_retention(
    pool: AnyPool,
    clock: Arc<dyn Clock>,
    retention_days: u32,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = i64::try_from(clock.unix_seconds()).unwrap_or(i64::MAX);
            match purge(&pool, now, retention_days).await {
                Ok(deleted) => tracing::info!(
                    target: "zonegate::security",
                    event = "sys_audit_purged",
                    deleted,
                    retention_days
                ),
                Err(e) => tracing::error!(
                    target: "zonegate::security",
                    event = "sys_audit_purge_fail",
                    error = %e
                ),
            }
        }
    })
}

/// Write matching events as JSON lines, oldest first, for incident response. `from` and `to`
/// are inclusive unix seconds; `org` and `user` (principal id) narrow the set. Returns the
/// number of lines. Reads in chunks, so memory stays flat however long the range. `out` is a
/// blocking writer: pass a file or buffer, not a socket on the request path.
pub async fn export(
    pool: &AnyPool,
    from: i64,
    to: i64,
    org: Option<&str>,
    user: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let mut count = 0u64;
    let mut cursor: Option<Cursor> = None;
    let tail = format!("ORDER BY at ASC, id ASC LIMIT {EXPORT_CHUNK}");
    loop {
        let mut f = Filter::default();
        f.range(Some(from), Some(to));
        if let Some(org) = org {
            f.eq("org_id", org);
        }
        if let Some(user) = user {
            f.eq("principal_id", user);
        }
        if let Some(c) = &cursor {
            f.after(c, ">");
        }
        let events = f.fetch(pool, &tail).await?;
        for e in &events {
            out.write_all(e.to_json_line()?.as_bytes())?;
            out.write_all(b"\n")?;
            count += 1;
        }
        match events.last() {
            Some(last) if events.len() as i64 == EXPORT_CHUNK => {
                cursor = Some(Cursor {
                    at: last.at,
                    id: last.id.clone(),
                });
            }
            _ => break,
        }
    }
    out.flush()?;
    Ok(count)
}
