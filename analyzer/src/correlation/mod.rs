//! Request correlation: which executions belong to one request.
//!
//! Every finding is "in one request", so the [`Correlator`] assigns each
//! [`QueryEvent`](crate::event::QueryEvent) to a request context and hands
//! contexts on when they end, carrying a per-request detector state `S`.
//!
//! # Which request a statement belongs to
//! In order of preference (DESIGN, "Request correlation"):
//! 1. [`CorrelationSource::Comment`]: a request id or `traceparent` in a
//!    sqlcommenter or marginalia comment ([`tags`]).
//! 2. [`CorrelationSource::SetVariable`]: `SET [LOCAL] qproxy.request_id` or
//!    `set_config('qproxy.request_id', ..)` ([`statement`]). A session value
//!    lasts until changed or reset, a local one until the transaction ends.
//! 3. [`CorrelationSource::ApplicationName`]: the session's
//!    `application_name`, once it differs from the value the connection
//!    started with (a static name says nothing about requests).
//! 4. Fallbacks: [`CorrelationSource::Transaction`] (BEGIN … COMMIT/ROLLBACK)
//!    or, outside transactions, [`CorrelationSource::IdleGap`] (the
//!    connection split where it was silent for
//!    [`idle_gap`](CorrelationConfig::idle_gap)).
//!
//! An untagged statement (the BEGIN a driver sends on its own, raw SQL)
//! stays in the connection's current request while that request was named
//! by a comment or SET and the connection has not gone quiet, and a
//! transaction always stays in the request it began in. A different route
//! label (Rails' controller#action without a request id) starts a new
//! fallback context.
//!
//! # Across connections
//! Contexts named by a request id or trace id are shared by every
//! connection that carries the id: pools that check a connection out per
//! query (node-postgres, knex, Go's database/sql) spread one request over
//! several connections, and ids made for requests do not collide. The other
//! sources are per connection, so unrelated requests never mix.
//!
//! # Prepared statements
//! The proxy reports the Parse text with every execution, so a named
//! statement carries its Parse-time tags forever. Its tags apply while they
//! are fresh: on its first execution (or re-Parse with other tags), and as
//! long as the connection's request identity has not changed since. Once a
//! later comment, SET or application_name named another request on that
//! connection, the statement's tags are stale (a pgx/JDBC/Prisma statement
//! cache reusing it in the next request) and it joins the connection's
//! current request instead.
//!
//! # When contexts end
//! A transaction context at COMMIT/ROLLBACK; a per-connection context when
//! the connection moves to another request or closes; an idle-gap context at
//! the next gap; a named context [`request_grace`](CorrelationConfig::request_grace)
//! after its last connection moved on, or at connection close if no other
//! connection uses it; any context after
//! [`context_idle_timeout`](CorrelationConfig::context_idle_timeout) without
//! statements, or when the [`max_contexts`](CorrelationConfig::max_contexts)
//! cap evicts it. Ended contexts wait in a queue (capped at the same size)
//! for [`Correlator::drain_ended`].
//!
//! # Limits
//! - Tags are read only from comments at the very start or end of the text
//!   (8 KiB windows, comments up to 4 KiB); a comment in the middle of a
//!   statement is not a request tag.
//! - Request-id statements are recognised only in literal forms. With the
//!   extended protocol `set_config('qproxy.request_id', $1, ..)` carries the
//!   id in a bind parameter the proxy only hashes; its hash stands in for the
//!   id (`param:<16 hex>`), so grouping still works but the report shows the
//!   hash. A value computed by an expression is not recognised.
//! - Without tags, consecutive requests on one busy pooled connection with no
//!   transaction and no idle gap between them cannot be told apart; such
//!   contexts say [`CorrelationSource::IdleGap`] so findings can be weighed.
//! - An untagged group (transaction or idle-gap burst) is cut into a new one
//!   after [`fallback_max_duration`](CorrelationConfig::fallback_max_duration)
//!   or [`fallback_max_statements`](CorrelationConfig::fallback_max_statements),
//!   so a connection that never goes quiet (a batch worker, a benchmark) is
//!   judged in bounded slices, not as one giant request. Both parts say
//!   [`RequestInfo::cut`], and their [`RequestInfo::confidence`] is low.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use smallvec::SmallVec;

mod comment;
mod config;
mod context;
mod correlator;
pub mod statement;
pub mod tags;

pub(crate) use config::duration as duration_setting;
pub use config::CorrelationConfig;
pub use correlator::Correlator;
pub use statement::{request_id_signal, statement_role, RequestIdSignal, SetScope, StatementRole};
pub use tags::{extract as extract_tags, LabelKey, Labels, RequestTags};

/// How a context's statements were grouped, so a finding can say how much
/// to trust its "per request".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationSource {
    /// A request id or trace id from a SQL comment.
    Comment,
    /// `SET qproxy.request_id` / `set_config`.
    SetVariable,
    /// A per-request `application_name`.
    ApplicationName,
    /// Untagged: one transaction.
    Transaction,
    /// Untagged: a burst of statements on one connection.
    IdleGap,
}

