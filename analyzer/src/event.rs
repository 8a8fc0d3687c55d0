//! The events the proxy's protocol tracker hands to the analyzer.
//!
//! One [`QueryEvent`] describes one executed statement (or one statement of a
//! multi-statement simple query). It is built on the forwarding path, so it
//! holds only cheap, already-available values: shared SQL text (`Arc<str>`, so a
//! prepared statement executed a million times is never copied), hashes of the
//! bound parameter values (never the values themselves, with one exception:
//! [`QueryEvent::offset`]), counts and timestamps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use smallvec::SmallVec;

/// Which sub-protocol carried the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// A `Query` ('Q') message; literals are inline in the text.
    Simple,
    /// Parse/Bind/Execute; values arrive as bind parameters.
    Extended,
    /// A `FunctionCall` ('F') message (large objects, fast-path).
    FunctionCall,
}

/// Transaction status as reported by the last `ReadyForQuery` before the
/// statement started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    /// Not in a transaction block (`I`).
    Idle,
    /// In a transaction block (`T`).
    InTransaction,
    /// In a failed transaction block (`E`).
    Failed,
}

impl TxStatus {
    /// Maps the `ReadyForQuery` status byte; unknown bytes count as idle.
    pub fn from_byte(b: u8) -> Self {
        match b {
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        }
    }
}

/// How a statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `CommandComplete` with its tag (e.g. `SELECT 3`, `INSERT 0 1`).
    Complete {
        /// The command tag exactly as the server sent it.
        tag: Box<str>,
    },
    /// `EmptyQueryResponse`: the statement text was empty.
    Empty,
    /// A portal fetched in chunks (`Execute` with a row limit, answered by
    /// `PortalSuspended`) went away before its last row: the client closed
    /// it, replaced it or ended its transaction, or the connection closed.
    /// The event still stands for the whole execution: `rows` counts every
    /// chunk fetched. (A portal fetched to its end completes normally.)
    Suspended,
    /// `ErrorResponse` with its SQLSTATE.
    Error {
        /// Five-character SQLSTATE code, e.g. `42P01`.
        sqlstate: [u8; 5],
    },
    /// A COPY that ended with `CopyFail` from the client or an error.
    CopyFailed,
    /// The connection closed before the statement finished.
    Aborted,
}

/// One executed statement, as seen on the wire.
#[derive(Debug, Clone)]
pub struct QueryEvent {
    /// Proxy-assigned id of the client connection (unique within a process).
    pub connection_id: u64,
    /// The SQL text as the client sent it (whole `Query` string for simple
    /// queries, the `Parse` text for extended ones). Shared, never copied.
    pub sql: Arc<str>,
    /// For a simple query holding several statements: which one (0-based)
    /// this event is. Always 0 for extended protocol.
    pub statement_index: u16,
    /// Name of the prepared statement the execution came from (`None` for the
    /// unnamed statement and for simple queries).
    pub statement_name: Option<Arc<str>>,
    /// When the named prepared statement was Parsed (`None` for the
    /// unnamed statement and simple queries): a statement prepared before
    /// the connection moved to another request must not drag later
    /// executions back into the old one.
    pub prepared_at: Option<SystemTime>,
    /// Which sub-protocol carried it.
    pub protocol: Protocol,
    /// Hash of all bound parameter values and their format codes (extended
    /// protocol only); equal tuples give equal hashes.
    pub params_hash: Option<u64>,
    /// Per-parameter value hashes ([`crate::values::value_hash`]), in
    /// order (`None` entries are SQL NULL). Used to match a child's
    /// parameters against a parent's result values.
    pub param_hashes: SmallVec<[Option<u64>; 4]>,
    /// The row count the statement's top-level `OFFSET $n` was bound to
    /// (extended protocol; `None` when the statement has no such OFFSET or
    /// the value is not a non-negative integer).
    ///
    /// This is the one bound value the tracker reads rather than hashes,
    /// because `offset_pagination` is about its size. It is a row count the
    /// application computed (page × page size), not user data, and it is
    /// still never kept: the analyzer compares it with the threshold and
    /// stores at most its order of magnitude ([`crate::offset::magnitude`])
    /// on a finding; nothing logs events. A literal OFFSET is read from
    /// `sql` by the analyzer instead.
    pub offset: Option<u64>,
    /// Hashes ([`crate::values::value_hash`]) of small values in the first
    /// rows returned (bounded: a few rows and columns), so a later query
    /// whose parameters came from this result can name it as its parent.
    pub result_hashes: Vec<u64>,
    /// Wall-clock time the statement's execution was sent to the server.
    pub started_at: SystemTime,
    /// Time from sending to the statement's completion message. For a
    /// portal fetched in chunks: from its first `Execute` to the reply that
    /// ended its last chunk, pauses between chunks included.
    pub duration: Duration,
    /// `DataRow` messages returned for this statement (for a portal
    /// fetched in chunks, by all of its chunks: one event per execution,
    /// not per chunk).
    pub rows: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Transaction status before the statement ran.
    pub tx_status: TxStatus,
    /// The session's `application_name`, as last reported by the server.
    pub application_name: Option<Arc<str>>,
    /// The database the client connected to (from its StartupMessage).
    pub database: Option<Arc<str>>,
    /// The user the client connected as (from its StartupMessage).
    pub user: Option<Arc<str>>,
    /// Keeps the proxy's memory accounting for a large `sql` alive while
    /// this event exists: the proxy charges big SQL texts against its
    /// budget for held bytes until the last event sharing the text is
    /// dropped. Analysis never looks at it; `None` for ordinary texts.
    pub text_hold: Option<TextHold>,
}

/// An opaque guard whose drop tells the proxy a large SQL text is no
/// longer referenced (see [`QueryEvent::text_hold`]).
pub type TextHold = Arc<dyn std::fmt::Debug + Send + Sync>;

/// Connection lifecycle, so the analyzer can end per-connection state.
// `Query` is by far the common variant; boxing it would cost an allocation
// per query on the forwarding path to save space on the rare `Closed`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A statement finished.
    Query(QueryEvent),
    /// A client connection closed; its request contexts end.
    Closed {
        /// The connection that closed.
        connection_id: u64,
        /// When the proxy saw it close: a transaction left open until then
        /// was idle from its last statement to this moment.
        at: SystemTime,
        /// Transaction status from the last `ReadyForQuery` the tracker saw;
        /// `None` when it cannot vouch for one (the session never finished
        /// startup, or the tracker lost protocol sync).
        tx_status: Option<TxStatus>,
    },
}
