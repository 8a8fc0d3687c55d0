//! The findings store, which outlives the proxy so `qproxy report` can
//! read what a run found, and CI can gate on it. Two backends behind one
//! [`Store`]: an embedded SQLite file (the default), or a PostgreSQL
//! database that a fleet of proxies shares, so staging has one report
//! instead of one file per sidecar.
//!
//! Each proxy process is a *run*, named by its *instance*. The analyzer
//! hands the store *deltas* (what changed since the last flush), and the
//! store folds them into the finding's all-time row and its row for the
//! run by the rules of [`Finding::merge`] (SQLite by calling it,
//! PostgreSQL with the same rules in one UPSERT, so concurrent proxies
//! lose no update). The proxy writes through [`Writer`], a thread of its
//! own, so the store never runs on the forwarding path.
//!
//! # Layout
//! - `sqlite`, [`schema`]: the SQLite backend, its tables and migrations
//!   (`PRAGMA user_version`).
//! - [`postgres`]: the PostgreSQL backend, its migrations
//!   (`qproxy_schema_version`) and its UPSERTs.
//! - `rows`: mapping findings to rows and back (decoding shared by both).
//! - `run`: runs, run selection and filters, combining runs' coverage.
//! - [`period`]: `--store-retention` and `--since` values.
//! - [`writer`]: the background writer thread, its batches and retention.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use crate::finding::{Finding, Summary};
use crate::report::{Report, RunMeta};

pub mod period;
pub mod postgres;
mod rows;
mod run;
pub mod schema;
mod sqlite;
pub mod writer;

pub use postgres::{PgConnector, PgLocation};
pub use run::{
    combine_summaries, host_name, InvalidRunSelection, RunFilter, RunId, RunInfo, RunSelection,
};
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
    /// The PostgreSQL store could not be reached or refused the login.
    #[error("cannot connect to the findings store {store}: {source}")]
    PgConnect {
        /// The store, password hidden.
        store: String,
        /// What tokio-postgres said.
        source: tokio_postgres::Error,
    },
    /// `qproxy report` was pointed at a database without a store in it.
    #[error(
        "no findings store in schema {schema} of {store} (run `qproxy serve --store` with this \
         URL first, or pass --store-schema)"
    )]
    PgMissing {
        /// The store, password hidden.
        store: String,
        /// The schema looked in.
        schema: String,
    },
    /// `--store-schema` is not a plain identifier.
    #[error(
        "invalid store schema name `{0}` (letters, digits and underscores, not starting with a \
         digit, at most 63)"
    )]
    SchemaName(String),
    /// Any other PostgreSQL failure (connection lost, lock or statement
    /// timeout, permissions).
    #[error("findings store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL store did not answer in time; the connection is
    /// dropped and the next operation opens a new one.
    #[error("the findings store {store} did not answer within {after:?}")]
    PgTimeout {
        /// The store, password hidden.
        store: String,
        /// The limit that passed.
        after: Duration,
    },
    /// A write through a store opened with [`Store::open_read_only`].
    #[error("the findings store was opened read-only")]
    ReadOnly,
    /// The PostgreSQL store's own runtime could not start.
    #[error("cannot start the findings store's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// What one [`Store::record`] call changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// Indexes (into the recorded slice) of findings this run had not seen
    /// before: the ones the writer logs.
    pub new_in_run: Vec<usize>,
}

/// What one [`Store::prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Runs deleted, with their per-run finding rows.
    pub runs: u64,
    /// Findings deleted: no remaining run saw them.
    pub findings: u64,
}

/// Where a store lives: what `--store` names.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A schema in a PostgreSQL database.
    Postgres(Box<PgLocation>),
}

impl From<&Path> for StoreLocation {
    fn from(path: &Path) -> StoreLocation {
        StoreLocation::Sqlite(path.to_path_buf())
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> StoreLocation {
        StoreLocation::Sqlite(path)
    }
}

impl From<&PathBuf> for StoreLocation {
    fn from(path: &PathBuf) -> StoreLocation {
        StoreLocation::Sqlite(path.clone())
    }
}

impl From<PgLocation> for StoreLocation {
    fn from(location: PgLocation) -> StoreLocation {
        StoreLocation::Postgres(Box::new(location))
    }
}

impl std::fmt::Display for StoreLocation {
    /// The path, or the URL without its password and the schema.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(pg) => write!(f, "{pg}"),
        }
    }
}

/// An open findings store.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<postgres::PgStore>),
}