impl CorrelationSource {
    /// Whether the application named the request (the first three sources),
    /// as opposed to qproxy guessing; counted in `correlated_fraction`.
    pub fn is_correlated(self) -> bool {
        matches!(
            self,
            Self::Comment | Self::SetVariable | Self::ApplicationName
        )
    }

    /// Stable lower-case name for reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Comment => "comment",
            Self::SetVariable => "set_variable",
            Self::ApplicationName => "application_name",
            Self::Transaction => "transaction",
            Self::IdleGap => "idle_gap",
        }
    }
}

/// Identifies one context within a process; never reused, so a stale id can
/// be recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ContextId(pub u64);

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctx-{}", self.0)
    }
}

/// What is known about a request: identity and labels for findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// This context.
    pub id: ContextId,
    /// How it was formed.
    pub source: CorrelationSource,
    /// The application's request id: from a comment, the SET value (possibly
    /// `param:<hash>`), or the per-request application_name. `None` for the
    /// fallback sources.
    pub request_id: Option<Arc<str>>,
    /// Trace id from a `traceparent` comment.
    pub trace_id: Option<Arc<str>>,
    /// Route (or controller#action, or job) from comment labels.
    pub route: Option<Arc<str>>,
    /// Descriptive comment labels, first value per key.
    pub labels: Labels,
    /// The connection the context started on.
    pub connection_id: u64,
    /// An untagged group cut at a fallback bound
    /// ([`CorrelationConfig::fallback_max_duration`],
    /// [`CorrelationConfig::fallback_max_statements`]), or the group that
    /// continues one: where its request began or ended is unknown.
    pub cut: bool,
}

impl RequestInfo {
    /// How far the grouping can be trusted to be one request.
    pub fn confidence(&self) -> Confidence {
        match self.source {
            s if s.is_correlated() => Confidence::High,
            CorrelationSource::Transaction if !self.cut => Confidence::Medium,
            _ => Confidence::Low,
        }
    }
}

/// How far a request context is known to be one request, for the
/// per-request findings made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Statements between idle gaps, or an untagged group cut at a
    /// fallback bound: perhaps several requests, perhaps a batch job's
    /// loop, perhaps part of one request.
    Low,
    /// An untagged transaction: the application's own unit of work, often
    /// one request, but not named as one.
    Medium,
    /// The application named the request (comment, SET, application_name).
    High,
}

impl Confidence {
    /// Stable lower-case name for reports (`details.confidence`).
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// The context an observed statement was assigned to.
#[derive(Debug)]
pub struct Observed<'a, S> {
    /// The request it belongs to.
    pub request: &'a RequestInfo,
    /// What the statement does; only [`StatementRole::Normal`] statements
    /// are candidates for per-request findings.
    pub role: StatementRole,
    /// The detector's state for this request.
    pub state: &'a mut S,
}

/// Why a context ended; logged with findings and useful when checking a
/// grouping by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its connection went on to another request.
    RequestChanged,
    /// COMMIT or ROLLBACK ended the transaction it was.
    TransactionEnded,
    /// The request id was reset (RESET, DISCARD ALL).
    Reset,
    /// No connection used it any more and the grace period passed.
    Released,
    /// Its connection went quiet for longer than the idle gap.
    IdleGap,
    /// No statement for the idle timeout.
    IdleTimeout,
    /// Its (last) connection closed.
    ConnectionClosed,
    /// The live-context cap evicted it.
    Evicted,
    /// [`Correlator::finish_all`] (shutdown).
    Shutdown,
    /// An untagged group reached a fallback bound and was cut
    /// ([`RequestInfo::cut`]).
    FallbackBound,
}

/// A finished request, handed to the detectors' end-of-request logic.
#[derive(Debug)]
pub struct EndedRequest<S> {
    /// Identity and labels.
    pub request: RequestInfo,
    /// Connections that carried statements of it (first 8).
    pub connections: SmallVec<[u64; 2]>,
    /// Start of its first statement.
    pub started_at: SystemTime,
    /// End of its last statement.
    pub ended_at: SystemTime,
    /// Statements assigned to it, bookkeeping ones included.
    pub statements: u64,
    /// Of those, [`StatementRole::Normal`] ones. A context with none (the
    /// lone BEGIN a driver sent before the request's first tagged statement)
    /// is not worth counting as a request.
    pub work_statements: u64,
    /// Why it ended.
    pub reason: EndReason,
    /// The detector's state.
    pub state: S,
}

/// Counters for the report's coverage summary and the proxy's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CorrelationStats {
    /// Events observed.
    pub events: u64,
    /// Events assigned to a context the application named
    /// ([`CorrelationSource::is_correlated`]).
    pub correlated: u64,
    /// Contexts created.
    pub contexts_started: u64,
    /// Contexts ended (any reason).
    pub contexts_ended: u64,
    /// Contexts ended early by the cap.
    pub contexts_evicted: u64,
    /// Executions of named statements whose Parse-time tags were ignored as
    /// belonging to an earlier request.
    pub stale_tags_ignored: u64,
    /// Ended contexts dropped because nobody drained them in time.
    pub ended_dropped: u64,
}

impl CorrelationStats {
    /// Share of events the application correlated; `0.0` with no events.
    pub fn correlated_fraction(&self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.correlated as f64 / self.events as f64
        }
    }
}
