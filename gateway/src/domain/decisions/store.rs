//! SQL for the decision log (`decision_log`), portable between SQLite and PostgreSQL. A row is
//! the record as JSON plus the columns it is selected by (time, org, route; `request_id` holds
//! the first of the record's request ids); ordered by
//! `(at, id)`, which is unique, so reading in chunks neither repeats nor skips a row.

use std::io::Write;

use super::{DecisionLogError, DecisionRecord};
use crate::domain::storage::Db;

/// Rows per multi-row INSERT: 8 parameters each.
const INSERT_CHUNK: usize = 50;
/// Rows read per round trip, so a month of decisions is read with flat memory.
pub const READ_CHUNK: i64 = 1000;
const DAY_MS: i64 = 86_400_000;

/// Which logged decisions to read: an inclusive time range in Unix milliseconds, an org, a
/// route. Empty fields select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub org: Option<String>,
    pub route: Option<String>,
}

impl Selection {
    /// Whether a record (read from an exported file) is selected.
    pub fn matches(&self, r: &DecisionRecord) -> bool {
        self.from.is_none_or(|from| r.at >= from)
            && self.to.is_none_or(|to| r.at <= to)
            && self
                .org
                .as_deref()
                .is_none_or(|org| r.org.as_ref().is_some_and(|o| o.id == org))
            && self.route.as_deref().is_none_or(|route| r.route == route)
    }
}

/// Where the next chunk starts: the last `(at, id)` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    at: i64,
    id: String,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    at: i64,
    record: String,
}

/// The stored decision log.
#[derive(Debug, Clone)]
pub struct DecisionTable {
    db: Db,
}

impl DecisionTable {
    pub fn new(db: Db) -> DecisionTable {
        DecisionTable { db }
    }

    /// Append records in one transaction. Idempotent by id, so a retried batch does not
    /// duplicate rows.
    pub async fn insert(&self, records: &[DecisionRecord]) -> Result<(), DecisionLogError> {
        let mut tx = self.db.begin().await?;
        for chunk in records.chunks(INSERT_CHUNK) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p: Vec<String> = (1..=8).map(|j| format!("${}", i * 8 + j)).collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO decision_log (id, at, request_id, route, org_id, principal_kind, decision, record) \
                 VALUES {} ON CONFLICT (id) DO NOTHING",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.id.clone())
                    .bind(r.at)
                    .bind(r.request_ids.first().cloned().unwrap_or_default())
                    .bind(r.route.clone())
                    .bind(r.org.as_ref().map(|o| o.id.clone()))
                    .bind(r.principal.kind())
                    .bind(if r.decision.allowed() {
                        "allow"
                    } else {
                        "deny"
                    })
                    .bind(serde_json::to_string(r)?);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The next chunk of selected records after `after` (from the start when `None`), oldest
    /// first, with the position to continue from; an empty chunk ends the reading.
    pub async fn read(
        &self,
        selection: &Selection,
        after: Option<&Position>,
    ) -> Result<(Vec<DecisionRecord>, Option<Position>), DecisionLogError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut ints: Vec<(usize, i64)> = Vec::new();
        let mut texts: Vec<(usize, String)> = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if let Some(from) = selection.from {
            let i = next();
            clauses.push(format!("at >= ${i}"));
            ints.push((i, from));
        }
        if let Some(to) = selection.to {
            let i = next();
            clauses.push(format!("at <= ${i}"));
            ints.push((i, to));
        }
        if let Some(org) = &selection.org {
            let i = next();
            clauses.push(format!("org_id = ${i}"));
            texts.push((i, org.clone()));
        }
        if let Some(route) = &selection.route {
            let i = next();
            clauses.push(format!("route = ${i}"));
            texts.push((i, route.clone()));
        }
        if let Some(p) = after {
            let (a, b, c) = (next(), next(), next());
            clauses.push(format!("(at > ${a} OR (at = ${b} AND id > ${c}))"));
            ints.push((a, p.at));
            ints.push((b, p.at));
            texts.push((c, p.id.clone()));
        }
        let mut sql = "SELECT id, at, record FROM decision_log".to_owned();
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY at ASC, id ASC LIMIT {READ_CHUNK}"));
        // Bind in placeholder order.
        let mut args: Vec<(usize, Result<i64, String>)> = ints
            .into_iter()
            .map(|(i, v)| (i, Ok(v)))
            .chain(texts.into_iter().map(|(i, v)| (i, Err(v))))
            .collect();
        args.sort_by_key(|(i, _)| *i);
        let mut q = sqlx::query_as::<_, Row>(&sql);
        for (_, arg) in args {
            q = match arg {
                Ok(i) => q.bind(i),
                Err(s) => q.bind(s),
            };
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        let position = rows.last().map(|r| Position {
            at: r.at,
            id: r.id.clone(),
        });
        let records = rows
            .into_iter()
            .map(|r| {
                serde_json::from_str::<DecisionRecord>(&r.record)
                    .map_err(|_| DecisionLogError::Corrupt(r.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, position))
    }

    /// Write the selected records as JSON lines, oldest first; returns how many.
    pub async fn export(
        &self,
        selection: &Selection,
        out: &mut impl Write,
    ) -> Result<u64, DecisionLogError> {
        let mut count = 0;
        let mut after = None;
        loop {
            let (records, position) = self.read(selection, after.as_ref()).await?;
            for r in &records {
                serde_json::to_writer(&mut *out, r)?;
                out.write_all(b"\n")?;
                count += 1;
            }
            if (records.len() as i64) < READ_CHUNK {
                break;
            }
            after = position;
        }
        out.flush()?;
        Ok(count)
    }

    /// Delete records strictly older than `retention_days` before `now_millis`; returns how
    /// many.
    pub async fn purge(
        &self,
        now_millis: i64,
        retention_days: u32,
    ) -> Result<u64, DecisionLogError> {
        let cutoff = now_millis.saturating_sub(i64::from(retention_days) * DAY_MS);
        let done = sqlx::query("DELETE FROM decision_log WHERE at < $1")
            .bind(cutoff)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
