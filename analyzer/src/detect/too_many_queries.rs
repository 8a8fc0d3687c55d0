//! The query budget: one request that runs more statements than a request
//! should, whatever their shapes (many small N+1s, lazy loads of
//! different relations, a chatty ORM).
//!
//! # What counts
//! Statements of application work only ([`StatementRole::Normal`]):
//! transaction control (BEGIN, COMMIT, SAVEPOINT, ...), session settings
//! (SET, SHOW, DISCARD, `set_config`) and the statements that set
//! `qproxy.request_id` are bookkeeping a driver or pool adds, so they are
//! neither counted nor listed among the top shapes.
//!
//! # Which requests
//! Requests the application named (a comment, `SET qproxy.request_id`, a
//! per-request `application_name`) and untagged transactions. Untagged
//! statements outside transactions are grouped by idle gaps, and on a busy
//! pooled connection such a group can be several requests back to back:
//! counting those against a per-request budget would report load, not a
//! request, so they are left out (tag requests to have them checked).
//!
//! [`StatementRole::Normal`]: crate::correlation::StatementRole::Normal

use serde::{Deserialize, Serialize};

use crate::correlation::CorrelationSource;
use crate::detect::n_plus_one::{RequestWork, ShapeCount};
use crate::finding::Severity;

/// Settings of the query budget (`[analyzer.too_many_queries]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TooManyQueriesConfig {
    /// Statements one request may run; more is a finding. Default 50: a
    /// page that needs more than fifty round trips to the database spends
    /// more time on the wire than in it, and a well-batched page of any
    /// size needs a handful.
    pub budget: u64,
}

impl Default for TooManyQueriesConfig {
    fn default() -> Self {
        TooManyQueriesConfig { budget: 50 }
    }
}

/// Shapes listed in a finding.
pub const TOP_SHAPES: usize = 5;

/// One of a request's most frequent shapes, as `details.top_shapes` lists
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopShape {
    /// The shape's fingerprint (16 hex digits).
    pub fingerprint: String,
    /// Its normalized SQL.
    pub query: String,
    /// Executions in the request.
    pub count: u64,
}

/// `details` of a `too_many_queries` finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TooManyQueriesDetails {
    /// Statements the request ran (application work only).
    pub statements: u64,
    /// The budget in force.
    pub budget: u64,
    /// Distinct shapes among them.
    pub distinct_shapes: u64,
    /// Statements of shapes past the per-request shape cap: counted in
    /// `statements`, but neither told apart nor listed.
    pub untracked_statements: u64,
    /// The most frequent shapes, most frequent first (at most five).
    pub top_shapes: Vec<TopShape>,
    /// What was left out of the count.
    pub counted: String,
}

/// A request over its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct OverBudget {
    /// Statements it ran.
    pub statements: u64,
    /// Warning; error from four times the budget.
    pub severity: Severity,
    /// Its most frequent shapes.
    pub top: Vec<ShapeCount>,
    /// The evidence.
    pub details: TooManyQueriesDetails,
}

/// The severity rule: a warning over the budget, an error from four
/// times it (a page that runs four times its budget spends most of its
/// time on round trips).
pub fn severity(statements: u64, budget: u64) -> Severity {
    if statements >= budget.saturating_mul(4) {
        Severity::Error
    } else {
        Severity::Warning
    }
}

const COUNTED: &str = "application statements only: transaction control, session settings \
     and request-id statements are not counted";

/// Judges one ended request: `statements` is its count of application
/// statements, `source` how it was grouped.
pub fn evaluate(
    config: &TooManyQueriesConfig,
    source: CorrelationSource,
    statements: u64,
    work: &RequestWork,
) -> Option<OverBudget> {
    if statements <= config.budget || source == CorrelationSource::IdleGap {
        return None;
    }
    let severity = severity(statements, config.budget);
    let top = work.top_shapes(TOP_SHAPES);
    let details = TooManyQueriesDetails {
        statements,
        budget: config.budget,
        distinct_shapes: work.shape_count() as u64,
        untracked_statements: u64::from(work.truncated),
        top_shapes: top
            .iter()
            .map(|s| TopShape {
                fingerprint: s.fingerprint.to_string(),
                query: s.normalized.to_string(),
                count: s.count,
            })
            .collect(),
        counted: COUNTED.to_string(),
    };
    Some(OverBudget {
        statements,
        severity,
        top,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::n_plus_one::{Execution, NPlusOneConfig};
    use crate::fingerprint::{FingerprintId, StatementKind};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn request(shapes: &[(u64, u32)]) -> (RequestWork, u64) {
        let mut work = RequestWork::default();
        let cfg = NPlusOneConfig::default();
        let sql: Arc<str> = Arc::from("select 1");
        let mut n = 0;
        for &(fp, times) in shapes {
            for i in 0..times {
                work.record(
                    &Execution {
                        fingerprint: FingerprintId(fp),
                        normalized: &sql,
                        kind: StatementKind::Select,
                        changed: None,
                        statement_index: 0,
                        tuple_hash: u64::from(i),
                        param_hashes: &[],
                        result_hashes: &[],
                        rows: 1,
                        duration: Duration::from_millis(1),
                        at: SystemTime::UNIX_EPOCH,
                    },
                    &cfg,
                );
                n += 1;
            }
        }
        (work, n)
    }

    #[test]
    fn over_budget_lists_the_top_shapes() {
        let (work, n) = request(&[(1, 3), (2, 20), (3, 1), (4, 10), (5, 10), (6, 7), (7, 2)]);
        assert_eq!(n, 53);
        let c = TooManyQueriesConfig::default();
        let over = evaluate(&c, CorrelationSource::Comment, n, &work).expect("over budget");
        assert_eq!(over.severity, Severity::Warning);
        let top: Vec<(u64, u64)> = over
            .top
            .iter()
            .map(|s| (s.fingerprint.0, s.count))
            .collect();
        assert_eq!(top, [(2, 20), (4, 10), (5, 10), (6, 7), (1, 3)]);
        assert_eq!(over.details.distinct_shapes, 7);
        assert_eq!(over.details.top_shapes[0].fingerprint, "0000000000000002");
        assert!(evaluate(&c, CorrelationSource::Transaction, 200, &work)
            .is_some_and(|o| o.severity == Severity::Error));
    }

    #[test]
    fn within_budget_and_idle_gap_groups_are_clean() {
        let (work, n) = request(&[(1, 30)]);
        let c = TooManyQueriesConfig::default();
        assert!(evaluate(&c, CorrelationSource::Comment, n, &work).is_none());
        assert!(evaluate(&c, CorrelationSource::Comment, 50, &work).is_none());
        assert!(evaluate(&c, CorrelationSource::IdleGap, 500, &work).is_none());
    }

    #[test]
    fn over_budget_is_an_error_from_four_times_the_budget() {
        assert_eq!(severity(51, 50), Severity::Warning);
        assert_eq!(severity(199, 50), Severity::Warning);
        assert_eq!(severity(200, 50), Severity::Error);
    }
}
