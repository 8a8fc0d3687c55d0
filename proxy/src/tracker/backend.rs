//! The server → client half of the tracker.

use std::sync::Arc;

use qproxy_analyzer::event::{Outcome, TxStatus};
use qproxy_analyzer::values::value_hash;

use super::{Effect, Execution, Note, Now, Pending, Phase, Tracker, Unread, Verdict};
use crate::wire::backend::{self as be, tag, ErrorFields};
use crate::wire::frontend::format_is_binary;
use crate::wire::scan::NotHeld;
use crate::wire::DecodeError;

/// The SQLSTATE recorded for an error whose code the tracker could not read
/// (XX000, internal_error: "some error").
const UNKNOWN_SQLSTATE: [u8; 5] = *b"XX000";

impl Tracker {
    /// Observes one whole server message whose tag is in
    /// [`be::is_inspected`]. Server messages are trusted: one that does not
    /// decode is forwarded anyway and only ends analysis of the connection.
    pub fn backend(&mut self, msg: &[u8], now: Now) -> Verdict {
        self.now = now;
        match self.on_backend(msg) {
            Ok(v) => v,
            Err(e) => {
                self.outbox.push(Effect::Note(Note::UndecodableServer(e)));
                if self.phase != Phase::Desynced {
                    self.desync();
                }
                Verdict::Forward
            }
        }
    }

    /// Observes a server message the tracker would read that the relay
    /// forwards without holding it whole: over `--max-message-bytes`, or
    /// too large for the budget for held bytes (see [`NotHeld`]). `prefix`
    /// is as much of it as the relay has (header included), enough for the
    /// SQLSTATE of an ErrorResponse, which PostgreSQL sends among the first
    /// fields (a huge error is a huge message text, not a huge code). The
    /// tracker follows it by its tag; one that cannot be that large means
    /// it cannot follow any more, and it stops analysing.
    pub fn backend_unheld(&mut self, t: u8, prefix: &[u8], why: NotHeld, now: Now) {
        self.now = now;
        if why == NotHeld::OverCap {
            self.unread(Unread::ServerOverCap { tag: t });
        }
        match t {
            tag::ERROR_RESPONSE => {
                let sqlstate = ErrorFields::prefix(prefix).sqlstate();
                self.on_error(sqlstate.unwrap_or(UNKNOWN_SQLSTATE));
            }
            // Content the FIFO does not need: an authentication exchange
            // (the `-PLUS` strip only ever rewrites a short list), or a
            // parameter that is not application_name.
            tag::AUTHENTICATION | tag::PARAMETER_STATUS => {}
            // Short by definition: one this large is not a message the
            // tracker can follow.
            tag::READY_FOR_QUERY | tag::COMMAND_COMPLETE | tag::BACKEND_KEY_DATA => {
                if self.phase != Phase::Desynced {
                    self.desync();
                }
            }
            _ => self.on_backend_tag(t),
        }
    }

    /// Counts a message the relay streams without buffering (DataRow,
    /// CopyData). `whole` is the message when it happens to be complete in
    /// the relay's buffer: then the first rows' small values are hashed for
    /// N+1 parent matching; a row split across reads is only counted.
    pub fn backend_streamed(&mut self, t: u8, whole: Option<&[u8]>) {
        if t != tag::DATA_ROW {
            return;
        }
        let limits = self.limits;
        let exec = match self.pending.front_mut() {
            Some(Pending::Execute(Some(exec))) => exec,
            Some(Pending::Query { exec, .. }) => exec,
            _ => return,
        };
        exec.rows += 1;
        if exec.rows <= limits.result_rows_hashed {
            if let Some(msg) = whole {
                hash_row(exec, msg, &limits);
            }
        }
    }

    fn on_backend(&mut self, msg: &[u8]) -> Result<Verdict, DecodeError> {
        let Some(&t) = msg.first() else {
            return Ok(Verdict::Forward);
        };
        match t {
            tag::AUTHENTICATION if self.strip_channel_binding => {
                if let Some(rewritten) = be::strip_channel_binding(msg)? {
                    self.sasl_plus_stripped = true;
                    return Ok(Verdict::Replace(rewritten));
                }
            }
            tag::BACKEND_KEY_DATA => {
                let (pid, secret) = be::backend_key_data(msg)?;
                self.outbox.push(Effect::BackendKey {
                    pid,
                    secret: Box::from(secret),
                });
            }
            tag::PARAMETER_STATUS => {
                let (name, value) = be::parameter_status(msg)?;
                if name == "application_name" {
                    let unchanged = self.info.application_name.as_deref() == Some(value.as_ref());
                    if !unchanged {
                        self.info.application_name =
                            (!value.is_empty()).then(|| Arc::from(value.as_ref()));
                    }
                }
            }
            tag::READY_FOR_QUERY => self.on_ready(be::ready_status(msg)?),
            tag::COMMAND_COMPLETE => {
                let tag = be::command_tag(msg)?;
                self.complete(Outcome::Complete {
                    tag: Box::from(tag.as_ref()),
                });
            }
            tag::ERROR_RESPONSE => {
                let fields = ErrorFields::decode(msg)?;
                let sqlstate = fields.sqlstate().unwrap_or(UNKNOWN_SQLSTATE);
                self.on_error(sqlstate);
            }
            _ => self.on_backend_tag(t),
        }
        Ok(Verdict::Forward)
    }

