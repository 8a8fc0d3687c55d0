//! Portals fetched in chunks are one execution.
//!
//! An Execute with a row limit stops after that many rows with
//! PortalSuspended, and the client fetches the rest with more Executes on
//! the same portal: asyncpg cursors (`prefetch`, `Cursor.fetch`), JDBC's
//! `fetchSize`, any driver that streams a large result. Reporting every
//! chunk as an execution of its own would turn one streamed export of
//! 50,000 rows into 50 executions of 1,000 rows each: a `repeated_query`,
//! an `unbounded_select` that names the chunk size instead of the result,
//! a `slow_query` blind to the whole.
//!
//! So a chunk that ends in PortalSuspended is parked here, keyed by its
//! portal, and the next chunk of that portal is folded into it: one
//! [`QueryEvent`](qproxy_analyzer::event::QueryEvent) with the rows of
//! every chunk, started at the first Execute. It ends
//! - at CommandComplete (or an ErrorResponse) of its last chunk, timed to
//!   that reply;
//! - when the portal goes away before its last row, timed to the last
//!   chunk's PortalSuspended (the server did nothing for it afterwards),
//!   with [`Outcome::Suspended`]: the client closed it (CloseComplete), a
//!   Bind replaced the unnamed portal (BindComplete), a simple Query
//!   destroyed the unnamed portal, the transaction ended (before the
//!   COMMIT or ROLLBACK that ends it, so the execution stays in the
//!   transaction it ran in; or at a ReadyForQuery outside a transaction
//!   block), or the connection closed.
//!
//! The time between chunks (the client processing one before asking for
//! the next) counts toward the execution's duration: the portal, its
//! snapshot and its locks were held all along, which is what a slow
//! streamed query costs the server.
//!
//! Bounded: at most [`TrackerLimits::max_suspended_portals`] executions are
//! parked per connection. Parking one more reports the oldest with the rows
//! it fetched so far; its later chunks then count as a new execution.
//!
//! [`TrackerLimits::max_suspended_portals`]: super::TrackerLimits::max_suspended_portals

use std::sync::Arc;

use qproxy_analyzer::event::Outcome;

use super::{Effect, Execution, Note, Tracker};

/// The parked executions of one connection, oldest first.
#[derive(Debug)]
pub(super) struct SuspendedPortals {
    /// A connection rarely has more than one or two cursors open at once,
    /// so a short vector searched by name beats a map, and its order says
    /// which one is oldest.
    parked: Vec<(Box<str>, Box<Execution>)>,
    cap: usize,
}

impl SuspendedPortals {
    pub(super) fn new(cap: usize) -> Self {
        SuspendedPortals {
            parked: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// The execution parked for `portal`, taken out.
    pub(super) fn take(&mut self, portal: &str) -> Option<Box<Execution>> {
        let i = self.parked.iter().position(|(p, _)| **p == *portal)?;
        Some(self.parked.remove(i).1)
    }

    /// Parks `exec` for `portal`; returns the oldest parked execution when
    /// one had to make room.
    pub(super) fn park(
        &mut self,
        portal: Box<str>,
        exec: Box<Execution>,
    ) -> Option<Box<Execution>> {
        let evicted = (self.parked.len() >= self.cap).then(|| self.parked.remove(0).1);
        self.parked.push((portal, exec));
        evicted
    }

    /// Every parked execution, oldest first.
    pub(super) fn take_all(&mut self) -> Vec<(Box<str>, Box<Execution>)> {
        std::mem::take(&mut self.parked)
    }

    pub(super) fn clear(&mut self) {
        self.parked.clear();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }
}

impl Tracker {
    /// A chunk of an Execute ended with `outcome` (not `Empty`): folded
    /// into its portal's parked execution, then parked again when the
    /// portal is suspended, or reported.
    pub(super) fn finish_chunk(&mut self, chunk: Box<Execution>, outcome: Outcome) {
        let exec = self.resume(chunk);
        if outcome != Outcome::Suspended {
            self.emit(*exec, outcome);
            return;
        }
        let Some(portal) = exec.portal.clone() else {
            // Only an Execute can be suspended; anything else is reported
            // as it is.
            self.emit(*exec, outcome);
            return;
        };
        let mut exec = exec;
        exec.suspended_at = Some(self.now.instant);
        if let Some(oldest) = self.suspended.park(portal, exec) {
            self.outbox.push(Effect::Note(Note::SuspendedPortalsFull {
                cap: self.limits.max_suspended_portals,
            }));
            self.emit(*oldest, Outcome::Suspended);
        }
    }

    /// `chunk` with the execution its portal already has parked folded in:
    /// the parked one (first Execute's start, parameters and row values)
    /// with the chunk's rows added.
    pub(super) fn resume(&mut self, chunk: Box<Execution>) -> Box<Execution> {
        let Some(portal) = chunk.portal.as_deref() else {
            return chunk;
        };
        if self.suspended.is_empty() {
            return chunk;
        }
        let Some(mut first) = self.suspended.take(portal) else {
            return chunk;
        };
        if !Arc::ptr_eq(&first.sql, &chunk.sql) || first.params_hash != chunk.params_hash {
            // Not the same portal after all (its end went unseen): the old
            // one fetched what it fetched.
            self.emit(*first, Outcome::Suspended);
            return chunk;
        }
        first.rows = first.rows.saturating_add(chunk.rows);
        let room = (self.limits.result_rows_hashed as usize)
            .saturating_mul(self.limits.result_columns_hashed)
            .saturating_sub(first.result_hashes.len());
        first
            .result_hashes
            .extend(chunk.result_hashes.iter().take(room).copied());
        first.suspended_at = None;
        first
    }

    /// The portal went away (closed, replaced, destroyed): its parked
    /// execution, if any, ends with the rows it fetched.
    pub(super) fn end_suspended(&mut self, portal: &str) {
        if let Some(exec) = self.suspended.take(portal) {
            self.emit(*exec, Outcome::Suspended);
        }
    }

    /// A simple Query's statement is about to be reported: the Query
    /// destroyed the unnamed portal, and a COMMIT or ROLLBACK among its
    /// statements (`ends_transaction`) every portal.
    pub(super) fn end_suspended_before_query(&mut self, ends_transaction: bool) {
        if ends_transaction {
            self.end_suspended_all();
        } else {
            self.end_suspended("");
        }
    }

    /// The transaction (or the session) ended, and every portal with it.
    pub(super) fn end_suspended_all(&mut self) {
        if self.suspended.is_empty() {
            return;
        }
        for (_, exec) in self.suspended.take_all() {
            self.emit(*exec, Outcome::Suspended);
        }
    }
}
