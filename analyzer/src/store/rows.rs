//! How a [`Finding`] maps to `findings` and `run_findings` rows and back
//! (decoding is shared by both backends; the SQLite upsert lives here, the
//! PostgreSQL one in SQL, in `postgres::sql`).
//!
//! A finding splits in two: what identifies and explains it (query, table,
//! suggestion, details; stored once in `findings`) and what a run saw of it
//! (severity, counts, worst request, rows, times; stored per run in
//! `run_findings` and, merged over all runs, in `findings`). Merging always
//! goes through [`Finding::merge`], so the store and in-memory aggregation
//! follow the same rules.

use rusqlite::{named_params, OptionalExtension, Row, Transaction};
use time::OffsetDateTime;

use super::{RunId, StoreError};
use crate::finding::{Finding, FindingKind, RequestRef, RowStats, Severity};

/// The columns of `findings`, in the order [`finding_from_row`] reads them.
pub(crate) const FINDING_COLUMNS: &str = "f.id, f.kind, f.severity, f.fingerprint, f.query, \
     f.table_name, f.columns, f.count, f.occurrences, f.request, f.parent, f.rows_max, \
     f.suggestion, f.database, f.details, f.first_seen, f.last_seen";

/// The per-run columns of `run_findings`, read after [`FINDING_COLUMNS`].
pub(crate) const RUN_COLUMNS: &str = "rf.severity, rf.occurrences, rf.count, rf.request, \
     rf.rows_max, rf.first_seen, rf.last_seen";

/// Unix nanoseconds, saturating (a timestamp past 2262 is not a real one).
pub(crate) fn to_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn from_nanos(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// SQLite integers are signed; counts that large are saturated.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn parse_severity(s: &str) -> Option<Severity> {
    [Severity::Info, Severity::Warning, Severity::Error]
        .into_iter()
        .find(|v| v.as_str() == s)
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("finding {id}: {what}"))
}

fn json<T: serde::de::DeserializeOwned>(
    id: &str,
    field: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(id, format_args!("bad {field} JSON: {e}")))
}

