//! The fleet backend: a schema in a PostgreSQL database that many proxies
//! write at once and `qproxy report` reads as one.
//!
//! The store's callers are synchronous (the writer thread, `qproxy
//! report`), so the store owns a small current-thread tokio runtime and
//! blocks on it, as the `postgres` crate does. Every operation is bounded
//! by [`OPERATION_TIMEOUT`]; a connection that breaks or times out is
//! dropped and the next operation opens a new one, so the writer's
//! retries ride out a restart of the database.
//!
//! Writes sort their deltas by finding id before upserting: two proxies
//! whose batches share findings then lock those rows in the same order and
//! cannot deadlock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, IsolationLevel, Row, Socket, Statement};

use super::rows::{self, RawFinding, RawRunRow};
use super::{Pruned, Recorded, RunFilter, RunId, RunInfo, RunSelection, StoreError};
use crate::finding::{Finding, Summary};
use crate::report::{Report, RunMeta};

pub mod schema;
mod sql;

use schema::Migration;
use sql::Sql;

/// How long connecting (TCP, TLS, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one operation (a batch written, a report read) may take before
/// its connection is given up on. Generous: a report over a month of a
/// fleet reads many rows; the writer's batches are small.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The server-side limit on one statement, so a store that stalls (a
/// table locked by a maintenance job) fails a write instead of holding
/// the writer thread.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a connection to the store. The proxy builds one per TLS setting
/// (`sslmode`), the same way it reaches the upstream; see
/// [`PgConnector::new`].
#[derive(Clone)]
pub struct PgConnector(Arc<ConnectFn>);

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Client, tokio_postgres::Error>> + Send>>;
type ConnectFn = dyn Fn(Config) -> ConnectFuture + Send + Sync;

impl PgConnector {
    /// Connects with `tls` (`tokio_postgres::NoTls`, or a rustls
    /// connector) and drives each connection on the store's runtime.
    pub fn new<T>(tls: T) -> PgConnector
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        PgConnector(Arc::new(move |config: Config| {
            let tls = tls.clone();
            Box::pin(async move {
                let (client, connection) = config.connect(tls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "findings store connection ended");
                    }
                });
                Ok(client)
            })
        }))
    }
}

impl fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgConnector")
    }
}

/// A PostgreSQL store: where to connect, how, and which schema.
#[derive(Clone)]
pub struct PgLocation {
    config: Config,
    schema: String,
    connector: PgConnector,
    display: String,
}

impl PgLocation {
    /// The store in `schema` of the database `config` points at.
    /// `display` names it in messages and must not hold the password
    /// (the proxy passes its redacted URL).
    pub fn new(
        config: Config,
        schema: &str,
        connector: PgConnector,
        display: impl Into<String>,
    ) -> Result<PgLocation, StoreError> {
        check_schema_name(schema)?;
        Ok(PgLocation {
            config,
            schema: schema.to_string(),
            connector,
            display: display.into(),
        })
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }
}

impl fmt::Display for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (schema {})", self.display, self.schema)
    }
}

impl fmt::Debug for PgLocation {
    /// Never the configuration itself: it holds the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgLocation({self})")
    }
}

/// Checks a store schema name: letters, digits and underscores, not
/// starting with a digit, at most 63 bytes (PostgreSQL's identifier
/// limit), so it needs no quoting rules to get right.
pub fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    if is_plain_identifier(schema) {
        Ok(())
    } else {
        Err(StoreError::SchemaName(schema.to_string()))
    }
}

fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The writer's prepared statements, one round trip each.
struct Statements {
    upsert_finding: Statement,
    upsert_run_finding: Statement,
    update_summary: Statement,
    heartbeat: Statement,
}

/// One open connection.
struct Conn {
    client: Client,
    /// Prepared for a writable store only.
    statements: Option<Statements>,
}

