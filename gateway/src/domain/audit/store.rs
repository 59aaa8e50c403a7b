//! SQL for the audit trail, and [`AuditTrail`], the service that reads it (the org endpoint,
//! export, retention). Portable between SQLite and PostgreSQL (see
//! [`crate::domain::storage`]). Append, read, export and purge: there is deliberately no
//! update.
//!
//! Ordering is by `(at, seq)`: `at` (milliseconds) has ties, and `seq`, the table's own
//! sequence number, breaks them in the order events were written, so keyset pagination neither
//! repeats nor skips a row and events of one millisecond keep their order.

use std::io::Write;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{AuditError, AuditEvent, SecurityEvent};
use crate::clock::Clock;
use crate::domain::storage::Db;

/// Largest page the query returns; larger requests are cut to it.
pub const MAX_PAGE: u32 = 200;
/// Rows per multi-row INSERT: 9 parameters each, well under SQLite's 999-parameter limit of
/// older builds.
const INSERT_CHUNK: usize = 50;
/// Rows read per round trip while exporting, so an export of a year holds one chunk in memory.
const EXPORT_CHUNK: i64 = 500;

/// The columns written; `seq` is assigned by the database.
const COLUMNS: &str =
    "id, at, event, principal_id, org_id, client, request_id, user_agent, details";

/// Milliseconds in a day, for retention.
const DAY_MS: i64 = 86_400_000;

/// Append events in one transaction, in order. Idempotent: an id already stored is skipped, so
/// a retried batch does not duplicate rows.
pub async fn insert(db: &Db, events: &[AuditEvent]) -> Result<(), AuditError> {
    let mut tx = db.begin().await?;
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

/// One stored event, as read.
#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    seq: i64,
    id: String,
    at: i64,
    event: String,
    principal_id: Option<String>,
    org_id: Option<String>,
    client: Option<String>,
    request_id: Option<String>,
    user_agent: Option<String>,
    details: String,
}

impl EventRow {
    /// The event and its position. A row this module did not write (an unknown name, bad JSON)
    /// is an error, not skipped: an audit reader must not silently lose rows.
    fn into_event(self) -> Result<(AuditEvent, Cursor), AuditError> {
        let cursor = Cursor {
            at: self.at,
            seq: self.seq,
        };
        let event = AuditEvent {
            event: SecurityEvent::from_str(&self.event)?,
            details: serde_json::from_str(&self.details)
                .map_err(|_| AuditError::Corrupt(self.id.clone()))?,
            id: self.id,
            at: self.at,
            principal_id: self.principal_id,
            org_id: self.org_id,
            // Only this module writes the column, from an IpAddr.
            client: self.client.and_then(|c| c.parse::<IpAddr>().ok()),
            request_id: self.request_id,
            user_agent: self.user_agent,
        };
        Ok((event, cursor))
    }
}

/// Where the next page starts: the last `(at, seq)` of the previous one. Opaque to clients as
/// `<at>.<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub seq: i64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Cursor, AuditError> {
        let (at, seq) = s.split_once('.').ok_or(AuditError::BadCursor)?;
        let number = |v: &str| -> Result<i64, AuditError> {
            if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AuditError::BadCursor);
            }
            v.parse().map_err(|_| AuditError::BadCursor)
        };
        Ok(Cursor {
            at: number(at)?,
            seq: number(seq)?,
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

    /// Rows strictly after (`>`) or before (`<`) the cursor in `(at, seq)` order.
    fn after(&mut self, cursor: &Cursor, op: &str) {
        let (a, b, c) = (self.next(), self.next() + 1, self.next() + 2);
        self.clauses
            .push(format!("(at {op} ${a} OR (at = ${b} AND seq {op} ${c}))"));
        self.args.push(Arg::Int(cursor.at));
        self.args.push(Arg::Int(cursor.at));
        self.args.push(Arg::Int(cursor.seq));
    }

    fn sql(&self, tail: &str) -> String {
        let mut sql = format!("SELECT seq, {COLUMNS} FROM audit_events");
        if !self.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.clauses.join(" AND "));
        }
        sql.push(' ');
        sql.push_str(tail);
        sql
    }

    async fn fetch(&self, db: &Db, tail: &str) -> Result<Vec<(AuditEvent, Cursor)>, AuditError> {
        let sql = self.sql(tail);
        let mut q = sqlx::query_as::<_, EventRow>(&sql);
        for arg in &self.args {
            q = match arg {
                Arg::Int(i) => q.bind(*i),
                Arg::Text(s) => q.bind(*s),
            };
        }
        q.fetch_all(db.pool())
            .await?
            .into_iter()
            .map(EventRow::into_event)
            .collect()
    }
}

