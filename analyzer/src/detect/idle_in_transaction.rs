//! Idle in transaction: a transaction held open while the application sent
//! nothing (an HTTP call, a file upload, a sleep between two statements of
//! one transaction).
//!
//! The proxy reports, with every statement, the transaction status before
//! it (from the last ReadyForQuery) and when it started and ended. Per
//! connection, [`IdleTransactions`] keeps the end of the latest statement;
//! when the next statement starts in a transaction block (`T`, or `E` for a
//! failed one, which still holds its locks), the silence between them was
//! spent idle in that transaction. A transaction left open while the
//! connection just sits is only known to have been idle when the next
//! statement arrives or when the connection closes (the close event carries
//! the last status), so that is when it is reported.
//!
//! # What is measured
//! From the server's completion message of the last statement before the
//! gap to the next statement the client sent (or the connection's close),
//! as the proxy saw them. The time the client took to read the last reply
//! counts as idle: from the wire it cannot be told apart from the
//! application's own work, and the transaction was open all along.
//!
//! # Locks
//! `details.locks_taken` says whether a statement of the transaction that
//! completed before the gap took row or table locks that other sessions can
//! wait on: INSERT, UPDATE, DELETE, MERGE, `SELECT ... FOR UPDATE/SHARE`,
//! a SELECT whose `WITH` clause writes, `LOCK`, or DDL. Locks taken implicitly (a foreign key check's `FOR KEY
//! SHARE`, a function's writes) are not visible on the wire and are not
//! claimed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::correlation::ContextId;
use crate::event::TxStatus;
use crate::finding::{RequestRef, Severity};
use crate::fingerprint::{FingerprintId, StatementKind};

/// Settings of the idle-in-transaction detector
/// (`[analyzer.idle_in_transaction]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleInTransactionConfig {
    /// Silence inside a transaction that makes a finding. Default 1 s: an
    /// application thinks for microseconds between the statements of a
    /// transaction; a second is a call to something else (an HTTP API, a
    /// queue, the user) with the transaction's snapshot and locks held.
    #[serde(deserialize_with = "crate::correlation::duration_setting")]
    pub threshold: Duration,
}

impl Default for IdleInTransactionConfig {
    fn default() -> Self {
        IdleInTransactionConfig {
            threshold: Duration::from_secs(1),
        }
    }
}

/// A statement as the detector sees it.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    /// The connection it ran on.
    pub connection_id: u64,
    /// Its fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: &'a Arc<str>,
    /// What it does.
    pub kind: StatementKind,
    /// Whether a SELECT locks the rows it reads (`FOR UPDATE/SHARE`).
    pub locking_read: bool,
    /// Whether a SELECT's `WITH` clause writes.
    pub cte_write: bool,
    /// It completed (CommandComplete), so whatever it locked is held.
    pub completed: bool,
    /// For a multi-statement simple query: which statement (later ones
    /// went with the first, so no gap precedes them).
    pub statement_index: u16,
    /// Transaction status before it.
    pub tx_status: TxStatus,
    /// When it was sent to the server.
    pub started_at: SystemTime,
    /// When it completed.
    pub ended_at: SystemTime,
}

/// A statement of the transaction named in a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRef {
    /// Its fingerprint (16 hex digits).
    pub fingerprint: String,
    /// Its normalized SQL.
    pub query: String,
}

/// `details` of an `idle_in_transaction` finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleInTransactionDetails {
    /// How long the transaction sat idle, in milliseconds.
    pub idle_ms: u64,
    /// The threshold in force, in milliseconds.
    pub threshold_ms: u64,
    /// Whether a statement of the transaction that completed before the
    /// gap took locks other sessions can wait on (see the module docs).
    pub locks_taken: bool,
    /// What took them: the first such statement (`UPDATE`, `SELECT ... FOR
    /// UPDATE`, ...).
    pub lock_statement: Option<String>,
    /// The transaction had already failed (status `E`): it held its locks
    /// and could only be rolled back.
    pub transaction_failed: bool,
    /// `next_statement` when the application came back, or
    /// `connection_closed` when it closed the connection instead (the
    /// server rolled the transaction back).
    pub ended_by: String,
    /// The statement the application sent after the gap.
    pub next_statement: Option<StatementRef>,
    /// How the idle time was measured.
    pub measured: String,
}

/// The request a connection's statements belong to, as a finding names it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestLabels {
    /// The request.
    pub request: RequestRef,
    /// The framework or driver tag, for the suggestion's idiom.
    pub framework: Option<Arc<str>>,
    /// The request's trace id, for the finding's `trace_id`.
    pub trace_id: Option<Arc<str>>,
}

