//! `zonegate decisions export`: the decision log as JSON lines, so `zonegate policy diff
//! --input` can run where the database is not reachable (a policy repository's CI).
//!
//! Times are RFC 3339 (`2027-01-15T00:00:00Z`) or a span back from now (`7d`, `24h`, `30m`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use zonegate_common::time::parse_rfc3339_millis;

use super::{fail, output};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domain::decisions::{DecisionRecord, DecisionTable, Selection};
use crate::domain::storage::Db;

#[derive(Debug, Subcommand)]
pub(super) enum DecisionsCommand {
    /// Write logged decisions as JSON lines, oldest first.
    Export {
        #[command(flatten)]
        select: SelectArgs,
        /// Output file (created, or truncated); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, env = "ZONEGATE_CONFIG", default_value = "config/zonegate.toml")]
        config: PathBuf,
    },
}

/// Which logged decisions: a time range, an org, a route.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SelectArgs {
    /// Start, inclusive: RFC 3339 or a span back from now (7d, 24h, 30m). Default: all.
    #[arg(long)]
    pub from: Option<String>,
    /// End, inclusive, like --from. Default: now.
    #[arg(long)]
    pub to: Option<String>,
    /// Only decisions about this org.
    #[arg(long)]
    pub org: Option<String>,
    /// Only decisions on this route (its name in the route table).
    #[arg(long)]
    pub route: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum DecisionsCliError {
    #[error("--{0} must be an RFC 3339 time (2027-01-15T00:00:00Z) or a span back from now (7d, 24h, 30m)")]
    Time(&'static str),
    #[error("--from must not be after --to")]
    Range,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a decision record: {message}")]
    Record {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

/// A time as the commands take it, in Unix milliseconds.
fn parse_when(text: &str, now_millis: i64, arg: &'static str) -> Result<i64, DecisionsCliError> {
    if let Some(t) = parse_rfc3339_millis(text) {
        return Ok(t);
    }
    let unit = match text.chars().last() {
        Some('d') => 86_400_000,
        Some('h') => 3_600_000,
        Some('m') => 60_000,
        _ => return Err(DecisionsCliError::Time(arg)),
    };
    let amount: i64 = text[..text.len() - 1]
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or(DecisionsCliError::Time(arg))?;
    Ok(now_millis.saturating_sub(amount.saturating_mul(unit)))
}

impl SelectArgs {
    pub(super) fn selection(&self) -> Result<Selection, DecisionsCliError> {
        let now = i64::try_from(SystemClock.unix_millis()).unwrap_or(i64::MAX);
        let from = self
            .from
            .as_deref()
            .map(|t| parse_when(t, now, "from"))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|t| parse_when(t, now, "to"))
            .transpose()?;
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(DecisionsCliError::Range);
            }
        }
        Ok(Selection {
            from,
            to,
            org: self.org.clone(),
            route: self.route.clone(),
        })
    }
}

/// A current-thread runtime for a command.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, DecisionsCliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DecisionsCliError::Runtime)
}

/// The selected records of an exported file, in file order.
pub(super) fn read_file(
    path: &Path,
    selection: &Selection,
) -> Result<Vec<DecisionRecord>, DecisionsCliError> {
    let text = std::fs::read_to_string(path).map_err(|source| DecisionsCliError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: DecisionRecord =
            serde_json::from_str(line).map_err(|e| DecisionsCliError::Record {
                path: path.to_owned(),
                line: n + 1,
                message: e.to_string(),
            })?;
        if selection.matches(&record) {
            out.push(record);
        }
    }
    Ok(out)
}

pub(super) fn run(command: DecisionsCommand) -> ExitCode {
    let DecisionsCommand::Export {
        select,
        out,
        config,
    } = command;
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    let selection = match select.selection() {
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e),
    };
    runtime.block_on(async {
        let url = match config.database_connect_url(&crate::config::secrets::process_env) {
            Ok(url) => url,
            Err(e) => return fail(2, &e),
        };
        let table = match Db::connect(url.expose(), 2).await {
            Ok(db) => DecisionTable::new(db),
            Err(e) => return fail(1, &e),
        };
        let mut sink = match output(out.as_deref()) {
            Ok(sink) => sink,
            Err(e) => return fail(1, &e),
        };
        match table.export(&selection, &mut sink).await {
            Ok(n) => {
                // The count goes to stderr so stdout stays pure JSON lines.
                eprintln!("exported {n} decisions");
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &e),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_span_back_from_now() {
        let now = 1_800_000_000_000;
        assert_eq!(
            parse_when("2027-01-15T00:00:00Z", now, "from").unwrap(),
            parse_rfc3339_millis("2027-01-15T00:00:00Z").unwrap()
        );
        assert_eq!(parse_when("7d", now, "from").unwrap(), now - 7 * 86_400_000);
        assert_eq!(parse_when("24h", now, "from").unwrap(), now - 86_400_000);
        assert_eq!(parse_when("30m", now, "from").unwrap(), now - 1_800_000);
        for bad in ["", "d", "-1d", "7w", "yesterday", "7.5h"] {
            assert!(parse_when(bad, now, "from").is_err(), "{bad}");
        }
    }
}
