//! Detectors: each turns what the pipeline observed into findings.
//!
//! - [`n_plus_one`]: per-request bookkeeping and the `n_plus_one` /
//!   `repeated_query` / `n_plus_one_write` verdicts, with the parent query
//!   when it can be shown.
//! - [`n_plus_one_read`]: how an N+1 read or a repeated query is reported.
//! - [`n_plus_one_write`]: how an N+1 write is reported.
//! - [`too_many_queries`]: the per-request query budget.
//! - [`idle_in_transaction`]: transactions held open while the application
//!   sent nothing.
//! - [`slow_query`]: fingerprints whose latency exceeds the threshold.
//! - [`unbounded`]: SELECTs without LIMIT that return many rows.
//! - [`unindexed`]: WHERE/JOIN predicates and ORDER BYs on large tables
//!   that no index serves, with the `CREATE INDEX` that would; and, from the
//!   same reading of a statement against the catalog, non-sargable filters,
//!   offset pagination and unindexed foreign keys.
//!
//! Each detector returns its own typed verdict (a struct per kind with a
//! `Serialize` details struct) and defines its severity rule next to it;
//! the pipeline turns verdicts into [`Finding`](crate::finding::Finding)s
//! in one place (`pipeline/findings.rs`). Nothing here does I/O: the
//! hypopg check's connection work is [`crate::explain::hypopg`].

pub mod idle_in_transaction;
pub mod n_plus_one;
pub mod n_plus_one_read;
pub mod n_plus_one_write;
pub mod slow_query;
pub mod too_many_queries;
pub mod unbounded;
pub mod unindexed;

use crate::correlation::Confidence;
use crate::finding::Severity;

/// The severity of a per-request finding (N+1 reads and writes, repeated
/// queries, the query budget) once its request's grouping is weighed: a
/// low-confidence grouping (idle gaps, or a group cut at the fallback
/// bounds) is a guess, and a guess is never rated above a warning, never as
/// high as a request the application named.
pub fn weigh_by_confidence(severity: Severity, confidence: Confidence) -> Severity {
    match confidence {
        Confidence::Low => severity.min(Severity::Warning),
        Confidence::Medium | Confidence::High => severity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guessed_request_is_at_most_a_warning() {
        assert_eq!(
            weigh_by_confidence(Severity::Error, Confidence::Low),
            Severity::Warning
        );
        assert_eq!(
            weigh_by_confidence(Severity::Info, Confidence::Low),
            Severity::Info
        );
        assert_eq!(
            weigh_by_confidence(Severity::Error, Confidence::Medium),
            Severity::Error
        );
        assert_eq!(
            weigh_by_confidence(Severity::Error, Confidence::High),
            Severity::Error
        );
    }
}
