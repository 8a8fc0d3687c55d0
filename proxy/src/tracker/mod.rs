//! The per-connection protocol tracker: follows both directions of one
//! session and turns them into [`QueryEvent`]s.
//!
//! The relay hands it every message the analysis needs (whole) and the
//! headers of the rest (DataRow, CopyData). It keeps a FIFO of the replies
//! the server still owes, in the order the client's requests were sent, so
//! that a pipelined client (many Parse/Bind/Execute before one Sync) is
//! followed exactly. After an ErrorResponse in the extended protocol the
//! server ignores everything up to the next Sync; the FIFO skips the same
//! way. The tracker only observes: whatever it concludes, the bytes are
//! forwarded untouched, and if it ever loses track it stops analysing the
//! connection instead of guessing.
//!
//! A portal fetched in chunks (Execute with a row limit, PortalSuspended,
//! Execute again) is one execution, not one per chunk: see [`suspended`].
//!
//! The tracker is a pure state machine: messages in, [`Effect`]s out. It
//! does no I/O, reads no clock (each call takes [`Now`] from the caller) and
//! logs nothing; what happened (events, the cancel key, the end of startup,
//! counts and log-worthy conditions) goes to an outbox the caller drains
//! after each batch ([`Tracker::drain_effects`]); the relay lends it a
//! per-thread vector for each batch ([`Tracker::swap_outbox`]), so the
//! per-message path allocates nothing for it and an idle session keeps no
//! room for effects.
//!
//! Both relay directions share one tracker behind a mutex; each direction
//! locks it once per read batch, never across an await.
//!
//! # Layout
//! - this file: the state ([`Tracker`], statements, portals, the FIFO of
//!   replies owed) and the events it builds.
//! - `frontend.rs` / `backend.rs`: the client → server and server → client
//!   halves.
//! - [`suspended`]: portals fetched in chunks.
//! - [`effect`]: what the tracker reports ([`Effect`]) and the time it is
//!   given ([`Now`]).
//! - [`inspect`]: the two directions ([`Direction`]) and [`inspect_all`],
//!   the frame scanner (`wire::scan`) and the tracker over bytes in memory.

mod backend;
pub mod effect;
mod frontend;
pub mod inspect;
#[cfg(test)]
mod portal_tests;
mod suspended;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent, TxStatus};
use smallvec::SmallVec;

pub use crate::config::TrackerLimits;
pub use effect::{Effect, Note, Now, Unread};
pub use inspect::{inspect_all, Backend, Direction, Frontend, InspectError};

use crate::limits::{HeldBudget, HeldBytes};
use crate::wire::error_response::ProxyError;

/// Who the connection belongs to, from its StartupMessage.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Proxy-assigned connection id.
    pub connection_id: u64,
    /// Database named in the StartupMessage.
    pub database: Option<Arc<str>>,
    /// User named in the StartupMessage.
    pub user: Option<Arc<str>>,
    /// application_name from the StartupMessage, until the server reports it.
    pub application_name: Option<Arc<str>>,
}

/// What the relay must do with a message after the tracker saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the original bytes.
    Forward,
    /// Forward these bytes instead (only the SCRAM `-PLUS` strip).
    Replace(Vec<u8>),
    /// Forward nothing: end the session, telling the client this (only a
    /// SCRAM exchange that cannot succeed across the proxy).
    Refuse {
        /// The error, and with it the SQLSTATE.
        kind: ProxyError,
        /// What the client is told.
        message: &'static str,
    },
}

/// The phases of a session as the tracker sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Authentication and startup parameters, before the first ReadyForQuery.
    Startup,
    /// Normal operation.
    Ready,
    /// The tracker lost track (its FIFO overflowed); forwarding continues,
    /// analysis of this connection has stopped.
    Desynced,
}