impl Conn {
    async fn open(location: &PgLocation, sql: &Sql, writable: bool) -> Result<Conn, StoreError> {
        let mut config = location.config.clone();
        if config.get_application_name().is_none() {
            config.application_name("qproxy-store");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let client =
            match tokio::time::timeout(CONNECT_TIMEOUT, (location.connector.0)(config)).await {
                Ok(Ok(client)) => client,
                Ok(Err(source)) => {
                    return Err(StoreError::PgConnect {
                        store: location.to_string(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(StoreError::PgTimeout {
                        store: location.to_string(),
                        after: CONNECT_TIMEOUT,
                    })
                }
            };
        let statements = if writable {
            Some(Statements {
                upsert_finding: client.prepare(&sql.upsert_finding).await?,
                upsert_run_finding: client.prepare(&sql.upsert_run_finding).await?,
                update_summary: client.prepare(&sql.update_summary).await?,
                heartbeat: client.prepare(&sql.heartbeat).await?,
            })
        } else {
            None
        };
        Ok(Conn { client, statements })
    }
}

/// Runs `f` to completion on `runtime`. From inside another runtime
/// (where `block_on` would panic) it runs on a helper thread instead.
fn block_on<F>(runtime: &Runtime, f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(f);
    }
    std::thread::scope(|scope| match scope.spawn(|| runtime.block_on(f)).join() {
        Ok(output) => output,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// An open PostgreSQL store.
pub(crate) struct PgStore {
    runtime: Runtime,
    /// `None` until the first operation after a connection was lost.
    conn: RefCell<Option<Conn>>,
    location: PgLocation,
    sql: Sql,
    writable: bool,
    lock_timeout: Duration,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .field("writable", &self.writable)
            .finish()
    }
}

impl PgStore {
    /// Connects; a writable store is migrated, a read-only one must exist
    /// at this build's version.
    pub(crate) fn open(location: PgLocation, writable: bool) -> Result<PgStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        let store = PgStore {
            runtime,
            conn: RefCell::new(None),
            sql: Sql::new(&location.schema),
            location,
            writable,
            lock_timeout: super::BUSY_TIMEOUT,
        };
        let (location, sql) = (&store.location, &store.sql);
        let conn = block_on(&store.runtime, async {
            // Unprepared first: the tables may not exist yet.
            let mut conn = Conn::open(location, sql, false).await?;
            if writable {
                match schema::migrate(&mut conn.client, sql).await? {
                    Migration::Current => tracing::info!(
                        store = %location,
                        version = schema::SCHEMA_VERSION,
                        "findings store schema is current"
                    ),
                    Migration::From(from) => tracing::info!(
                        store = %location,
                        from,
                        to = schema::SCHEMA_VERSION,
                        "findings store schema migrated"
                    ),
                }
                Conn::open(location, sql, true).await
            } else {
                match schema::version(&conn.client, sql).await? {
                    None => Err(StoreError::PgMissing {
                        store: location.display.clone(),
                        schema: location.schema.clone(),
                    }),
                    Some(v) if v > schema::SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
                        found: v,
                        supported: schema::SCHEMA_VERSION,
                    }),
                    Some(v) if v < schema::SCHEMA_VERSION => Err(StoreError::SchemaOutdated {
                        found: v,
                        supported: schema::SCHEMA_VERSION,
                    }),
                    Some(_) => Ok(conn),
                }
            }
        })?;
        *store.conn.borrow_mut() = Some(conn);
        Ok(store)
    }

    /// Runs one operation on the connection (opening a new one if the last
    /// was lost), within [`OPERATION_TIMEOUT`]. `f` gets the connection
    /// and hands it back with its result.
    fn op<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: FnOnce(Conn) -> Fut + Send,
        Fut: Future<Output = (Conn, Result<T, StoreError>)> + Send,
    {
        let held = self.conn.borrow_mut().take();
        let (location, sql, writable) = (&self.location, &self.sql, self.writable);
        let (conn, result) = block_on(&self.runtime, async move {
            let conn = match held.filter(|c| !c.client.is_closed()) {
                Some(conn) => conn,
                None => match Conn::open(location, sql, writable).await {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            match tokio::time::timeout(OPERATION_TIMEOUT, f(conn)).await {
                Ok((conn, result)) => ((!conn.client.is_closed()).then_some(conn), result),
                Err(_) => (
                    None,
                    Err(StoreError::PgTimeout {
                        store: location.to_string(),
                        after: OPERATION_TIMEOUT,
                    }),
                ),
            }
        });
        *self.conn.borrow_mut() = conn;
        result
    }

    pub(crate) fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), StoreError> {
        self.lock_timeout = timeout;
        Ok(())
    }

    pub(crate) fn begin_run(&mut self, info: &RunInfo) -> Result<RunId, StoreError> {
        if !self.writable {
            return Err(StoreError::ReadOnly);
        }
        let sql = &self.sql;
        let started = rows::to_nanos(info.started_at);
        let pid = i64::from(info.pid);
        self.op(|conn| async move {
            let result = conn
                .client
                .query_one(
                    &sql.begin_run,
                    &[&info.instance, &started, &info.host, &pid, &info.version],
                )
                .await
                .map(|row| RunId(row.get(0)))
                .map_err(StoreError::from);
            (conn, result)
        })
    }

    /// Folds deltas and the summary into the store in one transaction, and
    /// marks the run active now.
    pub(crate) fn write(
        &mut self,
        run: RunId,
        deltas: &[Finding],
        summary: Option<&Summary>,
    ) -> Result<Recorded, StoreError> {
        let limits = format!(
            "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            self.lock_timeout.as_millis().clamp(1, i32::MAX as u128),
            STATEMENT_TIMEOUT.as_millis()
        );
        self.op(|mut conn| async move {
            let result = write(&mut conn, &limits, run, deltas, summary).await;
            (conn, result)
        })
    }

    pub(crate) fn end_run(
        &mut self,
        run: RunId,
        ended_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if !self.writable {
            return Err(StoreError::ReadOnly);
        }
        let sql = &self.sql;
        let ended = rows::to_nanos(ended_at);
        self.op(|conn| async move {
            let result = match conn.client.execute(&sql.end_run, &[&run.0, &ended]).await {
                Ok(0) => Err(StoreError::NoSuchRun(run.0)),
                Ok(_) => Ok(()),
                Err(e) => Err(e.into()),
            };
            (conn, result)
        })
    }

    pub(crate) fn prune(
        &mut self,
        cutoff: OffsetDateTime,
        keep: Option<RunId>,
    ) -> Result<Pruned, StoreError> {
        if !self.writable {
            return Err(StoreError::ReadOnly);
        }
        let sql = &self.sql;
        let cutoff = rows::to_nanos(cutoff);
        let keep = keep.map(|r| r.0);
        self.op(|mut conn| async move {
            let result = async {
                let tx = conn.client.transaction().await?;
                let runs = tx.execute(&sql.prune_runs, &[&cutoff, &keep]).await?;
                let findings = tx.execute(&sql.prune_findings, &[&cutoff]).await?;
                tx.commit().await?;
                Ok(Pruned { runs, findings })
            }
            .await;
            (conn, result)
        })
    }

    pub(crate) fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        let sql = &self.sql;
        self.op(|conn| async move {
            let result =
                select_runs(&conn.client, sql, &RunSelection::All, &RunFilter::default()).await;
            (conn, result)
        })
    }

    /// Builds the report from one snapshot (a repeatable-read, read-only
    /// transaction): a flush that commits meanwhile is wholly in or out.
    pub(crate) fn load_report(
        &self,
        selection: &RunSelection,
        filter: &RunFilter,
    ) -> Result<Report, StoreError> {
        let sql = &self.sql;
        self.op(|mut conn| async move {
            let result = async {
                let tx = conn
                    .client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let runs = select_runs(&tx, sql, selection, filter).await?;
                if let (RunSelection::Id(id), true) = (selection, runs.is_empty()) {
                    return Err(StoreError::NoSuchRun(*id));
                }
                let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
                let since = filter.since.map_or(i64::MIN, rows::to_nanos);
                let mut merged: BTreeMap<String, Finding> = BTreeMap::new();
                for row in tx.query(&sql.select_run_findings, &[&ids, &since]).await? {
                    let mut f = raw_finding(&row)?.decode()?;
                    raw_run_row(&row, 17)?.apply(&mut f)?;
                    match merged.get_mut(&f.id) {
                        Some(acc) => acc.merge(&f),
                        None => {
                            merged.insert(f.id.clone(), f);
                        }
                    }
                }
                tx.commit().await?;
                Ok(super::assemble_report(runs, merged))
            }
            .await;
            (conn, result)
        })
    }

    pub(crate) fn finding(&self, id: &str) -> Result<Option<Finding>, StoreError> {
        let sql = &self.sql;
        self.op(|conn| async move {
            let result = async {
                match conn.client.query_opt(&sql.select_finding, &[&id]).await? {
                    Some(row) => Ok(Some(raw_finding(&row)?.decode()?)),
                    None => Ok(None),
                }
            }
            .await;
            (conn, result)
        })
    }
}

/// The body of [`PgStore::write`].
async fn write(
    conn: &mut Conn,
    limits: &str,
    run: RunId,
    deltas: &[Finding],
    summary: Option<&Summary>,
) -> Result<Recorded, StoreError> {
    let Conn { client, statements } = conn;
    let st = statements.as_ref().ok_or(StoreError::ReadOnly)?;
    let tx = client.transaction().await?;
    tx.batch_execute(limits).await?;
    // The same lock order in every proxy: no deadlocks between them.
    let mut order: Vec<usize> = (0..deltas.len()).collect();
    order.sort_by(|&a, &b| deltas[a].id.cmp(&deltas[b].id));
    let mut recorded = Recorded::default();
    for i in order {
        let d = &deltas[i];
        let columns = rows::to_json(&d.columns);
        let request = d.request.as_ref().map(rows::to_json);
        let parent = d.parent.as_ref().map(rows::to_json);
        let details = rows::to_json(&d.details);
        let count = d.count.map(rows::to_i64);
        let occurrences = rows::to_i64(d.occurrences);
        let rows_max = d.rows.map(|r| rows::to_i64(r.max));
        let (first, last) = (rows::to_nanos(d.first_seen), rows::to_nanos(d.last_seen));
        let follow = d.kind.details_follow_count();
        tx.execute(
            &st.upsert_finding,
            &[
                &d.id,
                &d.kind.as_str(),
                &d.severity.as_str(),
                &d.fingerprint,
                &d.query,
                &d.table,
                &columns,
                &count,
                &occurrences,
                &request,
                &parent,
                &rows_max,
                &d.suggestion,
                &d.database,
                &details,
                &first,
                &last,
                &follow,
            ],
        )
        .await?;
        let inserted: bool = tx
            .query_one(
                &st.upsert_run_finding,
                &[
                    &run.0,
                    &d.id,
                    &d.severity.as_str(),
                    &occurrences,
                    &count,
                    &request,
                    &rows_max,
                    &first,
                    &last,
                ],
            )
            .await?
            .get(0);
        if inserted {
            recorded.new_in_run.push(i);
        }
    }
    recorded.new_in_run.sort_unstable();
    let now = rows::to_nanos(OffsetDateTime::now_utc());
    let changed = match summary {
        Some(s) => {
            tx.execute(
                &st.update_summary,
                &[
                    &run.0,
                    &rows::to_i64(s.queries),
                    &rows::to_i64(s.fingerprints),
                    &rows::to_i64(s.requests),
                    &s.correlated_fraction,
                    &rows::to_i64(s.parse_failures),
                    &rows::to_i64(s.dropped_events),
                    &s.catalog,
                    &rows::to_i64(s.findings_lost),
                    &rows::to_i64(s.statements_not_analysed),
                    &now,
                    &rows::to_i64(s.verifications_skipped),
                ],
            )
            .await?
        }
        None => tx.execute(&st.heartbeat, &[&run.0, &now]).await?,
    };
    if changed == 0 {
        return Err(StoreError::NoSuchRun(run.0));
    }
    tx.commit().await?;
    Ok(recorded)
}

/// The runs `selection` and `filter` pick, oldest first.
async fn select_runs<C: tokio_postgres::GenericClient>(
    client: &C,
    sql: &Sql,
    selection: &RunSelection,
    filter: &RunFilter,
) -> Result<Vec<RunMeta>, StoreError> {
    let query = match selection {
        RunSelection::Latest => &sql.select_latest_run,
        RunSelection::All | RunSelection::Id(_) => &sql.select_runs,
    };
    let id = match selection {
        RunSelection::Id(id) => Some(*id),
        _ => None,
    };
    let since = filter.since.map(rows::to_nanos);
    let rows = client
        .query(query, &[&filter.instance, &since, &id])
        .await?;
    rows.iter().map(run_meta).collect()
}

fn run_meta(r: &Row) -> Result<RunMeta, StoreError> {
    Ok(RunMeta {
        id: r.try_get(0)?,
        started_at: rows::from_nanos(r.try_get(1)?),
        ended_at: r.try_get::<_, Option<i64>>(2)?.map(rows::from_nanos),
        host: r.try_get(3)?,
        pid: u32::try_from(r.try_get::<_, i64>(4)?).unwrap_or(0),
        version: r.try_get(5)?,
        summary: Summary {
            queries: rows::to_u64(r.try_get(6)?),
            fingerprints: rows::to_u64(r.try_get(7)?),
            requests: rows::to_u64(r.try_get(8)?),
            correlated_fraction: r.try_get(9)?,
            parse_failures: rows::to_u64(r.try_get(10)?),
            dropped_events: rows::to_u64(r.try_get(11)?),
            catalog: r.try_get(12)?,
            findings_lost: rows::to_u64(r.try_get(13)?),
            statements_not_analysed: rows::to_u64(r.try_get(14)?),
            verifications_skipped: rows::to_u64(r.try_get(16)?),
        },
        instance: r.try_get(15)?,
    })
}

fn raw_finding(row: &Row) -> Result<RawFinding, StoreError> {
    Ok(RawFinding {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        severity: row.try_get(2)?,
        fingerprint: row.try_get(3)?,
        query: row.try_get(4)?,
        table: row.try_get(5)?,
        columns: row.try_get(6)?,
        count: row.try_get(7)?,
        occurrences: row.try_get(8)?,
        request: row.try_get(9)?,
        parent: row.try_get(10)?,
        rows_max: row.try_get(11)?,
        suggestion: row.try_get(12)?,
        database: row.try_get(13)?,
        details: row.try_get(14)?,
        first_seen: row.try_get(15)?,
        last_seen: row.try_get(16)?,
    })
}

fn raw_run_row(row: &Row, at: usize) -> Result<RawRunRow, StoreError> {
    Ok(RawRunRow {
        severity: row.try_get(at)?,
        occurrences: row.try_get(at + 1)?,
        count: row.try_get(at + 2)?,
        request: row.try_get(at + 3)?,
        rows_max: row.try_get(at + 4)?,
        first_seen: row.try_get(at + 5)?,
        last_seen: row.try_get(at + 6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["qproxy", "qproxy_staging", "_x", "Fleet2"] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        let long = "x".repeat(64);
        for bad in [
            "",
            "1st",
            "a-b",
            "a b",
            "a\"b",
            "qproxy;drop",
            long.as_str(),
        ] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn statements_quote_the_schema() {
        let sql = Sql::new("fleet");
        assert!(sql
            .upsert_finding
            .starts_with("INSERT INTO \"fleet\".findings"));
        assert_eq!(sql.version_table, "\"fleet\".qproxy_schema_version");
        assert_eq!(sql.schema_name, "fleet");
    }
}
