//! The PostgreSQL store's tables and their migrations.
//!
//! Everything lives in one schema (`qproxy` unless `--store-schema` says
//! otherwise), so the store can share a database with anything else. The
//! version is the highest row of `qproxy_schema_version`: `n` means the
//! first `n` entries of [`MIGRATIONS`] have run. Migrations only ever
//! append, so a store written by an older qproxy upgrades in place and a
//! newer one is refused rather than misread.
//!
//! Migrating runs in one transaction holding an advisory lock named after
//! the schema, so a fleet starting at once migrates once: the others wait
//! for the lock, then find the version current. DDL in PostgreSQL is
//! transactional, so a migration that fails leaves nothing half done.
//!
//! The tables mirror the SQLite store's (`store::schema`) so both backends
//! read back the same findings: times are `bigint` Unix nanoseconds (UTC;
//! `timestamptz` would round them to microseconds), counts `bigint`
//! (saturated at `i64::MAX`), lists and objects `jsonb`, and `query` holds
//! normalized SQL only.

use tokio_postgres::Client;

use super::Sql;
use crate::store::StoreError;

/// Schema steps, in order; entry `i` takes the version from `i` to `i + 1`.
/// `{schema}` stands for the quoted schema name.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: what the SQLite store has at its v4.
    r#"
    CREATE TABLE {schema}.runs (
        id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        instance                text             NOT NULL,
        started_at              bigint           NOT NULL,
        -- NULL: running, or did not shut down cleanly
        ended_at                bigint,
        -- the last write: retention and `report --since` go by it
        updated_at              bigint           NOT NULL,
        host                    text             NOT NULL,
        pid                     bigint           NOT NULL,
        version                 text             NOT NULL,
        -- the run's coverage Summary, overwritten by each flush (running totals)
        queries                 bigint           NOT NULL DEFAULT 0,
        fingerprints            bigint           NOT NULL DEFAULT 0,
        requests                bigint           NOT NULL DEFAULT 0,
        correlated_fraction     double precision NOT NULL DEFAULT 0,
        parse_failures          bigint           NOT NULL DEFAULT 0,
        dropped_events          bigint           NOT NULL DEFAULT 0,
        catalog                 text             NOT NULL DEFAULT 'unavailable',
        findings_lost           bigint           NOT NULL DEFAULT 0,
        statements_not_analysed bigint           NOT NULL DEFAULT 0,
        verifications_skipped   bigint           NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_by_start ON {schema}.runs (started_at, id);
    CREATE INDEX runs_by_instance ON {schema}.runs (instance, started_at);
    COMMENT ON TABLE {schema}.runs IS
        'qproxy: one row per proxy process; times are Unix nanoseconds (UTC)';

    -- One row per stable finding id, merged over every run.
    CREATE TABLE {schema}.findings (
        id          text   PRIMARY KEY,
        kind        text   NOT NULL,
        severity    text   NOT NULL,
        fingerprint text   NOT NULL,
        query       text   NOT NULL,   -- normalized SQL, placeholders only
        table_name  text,
        columns     jsonb  NOT NULL DEFAULT '[]',
        count       bigint,            -- worst per-request count
        occurrences bigint NOT NULL,
        request     jsonb,             -- RequestRef of the worst request
        parent      jsonb,             -- ParentRef
        rows_max    bigint,
        suggestion  text,
        database    text,
        details     jsonb  NOT NULL DEFAULT '{}',
        first_seen  bigint NOT NULL,
        last_seen   bigint NOT NULL
    );
    COMMENT ON TABLE {schema}.findings IS
        'qproxy: findings merged over all runs; times are Unix nanoseconds (UTC)';

    -- What each run saw of each finding: the fields that vary by run.
    CREATE TABLE {schema}.run_findings (
        run_id      bigint NOT NULL REFERENCES {schema}.runs (id) ON DELETE CASCADE,
        finding_id  text   NOT NULL REFERENCES {schema}.findings (id) ON DELETE CASCADE,
        severity    text   NOT NULL,
        occurrences bigint NOT NULL,
        count       bigint,
        request     jsonb,
        rows_max    bigint,
        first_seen  bigint NOT NULL,
        last_seen   bigint NOT NULL,
        PRIMARY KEY (run_id, finding_id)
    );
    CREATE INDEX run_findings_by_finding ON {schema}.run_findings (finding_id);
    "#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// First key of the advisory lock migrations take (the second is the
/// schema name's hash): "qprx", so it cannot collide with an
/// application's single-key locks by accident.
const LOCK_CLASS: i32 = 0x7170_7278;

/// The store's version, or `None` when the schema has no version table
/// (no qproxy store there yet).
pub(crate) async fn version(client: &Client, sql: &Sql) -> Result<Option<u32>, StoreError> {
    let table: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&sql.version_table])
        .await?
        .get(0);
    if table.is_none() {
        return Ok(None);
    }
    let found: i32 = client.query_one(&sql.max_version, &[]).await?.get(0);
    Ok(Some(u32::try_from(found).unwrap_or(0)))
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Migration {
    /// The schema was already at [`SCHEMA_VERSION`].
    Current,
    /// Migrated from this version (0: a fresh schema).
    From(u32),
}

/// Brings the schema up to [`SCHEMA_VERSION`].
pub(crate) async fn migrate(client: &mut Client, sql: &Sql) -> Result<Migration, StoreError> {
    // A current store needs neither the lock nor DDL, so a role with only
    // read and write rights on the tables can use a store an
    // administrator migrated.
    match version(client, sql).await? {
        Some(v) if v == SCHEMA_VERSION => return Ok(Migration::Current),
        Some(v) if v > SCHEMA_VERSION => return Err(too_new(v)),
        _ => {}
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &sql.schema_name],
    )
    .await?;
    // CREATE SCHEMA IF NOT EXISTS would still need the CREATE right on
    // the database when the schema exists; look first.
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&sql.schema_name],
        )
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {}", sql.schema))
            .await?;
    }
    tx.batch_execute(&sql.create_version_table).await?;
    let found: i32 = tx.query_one(&sql.max_version, &[]).await?.get(0);
    let found = u32::try_from(found).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(too_new(found));
    }
    if found == SCHEMA_VERSION {
        // Another proxy migrated while this one waited for the lock.
        tx.commit().await?;
        return Ok(Migration::Current);
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(&step.replace("{schema}", &sql.schema))
            .await?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(&sql.insert_version, &[&version, &env!("CARGO_PKG_VERSION")])
            .await?;
    }
    tx.commit().await?;
    Ok(Migration::From(found))
}

fn too_new(found: u32) -> StoreError {
    StoreError::SchemaTooNew {
        found,
        supported: SCHEMA_VERSION,
    }
}