/// A prepared statement or the statement behind a portal.
#[derive(Debug, Clone)]
struct Statement {
    sql: Arc<str>,
    /// The budget's reservation for a large `sql`, shared by everything
    /// that refers to the text (see [`QueryEvent::text_hold`]).
    hold: Option<Arc<HeldBytes>>,
    /// False when the Parse was too large to hold or its text to keep: its
    /// executions are counted, not analysed.
    analysed: bool,
    name: Option<Arc<str>>,
    /// When the Parse passed through.
    parsed_at: SystemTime,
    /// Distinguishes a statement from an older one of the same name, so a
    /// failed Parse removes only what it created.
    generation: u64,
    /// The bind parameter (1-based) the statement's top-level OFFSET takes,
    /// found once per new text, so Bind knows which value to decode
    /// (`qproxy_analyzer::offset`).
    offset_param: Option<u16>,
}

/// A bound portal, ready to execute.
#[derive(Debug, Clone)]
struct Portal {
    statement: Statement,
    params_hash: u64,
    param_hashes: SmallVec<[Option<u64>; 4]>,
    /// Result format codes from the Bind (see `format_is_binary`).
    result_formats: SmallVec<[u8; 4]>,
    /// The bound OFFSET value, when the statement has `OFFSET $n`.
    offset: Option<u64>,
}

/// One execution in flight.
#[derive(Debug)]
struct Execution {
    sql: Arc<str>,
    /// See [`Statement::hold`].
    hold: Option<Arc<HeldBytes>>,
    /// See [`Statement::analysed`].
    analysed: bool,
    statement_name: Option<Arc<str>>,
    protocol: Protocol,
    params_hash: Option<u64>,
    param_hashes: SmallVec<[Option<u64>; 4]>,
    started_at: SystemTime,
    started: Instant,
    rows: u64,
    statement_index: u16,
    tx_status: TxStatus,
    /// Result format codes (empty: all text, as in the simple protocol).
    result_formats: SmallVec<[u8; 4]>,
    /// Value hashes from the first rows, for N+1 parent matching.
    result_hashes: Vec<u64>,
    /// When a named statement was prepared.
    prepared_at: Option<SystemTime>,
    /// The bound OFFSET value (see `QueryEvent::offset`).
    offset: Option<u64>,
    /// The portal an Execute ran (`""` for the unnamed one); `None` for
    /// simple queries, which cannot be fetched in chunks.
    portal: Option<Box<str>>,
    /// When the latest chunk of a portal fetched in chunks ended
    /// (PortalSuspended): an execution the client stops fetching early is
    /// timed to there, not to whenever the portal is closed.
    suspended_at: Option<Instant>,
}

impl Execution {
    fn start(
        sql: Arc<str>,
        statement_name: Option<Arc<str>>,
        protocol: Protocol,
        tx_status: TxStatus,
        now: Now,
    ) -> Box<Execution> {
        Box::new(Execution {
            sql,
            hold: None,
            analysed: true,
            statement_name,
            protocol,
            params_hash: None,
            param_hashes: SmallVec::new(),
            started_at: now.wall,
            started: now.instant,
            rows: 0,
            statement_index: 0,
            tx_status,
            result_formats: SmallVec::new(),
            result_hashes: Vec::new(),
            prepared_at: None,
            offset: None,
            portal: None,
            suspended_at: None,
        })
    }

    /// The execution of the next statement of the same simple Query.
    fn next_statement(&self, tx_status: TxStatus, now: Now) -> Box<Execution> {
        let mut next = Execution::start(self.sql.clone(), None, self.protocol, tx_status, now);
        next.hold = self.hold.clone();
        next.analysed = self.analysed;
        next
    }
}