/// Calls the same method on whichever backend is open.
macro_rules! dispatch {
    ($self:expr, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
    (mut $self:expr, $store:ident => $call:expr) => {
        match &mut $self.backend {
            Backend::Sqlite($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens the store for writing: creates an SQLite file (and its
    /// directories), or connects to PostgreSQL; then migrates its schema.
    pub fn open(location: impl Into<StoreLocation>) -> Result<Store, StoreError> {
        let backend = match location.into() {
            StoreLocation::Sqlite(path) => Backend::Sqlite(sqlite::SqliteStore::open(&path)?),
            StoreLocation::Postgres(pg) => {
                Backend::Postgres(Box::new(postgres::PgStore::open(*pg, true)?))
            }
        };
        Ok(Store { backend })
    }

    /// Opens an existing store for reading only, as `qproxy report` does
    /// while proxies may still be writing. A missing file (or schema) is
    /// an error, not an empty store, so a wrong `--store` cannot pass CI.
    pub fn open_read_only(location: impl Into<StoreLocation>) -> Result<Store, StoreError> {
        let backend = match location.into() {
            StoreLocation::Sqlite(path) => {
                Backend::Sqlite(sqlite::SqliteStore::open_read_only(&path)?)
            }
            StoreLocation::Postgres(pg) => {
                Backend::Postgres(Box::new(postgres::PgStore::open(*pg, false)?))
            }
        };
        Ok(Store { backend })
    }

    /// Changes how long a statement waits for another connection's lock
    /// before failing (SQLite's busy timeout, PostgreSQL's
    /// `lock_timeout`). The writer thread shortens it, so that a store
    /// locked by someone else costs it a failed write to retry later,
    /// never a thread stuck in the store.
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), StoreError> {
        dispatch!(mut self, s => s.set_busy_timeout(timeout))
    }

    /// The file this store is backed by; `None` for PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// Records the start of a run and returns its id.
    pub fn begin_run(&mut self, info: &RunInfo) -> Result<RunId, StoreError> {
        dispatch!(mut self, s => s.begin_run(info))
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

    /// Every write also marks the run active now: what retention and
    /// `qproxy report --since` go by.
    fn write(
        &mut self,
        run: RunId,
        deltas: &[Finding],
        summary: Option<&Summary>,
    ) -> Result<Recorded, StoreError> {
        dispatch!(mut self, s => s.write(run, deltas, summary))
    }

    /// Marks the run as cleanly ended.
    pub fn end_run(&mut self, run: RunId, ended_at: OffsetDateTime) -> Result<(), StoreError> {
        dispatch!(mut self, s => s.end_run(run, ended_at))
    }

    /// Retention: deletes the runs last active (last written, or ended)
    /// before `cutoff`, except `keep` (the caller's own run), with their
    /// per-run rows; then the findings that no remaining run saw and that
    /// were last seen before `cutoff`.
    pub fn prune(
        &mut self,
        cutoff: OffsetDateTime,
        keep: Option<RunId>,
    ) -> Result<Pruned, StoreError> {
        dispatch!(mut self, s => s.prune(cutoff, keep))
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        dispatch!(self, s => s.runs())
    }

    /// Builds the report for `selection` from one consistent snapshot:
    /// the runs, their combined coverage, and their findings merged and
    /// sorted. No runs yet is an empty report, not an error.
    pub fn load_report(&self, selection: &RunSelection) -> Result<Report, StoreError> {
        self.load_report_filtered(selection, &RunFilter::default())
    }

    /// [`Store::load_report`] over the runs `filter` leaves: `selection`
    /// picks among them (the latest of an instance, say).
    pub fn load_report_filtered(
        &self,
        selection: &RunSelection,
        filter: &RunFilter,
    ) -> Result<Report, StoreError> {
        dispatch!(self, s => s.load_report(selection, filter))
    }

    /// The stored all-runs row of one finding, for tests and tools that
    /// need it without a run selection.
    pub fn finding(&self, id: &str) -> Result<Option<Finding>, StoreError> {
        dispatch!(self, s => s.finding(id))
    }
}

/// The report of `runs` (in report order) and their merged findings.
fn assemble_report(runs: Vec<RunMeta>, merged: BTreeMap<String, Finding>) -> Report {
    let mut report = Report {
        summary: combine_summaries(runs.iter().map(|r| &r.summary)),
        runs,
        findings: merged.into_values().collect(),
    };
    report.sort_findings();
    report
}
