//! The findings store: an embedded SQLite file that outlives the proxy, so
//! `qproxy report` can read what a run found, and CI can gate on it.
//!
//! Several proxies may share one file (sidecars, parallel test shards) and
//! `qproxy report` may read while they write, so the file runs in WAL mode
//! with a busy timeout, and every write is one IMMEDIATE transaction. The
//! proxy writes through [`Writer`], a thread of its own, so SQLite never
//! runs on the forwarding path.
//!
//! Each proxy process is a *run*. The analyzer hands the store *deltas*
//! (what changed since the last flush), and the store folds them into the
//! finding's all-time row and its row for the run with [`Finding::merge`].
//!
//! # Layout
//! - [`schema`]: tables and migrations (`PRAGMA user_version`).
//! - `rows`: mapping findings to rows and back.
//! - `run`: runs, run selection, combining runs' coverage.
//! - [`writer`]: the background writer thread and its batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use time::OffsetDateTime;

use crate::finding::{Finding, Summary};
use crate::report::{Report, RunMeta};

mod rows;
mod run;
pub mod schema;
pub mod writer;

pub use run::{combine_summaries, InvalidRunSelection, RunId, RunInfo, RunSelection};
pub use writer::{Batch, Submitted, Writer, WriterConfig, WriterStats};

