//! The embedded backend: one SQLite file, the default.
//!
//! Several proxies may share one file (parallel test shards) and
//! `qproxy report` may read while they write, so the file runs in WAL mode
//! with a busy timeout, and every write is one IMMEDIATE transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use time::OffsetDateTime;

use super::BUSY_TIMEOUT;
use super::{rows, schema, Pruned, Recorded, RunFilter, RunId, RunInfo, RunSelection, StoreError};
use crate::finding::{Finding, Summary};
use crate::report::{Report, RunMeta};

/// An open SQLite findings store.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// Switches the file to WAL (a setting stored in the file, so only the
/// first opener changes it). Changing the journal mode needs an exclusive
/// lock and SQLite answers BUSY at once, without the busy handler, when
/// another connection is opening the same fresh file: retry for as long
/// as the busy timeout would have waited.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode = conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The columns [`SqliteStore::select_runs`] reads, in order.
const RUN_META_COLUMNS: &str = "id, started_at, ended_at, host, pid, version, queries, \
     fingerprints, requests, correlated_fraction, parse_failures, dropped_events, catalog, \
     findings_lost, statements_not_analysed, instance, verifications_skipped";

impl SqliteStore {
    /// Opens (creating the file and its directories if needed) and migrates
    /// the store for writing.
    pub(crate) fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // WAL lets readers and one writer proceed together; NORMAL sync is
        // durable against process crashes, which is what a proxy faces.
        set_wal(&conn).map_err(open_err)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(open_err)?;
        schema::migrate(&mut conn).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })?;
        Ok(SqliteStore { conn, path })
    }

    /// Opens an existing store for reading only.
    pub(crate) fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        match schema::version(&conn).map_err(open_err)? {
            0 => Err(StoreError::NotAStore { path }),
            v if v > schema::SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
                found: v,
                supported: schema::SCHEMA_VERSION,
            }),
            v if v < schema::SCHEMA_VERSION => Err(StoreError::SchemaOutdated {
                found: v,
                supported: schema::SCHEMA_VERSION,
            }),
            _ => Ok(SqliteStore { conn, path }),
        }
    }

    pub(crate) fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(timeout)?;
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn begin_run(&mut self, info: &RunInfo) -> Result<RunId, StoreError> {
        let started = rows::to_nanos(info.started_at);
        self.conn.execute(
            "INSERT INTO runs (started_at, updated_at, instance, host, pid, version) \
             VALUES (?1, ?1, ?2, ?3, ?4, ?5)",
            params![started, info.instance, info.host, info.pid, info.version],
        )?;
        Ok(RunId(self.conn.last_insert_rowid()))
    }

    /// Folds deltas and the summary into the store in one transaction, and
    /// marks the run active now (what retention and `--since` go by).
    pub(crate) fn write(
        &mut self,
        run: RunId,
        deltas: &[Finding],
        summary: Option<&Summary>,
    ) -> Result<Recorded, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut recorded = Recorded::default();
        for (i, delta) in deltas.iter().enumerate() {
            if rows::upsert(&tx, run, delta)? {
                recorded.new_in_run.push(i);
            }
        }
        let now = rows::to_nanos(OffsetDateTime::now_utc());
        let changed = match summary {
            Some(s) => tx.execute(
                "UPDATE runs SET queries = ?2, fingerprints = ?3, requests = ?4, \
                 correlated_fraction = ?5, parse_failures = ?6, dropped_events = ?7, catalog = ?8, \
                 findings_lost = ?9, statements_not_analysed = ?10, updated_at = ?11, \
                 verifications_skipped = ?12 WHERE id = ?1",
                params![
                    run.0,
                    rows::to_i64(s.queries),
                    rows::to_i64(s.fingerprints),
                    rows::to_i64(s.requests),
                    s.correlated_fraction,
                    rows::to_i64(s.parse_failures),
                    rows::to_i64(s.dropped_events),
                    s.catalog,
                    rows::to_i64(s.findings_lost),
                    rows::to_i64(s.statements_not_analysed),
                    now,
                    rows::to_i64(s.verifications_skipped),
                ],
            )?,
            None => tx.execute(
                "UPDATE runs SET updated_at = ?2 WHERE id = ?1",
                params![run.0, now],
            )?,
        };
        if changed == 0 {
            return Err(StoreError::NoSuchRun(run.0));
        }
        tx.commit()?;
        Ok(recorded)
    }

    pub(crate) fn end_run(
        &mut self,
        run: RunId,
        ended_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE runs SET ended_at = ?2, updated_at = ?2 WHERE id = ?1",
            params![run.0, rows::to_nanos(ended_at)],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchRun(run.0));
        }
        Ok(())
    }

    /// Deletes runs last active before `cutoff` (but never `keep`) with
    /// their per-run rows, then findings no run refers to any more that
    /// were last seen before it.
    pub(crate) fn prune(
        &mut self,
        cutoff: OffsetDateTime,
        keep: Option<RunId>,
    ) -> Result<Pruned, StoreError> {
        let cutoff = rows::to_nanos(cutoff);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // run_findings go with their run (ON DELETE CASCADE).
        let runs = tx.execute(
            "DELETE FROM runs WHERE COALESCE(ended_at, updated_at, started_at) < ?1 \
             AND id IS NOT ?2",
            params![cutoff, keep.map(|r| r.0)],
        )?;
        let findings = tx.execute(
            "DELETE FROM findings WHERE last_seen < ?1 AND NOT EXISTS \
             (SELECT 1 FROM run_findings rf WHERE rf.finding_id = findings.id)",
            [cutoff],
        )?;
        tx.commit()?;
        Ok(Pruned {
            runs: runs as u64,
            findings: findings as u64,
        })
    }

    pub(crate) fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        self.select_runs(&RunSelection::All, &RunFilter::default())
    }

    /// Builds the report from one consistent snapshot.
    pub(crate) fn load_report(
        &self,
        selection: &RunSelection,
        filter: &RunFilter,
    ) -> Result<Report, StoreError> {
        // One read transaction: a concurrent writer's commit lands wholly
        // before or after this report, never half in it.
        let tx = self.conn.unchecked_transaction()?;
        let runs = self.select_runs(selection, filter)?;
        if let (RunSelection::Id(id), true) = (selection, runs.is_empty()) {
            return Err(StoreError::NoSuchRun(*id));
        }
        let mut merged: BTreeMap<String, Finding> = BTreeMap::new();
        let sql = format!(
            "SELECT {}, {} FROM run_findings rf JOIN findings f ON f.id = rf.finding_id \
             WHERE rf.run_id = ?1 AND rf.last_seen >= ?2 ORDER BY rf.finding_id",
            rows::FINDING_COLUMNS,
            rows::RUN_COLUMNS
        );
        let since = filter.since.map_or(i64::MIN, rows::to_nanos);
        let mut stmt = tx.prepare(&sql)?;
        for run in &runs {
            let mut rows = stmt.query(params![run.id, since])?;
            while let Some(row) = rows.next()? {
                let mut f = rows::finding_from_row(row)?;
                rows::apply_run_row(&mut f, row, 17)?;
                match merged.get_mut(&f.id) {
                    Some(acc) => acc.merge(&f),
                    None => {
                        merged.insert(f.id.clone(), f);
                    }
                }
            }
        }
        drop(stmt);
        tx.finish()?;
        Ok(super::assemble_report(runs, merged))
    }

    fn select_runs(
        &self,
        selection: &RunSelection,
        filter: &RunFilter,
    ) -> Result<Vec<RunMeta>, StoreError> {
        let mut conditions = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(instance) = &filter.instance {
            args.push(Value::Text(instance.clone()));
            conditions.push(format!("instance = ?{}", args.len()));
        }
        if let Some(since) = filter.since {
            args.push(Value::Integer(rows::to_nanos(since)));
            conditions.push(format!(
                "COALESCE(ended_at, updated_at, started_at) >= ?{}",
                args.len()
            ));
        }
        if let RunSelection::Id(id) = selection {
            args.push(Value::Integer(*id));
            conditions.push(format!("id = ?{}", args.len()));
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let tail = match selection {
            RunSelection::Latest => "ORDER BY started_at DESC, id DESC LIMIT 1",
            _ => "ORDER BY started_at, id",
        };
        let sql = format!("SELECT {RUN_META_COLUMNS} FROM runs {filter_sql} {tail}");
        let mut stmt = self.conn.prepare(&sql)?;
        let runs = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(RunMeta {
                    id: r.get(0)?,
                    started_at: rows::from_nanos(r.get(1)?),
                    ended_at: r.get::<_, Option<i64>>(2)?.map(rows::from_nanos),
                    host: r.get(3)?,
                    pid: r.get(4)?,
                    version: r.get(5)?,
                    summary: Summary {
                        queries: rows::to_u64(r.get(6)?),
                        fingerprints: rows::to_u64(r.get(7)?),
                        requests: rows::to_u64(r.get(8)?),
                        correlated_fraction: r.get(9)?,
                        parse_failures: rows::to_u64(r.get(10)?),
                        dropped_events: rows::to_u64(r.get(11)?),
                        catalog: r.get(12)?,
                        findings_lost: rows::to_u64(r.get(13)?),
                        statements_not_analysed: rows::to_u64(r.get(14)?),
                        verifications_skipped: rows::to_u64(r.get(16)?),
                    },
                    instance: r.get(15)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(runs)
    }

    pub(crate) fn finding(&self, id: &str) -> Result<Option<Finding>, StoreError> {
        let sql = format!(
            "SELECT {} FROM findings f WHERE f.id = ?1",
            rows::FINDING_COLUMNS
        );
        self.conn
            .query_row(&sql, [id], |row| Ok(rows::finding_from_row(row)))
            .optional()?
            .transpose()
    }
}
