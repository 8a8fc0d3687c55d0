//! The SQLite store's schema and its migrations (the PostgreSQL store has
//! its own, in `postgres::schema`, with the same tables).
//!
//! The schema version is SQLite's `PRAGMA user_version`: 0 is a file no
//! qproxy has set up, `n` means the first `n` entries of [`MIGRATIONS`] have
//! run. Migrations only ever append, so a store written by an older qproxy
//! upgrades in place and a newer one is refused rather than misread.
//!
//! Times are INTEGER Unix nanoseconds (UTC) so `MIN`/`MAX` and ordering are
//! numeric; counts are INTEGER (saturated at `i64::MAX`); lists and objects
//! are JSON text. `query` holds normalized SQL only: the store receives
//! [`Finding`](crate::finding::Finding)s, which never carry literal values.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Schema steps, in order; entry `i` takes `user_version` from `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: runs, findings by stable id, and per-run tallies so a report can
    // select runs.
    r#"
    CREATE TABLE runs (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at          INTEGER NOT NULL,
        ended_at            INTEGER,            -- NULL: running, or did not shut down cleanly
        host                TEXT    NOT NULL,
        pid                 INTEGER NOT NULL,
        version             TEXT    NOT NULL,
        -- the run's coverage Summary, overwritten by each flush (running totals)
        queries             INTEGER NOT NULL DEFAULT 0,
        fingerprints        INTEGER NOT NULL DEFAULT 0,
        requests            INTEGER NOT NULL DEFAULT 0,
        correlated_fraction REAL    NOT NULL DEFAULT 0,
        parse_failures      INTEGER NOT NULL DEFAULT 0,
        dropped_events      INTEGER NOT NULL DEFAULT 0,
        catalog             TEXT    NOT NULL DEFAULT 'unavailable'
    );
    CREATE INDEX runs_by_start ON runs (started_at, id);

    -- One row per stable finding id, merged over every run.
    CREATE TABLE findings (
        id          TEXT    PRIMARY KEY,
        kind        TEXT    NOT NULL,
        severity    TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        query       TEXT    NOT NULL,           -- normalized SQL, placeholders only
        table_name  TEXT,
        columns     TEXT    NOT NULL DEFAULT '[]',
        count       INTEGER,                    -- worst per-request count
        occurrences INTEGER NOT NULL,
        request     TEXT,                       -- JSON RequestRef of the worst request
        parent      TEXT,                       -- JSON ParentRef
        rows_max    INTEGER,
        suggestion  TEXT,
        database    TEXT,
        details     TEXT    NOT NULL DEFAULT '{}',
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL
    );

    -- What each run saw of each finding: the fields that vary by run.
    CREATE TABLE run_findings (
        run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        finding_id  TEXT    NOT NULL REFERENCES findings (id) ON DELETE CASCADE,
        severity    TEXT    NOT NULL,
        occurrences INTEGER NOT NULL,
        count       INTEGER,
        request     TEXT,
        rows_max    INTEGER,
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        PRIMARY KEY (run_id, finding_id)
    ) WITHOUT ROWID;
    CREATE INDEX run_findings_by_finding ON run_findings (finding_id);
    "#,
    // v2: finding occurrences a run could not write (the store stayed
    // unwritable past the writer's cap), so its report says it is partial.
    r#"
    ALTER TABLE runs ADD COLUMN findings_lost INTEGER NOT NULL DEFAULT 0;
    "#,
    // v3: statements forwarded but not analysed (per-message statement cap,
    // messages too large for the held-bytes budget).
    r#"
    ALTER TABLE runs ADD COLUMN statements_not_analysed INTEGER NOT NULL DEFAULT 0;
    "#,
    // v4: index suggestions hypopg did not check (Summary::verifications_skipped).
    r#"
    ALTER TABLE runs ADD COLUMN verifications_skipped INTEGER NOT NULL DEFAULT 0;
    "#,
    // v5: runs name their proxy (`--instance`) and say when they last
    // wrote, which retention and `report --since` go by. Older runs are
    // named after their host and were last active when they ended (or,
    // never ended, when they started).
    r#"
    ALTER TABLE runs ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN updated_at INTEGER;
    UPDATE runs SET instance = host, updated_at = COALESCE(ended_at, started_at);
    CREATE INDEX runs_by_instance ON runs (instance, started_at);
    "#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Reads `PRAGMA user_version`.
pub(crate) fn version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
}

/// Brings the schema up to [`SCHEMA_VERSION`]. Runs under an IMMEDIATE
/// transaction so two proxies opening a fresh file at once migrate it
/// once: the second waits, then sees the new version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(step)?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()?;
    Ok(())
}