/// What an org's admin asks of its trail: an inclusive time range in Unix milliseconds, an
/// event name, where to continue, and a page size (clamped to 1..=[`MAX_PAGE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub event: Option<SecurityEvent>,
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

/// The stored trail: reading, exporting and purging it.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    db: Db,
}

impl AuditTrail {
    pub fn new(db: Db) -> AuditTrail {
        AuditTrail { db }
    }

    /// An org's events, newest first.
    ///
    /// Keyset pagination on `(at, seq)`: events inserted while a client pages through land
    /// before its cursor (they are newer), so pages never repeat or skip a row.
    pub async fn query(&self, org_id: &str, q: &OrgQuery) -> Result<Page, AuditError> {
        self.search(Some(org_id), None, q).await
    }

    /// Events of every org (or of `org`, or acting principal `principal`), newest first: the
    /// platform's view of the trail. Paged as [`Self::query`].
    pub async fn search(
        &self,
        org: Option<&str>,
        principal: Option<&str>,
        q: &OrgQuery,
    ) -> Result<Page, AuditError> {
        let limit = q.limit.clamp(1, MAX_PAGE);
        let mut f = Filter::default();
        if let Some(org) = org {
            f.eq("org_id", org);
        }
        if let Some(principal) = principal {
            f.eq("principal_id", principal);
        }
        f.range(q.from, q.to);
        if let Some(event) = q.event {
            f.eq("event", event.as_str());
        }
        if let Some(cursor) = &q.cursor {
            f.after(cursor, "<");
        }
        // One extra row says whether another page exists.
        let tail = format!("ORDER BY at DESC, seq DESC LIMIT {}", i64::from(limit) + 1);
        let mut rows = f.fetch(&self.db, &tail).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more.then(|| rows.last().map(|(_, c)| *c)).flatten();
        Ok(Page {
            events: rows.into_iter().map(|(e, _)| e).collect(),
            next_cursor,
        })
    }

    /// Delete events strictly older than `retention_days` before `now_millis`; returns how
    /// many. An event exactly at the boundary stays.
    pub async fn purge(&self, now_millis: i64, retention_days: u32) -> Result<u64, AuditError> {
        let cutoff = now_millis.saturating_sub(i64::from(retention_days) * DAY_MS);
        let done = sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(cutoff)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Purge now and then every `every`, on `clock`'s idea of the date. Failures are logged
    /// and retried at the next tick. Abort the handle to stop.
    pub fn spawn_retention(
        &self,
        clock: Arc<dyn Clock>,
        retention_days: u32,
        every: Duration,
    ) -> JoinHandle<()> {
        let trail = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = i64::try_from(clock.unix_millis()).unwrap_or(i64::MAX);
                match trail.purge(now, retention_days).await {
                    Ok(deleted) => tracing::info!(
                        target: "zonegate::audit",
                        event = "audit_purged",
                        deleted,
                        retention_days
                    ),
                    Err(e) => tracing::error!(
                        target: "zonegate::audit",
                        event = "audit_purge_fail",
                        error = %e
                    ),
                }
            }
        })
    }

    /// Write matching events as JSON lines, oldest first, for incident response. `from` and
    /// `to` are inclusive Unix milliseconds; `org` and `user` (principal id) narrow the set.
    /// Returns the number of lines. Reads in chunks, so memory stays flat however long the
    /// range. `out` is a blocking writer: pass a file or buffer, not a socket on the request
    /// path.
    pub async fn export(
        &self,
        from: i64,
        to: i64,
        org: Option<&str>,
        user: Option<&str>,
        out: &mut impl Write,
    ) -> Result<u64, AuditError> {
        let mut count = 0u64;
        let mut cursor: Option<Cursor> = None;
        let tail = format!("ORDER BY at ASC, seq ASC LIMIT {EXPORT_CHUNK}");
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
            let rows = f.fetch(&self.db, &tail).await?;
            for (e, _) in &rows {
                out.write_all(e.to_json_line()?.as_bytes())?;
                out.write_all(b"\n")?;
                count += 1;
            }
            match rows.last() {
                Some((_, last)) if rows.len() as i64 == EXPORT_CHUNK => cursor = Some(*last),
                _ => break,
            }
        }
        out.flush()?;
        Ok(count)
    }
}