    /// The messages whose tag is all the tracker needs.
    fn on_backend_tag(&mut self, t: u8) {
        match t {
            tag::EMPTY_QUERY_RESPONSE => self.complete(Outcome::Empty),
            tag::PORTAL_SUSPENDED => self.complete(Outcome::Suspended),
            tag::PARSE_COMPLETE => {
                self.pop_if(|p| matches!(p, Pending::Parse { .. }));
            }
            tag::BIND_COMPLETE => {
                if let Some(Pending::Bind { unnamed: true }) =
                    self.pop_if(|p| matches!(p, Pending::Bind { .. }))
                {
                    // The Bind replaced the unnamed portal.
                    self.end_suspended("");
                }
            }
            tag::CLOSE_COMPLETE => {
                if let Some(Pending::Close {
                    portal: Some(portal),
                }) = self.pop_if(|p| matches!(p, Pending::Close { .. }))
                {
                    self.end_suspended(&portal);
                }
            }
            // RowDescription answers a Describe; inside a simple query or an
            // Execute it only announces rows.
            tag::ROW_DESCRIPTION | tag::NO_DATA => {
                self.pop_if(|p| matches!(p, Pending::Describe));
            }
            tag::COPY_IN_RESPONSE => {
                self.copy_in = true;
                // Syncs the client pipelined behind an extended-protocol COPY
                // are ignored by the server while it reads copy data.
                if matches!(self.pending.front(), Some(Pending::Execute(_))) {
                    while matches!(self.pending.get(1), Some(Pending::Sync)) {
                        self.pending.remove(1);
                    }
                }
            }
            _ => {}
        }
    }

    /// Pops the front of the FIFO when it is the request this reply
    /// answers, and returns it.
    fn pop_if(&mut self, expected: impl Fn(&Pending) -> bool) -> Option<Pending> {
        match self.pending.front() {
            Some(p) if expected(p) => self.pending.pop_front(),
            // The server accepted what the tracker could not read.
            Some(Pending::Unreadable { .. }) => {
                self.desync();
                None
            }
            _ => None,
        }
    }

    /// A statement finished (CommandComplete, EmptyQuery, PortalSuspended).
    fn complete(&mut self, outcome: Outcome) {
        let tx_status = self.tx_status;
        match self.pending.front_mut() {
            Some(Pending::Execute(_)) => {
                if let Some(Pending::Execute(Some(exec))) = self.pending.pop_front() {
                    if outcome != Outcome::Empty {
                        if ends_transaction_outcome(&outcome) {
                            // Portals end with their transaction; their
                            // executions belong before the COMMIT.
                            self.end_suspended_all();
                        }
                        self.finish_chunk(exec, outcome);
                    }
                }
            }
            Some(Pending::Query { exec, .. }) => {
                let first = exec.statement_index == 0;
                if first || ends_transaction_outcome(&outcome) {
                    // A simple Query destroys the unnamed portal; a COMMIT
                    // every portal.
                    self.end_suspended_before_query(ends_transaction_outcome(&outcome));
                }
                let Some(Pending::Query { exec, .. }) = self.pending.front_mut() else {
                    return;
                };
                let next = exec.next_statement(tx_status, self.now);
                let index = exec.statement_index;
                let finished = std::mem::replace(exec, next);
                if let Some(Pending::Query { exec, .. }) = self.pending.front_mut() {
                    exec.statement_index = index.saturating_add(1);
                    // Statements after a COMMIT in the same string run
                    // outside the transaction; the next ReadyForQuery says.
                    exec.tx_status = match &outcome {
                        Outcome::Complete { tag } if ends_transaction(tag) => TxStatus::Idle,
                        Outcome::Complete { tag } if starts_transaction(tag) => {
                            TxStatus::InTransaction
                        }
                        _ => finished.tx_status,
                    };
                }
                if outcome != Outcome::Empty {
                    self.emit(*finished, outcome);
                }
            }
            Some(Pending::Unreadable { .. }) => self.desync(),
            _ => {}
        }
    }