/// How long opening, migrating and reading wait for another process's
/// lock before failing. Writes are small batches, so a wait this long
/// means something is stuck. (The writer thread waits much less per
/// attempt and retries instead; see [`writer::WriterConfig`].)
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `qproxy report` was pointed at a file that does not exist.
    #[error(
        "no findings store at {path} (run `qproxy serve` first, or pass --store / QPROXY_STORE)"
    )]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The store's directory could not be created.
    #[error("cannot create the directory for the findings store {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file could not be opened as a store (not SQLite, unreadable).
    #[error("cannot open findings store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file is SQLite but no qproxy ever set it up.
    #[error("{path} is not a qproxy findings store")]
    NotAStore {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer qproxy; reading it could misreport.
    #[error("findings store schema v{found} is newer than this qproxy supports (v{supported}); upgrade qproxy")]
    SchemaTooNew {
        /// Version in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// An older schema opened read-only, which cannot migrate it.
    #[error("findings store schema v{found} is older than v{supported}; run `qproxy serve` once to migrate it")]
    SchemaOutdated {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// `--run ID` named a run the store does not have.
    #[error("no run {0} in the findings store")]
    NoSuchRun(i64),
    /// A row that cannot be read back (hand-edited, or a newer writer).
    #[error("corrupt findings store: {0}")]
    Corrupt(String),
    /// The writer thread is gone, so its result is unknown.
    #[error("the findings writer thread stopped unexpectedly")]
    WriterGone,
    /// Any other SQLite failure (disk full, lock timeout, I/O).
    #[error("findings store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What one [`Store::record`] call changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// Indexes (into the recorded slice) of findings this run had not seen
    /// before: the ones the writer logs.
    pub new_in_run: Vec<usize>,
}

/// An open findings store.
#[derive(Debug)]
pub struct Store {
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

impl Store {
    /// Opens (creating the file and its directories if needed) and migrates
    /// the store for writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
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
        Ok(Store { conn, path })
    }

    /// Opens an existing store for reading only, as `qproxy report` does
    /// while proxies may still be writing. A missing file is an error, not
    /// an empty store, so a wrong `--store` path cannot pass CI.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
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
            _ => Ok(Store { conn, path }),
        }
    }

    /// Changes how long a statement waits for another connection's lock
    /// before failing with BUSY. The writer thread shortens it, so that a
    /// store locked by someone else costs it a failed write to retry
    /// later, never a thread stuck in SQLite.
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(timeout)?;
        Ok(())
    }

    /// The file this store is backed by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the start of a run and returns its id.
    pub fn begin_run(&mut self, info: &RunInfo) -> Result<RunId, StoreError> {
        self.conn.execute(
            "INSERT INTO runs (started_at, host, pid, version) VALUES (?1, ?2, ?3, ?4)",
            params![
                rows::to_nanos(info.started_at),
                info.host,
                info.pid,
                info.version
            ],
        )?;
        Ok(RunId(self.conn.last_insert_rowid()))
    }

    /// Folds finding deltas into the store in one transaction: occurrences
    /// add up; count, rows, severity and last_seen keep the maximum;
    /// first_seen the minimum (the rules of [`Finding::merge`]).
    pub fn record(&mut self, run: RunId, deltas: &[Finding]) -> Result<Recorded, StoreError> {
        self.write(run, deltas, None)
    }

    /// Replaces the run's coverage counters with `summary`, which holds the
    /// run's running totals (not a delta).
    pub fn update_summary(&mut self, run: RunId, summary: &Summary) -> Result<(), StoreError> {
        self.write(run, &[], Some(summary)).map(drop)
    }

    /// [`Store::record`] and [`Store::update_summary`] in one transaction,
    /// as the writer flushes a batch.
    pub fn record_batch(&mut self, run: RunId, batch: &Batch) -> Result<Recorded, StoreError> {
        self.write(run, &batch.findings, Some(&batch.summary))
    }

    fn write(
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
        if let Some(s) = summary {
            let changed = tx.execute(
                "UPDATE runs SET queries = ?2, fingerprints = ?3, requests = ?4, \
                 correlated_fraction = ?5, parse_failures = ?6, dropped_events = ?7, catalog = ?8, \
                 findings_lost = ?9, statements_not_analysed = ?10, verifications_skipped = ?11 \
                 WHERE id = ?1",
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
                    rows::to_i64(s.verifications_skipped),
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::NoSuchRun(run.0));
            }
        }
        tx.commit()?;
        Ok(recorded)
    }

    /// Marks the run as cleanly ended.
    pub fn end_run(&mut self, run: RunId, ended_at: OffsetDateTime) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE runs SET ended_at = ?2 WHERE id = ?1",
            params![run.0, rows::to_nanos(ended_at)],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchRun(run.0));
        }
        Ok(())
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        self.select_runs("", [])
    }

    /// Builds the report for `selection` from one consistent snapshot:
    /// the runs, their combined coverage, and their findings merged and
    /// sorted. No runs yet is an empty report, not an error.
    pub fn load_report(&self, selection: &RunSelection) -> Result<Report, StoreError> {
        // One read transaction: a concurrent writer's commit lands wholly
        // before or after this report, never half in it.
        let tx = self.conn.unchecked_transaction()?;
        let runs = match *selection {
            RunSelection::All => self.runs()?,
            RunSelection::Latest => {
                self.select_runs("ORDER BY started_at DESC, id DESC LIMIT 1", [])?
            }
            RunSelection::Id(id) => {
                let runs = self.select_runs("WHERE id = ?1", [id])?;
                if runs.is_empty() {
                    return Err(StoreError::NoSuchRun(id));
                }
                runs
            }
        };
        let mut merged: BTreeMap<String, Finding> = BTreeMap::new();
        let sql = format!(
            "SELECT {}, {} FROM run_findings rf JOIN findings f ON f.id = rf.finding_id \
             WHERE rf.run_id = ?1 ORDER BY rf.finding_id",
            rows::FINDING_COLUMNS,
            rows::RUN_COLUMNS
        );
        let mut stmt = tx.prepare(&sql)?;
        for run in &runs {
            let mut rows = stmt.query([run.id])?;
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
        let mut report = Report {
            summary: combine_summaries(runs.iter().map(|r| &r.summary)),
            runs,
            findings: merged.into_values().collect(),
        };
        report.sort_findings();
        Ok(report)
    }

    fn select_runs<const N: usize>(
        &self,
        tail: &str,
        args: [i64; N],
    ) -> Result<Vec<RunMeta>, StoreError> {
        let order = if tail.contains("ORDER BY") {
            ""
        } else {
            "ORDER BY started_at, id"
        };
        let sql = format!(
            "SELECT id, started_at, ended_at, host, pid, version, queries, fingerprints, requests, \
             correlated_fraction, parse_failures, dropped_events, catalog, findings_lost, \
             statements_not_analysed, verifications_skipped \
             FROM runs {tail} {order}"
        );
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
                        verifications_skipped: rows::to_u64(r.get(15)?),
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(runs)
    }

    /// The stored all-runs row of one finding, for tests and tools that
    /// need it without a run selection.
    pub fn finding(&self, id: &str) -> Result<Option<Finding>, StoreError> {
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
