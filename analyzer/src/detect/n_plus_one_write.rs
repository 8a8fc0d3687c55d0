//! N+1 writes: the evidence and severity of an `n_plus_one_write` finding.
//!
//! The bookkeeping is shared with read N+1s ([`RequestWork`]): each write
//! shape of a request counts its single-row executions that waited for the
//! previous reply, and [`RequestWork::evaluate`] gives the verdict (see the
//! [`n_plus_one`](super::n_plus_one) module docs for what counts as one
//! write per row). This module says how such a verdict is reported.
//!
//! [`RequestWork`]: super::n_plus_one::RequestWork
//! [`RequestWork::evaluate`]: super::n_plus_one::RequestWork::evaluate

use serde::{Deserialize, Serialize};

use super::n_plus_one::WriteStats;
use crate::finding::Severity;

/// `details` of an `n_plus_one_write` finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NPlusOneWriteDetails {
    /// `insert`, `update`, `delete` or `merge`.
    pub statement: String,
    /// Distinct parameter tuples among the executions (at least).
    pub distinct_parameters: u64,
    /// Executions that changed at most one row and waited for the previous
    /// reply: one round trip per row.
    pub round_trips: u64,
    /// Executions sent before the previous one completed (a pipeline or
    /// batch), not counted as round trips.
    pub pipelined_executions: u64,
    /// Executions that changed more than one row, not counted.
    pub set_based_executions: u64,
    /// Time all executions of the shape took in the request.
    pub total_duration_ms: f64,
    /// Whether an earlier query's results fed the parameters.
    pub parent_evidence: String,
    /// How the request was grouped when the application did not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grouping: Option<String>,
}

impl NPlusOneWriteDetails {
    /// The write counters of a verdict.
    pub fn counts(&mut self, w: &WriteStats) {
        self.round_trips = u64::from(w.looped);
        self.pipelined_executions = u64::from(w.pipelined);
        self.set_based_executions = u64::from(w.set_based);
    }
}

/// Warning; error from 25 executions in one request, as for read N+1s:
/// at a millisecond per round trip that is a noticeable share of a page.
pub fn severity(executions: u64) -> Severity {
    if executions >= 25 {
        Severity::Error
    } else {
        Severity::Warning
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_steps_at_twenty_five() {
        assert_eq!(severity(5), Severity::Warning);
        assert_eq!(severity(24), Severity::Warning);
        assert_eq!(severity(25), Severity::Error);
    }
}