/// A reply the server owes, in request order.
#[derive(Debug)]
enum Pending {
    /// ParseComplete (or an error) for this statement.
    Parse {
        name: Option<Arc<str>>,
        generation: u64,
    },
    /// BindComplete. `unnamed`: the Bind replaces the unnamed portal, so a
    /// suspended execution of the old one ends with the reply.
    Bind { unnamed: bool },
    /// RowDescription or NoData (after an optional ParameterDescription).
    Describe,
    /// CloseComplete; `portal` names a closed portal (`""`: the unnamed
    /// one), whose suspended execution, if any, ends with the reply.
    Close { portal: Option<Box<str>> },
    /// DataRows, then CommandComplete, EmptyQueryResponse, PortalSuspended or
    /// ErrorResponse. `None` when the statement is unknown to the tracker.
    Execute(Option<Box<Execution>>),
    /// ReadyForQuery.
    Sync,
    /// A simple query: results per statement, then ReadyForQuery.
    Query { exec: Box<Execution>, failed: bool },
    /// FunctionCallResponse, then ReadyForQuery.
    FunctionCall,
    /// A client message the tracker could not decode, forwarded anyway:
    /// the server is expected to reject it with an ErrorResponse (then,
    /// for a simple Query, ReadyForQuery; in the extended protocol it skips
    /// to Sync). Any other answer means the tracker cannot follow.
    Unreadable {
        /// It was a simple Query.
        simple: bool,
    },
}

/// Follows one session. See the module docs.
#[derive(Debug)]
pub struct Tracker {
    info: SessionInfo,
    limits: TrackerLimits,
    /// What happened since the caller last drained it (see the module
    /// docs); its allocation is kept between batches.
    outbox: Vec<Effect>,
    /// The time of the call being handled, from the caller.
    now: Now,
    phase: Phase,
    tx_status: TxStatus,
    /// Rewrite AuthenticationSASL without `-PLUS` mechanisms (the proxy
    /// terminated the client's TLS).
    strip_channel_binding: bool,
    /// `-PLUS` was just stripped from the server's offer: the client's
    /// SASLInitialResponse is read for its channel-binding flag.
    sasl_plus_stripped: bool,
    /// The server is in COPY FROM STDIN: a Sync from the client gets no
    /// reply until CopyDone/CopyFail.
    copy_in: bool,
    unnamed_statement: Option<Statement>,
    statements: HashMap<Box<str>, Statement>,
    unnamed_portal: Option<Portal>,
    portals: HashMap<Box<str>, Portal>,
    /// Executions of portals suspended between two fetches.
    suspended: suspended::SuspendedPortals,
    pending: VecDeque<Pending>,
    next_generation: u64,
    /// Where large SQL texts kept for analysis are charged; `None`: no limit.
    /// A plain counter shared with the relay, not I/O.
    budget: Option<Arc<HeldBudget>>,
}

impl Tracker {
    /// A tracker for a session that has just sent its StartupMessage (at
    /// `now`).
    pub fn new(
        info: SessionInfo,
        limits: TrackerLimits,
        strip_channel_binding: bool,
        now: Now,
    ) -> Self {
        Tracker {
            info,
            limits,
            outbox: Vec::new(),
            now,
            phase: Phase::Startup,
            tx_status: TxStatus::Idle,
            strip_channel_binding,
            sasl_plus_stripped: false,
            copy_in: false,
            unnamed_statement: None,
            statements: HashMap::new(),
            unnamed_portal: None,
            portals: HashMap::new(),
            suspended: suspended::SuspendedPortals::new(limits.max_suspended_portals),
            pending: VecDeque::new(),
            next_generation: 0,
            budget: None,
        }
    }

    /// Charges copies of large SQL texts to `budget`; a text it cannot
    /// cover is not kept, and its executions are not analysed.
    pub fn with_budget(mut self, budget: Arc<HeldBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// What happened since the last call, oldest first. The caller drains
    /// it after every batch of messages (the outbox grows until it does).
    pub fn drain_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.outbox.drain(..)
    }