/// One idle gap worth a finding.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleGap {
    /// The last statement before the gap: where the application stopped.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: Arc<str>,
    /// The request the transaction belonged to, when known.
    pub request: Option<RequestLabels>,
    /// How bad: error when locks were held or the gap was ten times the
    /// threshold, else warning.
    pub severity: Severity,
    /// When the gap started (the completion of the statement before it).
    pub started_at: SystemTime,
    /// The evidence.
    pub details: IdleInTransactionDetails,
}

#[derive(Debug)]
struct Connection {
    last_end: SystemTime,
    last: (FingerprintId, Arc<str>),
    /// The first statement since the transaction began that took locks.
    lock: Option<&'static str>,
    /// The request of the latest statement (recomputed only when the
    /// context changes).
    request: Option<(ContextId, RequestLabels)>,
}

/// Per-connection timing state (see the module docs). Bounded: at most
/// `max_connections` connections are tracked; beyond, the one quiet the
/// longest is forgotten (its close event was probably dropped).
#[derive(Debug)]
pub struct IdleTransactions {
    config: IdleInTransactionConfig,
    max_connections: usize,
    /// Boxed: the map keeps room for up to twice as many entries as it
    /// holds, and an idle connection should cost its state, not that.
    connections: HashMap<u64, Box<Connection>>,
}

const MEASURED: &str = "from the server's completion of the statement before the gap to the \
     next statement sent (or the connection's close), as seen by the proxy";

impl IdleTransactions {
    /// A detector tracking at most `max_connections` connections.
    pub fn new(config: IdleInTransactionConfig, max_connections: usize) -> Self {
        IdleTransactions {
            config,
            max_connections: max_connections.max(1),
            connections: HashMap::new(),
        }
    }

    /// Takes one statement; returns the idle gap it ended, if that was
    /// long enough. `request` names the statement's request (called only
    /// when the connection's request changed).
    pub fn observe(
        &mut self,
        s: &Statement<'_>,
        context: ContextId,
        request: impl FnOnce() -> RequestLabels,
    ) -> Option<IdleGap> {
        if !self.connections.contains_key(&s.connection_id)
            && self.connections.len() >= self.max_connections
        {
            self.forget_quietest();
        }
        let in_tx = matches!(s.tx_status, TxStatus::InTransaction | TxStatus::Failed);
        let threshold = self.config.threshold;
        let conn = self.connections.entry(s.connection_id).or_insert_with(|| {
            Box::new(Connection {
                last_end: s.ended_at,
                last: (s.fingerprint, s.normalized.clone()),
                lock: None,
                request: None,
            })
        });
        let mut gap = None;
        if in_tx && s.statement_index == 0 {
            let idle = s
                .started_at
                .duration_since(conn.last_end)
                .unwrap_or_default();
            if idle >= threshold {
                gap = Some(idle_gap(
                    &self.config,
                    conn,
                    idle,
                    s.tx_status == TxStatus::Failed,
                    Some(StatementRef {
                        fingerprint: s.fingerprint.to_string(),
                        query: s.normalized.to_string(),
                    }),
                ));
            }
        }
        if !in_tx {
            // No transaction block was open before this statement, so
            // nothing it locks outlives it unless it began one.
            conn.lock = None;
        }
        if conn.lock.is_none() && s.completed {
            conn.lock = lock_taken(s);
        }
        conn.last_end = conn.last_end.max(s.ended_at);
        if conn.last.0 != s.fingerprint {
            conn.last = (s.fingerprint, s.normalized.clone());
        }
        if conn.request.as_ref().is_none_or(|(id, _)| *id != context) {
            conn.request = Some((context, request()));
        }
        gap
    }

    /// The connection closed at `at`, its last known transaction status
    /// `tx_status`: a transaction still open was idle until then.
    pub fn closed(
        &mut self,
        connection_id: u64,
        at: SystemTime,
        tx_status: Option<TxStatus>,
    ) -> Option<IdleGap> {
        let conn = self.connections.remove(&connection_id)?;
        let failed = match tx_status? {
            TxStatus::Idle => return None,
            TxStatus::InTransaction => false,
            TxStatus::Failed => true,
        };
        let idle = at.duration_since(conn.last_end).unwrap_or_default();
        (idle >= self.config.threshold).then(|| idle_gap(&self.config, &conn, idle, failed, None))
    }

    /// Connections tracked.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    fn forget_quietest(&mut self) {
        let quietest = self
            .connections
            .iter()
            .min_by_key(|(_, c)| c.last_end)
            .map(|(id, _)| *id);
        if let Some(id) = quietest {
            self.connections.remove(&id);
        }
    }
}