fn opt_json<T: serde::de::DeserializeOwned>(
    id: &str,
    field: &str,
    text: Option<String>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| json(id, field, &t)).transpose()
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Plain data with string keys always serializes.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// A `findings` row as either backend reads it, before its text is
/// checked: both stores decode through here, so a finding reads back the
/// same from SQLite and from PostgreSQL.
pub(crate) struct RawFinding {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub fingerprint: String,
    pub query: String,
    pub table: Option<String>,
    pub columns: String,
    pub count: Option<i64>,
    pub occurrences: i64,
    pub request: Option<String>,
    pub parent: Option<String>,
    pub rows_max: Option<i64>,
    pub suggestion: Option<String>,
    pub database: Option<String>,
    pub details: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

impl RawFinding {
    pub fn decode(self) -> Result<Finding, StoreError> {
        let id = self.id;
        let kind = FindingKind::parse(&self.kind).ok_or_else(|| {
            corrupt(
                &id,
                format_args!("unknown kind `{}` (written by a newer qproxy?)", self.kind),
            )
        })?;
        let severity = parse_severity(&self.severity)
            .ok_or_else(|| corrupt(&id, format_args!("unknown severity `{}`", self.severity)))?;
        Ok(Finding {
            kind,
            severity,
            fingerprint: self.fingerprint,
            query: self.query,
            table: self.table,
            columns: json(&id, "columns", &self.columns)?,
            count: self.count.map(to_u64),
            occurrences: to_u64(self.occurrences),
            request: opt_json(&id, "request", self.request)?,
            parent: opt_json(&id, "parent", self.parent)?,
            rows: self.rows_max.map(|m| RowStats { max: to_u64(m) }),
            suggestion: self.suggestion,
            database: self.database,
            details: json(&id, "details", &self.details)?,
            first_seen: from_nanos(self.first_seen),
            last_seen: from_nanos(self.last_seen),
            id,
        })
    }
}

/// A `run_findings` row's run-varying fields, as either backend reads them.
pub(crate) struct RawRunRow {
    pub severity: String,
    pub occurrences: i64,
    pub count: Option<i64>,
    pub request: Option<String>,
    pub rows_max: Option<i64>,
    pub first_seen: i64,
    pub last_seen: i64,
}

impl RawRunRow {
    /// Replaces the run-varying fields of `f` with the run's.
    pub fn apply(self, f: &mut Finding) -> Result<(), StoreError> {
        f.severity = parse_severity(&self.severity)
            .ok_or_else(|| corrupt(&f.id, format_args!("unknown severity `{}`", self.severity)))?;
        f.occurrences = to_u64(self.occurrences);
        f.count = self.count.map(to_u64);
        f.request = opt_json::<RequestRef>(&f.id, "request", self.request)?;
        f.rows = self.rows_max.map(|m| RowStats { max: to_u64(m) });
        f.first_seen = from_nanos(self.first_seen);
        f.last_seen = from_nanos(self.last_seen);
        Ok(())
    }
}

/// Reads a finding from a row selected with [`FINDING_COLUMNS`] first.
pub(crate) fn finding_from_row(row: &Row<'_>) -> Result<Finding, StoreError> {
    RawFinding {
        id: row.get(0)?,
        kind: row.get(1)?,
        severity: row.get(2)?,
        fingerprint: row.get(3)?,
        query: row.get(4)?,
        table: row.get(5)?,
        columns: row.get(6)?,
        count: row.get(7)?,
        occurrences: row.get(8)?,
        request: row.get(9)?,
        parent: row.get(10)?,
        rows_max: row.get(11)?,
        suggestion: row.get(12)?,
        database: row.get(13)?,
        details: row.get(14)?,
        first_seen: row.get(15)?,
        last_seen: row.get(16)?,
    }
    .decode()
}

/// Replaces the run-varying fields of `f` with the run's, read from the
/// [`RUN_COLUMNS`] starting at column `at`.
pub(crate) fn apply_run_row(f: &mut Finding, row: &Row<'_>, at: usize) -> Result<(), StoreError> {
    RawRunRow {
        severity: row.get(at)?,
        occurrences: row.get(at + 1)?,
        count: row.get(at + 2)?,
        request: row.get(at + 3)?,
        rows_max: row.get(at + 4)?,
        first_seen: row.get(at + 5)?,
        last_seen: row.get(at + 6)?,
    }
    .apply(f)
}

/// Folds `delta` into the all-runs row and the run's row, inside the
/// caller's transaction. Returns whether the finding is new to this run.
pub(crate) fn upsert(
    tx: &Transaction<'_>,
    run: RunId,
    delta: &Finding,
) -> Result<bool, StoreError> {
    let existing = tx
        .query_row(
            &format!("SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id = ?1"),
            [&delta.id],
            |row| Ok(finding_from_row(row)),
        )
        .optional()?
        .transpose()?;
    let merged = match existing {
        Some(mut f) => {
            f.merge(delta);
            f
        }
        None => delta.clone(),
    };
    write_finding(tx, &merged)?;

    let sql = format!(
        "SELECT {FINDING_COLUMNS}, {RUN_COLUMNS} FROM run_findings rf JOIN findings f \
         ON f.id = rf.finding_id WHERE rf.run_id = ?1 AND rf.finding_id = ?2"
    );
    let in_run = tx
        .query_row(&sql, rusqlite::params![run.0, &delta.id], |row| {
            Ok(finding_from_row(row).and_then(|mut f| apply_run_row(&mut f, row, 17).map(|()| f)))
        })
        .optional()?
        .transpose()?;
    let is_new = in_run.is_none();
    let run_view = match in_run {
        Some(mut f) => {
            f.merge(delta);
            f
        }
        None => delta.clone(),
    };
    write_run_row(tx, run, &run_view)?;
    Ok(is_new)
}

fn write_finding(tx: &Transaction<'_>, f: &Finding) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO findings (id, kind, severity, fingerprint, query, table_name, columns, \
             count, occurrences, request, parent, rows_max, suggestion, database, details, \
             first_seen, last_seen)
         VALUES (:id, :kind, :severity, :fingerprint, :query, :table, :columns, :count, \
             :occurrences, :request, :parent, :rows_max, :suggestion, :database, :details, \
             :first_seen, :last_seen)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, severity = excluded.severity, \
             fingerprint = excluded.fingerprint, query = excluded.query, \
             table_name = excluded.table_name, columns = excluded.columns, \
             count = excluded.count, occurrences = excluded.occurrences, \
             request = excluded.request, parent = excluded.parent, \
             rows_max = excluded.rows_max, suggestion = excluded.suggestion, \
             database = excluded.database, details = excluded.details, \
             first_seen = excluded.first_seen, last_seen = excluded.last_seen",
        named_params! {
            ":id": f.id,
            ":kind": f.kind.as_str(),
            ":severity": f.severity.as_str(),
            ":fingerprint": f.fingerprint,
            ":query": f.query,
            ":table": f.table,
            ":columns": to_json(&f.columns),
            ":count": f.count.map(to_i64),
            ":occurrences": to_i64(f.occurrences),
            ":request": f.request.as_ref().map(to_json),
            ":parent": f.parent.as_ref().map(to_json),
            ":rows_max": f.rows.map(|r| to_i64(r.max)),
            ":suggestion": f.suggestion,
            ":database": f.database,
            ":details": to_json(&f.details),
            ":first_seen": to_nanos(f.first_seen),
            ":last_seen": to_nanos(f.last_seen),
        },
    )?;
    Ok(())
}

fn write_run_row(tx: &Transaction<'_>, run: RunId, f: &Finding) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO run_findings (run_id, finding_id, severity, occurrences, count, request, \
             rows_max, first_seen, last_seen)
         VALUES (:run, :id, :severity, :occurrences, :count, :request, :rows_max, \
             :first_seen, :last_seen)
         ON CONFLICT (run_id, finding_id) DO UPDATE SET severity = excluded.severity, \
             occurrences = excluded.occurrences, count = excluded.count, \
             request = excluded.request, rows_max = excluded.rows_max, \
             first_seen = excluded.first_seen, last_seen = excluded.last_seen",
        named_params! {
            ":run": run.0,
            ":id": f.id,
            ":severity": f.severity.as_str(),
            ":occurrences": to_i64(f.occurrences),
            ":count": f.count.map(to_i64),
            ":request": f.request.as_ref().map(to_json),
            ":rows_max": f.rows.map(|r| to_i64(r.max)),
            ":first_seen": to_nanos(f.first_seen),
            ":last_seen": to_nanos(f.last_seen),
        },
    )?;
    Ok(())
}