    /// Exchanges the outbox's allocation with `spare`'s; effects not yet
    /// drained stay in the tracker's outbox and `spare` is left empty. A
    /// caller that drains after every batch lends the tracker a vector for
    /// the batch and takes it back, so an idle session holds no outbox (an
    /// effect is the size of an event, and a grown outbox keeps room for
    /// four) while the per-batch path still allocates nothing.
    pub fn swap_outbox(&mut self, spare: &mut Vec<Effect>) {
        std::mem::swap(&mut self.outbox, spare);
        self.outbox.append(spare);
    }

    /// True when nothing is in flight and no transaction is open: the
    /// moment a draining proxy may close the session without losing work.
    pub fn is_idle(&self) -> bool {
        self.phase != Phase::Startup
            && self.pending.is_empty()
            && self.tx_status == TxStatus::Idle
            && !self.copy_in
    }

    /// The proxy-assigned id of the connection.
    pub fn connection_id(&self) -> u64 {
        self.info.connection_id
    }

    /// Whether authentication has finished (the first ReadyForQuery).
    pub fn is_started(&self) -> bool {
        self.phase != Phase::Startup
    }

    /// The session is over (at `now`): executions still in flight end as
    /// aborted and the analyzer is told the connection closed. The caller
    /// unregisters the cancel key it registered.
    pub fn close(&mut self, now: Now) {
        self.now = now;
        // A portal the client stopped fetching from fetched what it fetched.
        self.end_suspended_all();
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            match p {
                Pending::Execute(Some(exec)) => self.emit(*exec, Outcome::Aborted),
                Pending::Query {
                    exec,
                    failed: false,
                } => self.emit(*exec, Outcome::Aborted),
                _ => {}
            }
        }
        self.outbox.push(Effect::Event(SessionEvent::Closed {
            connection_id: self.info.connection_id,
            at: now.wall,
            tx_status: (self.phase == Phase::Ready).then_some(self.tx_status),
        }));
    }

    fn push(&mut self, p: Pending) {
        if self.phase == Phase::Desynced {
            return;
        }
        if self.pending.len() >= self.limits.max_pending {
            self.desync();
            return;
        }
        self.pending.push_back(p);
    }

    /// Reports a message forwarded without the tracker reading it.
    fn unread(&mut self, why: Unread) {
        self.outbox.push(Effect::Unread(why));
    }

    fn desync(&mut self) {
        if self.phase == Phase::Desynced {
            return;
        }
        self.phase = Phase::Desynced;
        self.pending.clear();
        self.suspended.clear();
        self.outbox.push(Effect::Desynced);
    }

    fn new_execution(
        &self,
        sql: Arc<str>,
        statement_name: Option<Arc<str>>,
        protocol: Protocol,
    ) -> Box<Execution> {
        Execution::start(sql, statement_name, protocol, self.tx_status, self.now)
    }

    fn emit(&mut self, exec: Execution, outcome: Outcome) {
        if self.phase == Phase::Desynced {
            return;
        }
        if !exec.analysed
            || usize::from(exec.statement_index) >= self.limits.max_statements_per_message
        {
            self.outbox.push(Effect::NotAnalysed);
            return;
        }
        let event = QueryEvent {
            connection_id: self.info.connection_id,
            text_hold: exec.hold.map(|h| h as qproxy_analyzer::event::TextHold),
            sql: exec.sql,
            statement_index: exec.statement_index,
            statement_name: exec.statement_name,
            prepared_at: exec.prepared_at,
            protocol: exec.protocol,
            params_hash: exec.params_hash,
            param_hashes: exec.param_hashes,
            result_hashes: exec.result_hashes,
            offset: exec.offset,
            started_at: exec.started_at,
            duration: exec
                .suspended_at
                .unwrap_or(self.now.instant)
                .saturating_duration_since(exec.started),
            rows: exec.rows,
            outcome,
            tx_status: exec.tx_status,
            application_name: self.info.application_name.clone(),
            database: self.info.database.clone(),
            user: self.info.user.clone(),
        };
        self.outbox.push(Effect::Event(SessionEvent::Query(event)));
    }
}