/// What the statement locks, in words, if it holds locks others can wait on.
fn lock_taken(s: &Statement<'_>) -> Option<&'static str> {
    match s.kind {
        StatementKind::Insert => Some("INSERT"),
        StatementKind::Update => Some("UPDATE"),
        StatementKind::Delete => Some("DELETE"),
        StatementKind::Merge => Some("MERGE"),
        StatementKind::Ddl => Some("DDL"),
        StatementKind::Select if s.locking_read => Some("SELECT ... FOR UPDATE/SHARE"),
        StatementKind::Select if s.cte_write => Some("WITH ... INSERT/UPDATE/DELETE"),
        StatementKind::Other if starts_with_keyword(s.normalized, "LOCK") => Some("LOCK"),
        _ => None,
    }
}

fn starts_with_keyword(sql: &str, keyword: &str) -> bool {
    let sql = sql.trim_start();
    sql.len() >= keyword.len()
        && sql[..keyword.len()].eq_ignore_ascii_case(keyword)
        && sql[keyword.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_')
}

/// The severity rule: a warning from the threshold; an error from ten
/// times it, or at any length when the transaction holds locks (`locks`:
/// one of its statements took row or table locks), since other sessions
/// can wait behind it.
pub fn severity(config: &IdleInTransactionConfig, idle: Duration, locks: bool) -> Severity {
    if locks || idle >= config.threshold * 10 {
        Severity::Error
    } else {
        Severity::Warning
    }
}

fn idle_gap(
    config: &IdleInTransactionConfig,
    conn: &Connection,
    idle: Duration,
    failed: bool,
    next: Option<StatementRef>,
) -> IdleGap {
    IdleGap {
        fingerprint: conn.last.0,
        normalized: conn.last.1.clone(),
        request: conn.request.as_ref().map(|(_, r)| r.clone()),
        severity: severity(config, idle, conn.lock.is_some()),
        started_at: conn.last_end,
        details: IdleInTransactionDetails {
            idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            threshold_ms: u64::try_from(config.threshold.as_millis()).unwrap_or(u64::MAX),
            locks_taken: conn.lock.is_some(),
            lock_statement: conn.lock.map(str::to_string),
            transaction_failed: failed,
            ended_by: if next.is_some() {
                "next_statement"
            } else {
                "connection_closed"
            }
            .to_string(),
            next_statement: next,
            measured: MEASURED.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Conn {
        idle: IdleTransactions,
        sql: Arc<str>,
        clock: SystemTime,
    }

    fn conn() -> Conn {
        Conn {
            idle: IdleTransactions::new(IdleInTransactionConfig::default(), 100),
            sql: Arc::from("UPDATE accounts SET balance = $1 WHERE id = $2"),
            clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        }
    }

    impl Conn {
        /// Runs a statement `after` the previous one ended; it takes 1 ms.
        fn run(
            &mut self,
            fp: u64,
            kind: StatementKind,
            tx: TxStatus,
            after: Duration,
        ) -> Option<IdleGap> {
            let started_at = self.clock + after;
            self.clock = started_at + Duration::from_millis(1);
            let s = Statement {
                connection_id: 1,
                fingerprint: FingerprintId(fp),
                normalized: &self.sql,
                kind,
                locking_read: false,
                cte_write: false,
                completed: true,
                statement_index: 0,
                tx_status: tx,
                started_at,
                ended_at: self.clock,
            };
            self.idle.observe(&s, ContextId(1), || RequestLabels {
                request: RequestRef {
                    id: Some("req-1".into()),
                    route: Some("orders.pay".into()),
                    correlation: Some("comment".into()),
                },
                framework: None,
                trace_id: None,
            })
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_gap_inside_a_transaction_after_a_write_is_an_error() {
        let mut c = conn();
        assert!(c.run(1, StatementKind::Begin, TxStatus::Idle, MS).is_none());
        assert!(c
            .run(2, StatementKind::Update, TxStatus::InTransaction, MS)
            .is_none());
        let gap = c
            .run(3, StatementKind::Commit, TxStatus::InTransaction, 1500 * MS)
            .expect("idle gap");
        assert_eq!(gap.fingerprint, FingerprintId(2));
        assert_eq!(gap.severity, Severity::Error);
        assert_eq!(gap.details.idle_ms, 1500);
        assert!(gap.details.locks_taken);
        assert_eq!(gap.details.lock_statement.as_deref(), Some("UPDATE"));
        assert_eq!(gap.details.ended_by, "next_statement");
        assert_eq!(
            gap.request.and_then(|r| r.request.route).as_deref(),
            Some("orders.pay")
        );
    }

    #[test]
    fn quick_transactions_and_gaps_outside_transactions_are_clean() {
        let mut c = conn();
        for _ in 0..3 {
            assert!(c.run(1, StatementKind::Begin, TxStatus::Idle, MS).is_none());
            assert!(c
                .run(2, StatementKind::Select, TxStatus::InTransaction, 20 * MS)
                .is_none());
            assert!(c
                .run(3, StatementKind::Commit, TxStatus::InTransaction, 20 * MS)
                .is_none());
            // Long silence between transactions: not in one.
            assert!(c
                .run(4, StatementKind::Select, TxStatus::Idle, 5000 * MS)
                .is_none());
        }
    }

    #[test]
    fn a_read_only_gap_is_a_warning_and_a_new_transaction_forgets_old_locks() {
        let mut c = conn();
        c.run(1, StatementKind::Begin, TxStatus::Idle, MS);
        c.run(2, StatementKind::Insert, TxStatus::InTransaction, MS);
        c.run(3, StatementKind::Commit, TxStatus::InTransaction, MS);
        c.run(1, StatementKind::Begin, TxStatus::Idle, MS);
        c.run(4, StatementKind::Select, TxStatus::InTransaction, MS);
        let gap = c
            .run(5, StatementKind::Select, TxStatus::InTransaction, 1200 * MS)
            .expect("idle gap");
        assert_eq!(gap.severity, Severity::Warning);
        assert!(!gap.details.locks_taken);
        // Ten times the threshold is an error even without locks.
        let gap = c
            .run(
                5,
                StatementKind::Select,
                TxStatus::InTransaction,
                10_000 * MS,
            )
            .expect("idle gap");
        assert_eq!(gap.severity, Severity::Error);
    }

    #[test]
    fn a_transaction_left_open_is_reported_when_the_connection_closes() {
        let mut c = conn();
        c.run(1, StatementKind::Begin, TxStatus::Idle, MS);
        c.run(2, StatementKind::Update, TxStatus::InTransaction, MS);
        let at = c.clock + 3 * Duration::from_secs(1);
        let gap = c
            .idle
            .closed(1, at, Some(TxStatus::InTransaction))
            .expect("idle until close");
        assert_eq!(gap.details.idle_ms, 3000);
        assert_eq!(gap.details.ended_by, "connection_closed");
        assert!(gap.details.next_statement.is_none());
        assert!(c.idle.is_empty());
        // Closed outside a transaction, or with no status to vouch for.
        c.run(1, StatementKind::Begin, TxStatus::Idle, MS);
        assert!(c.idle.closed(1, at + 10 * MS, None).is_none());
        c.run(1, StatementKind::Select, TxStatus::Idle, MS);
        assert!(c
            .idle
            .closed(1, c.clock + 5000 * MS, Some(TxStatus::Idle))
            .is_none());
    }

    #[test]
    fn failed_transactions_and_lock_keywords() {
        let mut c = conn();
        c.run(1, StatementKind::Begin, TxStatus::Idle, MS);
        let gap = c
            .run(2, StatementKind::Rollback, TxStatus::Failed, 2000 * MS)
            .expect("idle gap");
        assert!(gap.details.transaction_failed);
        assert!(starts_with_keyword("lock table t", "LOCK"));
        assert!(!starts_with_keyword("LOCKED", "LOCK"));
    }

    #[test]
    fn tracked_connections_are_capped() {
        let mut idle = IdleTransactions::new(IdleInTransactionConfig::default(), 2);
        let sql: Arc<str> = Arc::from("SELECT 1");
        for id in 0..5u64 {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(id);
            let s = Statement {
                connection_id: id,
                fingerprint: FingerprintId(1),
                normalized: &sql,
                kind: StatementKind::Select,
                locking_read: false,
                cte_write: false,
                completed: true,
                statement_index: 0,
                tx_status: TxStatus::Idle,
                started_at: at,
                ended_at: at,
            };
            idle.observe(&s, ContextId(id), RequestLabels::default);
        }
        assert_eq!(idle.len(), 2);
    }

    #[test]
    fn an_idle_gap_is_an_error_from_ten_times_the_threshold_or_under_a_lock() {
        let config = IdleInTransactionConfig::default();
        let t = config.threshold;
        assert_eq!(severity(&config, t, false), Severity::Warning);
        assert_eq!(
            severity(&config, t * 10 - Duration::from_millis(1), false),
            Severity::Warning
        );
        assert_eq!(severity(&config, t * 10, false), Severity::Error);
        assert_eq!(severity(&config, t, true), Severity::Error);
    }
}