    fn on_error(&mut self, sqlstate: [u8; 5]) {
        self.copy_in = false;
        let tx_status = self.tx_status;
        match self.pending.front_mut() {
            // A rejected simple Query the tracker could not read ends at
            // its ReadyForQuery.
            None
            | Some(Pending::Sync)
            | Some(Pending::FunctionCall)
            | Some(Pending::Unreadable { simple: true }) => {}
            Some(Pending::Query { exec, failed }) => {
                if !*failed {
                    *failed = true;
                    let first = exec.statement_index == 0;
                    let next = exec.next_statement(tx_status, self.now);
                    let finished = std::mem::replace(exec, next);
                    if first {
                        self.end_suspended_before_query(false);
                    }
                    self.emit(*finished, Outcome::Error { sqlstate });
                }
            }
            Some(_) => {
                // Extended protocol: the server now skips to the next Sync.
                while let Some(front) = self.pending.front() {
                    if matches!(front, Pending::Sync) {
                        break;
                    }
                    match self.pending.pop_front() {
                        Some(Pending::Execute(Some(exec))) => {
                            let exec = self.resume(exec);
                            self.emit(*exec, Outcome::Error { sqlstate });
                            // Executions skipped after the failing one never
                            // ran: they produce no event.
                            self.drop_until_sync();
                            return;
                        }
                        Some(Pending::Parse { name, generation }) => {
                            self.forget_statement(name, generation)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn drop_until_sync(&mut self) {
        while let Some(front) = self.pending.front() {
            if matches!(front, Pending::Sync) {
                break;
            }
            if let Some(Pending::Parse { name, generation }) = self.pending.pop_front() {
                self.forget_statement(name, generation);
            }
        }
    }

    /// A Parse that failed (or was skipped after an error) leaves no
    /// statement behind.
    fn forget_statement(&mut self, name: Option<Arc<str>>, generation: u64) {
        match name {
            None => {
                if self
                    .unnamed_statement
                    .as_ref()
                    .is_some_and(|s| s.generation == generation)
                {
                    self.unnamed_statement = None;
                }
            }
            Some(name) => {
                if self
                    .statements
                    .get(name.as_ref())
                    .is_some_and(|s| s.generation == generation)
                {
                    self.statements.remove(name.as_ref());
                }
            }
        }
    }

    fn on_ready(&mut self, status: u8) {
        self.tx_status = TxStatus::from_byte(status);
        self.copy_in = false;
        if self.phase == Phase::Startup {
            self.phase = Phase::Ready;
            // Authenticated: no longer one of the connections in startup.
            self.outbox.push(Effect::Started);
            return;
        }
        // Pop through the request this ReadyForQuery answers. Anything
        // before it that is still pending was skipped by the server.
        while let Some(p) = self.pending.pop_front() {
            match p {
                Pending::Sync | Pending::FunctionCall | Pending::Unreadable { simple: true } => {
                    break
                }
                Pending::Query { exec, failed } => {
                    // A simple query whose last statement never completed
                    // (e.g. an empty string) ends here without an event;
                    // it still destroyed the unnamed portal.
                    let _ = (exec, failed);
                    self.end_suspended("");
                    break;
                }
                Pending::Parse { name, generation } => self.forget_statement(name, generation),
                _ => {}
            }
        }
        if self.tx_status != TxStatus::InTransaction {
            // Outside a transaction block (or in a failed one) no portal
            // can be fetched from any more.
            self.end_suspended_all();
        }
        if self.tx_status == TxStatus::Idle && self.pending.is_empty() {
            // A transaction ended: the unnamed portal is gone server-side.
            self.unnamed_portal = None;
        }
    }
}

/// Adds the hashes of a DataRow's small values to the execution. A row
/// that does not decode is skipped: rows are the server's and are
/// forwarded regardless.
fn hash_row(exec: &mut Execution, msg: &[u8], limits: &crate::tracker::TrackerLimits) {
    let mut f = crate::wire::Fields::new(crate::wire::body(msg), "DataRow");
    let Ok(columns) = f.i16() else { return };
    for i in 0..(columns.max(0) as usize).min(limits.result_columns_hashed) {
        let Ok(len) = f.i32() else { return };
        if len < 0 {
            continue;
        }
        let Ok(value) = f.bytes(len as usize) else {
            return;
        };
        if value.len() <= limits.result_value_max_len {
            let binary = format_is_binary(&exec.result_formats, i);
            exec.result_hashes.push(value_hash(value, binary));
        }
    }
}

/// Whether a statement that ended so closes its transaction.
fn ends_transaction_outcome(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Complete { tag } if ends_transaction(tag))
}

fn ends_transaction(tag: &str) -> bool {
    matches!(
        tag,
        "COMMIT" | "ROLLBACK" | "COMMIT PREPARED" | "ROLLBACK PREPARED" | "PREPARE TRANSACTION"
    )
}

fn starts_transaction(tag: &str) -> bool {
    matches!(tag, "BEGIN" | "START TRANSACTION")
}
